"""One image -> LRM input: mask, recentre, rescale, composite, resize; canonical camera.

  load_input("photo.png", config) -> {images [1, S, S, 3], masks [1, S, S, 1],
                                       c2w [1, 4, 4], intrinsics [1, 4]}

Preprocessing as OpenLRM/LGM do it for in-the-wild images:

1. Mask: the alpha channel of an RGBA image. For an RGB image, pixels that differ from a
   uniform border colour (the image's background) by more than ``tolerance``; when the
   border is not uniform, or that leaves almost nothing or almost everything, the whole
   image is the object (no recentring).
2. Composite on ``config.data.background`` (premultiplied by the mask).
3. Recentre: the mask's bounding box is centred in a square canvas whose side makes the
   box's longest side ``frame_fill`` of the frame (``config.data.frame_fill``; by default
   the median over our synthetic training views, so inputs look like training inputs).
4. Resize to ``config.data.input_size`` (area averaging when shrinking).

The camera is OpenLRM's canonical source camera: at ``(0, -d, 0)`` looking along +y, z up,
with ``d`` and the field of view at the middle of the training ranges
(``config.data.camera_radius``, ``config.data.fov_deg``).
"""

from __future__ import annotations

import math
import os

import numpy as np

from lrm_jax import cameras as cam
from lrm_jax.data import view_sampling
from lrm_jax.io import images as image_io

# Median longest mask-bbox side / image side over synthetic training views (0.47).
FRAME_FILL = 0.47
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def estimate_mask(rgb: np.ndarray, tolerance: float = 0.08,
                  min_fraction: float = 0.005, max_fraction: float = 0.95) -> np.ndarray:
  """Foreground ``[H, W]`` of an RGB image against a uniform border colour.

  The background colour is the median of the one-pixel border; it counts as uniform when
  90% of the border is within ``tolerance`` of it. Returns all ones (the whole image) when
  the border is not uniform or the foreground covers less than ``min_fraction`` or more
  than ``max_fraction`` of the image.
  """
  border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])  # [P, 3]
  color = np.median(border, axis=0)
  near = np.max(np.abs(border - color), axis=-1) <= tolerance
  whole = np.ones(rgb.shape[:2], np.float32)
  if near.mean() < 0.9:
    return whole
  fg = (np.max(np.abs(rgb - color), axis=-1) > tolerance).astype(np.float32)
  if not min_fraction <= fg.mean() <= max_fraction:
    return whole
  return fg


def recenter(rgb: np.ndarray, mask: np.ndarray, fill: float,
             background) -> tuple[np.ndarray, np.ndarray]:
  """Centres the mask's bounding box in a square canvas where its longest side is ``fill``.

  Args:
    rgb: ``[H, W, 3]`` already composited on ``background``; mask: ``[H, W]`` in [0, 1].
    fill: fraction of the canvas side taken by the box's longest side, in (0, 1].
  Returns:
    ``(rgb [L, L, 3], mask [L, L])`` with ``L = ceil(longest side / fill)``.
  """
  if not 0.0 < fill <= 1.0:
    raise ValueError(f"frame_fill must be in (0, 1], got {fill}.")
  rows = np.where((mask > 0.5).any(1))[0]
  cols = np.where((mask > 0.5).any(0))[0]
  if rows.size == 0:
    raise ValueError("the image's mask is empty: nothing to reconstruct.")
  top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
  h, w = bottom - top, right - left
  side = max(h, w)
  size = max(int(math.ceil(side / fill)), side)
  out_rgb = np.empty((size, size, 3), np.float32)
  out_rgb[:] = np.asarray(background, np.float32)
  out_mask = np.zeros((size, size), np.float32)
  y0, x0 = (size - h) // 2, (size - w) // 2
  out_rgb[y0:y0 + h, x0:x0 + w] = rgb[top:bottom, left:right]
  out_mask[y0:y0 + h, x0:x0 + w] = mask[top:bottom, left:right]
  return out_rgb, out_mask


def source_camera(config, size: int) -> tuple[np.ndarray, np.ndarray]:
  """``(c2w [4, 4], intrinsics [4])``: the canonical source camera at the training range's
  middle distance and field of view, for a ``size x size`` image."""
  d = config.data
  distance = float(np.mean(d.camera_radius))
  fov = float(np.mean(d.fov_deg))
  c2w = cam.canonical_openlrm_source_c2w(distance).astype(np.float32)
  return c2w, cam.intrinsics_from_fov(np.deg2rad(fov), size, size)


def preprocess(rgb: np.ndarray, alpha: np.ndarray | None, config) -> dict:
  """``rgb [H, W, 3]`` (+ alpha) -> ``{image [S, S, 3], mask [S, S, 1]}``."""
  d = config.data
  bg = np.asarray(d.background, np.float32)
  mask = estimate_mask(rgb) if alpha is None else alpha.astype(np.float32)
  composited = rgb * mask[..., None] + bg * (1.0 - mask[..., None])
  if mask.min() < 1.0:  # an object on a background: recentre and rescale it
    composited, mask = recenter(composited, mask, float(d.get("frame_fill", FRAME_FILL)), bg)
  else:  # the whole image is the object: centre-crop to a square
    h, w = mask.shape
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    composited, mask = composited[top:top + s, left:left + s], mask[top:top + s, left:left + s]
  size = d.input_size
  image = np.clip(view_sampling.resize_image(composited, size), 0.0, 1.0)
  mask = np.clip(view_sampling.resize_image(mask[..., None], size), 0.0, 1.0)
  return {"image": image.astype(np.float32), "mask": mask.astype(np.float32)}


def load_input(path: str, config) -> dict:
  """An image file (or the first image of a folder) -> one canonical LRM input view.

  Returns ``{images [1, S, S, 3], masks [1, S, S, 1], c2w [1, 4, 4], intrinsics [1, 4]}``
  with ``S = config.data.input_size``.
  """
  if os.path.isdir(path):
    names = sorted(n for n in os.listdir(path) if n.lower().endswith(IMAGE_SUFFIXES))
    if not names:
      raise FileNotFoundError(f"{path}: no image files ({', '.join(IMAGE_SUFFIXES)}).")
    path = os.path.join(path, names[0])
  rgb, alpha = image_io.read_image(path)
  alpha = None if alpha is None else alpha[..., 0]
  view = preprocess(rgb, alpha, config)
  c2w, intrinsics = source_camera(config, config.data.input_size)
  return {"images": view["image"][None], "masks": view["mask"][None], "c2w": c2w[None],
          "intrinsics": intrinsics[None]}
