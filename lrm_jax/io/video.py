"""Turntable videos: mp4 through imageio-ffmpeg (bundled binary), GIF as the fallback."""

from __future__ import annotations

import os

import numpy as np

from lrm_jax.io.images import to_uint8


def write_video(path: str, frames: np.ndarray | list, fps: int = 24) -> str:
  """Writes float ``[T, H, W, 3]`` frames in [0, 1] to ``path`` (``.mp4`` or ``.gif``).

  If ``.mp4`` cannot be written (no ffmpeg), writes a ``.gif`` next to it instead and returns
  that path.
  """
  import imageio.v2 as imageio

  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  frames = [to_uint8(f) for f in frames]
  if path.endswith(".mp4"):
    try:
      # Even sizes for yuv420p; macro_block_size=1 keeps the frame size as given.
      with imageio.get_writer(path, fps=fps, codec="libx264", quality=8,
                              macro_block_size=1, pixelformat="yuv420p") as w:
        for f in frames:
          h, wd = f.shape[0] // 2 * 2, f.shape[1] // 2 * 2
          w.append_data(f[:h, :wd])
      return path
    except Exception:  # pylint: disable=broad-except
      path = path[:-4] + ".gif"
  imageio.mimsave(path, frames, duration=1.0 / fps, loop=0)
  return path
