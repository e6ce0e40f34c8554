"""``train_and_evaluate(config, workdir)``: the one training loop every family uses.

Order (big_vision / MaxText): mesh -> data -> model and optimiser -> ``jax.eval_shape`` ->
shardings from logical axis rules -> ``jit(init, out_shardings=...)`` -> restore -> a
donated, jitted step -> loop with one-step-late metrics, periodic eval and checkpoints.
"""

from __future__ import annotations

import json
import math
import os
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from lrm_jax import parallel
from lrm_jax.data import pipeline
from lrm_jax.train import checkpoint as ckpt_lib
from lrm_jax.train import evaluation
from lrm_jax.train import losses
from lrm_jax.train import metrics as metrics_lib
from lrm_jax.train import state as state_lib
from lrm_jax.train.logger import MetricLogger


class NonFiniteLossError(RuntimeError):
  """The loss or gradients became NaN/inf; the last good checkpoint was kept."""


def _write_config(config, workdir):
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2, sort_keys=True))


def make_train_step(model, module, config, tx, perceptual):
  """The pure train step ``(state, batch) -> (state, metrics)`` (to be jitted)."""
  bg = jnp.asarray(config.data.background, jnp.float32)
  root = state_lib.root_key(config)

  def train_step(state, batch):
    key = jax.random.fold_in(root, state.step)
    targets = batch["targets"]
    cams = pipeline.batch_cameras(targets)

    def loss_fn(params):
      rendered, rep = model.apply({"params": params}, batch["inputs"], cams, bg, train=True,
                                  rngs={"sample": key})
      terms = losses.image_losses(rendered, targets, config.loss, perceptual)
      total = terms.pop("total")
      for name, (weight, value) in module.regularizers(rep, batch, config).items():
        terms[name] = value
        total = total + weight * value
      if config.inject_nan_at_step >= 0:
        total = total + jnp.where(state.step == config.inject_nan_at_step, jnp.nan, 0.0)
      return total, (terms, rendered)

    (loss, (terms, rendered)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

    def update(grads, state):
      updates, opt_state = tx.update(grads, state.opt_state, state.params,
                                     global_norm=grad_norm)
      return state_lib.TrainState(step=state.step + 1, opt_state=opt_state,
                                  params=optax.apply_updates(state.params, updates))

    # A non-finite step leaves the state untouched, so nothing bad can reach a checkpoint.
    # (A cond, not a select of every leaf: that select re-read and re-wrote parameters and
    # both AdamW moments, 0.3 s of the base GRM's step on a 2-core CPU.)
    new = jax.lax.cond(finite, update, lambda grads, state: state, grads, state)
    out = dict(terms, loss=loss, grad_norm=grad_norm, finite=finite,
               psnr=jnp.mean(metrics_lib.psnr(rendered["rgb"], targets["images"])),
               lr=state_lib.make_schedule(config)(state.step))
    if "overflow" in rendered:
      out["overflow"] = jnp.sum(rendered["overflow"])
    return new, out

  return train_step


def _restore(config, module, ckpt, abstract, init, rng, iterator):
  """Resume order: the workdir's checkpoint > config.resume > config.init_from > scratch
  (scratch includes pretrained encoder weights when the family has ``load_pretrained``)."""
  if ckpt.latest_step() is not None:
    return ckpt.restore(abstract, iterator), f"workdir checkpoint step {ckpt.latest_step()}"
  if config.resume:
    other = ckpt_lib.Checkpointer(ckpt_lib.checkpoint_dir(config.resume))
    state = other.restore(abstract, iterator)
    other.close()
    return state, f"resumed from {config.resume} step {int(state.step)}"
  state = init(rng)
  if config.init_from:
    other = ckpt_lib.Checkpointer(ckpt_lib.checkpoint_dir(config.init_from))
    params = other.restore_params(abstract.params)
    other.close()
    state = state.replace(params=params)
    return state, f"parameters from {config.init_from}"
  if hasattr(module, "load_pretrained") and config.model.get("encoder_weights", ""):
    params = module.load_pretrained(state.params, config)
    params = jax.tree.map(lambda p, a: jax.device_put(p, a.sharding), params, abstract.params)
    return state.replace(params=params), f"scratch + encoder {config.model.encoder_weights}"
  return state, "scratch"


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains ``config`` in ``workdir`` (resuming if it holds a checkpoint); returns the summary."""
  t_start = time.time()
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  _write_config(config, workdir)
  is_main = jax.process_index() == 0

  # ---- Mesh ------------------------------------------------------------------------------
  mesh = parallel.make_mesh(config.mesh)
  rules = tuple(tuple(r) for r in config.logical_axis_rules)

  # ---- Data ------------------------------------------------------------------------------
  train_iter = pipeline.make_iterator(config, "train")

  # ---- Model and optimiser ---------------------------------------------------------------
  module, model = state_lib.build_model(config)
  tx = state_lib.make_optimizer(config)
  perceptual = losses.Perceptual.from_config(config)
  rng = state_lib.root_key(config)
  init_rng = jax.random.fold_in(rng, -1 & 0x7FFFFFFF)

  with parallel.use_mesh(mesh, rules):
    # ---- Shapes and shardings ------------------------------------------------------------
    abstract_boxed, init_fn = state_lib.abstract_train_state(model, tx, config, init_rng)
    shardings = state_lib.state_shardings(abstract_boxed, mesh, rules)
    abstract = state_lib.unboxed_abstract(abstract_boxed, shardings)
    init = jax.jit(lambda k: nn.unbox(init_fn(k)), out_shardings=shardings)
    n_params = state_lib.count_params(abstract_boxed.params)

    # ---- Restore -------------------------------------------------------------------------
    ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                                 keep=config.keep_checkpoints)
    state, origin = _restore(config, module, ckpt, abstract, init, init_rng, train_iter)
    start_step = int(jax.device_get(state.step))
    if is_main:
      print(f"{config.family}-{config.variant}: {n_params:,} parameters; mesh "
            f"{dict(mesh.shape)}; start at step {start_step} ({origin}).")

    # ---- Step ----------------------------------------------------------------------------
    step_fn = make_train_step(model, module, config, tx, perceptual)
    batch_shard = lambda tree: jax.tree.map(
        lambda x: parallel.batch_sharding(mesh, rules, np.ndim(x)), tree)
    p_step = None

    # ---- Loop ----------------------------------------------------------------------------
    logger = MetricLogger(workdir, config, start_step, enabled=is_main)
    preempted = ckpt_lib.PreemptionFlag()
    evaluator = evaluation.Evaluator(config, model, mesh, rules, workdir, perceptual)
    pending = None
    step = start_step
    images_per_step = config.data.batch_size * (config.data.num_input_views +
                                                config.data.num_target_views)
    try:
      while step < config.total_steps:
        local = next(train_iter)
        batch = parallel.to_global_batch(local, mesh, rules)
        if p_step is None:
          p_step = parallel.jit(step_fn, in_shardings=(shardings, batch_shard(local)),
                                out_shardings=(shardings, parallel.replicated(mesh)),
                                donate_argnums=0)
        state, step_metrics = p_step(state, batch)
        step += 1
        # Metrics of the previous step are read now, while this step runs.
        if pending is not None:
          _check_and_log(logger, *pending, images_per_step)
        pending = (pending_step := step, step_metrics)
        del pending_step
        last = step == config.total_steps
        stop_now = bool(preempted) or step == config.stop_at_step
        if step % config.eval_every == 0 or last:
          _check_and_log(logger, *pending, images_per_step)
          pending = None
          result = evaluator.run(state.params, step)
          logger.write_eval(step, result)
        if step % config.checkpoint_every == 0 or last or stop_now:
          if pending is not None:
            _check_and_log(logger, *pending, images_per_step)
            pending = None
          ckpt.save(step, state, train_iter)
        if stop_now:
          ckpt.wait()
          if is_main:
            why = "SIGTERM" if preempted else "stop_at_step"
            print(f"{why}: saved checkpoint at step {step}; exiting cleanly.")
          break
      if pending is not None:
        _check_and_log(logger, *pending, images_per_step)
    finally:
      ckpt.wait()
      ckpt.close()
      logger.close()
      preempted.restore_handlers()

    summary = {
        "family": config.family, "variant": config.variant, "steps": step,
        "wall_s": round(time.time() - t_start, 2), "n_params": n_params,
        "preempted": bool(preempted),
    }
    if step == config.total_steps:
      final = evaluator.last or evaluator.run(state.params, step)
      summary["eval"] = {k: final[k] for k in ("psnr", "ssim", "lpips", "baseline_psnr",
                                              "baseline_background_psnr",
                                              "baseline_nearest_view_psnr", "num_scenes")}
    summary["curve"] = logger.eval_curve
    if is_main:
      with open(os.path.join(workdir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary


def _check_and_log(logger, step, step_metrics, images_per_step):
  host = jax.device_get(step_metrics)
  if not bool(host["finite"]) or not math.isfinite(float(host["loss"])):
    raise NonFiniteLossError(
        f"non-finite loss at step {step} (loss={float(host['loss'])}, grad_norm="
        f"{float(host['grad_norm'])}); stopping. The last good checkpoint is kept.")
  logger.write_train(step, host, images_per_step)
