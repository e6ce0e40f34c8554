"""Load a trained run (config + latest parameters) for evaluation and reconstruction."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import ml_collections

from lrm_jax.train import checkpoint as ckpt_lib
from lrm_jax.train import setup
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


@dataclasses.dataclass
class Trained:
  """A trained run, ready to apply: its config, program (family, model, mesh) and params."""

  config: ml_collections.ConfigDict
  program: setup.Program
  params: Any
  step: int

  @property
  def family(self):
    return self.program.family

  @property
  def model(self):
    return self.program.model


def load_trained(workdir: str, config=None, step: int | None = None) -> Trained:
  """The run's config (or ``config``) and the latest (or given) checkpoint's parameters,
  placed with the shardings the trainer uses (:func:`lrm_jax.train.setup.build`): their
  moving average when the run kept one (``optimizer.ema_decay > 0``), as in its evals."""
  config = config or load_run_config(workdir)
  program = setup.build(config)
  ckpt = ckpt_lib.Checkpointer(ckpt_lib.checkpoint_dir(workdir))
  step = ckpt.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"no checkpoint under {ckpt.directory}; train first with "
                            f"python -m lrm_jax.main --workdir={workdir}.")
  if float(config.optimizer.get("ema_decay", 0.0)) > 0:
    params = state_lib.eval_params(ckpt.restore(program.abstract, step=step))
  else:
    params = ckpt.restore_params(program.abstract.params, step)
  ckpt.close()
  return Trained(config, program, params, int(step))
