"""Input pipeline throughput: batches/s of the grain pipeline for the tiny configs.

  python bench/pipeline.py [--batches 20] [--workers 0]

Measures the synthetic source (exact ray casting + view sampling + resize/crop + batching)
in-process and with grain worker processes.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import common  # noqa: E402
from lrm_jax.config_loading import load_config  # noqa: E402
from lrm_jax.data import pipeline  # noqa: E402


def measure(config_spec: str, workers: int, batches: int, source: str = "synthetic"):
  config = load_config(config_spec, [f"data.num_workers={workers}", f"data.source={source}"])
  it = pipeline.make_iterator(config)
  # Warm-up past start-up and grain's read-ahead buffer, so the timed batches are produced
  # at the steady-state rate rather than taken from a full buffer.
  for _ in range(max(20, batches // 2)):
    next(it)
  t0 = time.perf_counter()
  for _ in range(batches):
    next(it)
  dt = time.perf_counter() - t0
  d = config.data
  return batches / dt, d.batch_size, d.num_input_views, d.num_target_views, d.render_size


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--batches", type=int, default=60)
  p.add_argument("--no-append", action="store_true", help="print only, do not append")
  args = p.parse_args()
  rows = []
  cow = "mesh:" + os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data",
                               "cow_mesh", "cow.obj")
  for spec in ("configs/grm.py:tiny", "configs/lrm.py:tiny"):
    for source in ("synthetic", cow):
      for workers in (0, 2):
        bps, bs, vi, vt, res = measure(spec, workers, args.batches, source)
        rows.append([spec.split("/")[-1], source.split("/")[-1], workers, bs,
                     f"{vi}+{vt} @ {res}", f"{bps:.2f}", f"{bps * bs:.1f}"])
  common.report("Input pipeline (grain)", ["config", "source", "workers", "batch",
                                           "views @ render size", "batches/s", "examples/s"],
                rows, append=not args.no_append)


if __name__ == "__main__":
  main()
