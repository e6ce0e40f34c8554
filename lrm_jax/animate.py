"""Animate an Avat3r avatar: 4 posed head images + a sequence of expression codes -> video.

  python -m lrm_jax.animate --workdir=W --input=DIR --expressions=FILE --out=OUT
      [--orbit | --yaw=DEG]

``--input``: one subject in the head-folder layout (:mod:`lrm_jax.data.head_folder`): its
first 4 views (at any frames) are the inputs. ``--expressions``: a ``.npy`` ``[T, E]`` or a
JSON list of ``T`` codes of the model's ``E`` numbers. Writes ``OUT/animation.mp4`` (the first
input camera; with ``--orbit`` a yaw sweep around the head; with ``--yaw`` one camera at that
yaw), ``OUT/frames/%04d.png``,
``OUT/strip.png`` (at most :data:`STRIP_FRAMES` frames, evenly spaced, side by side, each
scaled up to at least 128 pixels) and ``OUT/avatar_neutral.ply`` (the Gaussians at the
all-zero code).
"""

from __future__ import annotations

import json
import os

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from lrm_jax import cameras
from lrm_jax.data import head_folder
from lrm_jax.io import export
from lrm_jax.io import images as image_io
from lrm_jax.io import ply
from lrm_jax.io import video
from lrm_jax.train import inference

STRIP_FRAMES = 8


def _define_flags():
  """Command-line flags (defined only when run as a command, so the module imports beside
  the other CLIs, e.g. under one pytest worker)."""
  flags.DEFINE_string("workdir", None, "A trained Avat3r run (configs/avat3r.py).")
  flags.DEFINE_string("input", None, "A head-folder subject dir (cameras.json + frames).")
  flags.DEFINE_string("expressions", None, ".npy [T, E] or JSON list of T expression codes.")
  flags.DEFINE_string("out", None, "Output folder.")
  flags.DEFINE_bool("orbit", False, "Sweep the camera in yaw (+-40 degrees) while animating.")
  flags.DEFINE_float("yaw", None, "One camera at this yaw (degrees about world z from the "
                     "face direction +x, pitch 5, the first input's distance) instead of the "
                     "first input's camera.")
  flags.DEFINE_integer("fps", 12, "Video frame rate.")


