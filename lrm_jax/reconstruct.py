"""Reconstruct 3D from your images with a trained checkpoint.

  python -m lrm_jax.reconstruct --workdir=DIR --input=PATH --out=OUT

``PATH`` is one of
  * a folder with cameras (Blender ``transforms.json``, ``opencv_cameras.json`` or OpenLRM
    ``rgba/ pose/ intrinsics.npy``): the model's number of input views are taken, evenly
    spread over the folder's views; cameras are rescaled so they sit at the training radius;
  * ``mesh:FILE.obj``: the mesh rendered from the model's number of views around it (a quick
    way to try a model on any textured object, e.g. ``../shared/data/cow_mesh/cow.obj``);
  * an image file, or a folder of images without cameras, for families that take unposed
    images (``Family.unposed_inputs``; LRM canonicalises the source camera as OpenLRM does).

Writes ``OUT/gaussians.ply`` (Gaussian families; opens in common 3DGS viewers) or
``OUT/mesh.obj`` + ``OUT/mesh.glb`` (triplane families), ``OUT/turntable.mp4`` (or ``.gif``)
and ``OUT/views.png`` (inputs | the inputs re-rendered | novel views).
"""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags, logging

from lrm_jax import cameras as cam
from lrm_jax import cli
from lrm_jax.io import images as image_io
from lrm_jax.io import video



def _define_flags():
  """Command-line flags (defined only when run as a command, so the module imports
  anywhere)."""
  flags.DEFINE_string("workdir", None, "training workdir (config.json + checkpoints)")
  flags.DEFINE_string("input", None, "folder with cameras, mesh:FILE.obj, or an image")
  flags.DEFINE_string("out", None, "output folder")
  flags.DEFINE_integer("frames", 48, "turntable frames")
  flags.DEFINE_integer("resolution", 0, "render resolution (0: the model's input size)")
  flags.DEFINE_string("up_axis", "y", "up axis of a mesh: input (x, y, z, -y, ...)")
  flags.DEFINE_integer("views", 0, "input views to take (0: the model's data.num_input_views; "
                       "families that take any number, e.g. pixelNeRF, accept 1..N)")
  flags.mark_flags_as_required(["workdir", "input", "out"])

CAMERA_RADIUS = 2.3
FOV_DEG = 50.0


def _spread(n_total: int, n: int) -> np.ndarray:
  if n_total < n:
    raise ValueError(f"the input has {n_total} views but the model takes {n}.")
  return np.round(np.linspace(0, n_total, n, endpoint=False)).astype(int)


def inputs_from_folder(path: str, config) -> dict:
  """``num_input_views`` views of a posed-image folder, at the model's input size."""
  from lrm_jax.data.folder import FolderScenes
  d = config.data
  src = FolderScenes(path, resolution=d.input_size, background=tuple(d.background),
                     normalize="object", object_radius=CAMERA_RADIUS,
                     transparent_views=d.get("transparent_views", "warn"),
                     allow_outside_paths=d.get("allow_outside_paths", False))
  ex = src[0]
  idx = _spread(ex["images"].shape[0], config.data.num_input_views)
  return {k: ex[k][idx] for k in ("images", "masks", "c2w", "intrinsics")}


def inputs_from_mesh(path: str, config, up_axis: str) -> dict:
  """The mesh rendered from ``num_input_views`` cameras around it (elevation 20 deg)."""
  from lrm_jax.data import meshes
  mesh = meshes.normalize_mesh(meshes.load_obj(path), up_axis=up_axis)
  v, s = config.data.num_input_views, config.data.input_size
  az = 30.0 + np.arange(v) * 360.0 / v
  c2w = cam.orbit_cameras(az, np.full(v, 20.0), CAMERA_RADIUS).astype(np.float32)
  k = np.tile(cam.intrinsics_from_fov(np.deg2rad(FOV_DEG), s, s), (v, 1))
  rgb, mask, _ = meshes.render_mesh(mesh, c2w, k, s, s, background=tuple(config.data.background))
  return {"images": rgb, "masks": mask, "c2w": c2w, "intrinsics": k}


