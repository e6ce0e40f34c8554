"""Render a standard 3DGS ``.ply`` from the cameras of a scene folder.

  python -m lrm_jax.render --ply=SCENE.ply --cameras=DIR --out=OUT \\
      [--backend=tiled|dense|pallas] [--width=W] [--height=H] [--background=white]

``DIR`` is any layout the folder source reads (Blender ``transforms.json``,
``opencv_cameras.json``, OpenLRM ``pose/`` + ``intrinsics.npy``); images need not exist.
Writes ``OUT/<name>.png`` (colour over the background) and ``OUT/depth_<name>.npy``
(``[H, W]`` float32 expected camera z, 0 where nothing was drawn) for every camera, and
prints the intersection count and overflow of each view. The intersection buffer is
sized from a counting pass over all cameras, so nothing is dropped.
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from lrm_jax import cameras as cameras_lib
from lrm_jax.io import images
from lrm_jax.io import ply
from lrm_jax.render import binning, projection, splatting

_BACKGROUNDS = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0)}


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(
      prog="python -m lrm_jax.render",
      description="Render a standard 3D Gaussian splatting .ply (e.g. from graphdeco 3DGS, "
                  "gsplat or lrm_jax.reconstruct) from the cameras of a scene folder.")
  p.add_argument("--ply", required=True, help="3DGS .ply file (any SH degree up to 3).")
  p.add_argument("--cameras", required=True,
                 help="scene folder with transforms.json, opencv_cameras.json or OpenLRM "
                      "pose/ + intrinsics.npy; images are not needed.")
  p.add_argument("--out", required=True, help="output folder for <name>.png and "
                                              "depth_<name>.npy.")
  p.add_argument("--backend", default="tiled", choices=splatting.BACKENDS,
                 help="rasterizer: tiled (jnp, CPU default), dense (oracle, tiny images "
                      "only) or pallas (GPU/TPU kernel). Default: %(default)s.")
  p.add_argument("--width", type=int, default=None,
                 help="render width in pixels (intrinsics are scaled; the height follows "
                      "the aspect ratio unless --height is given). Default: the cameras'.")
  p.add_argument("--height", type=int, default=None, help="render height in pixels.")
  p.add_argument("--background", default="black",
                 help="'white', 'black' or 'r,g,b' in [0, 1]. Default: %(default)s.")
  p.add_argument("--capacity", type=int, default=None,
                 help="intersection buffer per view; default: the largest count over all "
                      "views (measured first), so nothing is dropped.")
  return p.parse_args(argv)


def parse_background(text: str) -> np.ndarray:
  if text in _BACKGROUNDS:
    return np.asarray(_BACKGROUNDS[text], np.float32)
  try:
    rgb = np.asarray([float(v) for v in text.split(",")], np.float32)
  except ValueError:
    rgb = np.zeros(0)
  if rgb.shape != (3,):
    raise SystemExit(f"--background must be white, black or r,g,b; got {text!r}.")
  return rgb


def output_size(height: int, width: int, new_height: int | None,
                new_width: int | None) -> tuple[int, int]:
  """Render size: the cameras' own, or the requested one (aspect kept if one is given)."""
  if new_height is None and new_width is None:
    return height, width
  if new_height is None:
    return max(1, round(height * new_width / width)), new_width
  if new_width is None:
    return new_height, max(1, round(width * new_height / height))
  return new_height, new_width


def _round_up(x: int, multiple: int = 1 << 16) -> int:
  return max(multiple, -(-x // multiple) * multiple)


def render_scene(gaussians, c2w, intrinsics, height: int, width: int, *, backend: str,
                 background, capacity: int | None = None):
  """Renders unbatched Gaussians from cameras ``[V]``, one view at a time.

  Yields ``(index, out)`` with numpy ``rgb [H, W, 3]``, ``depth [H, W, 1]``,
  ``alpha [H, W, 1]``, ``overflow`` and ``intersections`` per view. No Gaussians render
  the background.
  """
  if len(gaussians.means) == 0:
    empty = {"rgb": np.broadcast_to(np.asarray(background, np.float32), (height, width, 3)),
             "depth": np.zeros((height, width, 1), np.float32),
             "alpha": np.zeros((height, width, 1), np.float32), "overflow": 0,
             "intersections": 0}
    for v in range(len(c2w)):
      yield v, dict(empty)
    return
  g = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), gaussians)

  # Gaussians are arguments, not closure constants: 1M of them must not land in the HLO.
  @jax.jit
  def count(g, c2w_one, k_one):
    proj = projection.project(g, c2w_one, k_one, height, width)
    return binning.count_intersections(proj, height, width)

  c2w = jnp.asarray(c2w, jnp.float32)
  intrinsics = jnp.asarray(intrinsics, jnp.float32)
  counts = [int(count(g, c2w[v], intrinsics[v])) for v in range(len(c2w))]
  if capacity is None:
    # Rounded up so scenes of similar size share one compiled program.
    capacity = _round_up(max(counts + [1]))

  @jax.jit
  def render(g, c2w_one, k_one):
    cams = cameras_lib.Cameras(c2w_one, k_one, height, width)
    return splatting.rasterize(g, cams, jnp.asarray(background), backend=backend,
                               capacity=capacity)

  for v in range(len(c2w)):
    out = jax.tree.map(np.asarray, render(g, c2w[v], intrinsics[v]))
    out["intersections"] = counts[v]
    yield v, out


def _file_name(name: str) -> str:
  return name.replace(os.sep, "_").replace("/", "_")


def main(argv=None) -> int:
  args = parse_args(argv)
  from lrm_jax.data.sources import load_cameras  # pylint: disable=import-outside-toplevel
  t0 = time.time()
  g = ply.load_ply(args.ply)
  names, c2w, intrinsics, cam_h, cam_w = load_cameras(args.cameras)
  height, width = output_size(cam_h, cam_w, args.height, args.width)
  intrinsics = cameras_lib.resize_intrinsics(np.asarray(intrinsics, np.float32),
                                             (cam_h, cam_w), (height, width))
  if g.num == 0:
    print(f"{args.ply}: 0 Gaussians: every view is the background.")
  print(f"{args.ply}: {g.num} Gaussians, SH degree {g.sh_degree}; {len(names)} cameras "
        f"from {args.cameras}, rendering {width}x{height} with the {args.backend} backend.")
  os.makedirs(args.out, exist_ok=True)
  total_overflow = 0
  for v, out in render_scene(g, c2w, intrinsics, height, width, backend=args.backend,
                             background=parse_background(args.background),
                             capacity=args.capacity):
    base = _file_name(names[v])
    images.save_png(os.path.join(args.out, base + ".png"), out["rgb"])
    depth = np.where(out["alpha"][..., 0] > 1e-4, out["depth"][..., 0], 0.0)
    np.save(os.path.join(args.out, f"depth_{base}.npy"), depth.astype(np.float32))
    total_overflow += int(out["overflow"])
    print(f"  {base}: {out['intersections']} intersections, overflow {int(out['overflow'])}")
  print(f"wrote {len(names)} views to {args.out} in {time.time() - t0:.1f} s; "
        f"total overflow {total_overflow}.")
  return 0


if __name__ == "__main__":
  from lrm_jax import cli
  raise SystemExit(cli.report_user_errors(main)(None))
