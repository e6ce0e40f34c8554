"""Train-step speed and MFU of a family config on this machine.

  python bench/train_step.py [--configs configs/grm.py:tiny configs/grm.py:base] [--steps 3]
      [--isa AVX2]

For each config: compile the trainer's real step (``train.step.make_train_step``) on one batch,
time it, and report step time, images/s and MFU = (FLOPs of the step) / (step time) / (the
matmul peak measured in the same run, right before and after the timed steps (their mean),
2048^3, in the precision of the model's matmuls:
float32, or for ``model.dtype=bfloat16`` bfloat16 operands with float32 accumulation, which
Intel AMX runs ~5x faster than float32). FLOPs are XLA's cost analysis of the step
compiled without rematerialisation and with plain attention (recomputed forward passes
and the blockwise attention's recomputed scores are not useful work), with
scanned layers counted once per layer (``cost_analysis`` counts a ``scan`` body once;
``lrm_jax.aot.jaxpr_flops`` gives the matmul share with the true count, and the difference
is added). Also reports the same for the model alone (reconstruct
forward+backward, no rendering) to separate the two costs.
"""

import argparse
import functools
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import common  # noqa: E402

common.set_isa_from_argv()  # before jax is imported

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from lrm_jax import aot  # noqa: E402
from lrm_jax import parallel  # noqa: E402
from lrm_jax.config_loading import load_config  # noqa: E402
from lrm_jax.data import pipeline  # noqa: E402
from lrm_jax.models import family  # noqa: E402
from lrm_jax.train import setup  # noqa: E402
from lrm_jax.train import state as state_lib  # noqa: E402
from lrm_jax.train import step as step_lib  # noqa: E402


def matmul_peak(dtype=jnp.float32, n: int = 2048, repeats: int = 5) -> float:
  """FLOP/s of an ``n^3`` matmul with ``dtype`` operands and float32 accumulation."""
  a = jax.random.normal(jax.random.key(0), (n, n), dtype)
  f = jax.jit(lambda x: jnp.matmul(x, x, preferred_element_type=jnp.float32))
  jax.block_until_ready(f(a))
  best = min(_time(f, a) for _ in range(repeats))
  return 2 * n ** 3 / best


def _time(f, *args) -> float:
  t0 = time.perf_counter()
  jax.block_until_ready(f(*args))
  return time.perf_counter() - t0


