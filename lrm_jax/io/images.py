"""PNG writing and contact sheets: pictures for people to look at."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image


def to_uint8(image: np.ndarray) -> np.ndarray:
  """float [0, 1] ``[H, W, C]`` (C in 1, 3, 4) -> uint8 ``[H, W, 3|4]``; NaNs become 0."""
  image = np.nan_to_num(np.asarray(image, np.float32), nan=0.0)
  if image.ndim == 2:
    image = image[..., None]
  if image.shape[-1] == 1:
    image = np.repeat(image, 3, axis=-1)
  return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def save_png(path: str, image: np.ndarray) -> str:
  """Writes a float ``[H, W, C]`` image in [0, 1] as PNG, creating parent folders."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  Image.fromarray(to_uint8(image)).save(path)
  return path


def depth_to_image(depth: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
  """``[H, W, 1]`` depth -> ``[H, W, 3]`` grey image (near = bright), background white."""
  depth = np.asarray(depth, np.float32)[..., 0]
  valid = depth > 0 if mask is None else np.asarray(mask)[..., 0] > 0.5
  out = np.ones(depth.shape + (3,), np.float32)
  if valid.any():
    lo, hi = depth[valid].min(), depth[valid].max()
    norm = 1.0 - (depth - lo) / max(hi - lo, 1e-6)
    out[valid] = (0.15 + 0.7 * norm[valid])[:, None]
  return out


def grid(rows: list[list[np.ndarray]], pad: int = 2, pad_value: float = 1.0) -> np.ndarray:
  """Tiles a list of rows of ``[H, W, C]`` images (C 1 or 3) into one ``[H', W', 3]`` image.

  Images in a row may have different sizes; each cell is padded to the largest.
  """
  cells = [[to_uint8(im).astype(np.float32) / 255.0 for im in row] for row in rows]
  ch = max(im.shape[0] for row in cells for im in row)
  cw = max(im.shape[1] for row in cells for im in row)
  ncol = max(len(row) for row in cells)
  out = np.full((len(cells) * (ch + pad) + pad, ncol * (cw + pad) + pad, 3), pad_value,
                np.float32)
  for r, row in enumerate(cells):
    for c, im in enumerate(row):
      y, x = pad + r * (ch + pad), pad + c * (cw + pad)
      out[y:y + im.shape[0], x:x + im.shape[1]] = im[..., :3]
  return out
