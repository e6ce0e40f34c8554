"""Mesh extraction from a triplane NeRF: time and peak memory of a 384^3 density grid.

python bench/mesh_extract.py [--resolution 384] [--triplane DIR/triplane.npz] [--no-append]

Each case runs in a fresh subprocess so its peak resident memory (``ru_maxrss``) is its own:
density grid (chunked), marching cubes, decoder vertex colours, OBJ + GLB writing. Without
``--triplane`` the planes are a smooth random field (3x64x64x32) with a random-init decoder
and the iso-level is the grid's 99th percentile (a blobby surface); with a triplane saved by
``python -m lrm_jax.fit.triplane`` the fitted field and ``--threshold`` are used.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

LIMIT_GB = 4.0


def _random_triplane(channels: int = 32, size: int = 64):
  """A smooth random triplane (random field upsampled 8x) and a random-init decoder."""
  import jax
  import jax.numpy as jnp
  from lrm_jax.render import triplane as tp

  coarse = jax.random.normal(jax.random.key(0), (3, size // 8, size // 8, channels))
  planes = jax.image.resize(coarse, (3, size, size, channels), "cubic")
  decoder = tp.TriplaneDecoder()
  params = decoder.init(jax.random.key(1), jnp.zeros((1, 3 * channels)))
  return decoder, planes, params


def child(args) -> dict:
  """One extraction; returns timings, mesh size and peak RSS (GB) of this process."""
  import numpy as np
  from lrm_jax.io import mesh as mesh_io
  from lrm_jax.render import triplane as tp

  if args.triplane:
    from lrm_jax.fit.triplane import load_triplane
    decoder, params = load_triplane(args.triplane)
    planes, dec_params, threshold = params["planes"], params["decoder"], args.threshold
  else:
    decoder, planes, dec_params = _random_triplane()
    threshold = None
  density = lambda p, pl, pr: decoder.apply(pr, tp.sample_triplane(pl, p))[0]
  color = lambda p, pl, pr: decoder.apply(pr, tp.sample_triplane(pl, p))[1]
  t0 = time.perf_counter()
  grid = mesh_io.extract_density_grid(density, args.resolution, args=(planes, dec_params))
  t_grid = time.perf_counter() - t0
  if threshold is None:
    threshold = float(np.percentile(grid[::4, ::4, ::4], 99))
  t0 = time.perf_counter()
  vertices, faces = mesh_io.marching_cubes(grid, threshold)
  t_mc = time.perf_counter() - t0
  del grid
  t0 = time.perf_counter()
  colors = mesh_io.evaluate_points(color, vertices, args=(planes, dec_params))
  t_color = time.perf_counter() - t0
  t0 = time.perf_counter()
  with tempfile.TemporaryDirectory() as tmp:
    mesh_io.write_obj(os.path.join(tmp, "m.obj"), vertices, faces, colors)
    mesh_io.write_glb(os.path.join(tmp, "m.glb"), vertices, faces, colors)
  t_write = time.perf_counter() - t0
  peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
  return {"grid_s": t_grid, "mc_s": t_mc, "color_s": t_color, "write_s": t_write,
          "vertices": int(len(vertices)), "faces": int(len(faces)),
          "threshold": threshold, "peak_rss_gb": peak_gb,
          "planes": "x".join(str(s) for s in planes.shape)}


def run_case(args, extra: list[str]) -> dict:
  cmd = [sys.executable, os.path.abspath(__file__), "--child",
         f"--resolution={args.resolution}"] + extra
  out = subprocess.run(cmd, check=True, capture_output=True, text=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--resolution", type=int, default=384)
  parser.add_argument("--triplane", default="", help="triplane.npz from lrm_jax.fit.triplane")
  parser.add_argument("--threshold", type=float, default=10.0)
  parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--no-append", action="store_true")
  args = parser.parse_args()
  if args.child:
    print(json.dumps(child(args)))
    return

  from bench import common

  cases = [("random smooth field, 99th-percentile level", [])]
  if args.triplane:
    cases.append((f"fitted ({os.path.basename(os.path.dirname(os.path.abspath(args.triplane)))}"
                  f"), level {args.threshold:g}",
                  [f"--triplane={args.triplane}", f"--threshold={args.threshold}"]))
  load = os.getloadavg()[0]
  rows = []
  for name, extra in cases:
    r = run_case(args, extra)
    total = r["grid_s"] + r["mc_s"] + r["color_s"] + r["write_s"]
    rows.append([name, r["planes"], f"{args.resolution}^3", f"{r['grid_s']:.1f}",
                 f"{r['mc_s']:.1f}", f"{r['color_s']:.1f}", f"{r['write_s']:.1f}",
                 f"{total:.1f}", r["vertices"], f"{r['peak_rss_gb']:.2f}",
                 "yes" if r["peak_rss_gb"] < LIMIT_GB else "NO"])
  common.report(
      "Mesh extraction (bench/mesh_extract.py)",
      ["field", "planes", "grid", "density s", "marching cubes s", "colours s", "write s",
       "total s", "vertices", "peak RSS GB", f"< {LIMIT_GB:g} GB"],
      rows,
      notes=("Density grid filled in blocks of x-slabs, 65536 points per lax.map step; "
             "peak RSS of a fresh subprocess (includes the jax runtime); decoder 4x64. "
             f"Load average at start {load:.1f} on {os.cpu_count()} cores (shared "
             "machine: >2 means the times are pessimistic)."),
      append=not args.no_append)


if __name__ == "__main__":
  main()
