"""grain random-access sources, chosen by a spec string.

  synthetic                  procedural objects rendered exactly (the embedded default)
  rooms                      procedural rooms, frames along a camera path (scene level)
  heads                      animatable synthetic heads with expression codes (Avat3r)
  head_folder:DIR            multi-view head captures with expression codes (Avat3r)
  mesh:PATH.obj              a textured mesh rendered from random cameras
  folder:DIR                 posed images on disk (transforms.json, opencv_cameras.json, OpenLRM)
  tfds:NAME[:DATA_DIR]       an ArrayRecord dataset written by lrm_jax.data.tfds_builder

Every source returns the example dicts documented in :mod:`lrm_jax.data`.
"""

from __future__ import annotations

import os

from lrm_jax.data import folder as folder_lib
from lrm_jax.data import view_sampling

SPLITS = ("train", "eval", "test")


class Subset:
  """A random-access view of some indices of another source (picklable)."""

  def __init__(self, source, indices):
    self.source = source
    self.indices = list(indices)

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, idx: int) -> dict:
    return self.source[self.indices[idx]]

  def __repr__(self) -> str:
    return f"Subset({self.source!r}, {len(self.indices)} of {len(self.source)})"


def _check_split(split: str) -> str:
  if split not in SPLITS:
    raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}.")
  return split


def orbit_views(data_config) -> int:
  """Views of a rendered scene on the structured input ring (``data.orbit_inputs``)."""
  return int(data_config.num_input_views) if data_config.get("orbit_inputs", False) else 0


def view_size(data_config):
  """The size the rooms and folder sources give views at: ``data.input_hw`` as ``(H, W)``
  when it is set, else the ``data.render_size`` square (an int)."""
  return view_sampling.configured_hw(data_config) or data_config.render_size


def make_source(spec: str, data_config, split: str = "train", seed: int = 0):
  """A random-access source for ``spec`` (see module docstring) and ``split``.

  ``data_config`` is a config's ``data`` section (``render_size``, ``views_per_scene``,
  ``background``, camera ranges, ...). With ``data.input_hw = (H, W)`` the rooms and folder
  sources give ``H x W`` views (:func:`view_size`); the others render ``render_size``
  squares, which the view sampler refuses for a non-square ``input_hw``. Train, eval and
  test splits never share a scene: synthetic and mesh sources seed them apart; folder
  sources hold out the last ``eval_fraction`` of the scenes (a single-scene folder is used
  for every split).
  """
  _check_split(split)
  d = data_config
  kind, _, arg = spec.partition(":")
  if kind == "synthetic":
    from lrm_jax.data.synthetic import SyntheticObjects
    n = d.num_train_scenes if split == "train" else d.num_eval_scenes
    return SyntheticObjects(split="val" if split == "eval" else split, num_scenes=n,
                            views_per_scene=d.views_per_scene, resolution=d.render_size,
                            background=tuple(d.background),
                            camera_radius=tuple(d.camera_radius), fov_deg=tuple(d.fov_deg),
                            seed=seed, orbit_views=orbit_views(d),
                            supersample=int(d.get("supersample", 1)),
                            elevation_deg=tuple(d.elevation_deg))
  if kind == "rooms":  # scene-level synthetic (Long-LRM): frames along a camera path
    from lrm_jax.data.rooms import SyntheticRooms
    n = d.num_train_scenes if split == "train" else d.num_eval_scenes
    return SyntheticRooms(split="val" if split == "eval" else split, num_scenes=n,
                          views_per_scene=d.views_per_scene, resolution=view_size(d),
                          seed=seed, supersample=int(d.get("supersample", 1)))
  if kind == "heads":  # Avat3r: identities at several expressions
    from lrm_jax.data.heads import SyntheticHeads
    n = d.num_train_scenes if split == "train" else d.num_eval_scenes
    return SyntheticHeads(split="val" if split == "eval" else split, num_scenes=n,
                          views_per_scene=d.views_per_scene,
                          num_input_views=d.num_input_views, resolution=d.render_size,
                          background=tuple(d.background), seed=seed,
                          num_identities=int(d.get("num_identities", 0)))
  if kind == "head_folder":
    if not arg:
      raise ValueError("source 'head_folder:DIR' needs a folder.")
    from lrm_jax.data import head_folder
    return head_folder.source_for_split(arg, d, split, seed)
  if kind == "mesh":
    if not arg:
      raise ValueError("source 'mesh:PATH.obj' needs a path.")
    if not os.path.isfile(arg):
      raise FileNotFoundError(f"mesh source: {arg} does not exist.")
    from lrm_jax.data.meshes import MeshViews
    n = d.num_train_scenes if split == "train" else d.num_eval_scenes
    return MeshViews(arg, split="val" if split == "eval" else split, num_scenes=n,
                     views_per_scene=d.views_per_scene, resolution=d.render_size,
                     background=tuple(d.background), camera_radius=tuple(d.camera_radius),
                     fov_deg=tuple(d.fov_deg), seed=seed, up_axis=d.up_axis,
                     orbit_views=orbit_views(d), elevation_deg=tuple(d.elevation_deg))
  if kind == "folder":
    if not arg:
      raise ValueError("source 'folder:DIR' needs a folder.")
    src = folder_lib.FolderScenes(arg, resolution=view_size(d), background=tuple(d.background),
                                  transparent_views=d.get("transparent_views", "warn"),
                                  allow_outside_paths=d.get("allow_outside_paths", False))
    n = len(src)
    if split != "train" and d.get("eval_index", ""):
      # DL3DV-140 protocol: k-means inputs, every 8th frame a target (all scenes evaluated).
      from lrm_jax.data import dl3dv_eval  # pylint: disable=g-import-not-at-top
      names = [os.path.splitext(os.path.basename(os.path.normpath(s)))[0] for s in src.scenes]
      return dl3dv_eval.ProtocolScenes(src, names, d.eval_index, d.num_input_views,
                                       d.num_target_views)
    if n == 1:
      return src
    n_eval = max(1, int(round(n * d.eval_fraction)))
    idx = range(n - n_eval) if split == "train" else range(n - n_eval, n)
    return Subset(src, idx)
  if kind == "tfds":
    from lrm_jax.data.tfds_source import TfdsScenes
    name, _, data_dir = arg.partition(":")
    if not name:
      raise ValueError("source 'tfds:NAME[:DATA_DIR]' needs a dataset name.")
    return TfdsScenes(name, "train" if split == "train" else "validation", data_dir or None)
  raise ValueError(f"unknown data source {spec!r}; expected synthetic, rooms, heads, "
                   "mesh:PATH.obj, folder:DIR, head_folder:DIR or tfds:NAME[:DATA_DIR].")


def load_cameras(root: str):
  """Cameras of a scene folder in any supported layout, for rendering.

  Returns ``(names [V], c2w [V, 4, 4] OpenCV, intrinsics [V, 4] pixels, height, width)``.
  Images need not exist (only the camera file is read).
  """
  scene = folder_lib.read_scene_cameras(root, need_images=False)
  return scene.names, scene.c2w, scene.intrinsics, scene.height, scene.width