def load_inputs(spec: str, config, up_axis: str = "y", unposed_inputs=None) -> dict:
  """Input views ``{images [V, S, S, 3], masks, c2w, intrinsics}`` for ``spec``.

  ``unposed_inputs(path, config)``: the family's loader of images without cameras
  (``Family.unposed_inputs``), if it has one.
  """
  if spec.startswith("mesh:"):
    return inputs_from_mesh(spec[5:], config, up_axis)
  if os.path.isdir(spec):
    from lrm_jax.data.folder import is_scene_dir
    if is_scene_dir(spec):
      return inputs_from_folder(spec, config)
  if os.path.exists(spec) and unposed_inputs is not None:
    return unposed_inputs(spec, config)
  if not os.path.exists(spec):
    raise FileNotFoundError(f"--input {spec!r} does not exist.")
  raise ValueError(f"--input {spec!r}: {config.family} takes {config.data.num_input_views} "
                   "posed views: give a folder with cameras (transforms.json, "
                   "opencv_cameras.json, OpenLRM layout) or mesh:FILE.obj.")


def reconstruct(workdir: str, spec: str, out: str, frames: int = 48, resolution: int = 0,
                up_axis: str = "y", views: int = 0) -> dict:
  """Runs the model on the inputs and writes the outputs; returns their paths.

  ``views``: how many input views to take (0: the run's ``data.num_input_views``).
  """
  from lrm_jax.train import inference
  run = inference.load_trained(workdir)
  config = run.config
  if views:
    config = config.copy_and_resolve_references()
    config.data.num_input_views = views
  if config.data.get("frame_window") and os.path.exists(spec) and not spec.startswith("mesh:"):
    from lrm_jax import reconstruct_scene  # scene-level families (Long-LRM)
    return reconstruct_scene.reconstruct_scene(dataclasses.replace(run, config=config), spec,
                                               out, frames)
  inputs = load_inputs(spec, config, up_axis, run.family.unposed_inputs)
  return reconstruct_inputs(run, config, inputs, out, frames, resolution)


def reconstruct_inputs(run, config, inputs: dict, out: str, frames: int = 48,
                       resolution: int = 0) -> dict:
  """Runs ``run``'s model (``inference.Trained``) on one scene's ``inputs`` (the
  :func:`load_inputs` dict, or one row of a batch's ``inputs``) and writes the exports,
  ``turntable.mp4`` and ``views.png`` to ``out``; returns their paths."""
  from lrm_jax.io import export
  model, params, fam = run.model, run.params, run.family
  batched = jax.tree.map(lambda x: jnp.asarray(x)[None], inputs)
  rep = jax.jit(lambda p, x: model.apply({"params": p}, x, method=model.reconstruct))(
      params, batched)
  paths = export.export(rep, out, fam.mesh_field(model, params, rep, config))

  res = resolution or config.data.input_size
  bg = jnp.asarray(config.data.background, jnp.float32)
  k = cam.intrinsics_from_fov(np.deg2rad(FOV_DEG), res, res)
  turn = cam.turntable_cameras(frames, elevation_deg=20.0, radius=CAMERA_RADIUS)
  render = jax.jit(lambda p, r, c: model.apply({"params": p}, r, c, bg, method=model.render))

  def render_views(c2w, intr, size):
    cams = cam.Cameras(jnp.asarray(c2w)[None], jnp.asarray(intr)[None], size, size)
    return np.asarray(jax.device_get(render(params, rep, cams)["rgb"][0]))

  turn_rgb = np.concatenate([render_views(turn[i:i + 8], np.tile(k, (len(turn[i:i + 8]), 1)),
                                          res) for i in range(0, frames, 8)])
  paths["turntable"] = video.write_video(os.path.join(out, "turntable.mp4"), turn_rgb, fps=24)
  s = inputs["images"].shape[1]
  again = render_views(inputs["c2w"], inputs["intrinsics"], s)
  novel_idx = np.linspace(0, frames, 4, endpoint=False).astype(int) + frames // 8
  rows = [list(inputs["images"]), list(again), list(turn_rgb[novel_idx % frames])]
  paths["views"] = image_io.save_png(os.path.join(out, "views.png"), image_io.grid(rows))
  paths["checkpoint_step"] = run.step
  return paths


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  f = flags.FLAGS
  paths = reconstruct(f.workdir, f.input, f.out, f.frames, f.resolution, f.up_axis, f.views)
  for k, v in paths.items():
    print(f"{k}: {v}")


if __name__ == "__main__":
  _define_flags()
  cli.run(main)
