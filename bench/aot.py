"""TPU memory and FLOPs of one train step, compiled ahead of time on this (CPU) machine.

  python bench/aot.py                          # paper GRM + LRM on v5e:16x16, tiny on v5e:2x2
  python bench/aot.py --cases=grm-tiny --no-append
  python bench/aot.py --keep=/tmp/aot_json     # keep each case's JSON; rerun only missing ones

Each case runs ``python -m lrm_jax.aot --config=... --topology=... --json_out=...`` in its
own subprocess (a paper-size compile holds ~9 GB of host memory for 8-12 minutes on 2 cores)
and the table is appended to bench/RESULTS.md (``bench.common.report``). Needs ``libtpu``
importable (requirements-test.txt pins the version ``jax[tpu]`` uses), or
``LRM_LIBTPU_DIR=DIR`` pointing at a ``pip install --target`` copy of it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

from bench import common  # pylint: disable=wrong-import-position

# name -> (config spec, topology, extra --config overrides)
CASES = {
    "grm-paper": ("configs/grm.py:variant=paper", "v5e:16x16", []),
    "lrm-paper": ("configs/lrm.py:variant=paper", "v5e:16x16", []),
    "grm-tiny": ("configs/grm.py:tiny", "v5e:2x2", ["--config.data.batch_size=4"]),
    "lrm-tiny": ("configs/lrm.py:tiny", "v5e:2x2", []),
}


def run_case(name: str, out_json: str, timeout: int) -> dict:
  spec, topology, extra = CASES[name]
  env = dict(os.environ)
  env.setdefault("JAX_PLATFORMS", "cpu")  # the host backend; libtpu only compiles
  env.setdefault("TPU_ACCELERATOR_TYPE", "v5litepod-4")  # quiets libtpu's host probing
  env.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
  paths = [REPO, os.environ.get("LRM_LIBTPU_DIR", ""), env.get("PYTHONPATH", "")]
  env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
  cmd = [sys.executable, "-m", "lrm_jax.aot", f"--config={spec}", f"--topology={topology}",
         f"--json_out={out_json}"] + extra
  print("$", " ".join(cmd[1:]), flush=True)
  t0 = time.time()
  proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=timeout)
  print(proc.stdout[-3000:], flush=True)
  if proc.returncode != 0 or not os.path.exists(out_json):
    raise RuntimeError(f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
  with open(out_json) as f:
    stats = json.load(f)
  stats["wall_s"] = round(time.time() - t0, 1)
  return stats


def row(name: str, s: dict) -> list:
  g = lambda k: s.get(k, float("nan")) / 2**30
  mesh = "x".join(str(v) for v in s["mesh"].values())
  peak = g("peak_bytes")
  if not math.isfinite(peak) and math.isfinite(s.get("required", float("nan"))):
    peak_text = f">= {s['required'] / 2**30:.2f} (compiler)"
  else:
    peak_text = f"{peak:.2f}"
  return [name, s["topology"], mesh, s["global_batch"], s["remat"], s["dtype"],
          f"{s['n_params']:,}", f"{g('argument'):.3f}", f"{g('temp'):.2f}",
          f"{g('output'):.3f}", peak_text, f"{s['hbm_bytes'] / 2**30:.0f}",
          "yes" if s["fits"] else "NO", f"{s['flops'] / 1e12:.4g}", s.get("compile_s", "")]


HEADER = ["config", "topology", "mesh (data x fsdp x tensor)", "global batch", "remat", "dtype",
          "parameters", "arguments GiB", "temp GiB", "outputs GiB", "peak GiB", "HBM GiB",
          "fits", "TFLOP/step", "compile s"]


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--cases", default=",".join(CASES), help="comma-separated: " +
                      ", ".join(CASES))
  parser.add_argument("--keep", default="", help="directory for each case's JSON; cases "
                      "whose JSON is already there are not compiled again")
  parser.add_argument("--timeout", type=int, default=3600, help="seconds per case")
  parser.add_argument("--no-append", dest="append", action="store_false")
  args = parser.parse_args()
  import tempfile
  keep = args.keep or tempfile.mkdtemp(prefix="lrm_aot_")
  os.makedirs(keep, exist_ok=True)
  rows = []
  for name in args.cases.split(","):
    path = os.path.join(keep, f"{name}.json")
    if os.path.exists(path):
      with open(path) as f:
        stats = json.load(f)
    else:
      stats = run_case(name, path, args.timeout)
    rows.append(row(name, stats))
  load = os.getloadavg()[0]
  notes = (
      "One train step (forward, backward, AdamW update; LPIPS-VGG16 with random weights "
      "when the config's loss uses it) lowered with the trainer's shardings and compiled by "
      "libtpu for the topology on this CPU-only host (`python -m lrm_jax.aot`). Memory is "
      "per device from `compiled.memory_analysis()`: peak = arguments + temp + outputs - "
      "aliased (the donated state) + code. TFLOP/step: matmul + conv FLOPs of the whole "
      "step counted on the jaxpr (scan bodies x length, remat recomputation included). "
      f"Compile times are wall seconds on a shared 2-core host (load {load:.1f} at the end).")
  common.report("TPU memory per train step (bench/aot.py)", HEADER, rows, notes,
                append=args.append)


if __name__ == "__main__":
  main()
