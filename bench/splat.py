"""Gaussian splatting: time, memory and overflow of the rasterizer backends.

python bench/splat.py [--sizes 256,512] [--counts 10000,100000,1000000] [--no-append]

Scenes: N random Gaussians in [-1, 1]^3 (scales 0.01-0.03, opacity 0.05-0.95, random
rotations, SH degree 3), one camera at radius 2.5 with a 50 degree field of view. Each
configuration runs in its own process so the peak RSS is its own. Memory is XLA's
compiled estimate (arguments + outputs + temporaries of the jitted function) and the
process's peak RSS. The backward is the gradient of a weighted sum of rgb, depth and alpha
w.r.t. every Gaussian parameter. The last rows are GRM-shaped inputs (4 views x 128^2
pixel-aligned Gaussians rendered from 4 novel views at 128^2): the default capacity must
drop nothing there.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # pylint: disable=g-import-not-at-top

from bench import common

DENSE_MAX_PAIRS = 1 << 26  # pixel x Gaussian pairs the dense oracle may hold (~256 MB each)


def random_scene(n: int, seed: int = 0):
  from lrm_jax.representations.gaussians import Gaussians  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(seed)
  sh = np.zeros((n, 16, 3), np.float32)
  sh[:, 0] = rng.uniform(-1.5, 1.5, (n, 3))
  sh[:, 1:] = 0.1 * rng.normal(size=(n, 15, 3))
  return Gaussians(rng.uniform(-1, 1, (n, 3)).astype(np.float32),
                   rng.uniform(0.01, 0.03, (n, 3)).astype(np.float32),
                   rng.normal(size=(n, 4)).astype(np.float32),
                   rng.uniform(0.05, 0.95, (n, 1)).astype(np.float32), sh)


def one_camera(size: int):
  from lrm_jax import cameras as cam  # pylint: disable=import-outside-toplevel
  c2w = cam.orbit_cameras(np.asarray([30.0]), np.asarray([20.0]), 2.5)
  k = cam.intrinsics_from_fov(np.deg2rad(50.0), size, size)[None]
  return cam.Cameras(c2w, k, size, size)


def grm_scene(footprint: float = 1.5):
  """4 x 128^2 pixel-aligned Gaussians on a sphere of radius 0.8, and 4 novel cameras."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from lrm_jax import cameras as cam  # pylint: disable=import-outside-toplevel
  from lrm_jax.representations import gaussians as gl  # pylint: disable=import-outside-toplevel
  size = 128
  k = np.tile(cam.intrinsics_from_fov(np.deg2rad(49.1), size, size), (4, 1))
  inputs = cam.Cameras(cam.orbit_cameras(np.asarray([0.0, 90, 180, 270]), np.full(4, 20.0),
                                         2.0), k, size, size)
  origins, dirs = gl.pixel_rays(inputs)  # [4 * 128 * 128, 3]
  b = np.sum(origins * dirs, -1)
  disc = b * b - (np.sum(origins * origins, -1) - 0.64)
  depth = np.where(disc > 0, -b - np.sqrt(np.maximum(disc, 0.0)), 2.5)[:, None]
  n = len(depth)
  rng = np.random.default_rng(0)
  g = gl.Gaussians.from_rgb(
      jnp.asarray(origins + depth * dirs, jnp.float32),
      jnp.asarray(np.broadcast_to(footprint * depth / k[0, 0], (n, 3)), jnp.float32),
      jnp.asarray(rng.normal(size=(n, 4)), jnp.float32),
      jnp.asarray(rng.uniform(0.3, 1.0, (n, 1)), jnp.float32),
      jnp.asarray(rng.uniform(0, 1, (n, 3)), jnp.float32))
  novel = cam.orbit_cameras(np.asarray([45.0, 135, 225, 315]), np.full(4, 30.0), 2.0)
  return g, cam.Cameras(novel, k, size, size)


def _xla_bytes(fn, *args) -> int:
  m = fn.lower(*args).compile().memory_analysis()
  return int(m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes)


