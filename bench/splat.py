"""Gaussian splatting: time, memory and overflow of the rasterizer backends.

python bench/splat.py [--sizes 256,512] [--counts 10000,100000,1000000] [--no-append]
                      [--backends tiled,dense] [--peer gsplat] [--only-random] [--isa AVX2]

Scenes: N random Gaussians in [-1, 1]^3 (scales 0.01-0.03, opacity 0.05-0.95, random
rotations, SH degree 3), one camera at radius 2.5 with a 50 degree field of view. Each
configuration runs in its own process so the peak RSS is its own. Memory is XLA's
compiled estimate (arguments + outputs + temporaries of the jitted function) and the
process's peak RSS. The backward is the gradient of a weighted sum of rgb, depth and alpha
w.r.t. every Gaussian parameter. The last rows are GRM-shaped inputs (4 views x 128^2
pixel-aligned Gaussians rendered from 4 novel views at 128^2): the default capacity must
drop nothing there.

``--peer=gsplat``: where gsplat (nerfstudio-project/gsplat, PyTorch + CUDA) imports and
CUDA is available, each random scene is also rendered by ``gsplat.rasterization`` in the
same worker (same Gaussians, SH degree 3, cameras, background, "classic" mode, 0.3
low-pass, near plane 0.01), timed forward and forward+backward with the same loss, and
its image compared with ours (PSNR of rgb clipped to [0, 1]); the table gets ours/gsplat
ratios. Elsewhere the peer columns say n/a.
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

common.set_isa_from_argv()  # before jax is imported (the workers inherit XLA_FLAGS)

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
  # pylint: disable-next=import-outside-toplevel
  from lrm_jax.render import binning, projection, splatting

  g = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), gaussians)
  # Pallas runs in its interpreter on CPU (slow: tiny sizes only, to test this script).
  options = ({"interpret": True}
             if backend == "pallas" and jax.default_backend() == "cpu" else {})
  render = lambda g: splatting.rasterize(g, cameras, jnp.ones(3), backend=backend, **options)

  def loss(g):
    out = render(g)
    w = jnp.cos(jnp.arange(out["rgb"].size, dtype=jnp.float32)).reshape(out["rgb"].shape)
    return _loss(w, out["rgb"], out["depth"] * out["alpha"], out["alpha"])

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
  res = {"rgb": np.asarray(out["rgb"])}
  return res | {
      "fwd_s": common.timeit(fwd, g, repeats=repeats),
      "fwd_bwd_s": common.timeit(bwd, g, repeats=repeats),
      "fwd_mb": _xla_bytes(fwd, g) / 2**20,
      "fwd_bwd_mb": _xla_bytes(bwd, g) / 2**20,
      "isects": int(np.max(isects)),
      "max_per_tile": int(np.max(max_tile)),
      "overflow": int(np.max(out["overflow"])),
      "capacity": binning.default_capacity(g.num, cameras.height, cameras.width),
  }


def _loss(weights, rgb, depth_times_alpha, alpha):
  """The scalar both renderers differentiate (jax or torch arrays): rgb with
  pixel-varying ``weights = cos(0, 1, 2, ...)``, the alpha-weighted depth and the alpha."""
  return (weights * rgb).sum() + depth_times_alpha.sum() + alpha.sum()


def gsplat_available() -> str | None:
  """None if gsplat can run here, else why not."""
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    return "no torch"
  if not torch.cuda.is_available():
    return "no CUDA"
  try:
    import gsplat  # pylint: disable=import-outside-toplevel
    del gsplat  # importable is all we need to know here
  except ImportError as e:
    return f"no gsplat ({e})"
  return None


def measure_gsplat(gaussians, cameras, repeats: int) -> dict:
  """gsplat.rasterization on the same scene: seconds and its rgb ``[V, H, W, 3]``.

  Conventions matched to ours: viewmats are world-to-camera (the inverse of our OpenCV
  c2w), Ks from (fx, fy, cx, cy), quaternions wxyz, opacities ``[N]``, colours as SH
  ``[N, K, 3]`` with ``sh_degree`` (3DGS evaluation, +0.5 and clamped at 0, as ours),
  pixel centres at +0.5 (both), "classic" mode, eps2d = our 0.3 low-pass, near plane 0.01.
  gsplat's tile footprint is opacity-aware, so rare faint edge pixels differ.
  """
  import time  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  from gsplat import rasterization  # pylint: disable=import-outside-toplevel

  dev = torch.device("cuda")
  t = lambda x: torch.as_tensor(np.asarray(x, np.float32), device=dev)
  params = {"means": t(gaussians.means), "quats": t(gaussians.quats),
            "scales": t(gaussians.scales), "opacities": t(gaussians.opacities)[:, 0],
            "colors": t(gaussians.sh)}
  c2w = np.asarray(cameras.c2w, np.float64).reshape(-1, 4, 4)
  viewmats = t(np.linalg.inv(c2w))
  k = np.asarray(cameras.intrinsics, np.float32).reshape(-1, 4)
  ks = np.zeros((len(k), 3, 3), np.float32)
  ks[:, 0, 0], ks[:, 1, 1], ks[:, 0, 2], ks[:, 1, 2] = k[:, 0], k[:, 1], k[:, 2], k[:, 3]
  ks[:, 2, 2] = 1.0
  ks = t(ks)
  bg = torch.ones((len(k), 3), device=dev)
  sh_degree = int(round(np.sqrt(gaussians.sh.shape[-2]))) - 1

  def render(p):
    out, alpha, _ = rasterization(
        p["means"], p["quats"], p["scales"], p["opacities"], p["colors"], viewmats, ks,
        cameras.width, cameras.height, near_plane=0.01, eps2d=0.3, sh_degree=sh_degree,
        packed=False, backgrounds=bg, render_mode="RGB+ED", rasterize_mode="classic")
    return out[..., :3], out[..., 3:4] * alpha, alpha  # rgb, depth * alpha, alpha

  def fwd():
    with torch.no_grad():
      return render(params)[0]

  leaves = {name: v.clone().requires_grad_(True) for name, v in params.items()}

  def fwd_bwd():
    for v in leaves.values():
      v.grad = None
    rgb, depth_times_alpha, alpha = render(leaves)
    w = torch.cos(torch.arange(rgb.numel(), dtype=torch.float32, device=dev)).reshape(rgb.shape)
    _loss(w, rgb, depth_times_alpha, alpha).backward()
    return leaves["means"].grad

  def timeit(fn):
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
      t0 = time.perf_counter()
      fn()
      torch.cuda.synchronize()
      times.append(time.perf_counter() - t0)
    return float(np.median(times))

  rgb = fwd().cpu().numpy()
  return {"peer_fwd_s": timeit(fwd), "peer_fwd_bwd_s": timeit(fwd_bwd), "peer_rgb": rgb}


def psnr(a, b) -> float:
  """PSNR (dB) of two images in [0, 1] (clipped)."""
  mse = float(np.mean((np.clip(a, 0, 1) - np.clip(b, 0, 1)) ** 2))
  return float("inf") if mse == 0 else -10.0 * np.log10(mse)


def worker(spec: str) -> None:
  """Runs one configuration and prints its results as one JSON line."""
  kind, backend, n, size, peer = spec.split(":")
  if kind == "grm":
    g, cams = grm_scene(float(n))
  else:
    g, cams = random_scene(int(n)), one_camera(int(size))
  repeats = 1 if kind == "random" and int(n) >= 1_000_000 else 3
  res = measure(g, cams, backend, repeats)
  rgb = res.pop("rgb")
  if peer == "gsplat":
    why = gsplat_available()
    if why is None:
      peer_res = measure_gsplat(g, cams, max(repeats, 3))
      res["psnr_vs_peer"] = psnr(rgb.reshape(peer_res["peer_rgb"].shape),
                                 peer_res.pop("peer_rgb"))
      res.update(peer_res)
    else:
      res["peer_why"] = why
  res["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  print("RESULT " + json.dumps(res), flush=True)


def run(spec: str) -> dict | None:
  # JAX and PyTorch share the GPU in one worker: no JAX preallocation of its memory.
  env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false")
  proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", spec],
                        capture_output=True, text=True, check=False, env=env)
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
  parser.add_argument("--backends", default="tiled,dense",
                      help="comma-separated: tiled, dense, pallas")
  parser.add_argument("--peer", default="", choices=["", "gsplat"],
                      help="also render and time every random scene with this renderer")
  parser.add_argument("--only-random", action="store_true",
                      help="skip the fixed 64^2 and GRM rows")
  parser.add_argument("--out", default="", help="also write the table to this file")
  parser.add_argument("--isa", default="", help="cap XLA:CPU's instruction set, e.g. AVX2 "
                      "(an AVX-512/AMX machine then runs the code an AVX2-only CPU would)")
  parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    worker(args.worker)
    return
  backends = args.backends.split(",")
  specs = [("random", backend, n, s) for s in args.sizes.split(",")
           for n in args.counts.split(",") for backend in backends]
  if not args.only_random:
    specs.append(("random", "dense", "10000", "64"))  # a dense case that fits
    specs.append(("random", "tiled", "10000", "64"))
    specs += [("grm", "tiled", "1.5", "128"), ("grm", "tiled", "4.0", "128")]
  rows, skipped, peer_notes = [], [], set()
  for spec in specs:
    kind, backend, n, size = spec
    if backend == "dense" and int(size) ** 2 * int(n) > DENSE_MAX_PAIRS:
      skipped.append(f"{n}@{size}^2")
      continue
    res = run(":".join(spec + ((args.peer if kind == "random" else ""),)))
    if res is None:
      continue
    label = (f"GRM 4x128^2 px-aligned, scale {n} px, 4 views" if kind == "grm"
             else f"{int(n):,} random")
    row = [label, f"{size}^2", backend, res["isects"], res["max_per_tile"],
           res["capacity"], res["overflow"], round(res["fwd_s"], 4),
           round(res["fwd_bwd_s"], 4), round(res["fwd_mb"]), round(res["fwd_bwd_mb"]),
           round(res["rss_mb"])]
    if args.peer:
      if "peer_fwd_s" in res:
        row += [round(res["peer_fwd_s"], 4), round(res["peer_fwd_bwd_s"], 4),
                round(res["fwd_s"] / res["peer_fwd_s"], 2),
                round(res["fwd_bwd_s"] / res["peer_fwd_bwd_s"], 2),
                round(res["psnr_vs_peer"], 2)]
      else:
        row += ["n/a"] * 5
        peer_notes.add(res.get("peer_why", "not run for this scene"))
    rows.append(row)
    print(rows[-1], flush=True)
  header = ["scene", "image", "backend", "intersections", "max/tile", "default capacity",
            "overflow", "fwd s", "fwd+bwd s", "fwd XLA MB", "fwd+bwd XLA MB", "peak RSS MB"]
  if args.peer:
    header += [f"{args.peer} fwd s", f"{args.peer} fwd+bwd s", "fwd ours/peer",
               "fwd+bwd ours/peer", "PSNR ours vs peer dB"]
  text = common.report(
      "Gaussian splatting (bench/splat.py)",
      header,
      rows,
      notes=("Random Gaussians in [-1,1]^3, scales 0.01-0.03, opacity 0.05-0.95, SH degree 3, "
             "one camera at radius 2.5 (50 deg FOV); median of 3 timed calls after a warm-up "
             "(1 call for 1M). XLA MB = arguments + outputs + temporaries of the compiled "
             "function; RSS is the worker process's peak. Tiled: 16x16 tiles, chunks of 32 "
             "Gaussians, blocks of 16 tiles, default capacity 16 x N. Pallas on a CPU: "
             "interpreted. GRM rows: per-view "
             "maximum over 4 novel views, Gaussian scales 1.5 or 4 pixel footprints. "
             "Dense skipped (more than 2^26 pixel-Gaussian pairs): "
             + (", ".join(skipped) or "none") + f". Load average at the end: "
             f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (shared machines inflate "
             "times)."
             + (f" Peer {args.peer}: " + ("; ".join(sorted(peer_notes)) or "ran")
                + " (gsplat 'classic' mode, packed=False, same loss; PSNR of rgb in [0, 1])."
                if args.peer else "")),
      append=not args.no_append)
  if args.out:
    with open(args.out, "w") as f:
      f.write(text)


if __name__ == "__main__":
  main()