def flops_of(compiled, fn=None, *args) -> float:
  """XLA cost-analysis FLOPs, corrected for scan bodies counted once (see module doc)."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0]
  xla = float(cost.get("flops", 0.0))
  if fn is None:
    return xla
  # Matmul FLOPs with scans unrolled minus the same with each scan body counted once.
  jaxpr = jax.make_jaxpr(fn)(*args).jaxpr
  return xla + aot.jaxpr_flops(jaxpr) - aot.jaxpr_flops(jaxpr, scan_length=False)


def without_recomputation(config):
  """A copy of ``config`` whose model recomputes nothing: no rematerialisation
  (``model.remat_policy``, ``model.render_remat``, window groups) and plain attention (the
  blockwise backward recomputes the scores). Same parameters, same function."""
  config = config.copy_and_resolve_references()
  config.model.remat_policy = "none"
  config.model.render_remat = False
  config.model.attention = "plain"
  if "window_group_min_tokens" in config.model:
    config.model.window_group_min_tokens = 2**62
  return config


def model_flops_of_step(config, tx, state, batch) -> float:
  """FLOPs of the train step as the model defines them: the step compiled without
  recomputation (:func:`without_recomputation`), so recomputed forward passes do not count
  as useful work."""
  config = without_recomputation(config)
  fam = family.get(config)
  fn = step_lib.make_train_step(fam.build(config), fam, config, tx, None)
  return flops_of(jax.jit(fn).lower(state, batch).compile(), fn, state, batch)


def bench_config(spec: str, steps: int, batch: int, overrides=()):
  config = load_config(spec, [f"data.batch_size={batch}", "data.num_workers=0", *overrides])
  dtype = str(config.model.get("dtype", "float32"))
  program = setup.build(config)
  mesh, rules, tx = program.mesh, program.rules, program.tx
  local = next(pipeline.make_iterator(config, spec=program.family.batch_spec(config)))
  with program.mesh_context():
    abstract_boxed, model = program.abstract_boxed, program.model
    state = program.jit_init()(jax.random.key(0))
    batch_arr = parallel.to_global_batch(local, mesh, rules)
    step = jax.jit(program.step_fn, donate_argnums=0)
    t0 = time.perf_counter()
    compiled = step.lower(state, batch_arr).compile()
    compile_s = time.perf_counter() - t0
    state, _ = compiled(state, batch_arr)
    jax.block_until_ready(state)
    # The peak right before and right after the timed steps (this shared machine's speed
    # drifts by +-7% over minutes): the mean of the two.
    peak_before = matmul_peak(jnp.dtype(dtype))
    times = []
    for _ in range(steps):
      t0 = time.perf_counter()
      state, m = compiled(state, batch_arr)
      jax.block_until_ready(m)
      times.append(time.perf_counter() - t0)
    step_s = float(np.median(times))
    peak = 0.5 * (peak_before + matmul_peak(jnp.dtype(dtype)))
    step_flops = model_flops_of_step(config, tx, state, batch_arr)  # after timing

    def model_loss(p, model=model):
      g = model.apply({"params": p}, batch_arr["inputs"], method=model.reconstruct)
      return sum(jnp.mean(x) for x in jax.tree.leaves(g))
    mgrad = jax.jit(jax.grad(model_loss)).lower(state.params).compile()
    jax.block_until_ready(mgrad(state.params))
    model_s = float(np.median([_time(mgrad, state.params) for _ in range(steps)]))
    # FLOPs without recomputation, after timing (as above).
    plain = functools.partial(model_loss, model=program.family.build(
        without_recomputation(config)))
    model_flops = flops_of(jax.jit(jax.grad(plain)).lower(state.params).compile(),
                           jax.grad(plain), state.params)
  d = config.data
  images = d.batch_size * (d.num_input_views + d.num_target_views)
  n_params = state_lib.count_params(abstract_boxed.params)
  return [spec.split("/")[-1], f"{n_params / 1e6:.2f}M", dtype, d.batch_size, d.input_size,
          round(peak / 1e9), round(compile_s, 1), round(step_s, 3), round(images / step_s, 1),
          round(step_flops / 1e9, 2), round(step_flops / step_s / peak, 3),
          round(model_s, 3), round(model_flops / model_s / peak, 3)]


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--configs", nargs="+",
                 default=["configs/grm.py:tiny", "configs/grm.py:base"])
  p.add_argument("--steps", type=int, default=3)
  p.add_argument("--batch", type=int, default=1, help="global batch per step")
  p.add_argument("--overrides", default="",
                 help="comma-separated config overrides for every config, e.g. model.scan=False")
  p.add_argument("--no-append", action="store_true")
  p.add_argument("--isa", default="", help="cap XLA:CPU's instruction set, e.g. AVX2 (an "
                 "AVX-512/AMX machine then runs what an AVX2-only CPU would)")
  args = p.parse_args()
  overrides = tuple(o for o in args.overrides.split(",") if o)
  rows = [bench_config(c, args.steps, args.batch, overrides) for c in args.configs]
  common.report(
      "Train step (train.step.make_train_step)",
      ["config", "params", "matmuls", "batch", "input", "peak GFLOP/s", "compile s",
       "step s", "images/s", "GFLOP/step", "MFU step", "model fwd+bwd s", "MFU model"], rows,
      notes="Peak: a 2048^3 matmul in the row's precision (float32; bfloat16 operands with "
            "float32 accumulation), measured right before and after the timed steps (mean). "
            "Step: median of the timed steps. MFU = XLA cost-analysis FLOPs of "
            "the step without rematerialisation or recomputed attention scores / time / "
            "that peak. 'model' = reconstruct "
            "forward + backward without rendering." +
            (f" Overrides: {', '.join(overrides)}." if overrides else ""),
      append=not args.no_append)


if __name__ == "__main__":
  main()
