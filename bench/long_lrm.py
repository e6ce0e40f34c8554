"""Long-LRM: train-step time and compiled memory vs the number of input views, for the
hybrid (Mamba2 + transformer) processor and a transformer-only one of the same depth.

  python bench/long_lrm.py [--config configs/long_lrm.py:tiny] [--views 4 8 16 32]
      [--steps 3] [--no-append] [--overrides data.input_size=32 ...]

Each row compiles the trainer's real step (``setup.build(...).step_fn``) on a dummy batch
(the family's ``dummy_batch``: no data pipeline cost), then times ``--steps`` steps. Memory
is XLA's ``memory_analysis`` of the compiled step (temporaries and arguments). The
transformer-only processor replaces every "m" of ``model.pattern`` by "t".
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import common  # noqa: E402

common.set_isa_from_argv()  # before jax is imported

import jax  # noqa: E402
import numpy as np  # noqa: E402

from lrm_jax import parallel  # noqa: E402
from lrm_jax.config_loading import load_config  # noqa: E402
from lrm_jax.train import setup  # noqa: E402


def bench_row(spec: str, views: int, processor: str, steps: int, overrides=()) -> list:
  config = load_config(spec, [f"data.num_input_views={views}", *overrides])
  if processor == "transformer":
    config.model.pattern = config.model.pattern.replace("m", "t")
  program = setup.build(config)
  local = program.family.dummy_batch(config, config.data.batch_size)
  with program.mesh_context():
    state = program.jit_init()(jax.random.key(0))
    batch = parallel.to_global_batch(local, program.mesh, program.rules)
    t0 = time.perf_counter()
    compiled = jax.jit(program.step_fn, donate_argnums=0).lower(state, batch).compile()
    compile_s = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    state, m = compiled(state, batch)
    jax.block_until_ready(m)
    times = []
    for _ in range(steps):
      t0 = time.perf_counter()
      state, m = compiled(state, batch)
      jax.block_until_ready(m)
      times.append(time.perf_counter() - t0)
  gib = lambda n: round(n / 2**30, 3)
  d = config.data
  tokens = views * (d.input_size // config.model.patch) ** 2
  return [processor, views, tokens, round(compile_s, 1), round(float(np.median(times)), 3),
          gib(mem.temp_size_in_bytes), gib(mem.argument_size_in_bytes)]


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--config", default="configs/long_lrm.py:tiny")
  p.add_argument("--views", nargs="+", type=int, default=[4, 8, 16, 32])
  p.add_argument("--processors", nargs="+", default=["hybrid", "transformer"])
  p.add_argument("--steps", type=int, default=3)
  p.add_argument("--overrides", nargs="*", default=[])
  p.add_argument("--no-append", action="store_true")
  p.add_argument("--isa", default="")  # read by common.set_isa_from_argv
  a = p.parse_args()
  rows = [bench_row(a.config, v, proc, a.steps, a.overrides)
          for v in a.views for proc in a.processors]
  # Time per input view, and its ratio to the same processor's at the fewest views (the
  # issue's bar for the hybrid: at most 1.3x at 32 views against 4).
  first = {}
  for r in rows:
    per_view = r[4] / r[1]
    first.setdefault(r[0], per_view)
    r[5:5] = [round(1000 * per_view, 1), round(per_view / first[r[0]], 2)]
  common.report(f"Long-LRM step vs views ({a.config}"
                + (f" {' '.join(a.overrides)}" if a.overrides else "") + ")",
                ["processor", "views", "tokens", "compile s", "step s", "ms/view",
                 f"per view vs {min(a.views)} views", "temp GiB", "args GiB"], rows,
                append=not a.no_append)


if __name__ == "__main__":
  main()
