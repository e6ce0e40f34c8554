"""One setup path: the family, model, optimiser, abstract state, shardings and step of a
config on a mesh, built the same way for train, evaluate, reconstruct, inference loading,
``aot`` and the sharding tests.

Order (big_vision / MaxText): mesh -> model and optimiser -> ``jax.eval_shape`` of the
state -> shardings from logical axis rules -> ``jit(init, out_shardings=...)``. Use the
jitted functions inside ``program.mesh_context()``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import numpy as np

from lrm_jax import parallel
from lrm_jax.models import family as family_lib
from lrm_jax.train import state as state_lib
from lrm_jax.train import step as step_lib


@dataclasses.dataclass
class Program:
  """Everything ``train_and_evaluate`` builds before its loop, for one mesh."""

  config: Any
  mesh: jax.sharding.Mesh
  rules: tuple
  family: family_lib.Family
  model: nn.Module
  tx: Any
  abstract_boxed: Any  # boxed (logically partitioned) abstract TrainState
  shardings: Any  # NamedShardings of the unboxed TrainState
  abstract: Any  # ShapeDtypeStructs (with shardings) of the unboxed TrainState
  init_fn: Callable  # key -> boxed TrainState
  step_fn: Callable  # the trainer's (state, batch) -> (state, metrics)
  n_params: int
  flops: float = float("nan")  # matmul/conv FLOPs per step (aot.jaxpr_flops), once computed

  def mesh_context(self):
    """The mesh and logical axis rules every jitted function of the program runs under."""
    return parallel.use_mesh(self.mesh, self.rules)

  def init_rng(self) -> jax.Array:
    """The key the state is initialised with: ``fold_in(root, 2**31 - 1)``."""
    return init_key(self.config)

  def jit_init(self):
    """``jit(init, out_shardings=...)``: parameters are born sharded."""
    init_fn = self.init_fn
    return jax.jit(lambda k: nn.unbox(init_fn(k)), out_shardings=self.shardings)

  def batch_shardings(self, batch):
    return jax.tree.map(lambda x: parallel.batch_sharding(self.mesh, self.rules, np.ndim(x)),
                        batch)

  def jit_step(self, batch):
    """The trainer's jitted step: explicit in/out shardings, donated state."""
    return parallel.jit(self.step_fn,
                        in_shardings=(self.shardings, self.batch_shardings(batch)),
                        out_shardings=(self.shardings, parallel.replicated(self.mesh)),
                        donate_argnums=0)

  def abstract_batch(self, global_batch: int | None = None) -> dict:
    """ShapeDtypeStructs of one global batch (the family's ``batch_spec``), sharded over
    the batch axes."""
    spec = self.family.batch_spec(self.config, global_batch)
    b = jax.tree.leaves(spec)[0].shape[0]
    parallel.check_batch_size(b, self.mesh, self.rules)
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(
            x.shape, x.dtype, sharding=parallel.batch_sharding(self.mesh, self.rules, x.ndim)),
        spec)


def init_key(config) -> jax.Array:
  """The key a run's state is initialised with: ``fold_in(root, 2**31 - 1)``."""
  return jax.random.fold_in(state_lib.root_key(config), -1 & 0x7FFFFFFF)


def build(config, mesh: jax.sharding.Mesh | None = None, perceptual=None) -> Program:
  """The :class:`Program` of ``config`` on ``mesh`` (default: ``config.mesh`` over this
  host's devices). ``perceptual``: the LPIPS function the step's loss uses, if any."""
  mesh = parallel.make_mesh(config.mesh) if mesh is None else mesh
  rules = tuple(tuple(r) for r in config.logical_axis_rules)
  fam = family_lib.get(config)
  model = fam.build(config)
  tx = state_lib.make_optimizer(config)
  with parallel.use_mesh(mesh, rules):
    abstract_boxed, init_fn = state_lib.abstract_train_state(fam, model, tx, config,
                                                             init_key(config))
    shardings = state_lib.state_shardings(abstract_boxed, mesh, rules)
    abstract = state_lib.unboxed_abstract(abstract_boxed, shardings)
  step_fn = step_lib.make_train_step(model, fam, config, tx, perceptual)
  return Program(config, mesh, rules, fam, model, tx, abstract_boxed, shardings, abstract,
                 init_fn, step_fn, state_lib.count_params(abstract_boxed.params))
