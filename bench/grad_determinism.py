"""Are the rasteriser's gradients bit-identical from call to call (no XLA flags)?

  python bench/grad_determinism.py [--count 100000] [--size 512] [--backends pallas,tiled]

The backward passes sum per-intersection gradients by Gaussian with a sort and a segmented
scan instead of scatter-adds (render/segments.py), so on a GPU they should not need
``--xla_gpu_deterministic_ops``. For each backend: the gradient of bench/splat.py's loss
w.r.t. every Gaussian parameter, computed by one jitted function three times (the second
and third call after clearing nothing: the same executable) and by a second compilation;
prints whether all of them have the same bits, and the largest difference if not.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from bench import common  # noqa: E402
from bench import splat as splat_bench  # noqa: E402
from lrm_jax.render import splatting  # noqa: E402


def check(backend: str, count: int, size: int) -> list:
  """``[backend, count, size, identical, max abs diff, max abs grad]``."""
  g = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), splat_bench.random_scene(count))
  cams = splat_bench.one_camera(size)
  options = ({"interpret": True}
             if backend == "pallas" and jax.default_backend() == "cpu" else {})

  def loss(g):
    out = splatting.rasterize(g, cams, jnp.ones(3), backend=backend, **options)
    w = jnp.cos(jnp.arange(out["rgb"].size, dtype=jnp.float32)).reshape(out["rgb"].shape)
    # pylint: disable-next=protected-access
    return splat_bench._loss(w, out["rgb"], out["depth"] * out["alpha"], out["alpha"])

  grad = jax.jit(jax.grad(loss))
  runs = [jax.tree.map(np.asarray, grad(g)) for _ in range(3)]
  again = jax.jit(jax.grad(loss))  # a second compilation of the same function
  runs.append(jax.tree.map(np.asarray, again(g)))
  leaves = [jax.tree.leaves(r) for r in runs]
  same = all(np.array_equal(a, b) for other in leaves[1:] for a, b in zip(leaves[0], other))
  diff = max(float(np.max(np.abs(a - b))) for other in leaves[1:]
             for a, b in zip(leaves[0], other))
  scale = max(float(np.max(np.abs(a))) for a in leaves[0])
  return [backend, count, f"{size}^2", same, diff, scale]


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--count", type=int, default=100_000)
  p.add_argument("--size", type=int, default=512)
  p.add_argument("--backends", default="pallas,tiled")
  p.add_argument("--out", default="", help="also write the table to this file")
  args = p.parse_args()
  flags = os.environ.get("XLA_FLAGS", "")
  rows = []
  for b in args.backends.split(","):
    rows.append(check(b, args.count, args.size))
    print(rows[-1], flush=True)  # partial results survive a timeout
  text = common.report(
      "Gradient determinism (bench/grad_determinism.py)",
      ["backend", "Gaussians", "image", "bit-identical (4 calls, 2 compilations)",
       "max abs diff", "max abs grad"], rows,
      notes=f"XLA_FLAGS={flags!r}. Random scene and loss of bench/splat.py.", append=False)
  if args.out:
    with open(args.out, "w") as f:
      f.write(text)


if __name__ == "__main__":
  main()
