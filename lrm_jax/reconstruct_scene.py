"""Reconstruct a scene (Long-LRM-style families, ``data.frame_window`` set): inputs spread
over the scene's frames, the scene normalised by them, held-out frames rendered.

Called by :func:`lrm_jax.reconstruct.reconstruct` for a folder (or scene JSON) input when
the config is scene-level. Frames are loaded at the model's view size, ``data.input_hw``
(H x W: the centre window of that aspect ratio, resized; :func:`folder.resize_view`) or
the ``data.input_size`` square, and everything is rendered at that size. Writes
``gaussians.ply`` (pruned by opacity), ``heldout/*.png`` (render | ground truth of every
frame that is not an input), ``views.png`` (inputs | re-rendered inputs | held-out
renders) and ``flythrough.mp4`` (a path through the input cameras).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from lrm_jax import cameras as cam
from lrm_jax.data import scene_sampling
from lrm_jax.data import view_sampling
from lrm_jax.io import images as image_io
from lrm_jax.io import video


def scene_views(path: str, config) -> tuple[dict, dict]:
  """``(inputs, heldout)`` views of a scene folder: ``num_input_views`` frames evenly
  spread, the rest held out; cameras normalised by the inputs (Long-LRM). Views are
  ``[V, H, W, 3]`` at :func:`view_sampling.view_hw` (``data.input_hw`` or the
  ``input_size`` square)."""
  from lrm_jax.data.folder import FolderScenes  # pylint: disable=g-import-not-at-top
  d = config.data
  src = FolderScenes(path, resolution=view_sampling.view_hw(d, "inputs"),
                     background=tuple(d.background),
                     allow_outside_paths=d.get("allow_outside_paths", False))
  ex = src[0]
  n = ex["images"].shape[0]
  idx = scene_sampling.evenly(n, d.num_input_views)
  if len(idx) < d.num_input_views:
    raise ValueError(f"{path}: {n} frames, but the model takes {d.num_input_views} inputs.")
  rest = np.setdiff1d(np.arange(n), idx)
  pick = lambda i: {k: ex[k][i] for k in ("images", "masks", "depths", "c2w", "intrinsics")}
  return scene_sampling.normalize_views(pick(idx), pick(rest))


def reconstruct_scene(run, path: str, out: str, frames: int = 48) -> dict:
  """Runs ``run`` (:func:`train.inference.load_trained`) on the scene at ``path``."""
  from lrm_jax.io import export  # pylint: disable=g-import-not-at-top
  config, model, params, fam = run.config, run.model, run.params, run.family
  inputs, heldout = scene_views(path, config)
  keys = ("images", "masks", "c2w", "intrinsics")
  batched = {k: jnp.asarray(inputs[k])[None] for k in keys}
  rep = jax.jit(lambda p, x: model.apply({"params": p}, x, method=model.reconstruct))(
      params, batched)
  paths = export.export(rep, out, fam.mesh_field(model, params, rep, config))
  bg = jnp.asarray(config.data.background, jnp.float32)
  render = jax.jit(lambda p, r, c: model.apply({"params": p}, r, c, bg, method=model.render))
  height, width = inputs["images"].shape[1:3]

  def render_views(c2w, intr, chunk=8):
    # Chunks of one size (the last padded with its final camera): one compile for all.
    rgb = []
    for i in range(0, len(c2w), chunk):
      c, k = c2w[i:i + chunk], intr[i:i + chunk]
      pad = lambda x: np.concatenate([x, np.repeat(x[-1:], chunk - len(x), axis=0)])
      cams = cam.Cameras(jnp.asarray(pad(c))[None], jnp.asarray(pad(k))[None], height, width)
      rgb.append(np.asarray(render(params, rep, cams)["rgb"][0])[:len(c)])
    return np.concatenate(rgb)

  held = render_views(heldout["c2w"], heldout["intrinsics"]) if len(heldout["c2w"]) else []
  os.makedirs(os.path.join(out, "heldout"), exist_ok=True)
  for i, (r, gt) in enumerate(zip(held, heldout["images"])):
    image_io.save_png(os.path.join(out, "heldout", f"{i:03d}.png"), image_io.grid([[r, gt]]))
  path_c2w = cam.interpolate_path(inputs["c2w"], frames)
  fly = render_views(path_c2w, np.tile(inputs["intrinsics"][:1], (frames, 1)))
  paths["flythrough"] = video.write_video(os.path.join(out, "flythrough.mp4"), fly, fps=24)
  again = render_views(inputs["c2w"], inputs["intrinsics"])
  k = min(len(again), 8)
  rows = [list(inputs["images"][:k]), list(again[:k])]
  if len(held):
    rows.append(list(held[np.linspace(0, len(held) - 1, k).astype(int)]))
  paths["views"] = image_io.save_png(os.path.join(out, "views.png"), image_io.grid(rows))
  if len(held):
    mse = np.mean((np.clip(held, 0, 1) - heldout["images"]) ** 2, axis=(1, 2, 3))
    paths["heldout_psnr"] = float(np.mean(-10 * np.log10(np.maximum(mse, 1e-10))))
  paths["checkpoint_step"] = run.step
  return paths
