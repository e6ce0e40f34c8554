"""DL3DV (nerfstudio ``transforms.json`` + ``images_4``) -> Long-LRM's scene JSON, undistorted.

  python -m lrm_jax.data.dl3dv --scenes=DL3DV/1K/*/nerfstudio --out=data/dl3dv \
      [--images=images_4] [--scene_list=data/dl3dv/scenes.txt]

Per scene: the frames' OpenGL c2w (``transform_matrix``) become OpenCV w2c; the intrinsics
(``fl_x fl_y cx cy`` of ``w x h``) are scaled to the ``images_4`` size; the OPENCV lens
distortion (``k1 k2 p1 p2``) is removed by resampling each image with the same pinhole
intrinsics (every output pixel is pushed through the distortion model to its source point:
no inverse model needed). Writes ``OUT/<scene>/images/*.png`` and ``OUT/<scene>.json``
(:mod:`lrm_jax.data.scene_list` format), frames in file-name order, and the scene list.
"""

from __future__ import annotations

import glob
import json
import os

import numpy as np
from PIL import Image

from lrm_jax import cameras as cam
from lrm_jax.data import scene_list
from lrm_jax.errors import DataError


def distort(x: np.ndarray, y: np.ndarray, k1: float, k2: float, p1: float, p2: float):
  """OpenCV's radial-tangential model on normalised coordinates ``x, y``."""
  r2 = x * x + y * y
  radial = 1.0 + k1 * r2 + k2 * r2 * r2
  xd = x * radial + 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x)
  yd = y * radial + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y
  return xd, yd


def undistort_image(image: np.ndarray, intrinsics, coeffs) -> np.ndarray:
  """``image [H, W, C]`` float seen through the distortion ``coeffs (k1, k2, p1, p2)`` ->
  the pinhole image with the same ``intrinsics (fx, fy, cx, cy)`` (bilinear, edges
  clamped)."""
  h, w = image.shape[:2]
  fx, fy, cx, cy = intrinsics
  v, u = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5  # pixel centres
  xd, yd = distort((u - cx) / fx, (v - cy) / fy, *coeffs)
  su = np.clip(xd * fx + cx - 0.5, 0, w - 1)
  sv = np.clip(yd * fy + cy - 0.5, 0, h - 1)
  u0, v0 = np.floor(su).astype(np.int64), np.floor(sv).astype(np.int64)
  u1, v1 = np.minimum(u0 + 1, w - 1), np.minimum(v0 + 1, h - 1)
  a, b = (su - u0)[..., None], (sv - v0)[..., None]
  return ((1 - a) * (1 - b) * image[v0, u0] + a * (1 - b) * image[v0, u1]
          + (1 - a) * b * image[v1, u0] + a * b * image[v1, u1])


def convert_scene(scene_dir: str, out_dir: str, images: str = "images_4") -> str:
  """Converts one nerfstudio scene folder; returns the scene JSON path."""
  manifest = os.path.join(scene_dir, "transforms.json")
  try:
    with open(manifest) as f:
      meta = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise DataError(f"{manifest}: cannot read ({e}).") from e
  for key in ("fl_x", "fl_y", "cx", "cy", "w", "h", "frames"):
    if key not in meta:
      raise DataError(f"{manifest}: no {key!r} (a nerfstudio transforms.json has it).")
  coeffs = tuple(float(meta.get(k, 0.0)) for k in ("k1", "k2", "p1", "p2"))
  name = os.path.basename(os.path.normpath(scene_dir))
  if name == "nerfstudio":  # DL3DV's <hash>/nerfstudio layout
    name = os.path.basename(os.path.dirname(os.path.normpath(scene_dir)))
  os.makedirs(os.path.join(out_dir, name, "images"), exist_ok=True)
  frames = sorted(meta["frames"], key=lambda fr: fr["file_path"])
  out_frames = []
  for k, frame in enumerate(frames):
    src = os.path.join(scene_dir, images, os.path.basename(frame["file_path"]))
    if not os.path.isfile(src):
      raise DataError(f"{manifest}: frame {k}: {src} does not exist.")
    img = np.asarray(Image.open(src).convert("RGB"), np.float64) / 255.0
    h, w = img.shape[:2]
    sx, sy = w / float(meta["w"]), h / float(meta["h"])
    intr = (meta["fl_x"] * sx, meta["fl_y"] * sy, meta["cx"] * sx, meta["cy"] * sy)
    if any(coeffs):
      img = undistort_image(img, intr, coeffs)
    rel = os.path.join(name, "images", os.path.splitext(os.path.basename(src))[0] + ".png")
    Image.fromarray(np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)).save(
        os.path.join(out_dir, rel))
    pose = np.asarray(frame["transform_matrix"], np.float64)
    if pose.shape == (3, 4):
      pose = cam.to_homogeneous(pose)
    if pose.shape != (4, 4):
      raise DataError(f"{manifest}: frame {k}: transform_matrix has shape {pose.shape}, "
                      "expected 4x4 or 3x4.")
    c2w = cam.opengl_to_opencv(pose)
    out_frames.append({"file_path": rel, "w2c": cam.c2w_to_w2c(c2w).tolist(), "h": h,
                       "w": w, "fx": intr[0], "fy": intr[1], "cx": intr[2], "cy": intr[3]})
  path = os.path.join(out_dir, name + ".json")
  with open(path, "w") as f:
    json.dump({"scene_name": name, "frames": out_frames}, f)
  return path


def main(argv=None):
  import argparse  # pylint: disable=g-import-not-at-top
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--scenes", required=True, help="glob of nerfstudio scene folders")
  p.add_argument("--out", required=True)
  p.add_argument("--images", default="images_4")
  p.add_argument("--scene_list", default="", help="default: OUT/scenes.txt")
  a = p.parse_args(argv)
  dirs = sorted(glob.glob(a.scenes))
  if not dirs:
    raise SystemExit(f"no scene folder matches {a.scenes!r}")
  os.makedirs(a.out, exist_ok=True)
  jsons = [convert_scene(d, a.out, a.images) for d in dirs]
  listing = a.scene_list or os.path.join(a.out, "scenes.txt")
  scene_list.write_scene_list(listing, jsons)
  print(f"{len(jsons)} scenes -> {listing}")


if __name__ == "__main__":
  main()