def measure(gaussians, cameras, backend: str, repeats: int) -> dict:
  """Forward and forward+backward seconds, XLA bytes, intersections and overflow."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from lrm_jax.render import binning, projection, splatting  # pylint: disable=import-outside-toplevel

  g = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), gaussians)
  render = lambda g: splatting.rasterize(g, cameras, jnp.ones(3), backend=backend)

  def loss(g):
    out = render(g)
    w = jnp.cos(jnp.arange(out["rgb"].size, dtype=jnp.float32)).reshape(out["rgb"].shape)
    return jnp.sum(w * out["rgb"]) + jnp.sum(out["depth"] * out["alpha"]) + jnp.sum(out["alpha"])

  fwd = jax.jit(render)
  bwd = jax.jit(jax.grad(loss))
  out = fwd(g)

  @jax.jit
  def count(g):
    def one(c2w, k):
      proj = projection.project(g, c2w, k, cameras.height, cameras.width)
      bins = binning.bin_gaussians(proj, cameras.height, cameras.width)
      per_tile = bins.tile_ranges[:, 1] - bins.tile_ranges[:, 0]
      return bins.num_intersections, jnp.max(per_tile)
    return jax.vmap(one)(cameras.c2w.reshape(-1, 4, 4), cameras.intrinsics.reshape(-1, 4))

  isects, max_tile = count(g)
  return {
      "fwd_s": common.timeit(fwd, g, repeats=repeats),
      "fwd_bwd_s": common.timeit(bwd, g, repeats=repeats),
      "fwd_mb": _xla_bytes(fwd, g) / 2**20,
      "fwd_bwd_mb": _xla_bytes(bwd, g) / 2**20,
      "isects": int(np.max(isects)),
      "max_per_tile": int(np.max(max_tile)),
      "overflow": int(np.max(out["overflow"])),
      "capacity": binning.default_capacity(g.num, cameras.height, cameras.width),
  }


def worker(spec: str) -> None:
  """Runs one configuration and prints its results as one JSON line."""
  kind, backend, n, size = spec.split(":")
  if kind == "grm":
    g, cams = grm_scene(float(n))
  else:
    g, cams = random_scene(int(n)), one_camera(int(size))
  repeats = 1 if kind == "random" and int(n) >= 1_000_000 else 3
  res = measure(g, cams, backend, repeats)
  res["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  print("RESULT " + json.dumps(res), flush=True)


def run(spec: str) -> dict | None:
  proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", spec],
                        capture_output=True, text=True, check=False)
  for line in proc.stdout.splitlines():
    if line.startswith("RESULT "):
      return json.loads(line[len("RESULT "):])
  print(f"{spec} failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
  return None


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sizes", default="256,512")
  parser.add_argument("--counts", default="10000,100000,1000000")
  parser.add_argument("--no-append", action="store_true")
  parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    worker(args.worker)
    return
  specs = [("random", backend, n, s) for s in args.sizes.split(",")
           for n in args.counts.split(",") for backend in ("tiled", "dense")]
  specs.append(("random", "dense", "10000", "64"))  # a dense case that fits
  specs.append(("random", "tiled", "10000", "64"))
  specs += [("grm", "tiled", "1.5", "128"), ("grm", "tiled", "4.0", "128")]
  rows, skipped = [], []
  for spec in specs:
    kind, backend, n, size = spec
    if backend == "dense" and int(size) ** 2 * int(n) > DENSE_MAX_PAIRS:
      skipped.append(f"{n}@{size}^2")
      continue
    res = run(":".join(spec))
    if res is None:
      continue
    label = (f"GRM 4x128^2 px-aligned, scale {n} px, 4 views" if kind == "grm"
             else f"{int(n):,} random")
    rows.append([label, f"{size}^2", backend, res["isects"], res["max_per_tile"],
                 res["capacity"], res["overflow"], round(res["fwd_s"], 3),
                 round(res["fwd_bwd_s"], 3), round(res["fwd_mb"]), round(res["fwd_bwd_mb"]),
                 round(res["rss_mb"])])
    print(rows[-1], flush=True)
  common.report(
      "Gaussian splatting (bench/splat.py)",
      ["scene", "image", "backend", "intersections", "max/tile", "default capacity",
       "overflow", "fwd s", "fwd+bwd s", "fwd XLA MB", "fwd+bwd XLA MB", "peak RSS MB"],
      rows,
      notes=("Random Gaussians in [-1,1]^3, scales 0.01-0.03, opacity 0.05-0.95, SH degree 3, "
             "one camera at radius 2.5 (50 deg FOV); median of 3 timed calls after a warm-up "
             "(1 call for 1M). XLA MB = arguments + outputs + temporaries of the compiled "
             "function; RSS is the worker process's peak. Tiled: 16x16 tiles, chunks of 32 "
             "Gaussians, blocks of 16 tiles, default capacity 16 x N. GRM rows: per-view "
             "maximum over 4 novel views, Gaussian scales 1.5 or 4 pixel footprints. "
             "Dense skipped (more than 2^26 pixel-Gaussian pairs): "
             + (", ".join(skipped) or "none") + f". Load average at the end: "
             f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (shared machines inflate "
             "times)."),
      append=not args.no_append)


if __name__ == "__main__":
  main()
