"""Load a trained run (config + latest parameters) for evaluation and reconstruction."""

from __future__ import annotations

import json
import os

import flax.linen as nn
import jax
import ml_collections

from lrm_jax import parallel
from lrm_jax.train import checkpoint as ckpt_lib
from lrm_jax.train import state as state_lib


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run in ``workdir`` was trained with (``workdir/config.json``)."""
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} not found: is {workdir!r} a training workdir "
                            "(python -m lrm_jax.main --workdir=...)?")
  with open(path) as f:
    raw = json.load(f)
  return ml_collections.ConfigDict(_tuplify(raw))


def _tuplify(node):
  """JSON lists back to tuples (configs use tuples for fixed-size values)."""
  if isinstance(node, dict):
    return {k: _tuplify(v) for k, v in node.items()}
  if isinstance(node, list):
    return tuple(_tuplify(v) for v in node)
  return node


def load_trained(workdir: str, config=None, step: int | None = None):
  """``(config, module, model, params, step)`` from the latest (or given) checkpoint."""
  config = config or load_run_config(workdir)
  mesh = parallel.make_mesh(config.mesh)
  rules = tuple(tuple(r) for r in config.logical_axis_rules)
  module, model = state_lib.build_model(config)
  tx = state_lib.make_optimizer(config)
  with mesh, nn.logical_axis_rules(rules):
    abstract_boxed, _ = state_lib.abstract_train_state(model, tx, config, jax.random.key(0))
    shardings = state_lib.state_shardings(abstract_boxed, mesh, rules)
    abstract = state_lib.unboxed_abstract(abstract_boxed, shardings)
  ckpt = ckpt_lib.Checkpointer(ckpt_lib.checkpoint_dir(workdir))
  step = ckpt.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"no checkpoint under {ckpt.directory}; train first with "
                            f"python -m lrm_jax.main --workdir={workdir}.")
  params = ckpt.restore_params(abstract.params, step)
  ckpt.close()
  return config, module, model, params, step, mesh, rules
