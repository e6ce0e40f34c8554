"""Reproducibility on 2 fake devices with FSDP: two runs of one config and seed give
bit-identical parameters and ``metrics.jsonl`` rows, and a run stopped and resumed from its
checkpoint is bit-identical to an unbroken one.

Everything random is a pure function of the config: data order and view sampling come from
grain's per-element generators seeded by ``config.seed``, and per-step keys are
``fold_in(root, step)`` with ``jax_threefry_partitionable`` on. XLA:CPU reductions are
deterministic. (On GPUs, see README "Determinism": ``--xla_gpu_deterministic_ops=true``.)

The worker runs this file as a script in a subprocess (``XLA_FLAGS`` must be set before jax
starts) and prints one JSON line per run: run a unbroken; run b stopped at step 2 (its
first two steps must equal a's) and resumed (it must then equal a bit for bit). The same
on one device is tests/test_trainer.py::test_resume_is_bit_equal_to_unbroken_run.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

STEPS = 4
# Timing fields differ run to run by design; everything else in metrics.jsonl must not.
TIMING = ("steps_per_s", "images_per_s")


def _config(**overrides):
  from lrm_jax.config_loading import load_config
  items = [f"total_steps={STEPS}", "log_every=1", "eval_every=1000", "checkpoint_every=1000",
           "optimizer.warmup_steps=1"]
  items += [f"{k}={v}" for k, v in overrides.items()]
  return load_config("configs/grm.py:micro", items)


def _fingerprint(workdir: str) -> dict:
  """sha256 of every parameter's bytes (in tree order) and the logged training rows."""
  import jax
  from lrm_jax.train.inference import load_run_config, load_trained
  config = load_run_config(workdir)
  config.mesh.shape = (-1, 1, 1)  # read the checkpoint on whatever devices we have
  params = jax.device_get(load_trained(workdir, config=config).params)
  digest = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    digest.update(jax.tree_util.keystr(path).encode())
    digest.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
  rows = [{k: v for k, v in json.loads(line).items() if k not in TIMING}
          for line in open(os.path.join(workdir, "metrics.jsonl")) if '"loss"' in line]
  return {"params_sha256": digest.hexdigest(), "rows": rows}


def _worker(root: str) -> None:
  """On 2 devices (fsdp=2): an unbroken run, and a second run stopped at step 2 and then
  resumed; prints one JSON fingerprint per run."""
  import jax
  from lrm_jax.train import trainer
  assert jax.device_count() == 2, jax.devices()
  out = lambda name, fp: print(json.dumps({"run": name, **fp}), flush=True)
  path = lambda name: os.path.join(root, name)
  mesh = "(1,2,1)"
  trainer.train_and_evaluate(_config(**{"mesh.shape": mesh}), path("a"))
  out("a", _fingerprint(path("a")))
  trainer.train_and_evaluate(_config(**{"mesh.shape": mesh, "stop_at_step": 2}), path("b"))
  out("b_stopped", _fingerprint(path("b")))
  trainer.train_and_evaluate(_config(**{"mesh.shape": mesh}), path("b"))
  out("b_resumed", _fingerprint(path("b")))


# The worker's XLA:CPU: 2 fake devices, LLVM -O0 (these short runs are compile-bound).
WORKER_XLA_FLAGS = "--xla_force_host_platform_device_count=2 --xla_backend_optimization_level=0"


def test_two_runs_and_a_resumed_run_are_bit_identical_on_two_devices(tmp_path):
  env = dict(os.environ)
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + WORKER_XLA_FLAGS).strip()
  env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH")) if p)
  env.setdefault("JAX_PLATFORMS", "cpu")
  proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", str(tmp_path)],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
  runs = {r.pop("run"): r for r in (json.loads(l) for l in proc.stdout.splitlines()
                                    if l.startswith("{"))}
  assert sorted(runs) == ["a", "b_resumed", "b_stopped"], proc.stdout
  assert [r["step"] for r in runs["a"]["rows"]] == list(range(1, STEPS + 1))
  # The second run stopped at step 2 with the first run's losses so far ...
  assert [r["step"] for r in runs["b_stopped"]["rows"]] == [1, 2]
  assert runs["b_stopped"]["rows"] == runs["a"]["rows"][:2]
  # ... and, resumed from its checkpoint, ended with the first run's parameters and losses.
  assert runs["b_resumed"] == runs["a"], "a stopped + resumed run differs from an unbroken one"


if __name__ == "__main__":
  if len(sys.argv) == 3 and sys.argv[1] == "--worker":
    _worker(sys.argv[2])
  else:
    raise SystemExit("usage: python tests/test_determinism.py --worker DIR")
