"""Optimiser and train state: the schedule, AdamW with clipping, init, abstract shapes and
shardings (assembled by :mod:`lrm_jax.train.setup`)."""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from lrm_jax import parallel
from lrm_jax.data import pipeline


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # [] int32
  params: Any
  opt_state: Any


def make_schedule(config) -> optax.Schedule:
  """Linear warmup to ``lr`` then cosine decay to ``lr * min_lr_ratio`` at ``total_steps``."""
  o = config.optimizer
  warmup = int(min(o.warmup_steps, max(config.total_steps - 1, 1)))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=o.lr, warmup_steps=warmup,
      decay_steps=max(config.total_steps, warmup + 1), end_value=o.lr * o.min_lr_ratio)


def _decay_mask(params):
  """Weight decay on matrices and kernels only (not biases, norms or embeddings' scales)."""
  return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformationExtraArgs:
  """``optax.clip_by_global_norm`` that takes the norm from its caller when it has one.

  ``update(grads, state, params, global_norm=n)`` scales the gradients by
  ``max_norm / n`` when ``n`` exceeds ``max_norm``, with ``n = optax.tree.norm(grads)``
  computed once by the train step (which checks it for NaNs anyway) instead of a second
  read of every gradient (90M in the base GRM). The scale is one product per element,
  which XLA fuses into AdamW's moment and parameter updates; optax's ``(g / n) * max_norm``
  is a pass of its own over every gradient on XLA:CPU (figures: bench/RESULTS.md). Same
  (empty) state as optax's; gradients below the norm pass unchanged,
  clipped ones differ from optax's by rounding.
  """
  def update_fn(updates, state, params=None, *, global_norm=None, **unused_extra_args):
    del params
    norm = optax.tree.norm(updates) if global_norm is None else global_norm
    scale = jnp.where(norm < max_norm, 1.0, max_norm / norm)
    return jax.tree.map(lambda t: t * scale.astype(t.dtype), updates), state

  return optax.GradientTransformationExtraArgs(optax.init_empty_state, update_fn)


class EmaState(NamedTuple):
  """State of :func:`ema_of_params`: updates seen and the averaged parameters."""
  count: jax.Array  # [] int32
  ema: Any  # like params


def ema_of_params(decay: float) -> optax.GradientTransformationExtraArgs:
  """An exponential moving average of the parameters, kept in the optimiser state.

  Goes last in a chain: its ``update(updates, state, params)`` passes ``updates`` on
  unchanged and averages the parameters they lead to, ``params + updates``, with the
  decay warmed up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates (the early
  parameters of a run are forgotten quickly). A skipped (non-finite) step leaves it as it is,
  with the rest of the state. :func:`eval_params` reads it.
  """
  def init_fn(params):
    return EmaState(count=jnp.zeros((), jnp.int32), ema=jax.tree.map(jnp.asarray, params))

  def update_fn(updates, state, params=None, **unused_extra_args):
    if params is None:
      raise ValueError("ema_of_params needs the parameters: tx.update(grads, state, params).")
    n = state.count.astype(jnp.float32)
    d = jnp.minimum(decay, (1.0 + n) / (10.0 + n))
    ema = jax.tree.map(lambda e, p, u: (d * e + (1.0 - d) * (p + u)).astype(e.dtype),
                       state.ema, params, updates)
    return updates, EmaState(count=state.count + 1, ema=ema)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def eval_params(state: "TrainState"):
  """The parameters to evaluate and export: the moving average of :func:`ema_of_params`
  when the optimiser keeps one (``optimizer.ema_decay > 0``), else ``state.params``."""
  found = [node for node in jax.tree.leaves(state.opt_state,
                                            is_leaf=lambda x: isinstance(x, EmaState))
           if isinstance(node, EmaState)]
  return found[0].ema if found else state.params


def make_optimizer(config) -> optax.GradientTransformation:
  """AdamW with warmup + cosine and global-norm clipping (values from REFERENCES.md), and
  with ``optimizer.ema_decay > 0`` a moving average of the parameters (:func:`eval_params`).

  Its ``update`` takes an optional ``global_norm=`` (the gradients' norm, if known).
  """
  o = config.optimizer
  parts = [clip_by_global_norm(o.clip_norm),
           optax.adamw(make_schedule(config), b1=o.b1, b2=o.b2, weight_decay=o.weight_decay,
                       mask=_decay_mask)]
  decay = float(o.get("ema_decay", 0.0))
  if not 0.0 <= decay < 1.0:
    raise ValueError(f"optimizer.ema_decay must be in [0, 1), got {decay}.")
  if decay > 0:
    parts.append(ema_of_params(decay))
  return optax.chain(*parts)


def init_variables(fam, model, config, rng):
  """Boxed (logically partitioned) params of ``model`` for the config's batch shapes."""
  batch = fam.dummy_batch(config)
  cams = pipeline.batch_cameras(batch["targets"])
  bg = jnp.asarray(config.data.background, jnp.float32)
  return model.init({"params": rng, "sample": rng}, batch["inputs"], cams, bg,
                    train=False)["params"]


def abstract_train_state(fam, model, tx, config, rng):
  """``(boxed abstract TrainState, init_fn)``; no arrays are materialised."""
  def init_fn(key):
    params = init_variables(fam, model, config, key)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))
  return jax.eval_shape(init_fn, rng), init_fn


def state_shardings(abstract_boxed, mesh, rules):
  """NamedShardings of the unboxed state from the logical axis names on its params
  (a dimension the rules cannot split evenly on ``mesh`` is replicated)."""
  return parallel.tree_shardings(abstract_boxed, mesh, rules)


def unboxed_abstract(abstract_boxed, shardings):
  """ShapeDtypeStructs (with shardings) of the unboxed state: restore targets."""
  plain = nn.unbox(abstract_boxed)
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      plain, shardings)


def count_params(params) -> int:
  return int(sum(np.prod(p.shape) for p in jax.tree.leaves(nn.unbox(params))))


def root_key(config) -> jax.Array:
  """The run's root PRNG key; per-step keys are ``fold_in(root, step)``."""
  return jax.random.key(config.seed)
