"""Images in and out: reading any image a capture may hold, PNG writing and contact
sheets (pictures for people to look at)."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from lrm_jax.errors import DataError


# 8-bit modes PIL converts to RGB(A) exactly; integer and float modes are scaled by hand.
_RGB_MODES = ("1", "L", "P", "RGB", "CMYK", "YCbCr", "RGBX")
_ALPHA_MODES = ("LA", "La", "RGBA", "RGBa", "PA")
_MAX_16BIT = 65535.0


def _decoded(im: Image.Image, path: str) -> tuple[np.ndarray, np.ndarray | None]:
  """``(rgb [H, W, 3] in [0, 1], alpha [H, W, 1] or None)`` of a loaded PIL image."""
  mode = im.mode
  if mode == "P" and "transparency" in im.info:
    mode = "PA"
  if mode in _ALPHA_MODES:
    arr = np.asarray(im.convert("RGBA"), np.float32) / 255.0
    return arr[..., :3], arr[..., 3:4]
  if mode in _RGB_MODES:
    return np.asarray(im.convert("RGB"), np.float32) / 255.0, None
  if mode.startswith("I;16") or mode == "I":  # 16-bit (PNG) or 32-bit integer grey
    grey = np.asarray(im, np.float64)
    if grey.min() < 0 or grey.max() > _MAX_16BIT:
      raise DataError(f"{path}: {mode} image with values in [{grey.min():.0f}, "
                      f"{grey.max():.0f}]; only 8- and 16-bit images are read (values up "
                      "to 65535).")
    grey = (grey / _MAX_16BIT).astype(np.float32)
  elif mode == "F":  # float grey: must already be in [0, 1]
    grey = np.asarray(im, np.float32)
    if not np.all(np.isfinite(grey)) or grey.min() < 0 or grey.max() > 1:
      raise DataError(f"{path}: 32-bit float image with values outside [0, 1] (or not "
                      f"finite: [{np.nanmin(grey):g}, {np.nanmax(grey):g}]); write it as an "
                      "8- or 16-bit PNG.")
  else:
    raise DataError(f"{path}: image mode {mode!r} is not supported; write it as RGB or RGBA.")
  return np.repeat(grey[..., None], 3, axis=-1), None


def read_image(path: str) -> tuple[np.ndarray, np.ndarray | None]:
  """``(rgb [H, W, 3], alpha [H, W, 1] or None)``, float32 in [0, 1], of an image file.

  Every PIL mode a capture may hold is read exactly: bilevel, grey, grey + alpha, 16-bit
  grey (scaled by 65535), float grey in [0, 1], palette (with transparency), RGB, RGBA,
  CMYK. Anything else, an undecodable file, and an image over PIL's decompression-bomb
  limit raise :class:`DataError` naming the file.
  """
  if not os.path.isfile(path):
    raise DataError(f"{path}: image not found.")
  try:
    with Image.open(path) as im:
      im.load()
      rgb, alpha = _decoded(im, path)
  except Image.DecompressionBombError as e:
    raise DataError(f"{path}: image too large to read safely ({e}).") from e
  except OSError as e:
    raise DataError(f"{path}: cannot decode image ({e}).") from e
  return rgb.astype(np.float32), alpha


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
