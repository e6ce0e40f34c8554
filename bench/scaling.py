"""Data-parallel weak scaling on fake CPU devices, and the host's share of a training step.

  python bench/scaling.py                       # tiny and base GRM on 1, 2, 4, 8 devices
  python bench/scaling.py --configs=tiny --devices=1,2 --steps=3 --no-append

Each device count runs in its own subprocess (``XLA_FLAGS=--xla_force_host_platform_device_count=N``
must be set before jax starts) with ``data.batch_size = per_device_batch * N`` and a mesh of N
x ``data``: weak scaling. On one CPU the fake devices share the same cores, so the step time
grows ~linearly with N; what this measures is the cost of partitioning (collectives,
per-device dispatch), not a speed-up.

``--fsdp`` shards the parameters and optimiser state over the devices (mesh 1 x N x 1, batch
still one example per device).

Host overhead, per step (method):
  * ``loop``: the trainer's loop in steady state -- fetch the next batch from grain, make
    global arrays, dispatch the jitted step (asynchronous), read the previous step's
    metrics (one step late) -- wall time per step over ``--steps`` steps;
  * ``device``: the same compiled step run back to back on one batch already on the
    devices, each call blocked with ``jax.block_until_ready`` -- its median;
  * ``host overhead = (loop - device) / loop``: the time the loop adds on top of the
    compiled step, i.e. the host work (data, transfers, dispatch) that is *not* hidden
    behind the device. ``host work`` is that host work measured directly (sum of the
    fetch + global-array + dispatch times per step), hidden or not.
On a CPU the "device" is the same cores as the host, so data loading is never fully
hidden here; on a TPU/GPU the loop overlaps it with the device step.

Prints a table and appends it to bench/RESULTS.md (``bench.common.report``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

PER_DEVICE_BATCH = {"tiny": 1, "base": 1, "micro": 1}


def _worker(variant: str, devices: int, steps: int, repeats: int,
            overrides: tuple[str, ...] = ()) -> dict:
  import jax
  import numpy as np
  from lrm_jax import parallel
  from lrm_jax.train import setup
  from lrm_jax.config_loading import load_config
  from lrm_jax.data import pipeline

  assert jax.device_count() == devices, (jax.device_count(), devices)
  config = load_config(f"configs/grm.py:{variant}",
                       [f"data.batch_size={PER_DEVICE_BATCH[variant] * devices}",
                        "mesh.shape=(-1,1,1)", *overrides])
  mesh = parallel.make_mesh(config.mesh)
  program = setup.build(config, mesh)  # no LPIPS weights: as a run without them
  it = pipeline.make_iterator(config, "train", spec=program.family.batch_spec(config))
  with program.mesh_context():
    state = program.jit_init()(program.init_rng())
    batch = parallel.to_global_batch(next(it), mesh, program.rules)
    t0 = time.perf_counter()
    step = program.jit_step(batch).lower(state, batch).compile()
    compile_s = time.perf_counter() - t0
    state, metrics = step(state, batch)  # warm-up
    jax.block_until_ready(state)

    # The trainer's loop: fetch, global arrays, dispatch, read last step's metrics.
    host = 0.0
    pending = None
    t_loop = time.perf_counter()
    for _ in range(steps):
      h0 = time.perf_counter()
      b = parallel.to_global_batch(next(it), mesh, program.rules)
      state, m = step(state, b)
      host += time.perf_counter() - h0
      if pending is not None:
        float(pending["loss"])
      pending = m
    float(pending["loss"])
    jax.block_until_ready(state)
    loop_s = (time.perf_counter() - t_loop) / steps

    # The compiled step alone, blocked, on a batch already on the devices.
    times = []
    for _ in range(repeats):
      t0 = time.perf_counter()
      state, m = step(state, batch)
      jax.block_until_ready((state, m))
      times.append(time.perf_counter() - t0)
    device_s = float(np.median(times))
  images = config.data.batch_size * (config.data.num_input_views + config.data.num_target_views)
  return {"variant": variant, "devices": devices, "global_batch": config.data.batch_size,
          "params": program.n_params, "compile_s": compile_s, "loop_s": loop_s,
          "device_s": device_s, "host_work_s": host / steps,
          "host_overhead": max(loop_s - device_s, 0.0) / loop_s,
          "images_per_s": images / loop_s}


def _run(variant: str, devices: int, steps: int, repeats: int, timeout: int,
         overrides: tuple[str, ...] = ()) -> dict:
  env = dict(os.environ)
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                      f" --xla_force_host_platform_device_count={devices}").strip()
  env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH")) if p)
  env.setdefault("JAX_PLATFORMS", "cpu")
  args = [sys.executable, os.path.abspath(__file__), "--worker", variant, str(devices),
          str(steps), str(repeats), *overrides]
  proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=timeout)
  if proc.returncode < 0:
    raise RuntimeError(f"{variant} on {devices} devices was killed by signal "
                       f"{-proc.returncode} (SIGKILL: most likely out of host memory; try "
                       "--overrides=model.remat_policy=full or fewer devices)")
  if proc.returncode != 0:
    raise RuntimeError(f"{variant} on {devices} devices failed:\n{proc.stderr[-4000:]}")
  return json.loads([l for l in proc.stdout.splitlines() if l.startswith("{")][-1])


def row(r: dict, base: dict) -> list:
  """A table row of one worker's result; ``base`` is the smallest device count's."""
  return [f"grm-{r['variant']}", r["devices"], r["global_batch"], f"{r['compile_s']:.1f}",
          f"{r['loop_s']:.3f}", f"{r['device_s']:.3f}", f"{r['host_work_s']:.3f}",
          f"{100 * r['host_overhead']:.1f}%",
          f"{base['loop_s'] * r['devices'] / base['devices'] / r['loop_s']:.2f}",
          f"{r['images_per_s']:.2f}"]


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--configs", default="tiny,base", help="GRM variants")
  parser.add_argument("--devices", default="1,2,4,8")
  parser.add_argument("--steps", type=int, default=3, help="timed loop steps")
  parser.add_argument("--repeats", type=int, default=2, help="blocked device-step timings")
  parser.add_argument("--timeout", type=int, default=3600, help="per subprocess (s)")
  parser.add_argument("--overrides", default="",
                      help="comma-separated config overrides, e.g. model.remat_policy=full")
  parser.add_argument("--fsdp", action="store_true",
                      help="mesh 1 x N fsdp instead of N x data (parameters and AdamW state "
                           "sharded over the devices; activations are not)")
  parser.add_argument("--no-append", action="store_true", help="do not write RESULTS.md")
  args = parser.parse_args()
  from bench.common import report
  overrides = tuple(o for o in args.overrides.split(",") if o)
  if args.fsdp:
    overrides += ("mesh.shape=(1,-1,1)",)
  rows, results = [], []
  for variant in args.configs.split(","):
    base = None
    for n in (int(x) for x in args.devices.split(",")):
      try:
        r = _run(variant, n, args.steps, args.repeats, args.timeout, overrides)
      except (RuntimeError, subprocess.TimeoutExpired) as e:  # keep the other rows
        print(f"grm-{variant} on {n} devices: {e}", file=sys.stderr, flush=True)
        failed = "out of memory" if "signal 9" in str(e) else "failed"
        rows.append([f"grm-{variant}", n, "", failed, "", "", "", "", "", ""])
        continue
      results.append(r)
      base = base or r
      print(json.dumps(r), flush=True)
      rows.append(row(r, base))
  mesh_name = "1 x N fsdp" if args.fsdp else "N x data"
  notes = (f"Weak scaling: batch 1 per fake CPU device, mesh {mesh_name}, one CPU shared by all "
           "devices (so ideal 'efficiency' = 1.0 means step time grows exactly N-fold). "
           "loop = trainer loop wall time per step (fetch + global arrays + async dispatch + "
           "one-step-late metrics); device = blocked compiled step on a resident batch "
           "(median); host overhead = (loop - device) / loop; host work = fetch + global "
           "arrays + dispatch time per step, measured directly (hidden or not). "
           "efficiency = (N / N0) * loop(N0) / loop(N), N0 the smallest count run." +
           (f" Overrides: {', '.join(overrides)}." if overrides else ""))
  report("Data-parallel weak scaling and host overhead (GRM, fake CPU devices)",
         ["config", "devices", "global batch", "compile s", "loop s/step", "device s/step",
          "host work s/step", "host overhead", "efficiency", "images/s"], rows, notes,
         append=not args.no_append)


if __name__ == "__main__":
  if len(sys.argv) >= 6 and sys.argv[1] == "--worker":
    print(json.dumps(_worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]),
                             int(sys.argv[5]), tuple(sys.argv[6:]))), flush=True)
  else:
    main()
