"""``train_and_evaluate(config, workdir)``: the one training loop every family uses.

Order (big_vision / MaxText): data -> the program (mesh, model and optimiser,
``jax.eval_shape``, shardings from logical axis rules: :mod:`lrm_jax.train.setup`) ->
``jit(init, out_shardings=...)`` -> restore -> a donated, jitted step -> loop with
one-step-late metrics, periodic eval and checkpoints.
"""

from __future__ import annotations

import json
import math
import os
import time

import jax

from lrm_jax import parallel
from lrm_jax.data import pipeline
from lrm_jax.train import checkpoint as ckpt_lib
from lrm_jax.train import evaluation
from lrm_jax.train import losses
from lrm_jax.train import run_state
from lrm_jax.train import setup
from lrm_jax.train import state as state_lib
from lrm_jax.train.logger import MetricLogger, compile_stats


class NonFiniteLossError(RuntimeError):
  """The loss or gradients became NaN/inf; the last good checkpoint was kept."""


def _restore(config, fam, ckpt, abstract, init, rng, iterator):
  """Resume order: the workdir's newest readable checkpoint > config.resume >
  config.init_from > scratch (scratch includes the family's pretrained weights,
  ``Family.load_pretrained``)."""
  if ckpt.latest_step() is not None:
    state, step, failures = ckpt.restore_newest_readable(abstract, iterator)
    skipped = f"; {len(failures)} newer unreadable one(s) moved aside" if failures else ""
    return state, f"workdir checkpoint step {step}{skipped}"
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
  params = fam.load_pretrained(state.params, config)
  if params is state.params:
    return state, "scratch"
  params = jax.tree.map(lambda p, a: jax.device_put(p, a.sharding), params, abstract.params)
  return state.replace(params=params), "scratch + pretrained weights"


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains ``config`` in ``workdir`` (resuming if it holds a checkpoint); returns the summary.

  A finished workdir (a checkpoint at or past ``total_steps``) is left as it is: the run
  says so and returns its summary. To train longer, raise ``total_steps``.
  """
  t_start = time.time()
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  is_main = jax.process_index() == 0
  probe = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"), create=False)
  latest = probe.latest_step()
  probe.close()
  if latest is not None and latest >= config.total_steps:
    if is_main:
      print(f"{workdir} is finished: its checkpoint is at step {latest} and total_steps is "
            f"{config.total_steps}; nothing to do (to train longer, raise "
            f"--config.total_steps).")
    return dict(run_state.read_summary(workdir) or {}, finished=True)
  with run_state.WorkdirLock(workdir, enabled=is_main):
    if is_main:
      run_state.record_config(config, workdir, latest)
    return _train(config, workdir, t_start, is_main)


def _train(config, workdir: str, t_start: float, is_main: bool) -> dict:
  """The loop of :func:`train_and_evaluate` (the workdir is locked)."""
  # ---- Model, optimiser, shapes and shardings (one setup path: train/setup.py) ----------
  perceptual = losses.Perceptual.from_config(config)
  program = setup.build(config, perceptual=perceptual)
  mesh, rules, model = program.mesh, program.rules, program.model
  n_params = program.n_params

  # ---- Data: the family's batch spec -----------------------------------------------------
  spec = program.family.batch_spec(config)
  train_iter = pipeline.make_iterator(config, "train", spec=spec)

  with program.mesh_context():
    init = program.jit_init()

    # ---- Restore -------------------------------------------------------------------------
    ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                                 keep=config.keep_checkpoints)
    state, origin = _restore(config, program.family, ckpt, program.abstract, init,
                             program.init_rng(), train_iter)
    start_step = int(jax.device_get(state.step))
    if is_main:
      run_state.trim_metrics(workdir, start_step)  # rows of steps this run redoes
      print(f"{config.family}-{config.variant}: {n_params:,} parameters; mesh "
            f"{dict(mesh.shape)}; start at step {start_step} ({origin}).")
    p_step = None

    # ---- Loop ----------------------------------------------------------------------------
    logger = MetricLogger(workdir, config, start_step, enabled=is_main)
    preempted = ckpt_lib.PreemptionFlag()
    evaluator = evaluation.Evaluator(config, model, mesh, rules, workdir, perceptual, spec=spec,
                                     extra_metrics=program.family.eval_metrics)
    pending = None
    step = start_step
    images_per_step = config.data.batch_size * (config.data.num_input_views +
                                                config.data.num_target_views)
    try:
      while step < config.total_steps:
        local = next(train_iter)
        batch = parallel.to_global_batch(local, mesh, rules)
        if p_step is None:
          pipeline.check_batch(local, spec)
          p_step = program.jit_step(local)
          _record_compile(logger, p_step, state, batch)
        state, step_metrics = p_step(state, batch)
        step += 1
        # Metrics of the previous step are read now, while this step runs.
        if pending is not None:
          _check_and_log(logger, *pending, images_per_step)
        pending = (step, step_metrics)
        last = step == config.total_steps
        stop_now = bool(preempted) or step == config.stop_at_step
        if step % config.eval_every == 0 or last:
          _check_and_log(logger, *pending, images_per_step)
          pending = None
          result = evaluator.run(state_lib.eval_params(state), step)
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
      final = evaluator.last or evaluator.run(state_lib.eval_params(state), step)
      summary["eval"] = {k: final[k] for k in ("psnr", "ssim", "lpips", "baseline_psnr",
                                              "baseline_background_psnr",
                                              "baseline_nearest_view_psnr", "num_scenes")}
      # The family's own eval metrics (Family.eval_metrics), e.g. Avat3r's AKD.
      summary["eval"].update({k: v for k, v in final.items()
                              if k not in summary["eval"] and k not in ("step", "num_views")})
    summary["curve"] = logger.eval_curve
    if is_main:
      with open(os.path.join(workdir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary


def _record_compile(logger, p_step, state, batch) -> None:
  """Compiles the step ahead of its first call (jax keeps the executable, so that call
  reuses it) and writes its memory and compile time (``compile.json``)."""
  t = time.time()
  compiled = p_step.lower(state, batch).compile()
  logger.write_compile(compile_stats(compiled, time.time() - t))


def _check_and_log(logger, step, step_metrics, images_per_step):
  host = jax.device_get(step_metrics)
  if not bool(host["finite"]) or not math.isfinite(float(host["loss"])):
    raise NonFiniteLossError(
        f"non-finite loss at step {step} (loss={float(host['loss'])}, grad_norm="
        f"{float(host['grad_norm'])}); stopping. The last good checkpoint is kept.")
  logger.write_train(step, host, images_per_step)
