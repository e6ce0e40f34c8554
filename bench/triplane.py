"""Triplane volume rendering throughput: rays/s forward and forward+backward.

python bench/triplane.py [--rays 4096] [--no-append]

Samples per ray are split half stratified, half importance (OpenLRM); planes are 64x64 with
32 (OpenLRM small) or 80 (large) channels, one scene, the 4-layer hidden-64 decoder. The
backward pass is the gradient of an MSE on rgb w.r.t. planes and decoder parameters.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp

from bench import common
from lrm_jax.render import triplane as tp


def _rays(num_rays: int, key):
  """Rays from a sphere of radius 2.2 towards random points near the origin."""
  k1, k2 = jax.random.split(key)
  origins = jax.random.normal(k1, (num_rays, 3))
  origins = 2.2 * origins / jnp.linalg.norm(origins, axis=-1, keepdims=True)
  targets = 0.5 * jax.random.uniform(k2, (num_rays, 3), minval=-1.0, maxval=1.0)
  dirs = targets - origins
  return origins, dirs / jnp.linalg.norm(dirs, axis=-1, keepdims=True)


def bench_one(num_rays: int, samples: int, channels: int, size: int = 64):
  """Returns (forward rays/s, forward+backward rays/s)."""
  decoder = tp.TriplaneDecoder()
  params = decoder.init(jax.random.key(0), jnp.zeros((1, 3 * channels)))
  planes = 0.1 * jax.random.normal(jax.random.key(1), (1, 3, size, size, channels))
  origins, dirs = _rays(num_rays, jax.random.key(2))
  origins, dirs = origins[None], dirs[None]
  target = jnp.full((1, num_rays, 3), 0.5)
  config = tp.RenderConfig(num_coarse=samples // 2, num_fine=samples - samples // 2,
                           chunk=num_rays)
  key = jax.random.key(3)

  forward = jax.jit(lambda planes, params: tp.render_rays(
      decoder.apply, params, planes, origins, dirs, config, key)["rgb"])

  def loss(planes, params):
    rgb = tp.render_rays(decoder.apply, params, planes, origins, dirs, config, key)["rgb"]
    return jnp.mean((rgb - target) ** 2)

  backward = jax.jit(jax.grad(loss, (0, 1)))
  t_fwd = common.timeit(forward, planes, params)
  t_bwd = common.timeit(backward, planes, params)
  return num_rays / t_fwd, num_rays / t_bwd


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rays", type=int, default=4096)
  parser.add_argument("--no-append", action="store_true")
  args = parser.parse_args()
  load = os.getloadavg()[0]
  rows = []
  for channels in (32, 80):
    for samples in (64, 128):
      fwd, bwd = bench_one(args.rays, samples, channels)
      rows.append([f"64x64x{channels}", samples, args.rays, round(fwd), round(bwd),
                   f"{fwd * samples / 1e6:.2f}", f"{bwd * samples / 1e6:.2f}"])
  common.report(
      "Triplane rendering throughput (bench/triplane.py)",
      ["planes", "samples/ray", "rays/batch", "fwd rays/s", "fwd+bwd rays/s",
       "fwd Msamples/s", "fwd+bwd Msamples/s"],
      rows,
      notes=("Half stratified, half importance samples; decoder 4x64 ReLU; one scene; "
             "median of 3 timed calls after a warm-up; backward = grad of rgb MSE w.r.t. "
             f"planes and decoder. Load average at start {load:.1f} on "
             f"{os.cpu_count()} cores (shared machine: >2 means these are pessimistic)."),
      append=not args.no_append)


if __name__ == "__main__":
  main()