def read_expressions(path: str, dims: int) -> np.ndarray:
  """``[T, dims]`` float32 codes from a ``.npy`` or JSON file (clear errors otherwise)."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"--expressions: {path} does not exist.")
  if path.endswith(".npy"):
    codes = np.load(path)
  elif path.endswith(".json"):
    with open(path) as f:
      codes = np.asarray(json.load(f))
  else:
    raise ValueError(f"--expressions: {path} must be a .npy or .json file.")
  codes = np.asarray(codes, np.float32)
  if codes.ndim == 1:
    codes = codes[None]
  if codes.ndim != 2 or codes.shape[1] != dims or codes.shape[0] == 0:
    raise ValueError(f"--expressions: {path} holds shape {list(codes.shape)}; the model "
                     f"needs [T, {dims}] (T >= 1 codes of {dims} numbers).")
  return codes


def frame_strip(frames: np.ndarray, max_frames: int = STRIP_FRAMES,
                min_size: int = 128) -> np.ndarray:
  """``[T, H, W, 3] -> [H * s + 4, n * (W * s + 2) + 2, 3]``: ``n = min(T, max_frames)``
  frames evenly spaced from the first to the last, side by side (:func:`images.grid`, 2
  pixels apart), each scaled up by the integer ``s`` that brings its height to at least
  ``min_size`` (nearest neighbour)."""
  t, h = frames.shape[:2]
  picks = np.unique(np.round(np.linspace(0, t - 1, min(t, max_frames))).astype(int))
  s = max(1, -(-min_size // h))
  big = np.repeat(np.repeat(frames[picks], s, axis=1), s, axis=2)  # [n, H*s, W*s, 3]
  return image_io.grid([list(big)])


def load_inputs(subject_dir: str, config) -> dict:
  """The first 4 views of a head-folder subject as a batch of one (``inputs`` fields)."""
  d = config.data
  src = head_folder.HeadFolder(os.path.dirname(os.path.abspath(subject_dir)),
                               [os.path.basename(os.path.abspath(subject_dir))],
                               d.render_size, d.num_input_views + 1, d.num_input_views)
  ex = src[0]
  n = d.num_input_views
  return {k: ex[k][None, :n] for k in ("images", "masks", "depths", "c2w", "intrinsics",
                                        "positions", "expression", "target_expression",
                                        "landmarks")}


def animate(workdir: str, input_dir: str, expressions: str, out: str, orbit: bool = False,
            fps: int = 12, yaw: float | None = None) -> dict:
  """Renders the animation; returns the paths written, the frames ``[T, H, W, 3]`` and
  their cameras (``c2w [T, 4, 4]``, ``intrinsics [T, 4]``)."""
  if orbit and yaw is not None:
    raise ValueError("animate: --orbit and --yaw exclude each other.")
  run = inference.load_trained(workdir)
  if run.config.model_name != "avat3r":
    raise ValueError(f"--workdir={workdir} is a {run.config.model_name!r} run; animate needs "
                     "an Avat3r run (configs/avat3r.py).")
  dims = int(run.config.model.expression_dims)
  codes = read_expressions(expressions, dims)
  inputs = load_inputs(input_dir, run.config)
  size = inputs["images"].shape[2]
  model = run.model
  c2w0 = inputs["c2w"][0, 0]
  radius = float(np.linalg.norm(c2w0[:3, 3]))
  t = len(codes)
  if orbit:
    sweep = 40.0 * np.sin(np.linspace(0, 2 * np.pi, t, endpoint=False))
    c2w = cameras.orbit_cameras(sweep, np.full(t, 5.0), radius).astype(np.float32)
  elif yaw is not None:
    c2w = cameras.orbit_cameras(np.full(t, float(yaw)), np.full(t, 5.0),
                                radius).astype(np.float32)
  else:
    c2w = np.broadcast_to(c2w0, (t, 4, 4)).astype(np.float32)
  k = np.broadcast_to(inputs["intrinsics"][0, 0], (t, 4)).astype(np.float32)
  bg = jnp.asarray(run.config.data.background, jnp.float32)

  @jax.jit
  def frame(params, inputs, code, c2w, k):
    inputs = dict(inputs, target_expression=jnp.broadcast_to(
        code, inputs["target_expression"].shape))
    g = model.apply({"params": params}, inputs, method=model.reconstruct)
    cams = cameras.Cameras(c2w[None, None], k[None, None], size, size)
    return model.apply({"params": params}, g, cams, bg, method=model.render)["rgb"][0, 0], g

  os.makedirs(os.path.join(out, "frames"), exist_ok=True)
  frames = []
  for i in range(t):
    rgb, _ = frame(run.params, inputs, codes[i], c2w[i], k[i])
    rgb = np.clip(np.asarray(rgb), 0.0, 1.0)
    frames.append(rgb)
    image_io.save_png(os.path.join(out, "frames", f"{i:04d}.png"), rgb)
  strip_path = os.path.join(out, "strip.png")
  image_io.save_png(strip_path, frame_strip(np.stack(frames)))
  _, neutral = frame(run.params, inputs, np.zeros(dims, np.float32), c2w[0], k[0])
  ply_path = ply.save_ply(os.path.join(out, "avatar_neutral.ply"), export.first_scene(neutral))
  vid = video.write_video(os.path.join(out, "animation.mp4"),
                          [image_io.to_uint8(f) for f in frames], fps=fps)
  return {"video": vid, "ply": ply_path, "strip": strip_path, "frames": np.stack(frames),
          "c2w": c2w, "intrinsics": k}


def main(argv):
  del argv
  for name in ("workdir", "input", "expressions", "out"):
    if not getattr(flags.FLAGS, name):
      raise app.UsageError(f"--{name} is required (python -m lrm_jax.animate --help).")
  res = animate(flags.FLAGS.workdir, flags.FLAGS.input, flags.FLAGS.expressions,
                flags.FLAGS.out, flags.FLAGS.orbit, flags.FLAGS.fps, flags.FLAGS.yaw)
  print(f"wrote {res['video']}, {res['strip']}, {res['ply']} and {len(res['frames'])} "
        "frames.")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
