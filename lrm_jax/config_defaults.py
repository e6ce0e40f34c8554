"""Config defaults shared by every family, and the parser of a config file's argument.

Every family config (``configs/<family>.py``) does::

  from lrm_jax import config_defaults as common

  def get_config(arg=None):
    arg = common.parse_arg(arg, variant="base", runlocal=False)
    config = common.base_config()
    ...

``arg`` is the string after ``:`` in ``--config=configs/grm.py:tiny`` or
``--config=configs/grm.py:variant=paper,runlocal=True``. A bare word (``tiny``) is the
variant. Values are parsed with the type of the default; unknown keys raise.
"""

from __future__ import annotations

import ml_collections

from lrm_jax.config_values import parse_value as _parse_value
from lrm_jax.errors import ConfigError


def parse_arg(arg: str | None, **spec) -> ml_collections.ConfigDict:
  """Parses ``"tiny"`` / ``"variant=paper,runlocal=True"`` against defaults in ``spec``.

  A bare token sets ``variant`` if ``spec`` has one, otherwise it must name a boolean key
  (which it sets to True). Unknown keys raise ``ValueError`` listing the known ones.
  """
  out = ml_collections.ConfigDict(dict(spec))
  if not arg:
    return out
  for token in arg.split(","):
    token = token.strip()
    if not token:
      continue
    if "=" in token:
      key, value = token.split("=", 1)
      key = key.strip()
    elif "variant" in spec and not isinstance(spec.get(token), bool):
      key, value = "variant", token
    else:
      key, value = token, "true"
    if key not in spec:
      raise ConfigError(f"unknown config arg {key!r} in {arg!r}; known: {sorted(spec)}.")
    out[key] = _parse_value(key, value, spec[key])
  return out


def check_choice(name: str, value: str, choices) -> str:
  if value not in choices:
    raise ConfigError(f"unknown {name} {value!r}; choose one of {sorted(choices)}.")
  return value


def data_config() -> ml_collections.ConfigDict:
  """Data defaults: the embedded synthetic source, so every command works offline."""
  d = ml_collections.ConfigDict()
  # "synthetic" | "mesh:PATH.obj" | "folder:DIR" | "tfds:NAME[:DATA_DIR]".
  d.source = "synthetic"
  d.render_size = 64  # resolution a source renders/loads views at (before crops)
  d.views_per_scene = 12  # views a source provides per scene
  d.num_input_views = 4
  d.eval_input_views = 0  # input views of evaluation batches (0: num_input_views)
  # Evaluation protocol: "" (the first views are inputs, the next targets), "srn" or "dtu"
  # (pixelNeRF's: fixed input views, every other (not excluded) view a target), and its
  # input views ((): the protocol's own, e.g. SRN 64 then 104).
  d.eval_protocol = ""
  d.eval_protocol_inputs = ()
  d.num_target_views = 4
  d.input_size = 64  # input views are resized to this
  d.target_size = 64  # target views are resized to this ...
  d.target_crop = 0  # ... then randomly cropped to this (0: no crop)
  d.target_crop_stride = 1  # a crop takes every k-th row and column (rays spread out)
  d.target_crop_in_mask = False  # training crops centred inside the target mask's box
  d.background = (1.0, 1.0, 1.0)
  d.batch_size = 2  # global batch (examples); split over processes
  d.num_workers = 0  # grain worker processes (0: in-process)
  d.prefetch = 2  # batches prepared ahead by background threads (0: none)
  d.shuffle = True
  # Synthetic source.
  d.num_train_scenes = 100_000
  d.num_eval_scenes = 8
  d.camera_radius = (2.0, 2.6)
  d.fov_deg = (45.0, 60.0)
  d.elevation_deg = (-20.0, 60.0)  # camera elevation range (degrees above the horizon)
  # Synthetic and mesh sources: render the input views on GRM / Instant3D's structured ring
  # (evenly spaced azimuths at 20 degrees elevation) instead of at random cameras.
  d.orbit_inputs = False
  d.supersample = 1  # synthetic source: s x s rays per pixel, box-filtered (anti-aliasing)
  # Mesh source.
  d.up_axis = "y"  # up axis of the .obj file; our world is z-up
  # Folder/tfds sources: which part holds evaluation scenes ("" to use the same data).
  d.eval_fraction = 0.1
  # Folder sources: an all-transparent view is a "warn"ing or an "error"; camera files may
  # name images outside their scene folder only if allowed.
  d.transparent_views = "warn"
  d.allow_outside_paths = False
  return d


def mesh_config() -> ml_collections.ConfigDict:
  """Device mesh ``(data, fsdp, tensor)``; -1 fills the axis with the remaining devices."""
  m = ml_collections.ConfigDict()
  m.shape = (-1, 1, 1)
  m.axes = ("data", "fsdp", "tensor")
  return m


def logical_axis_rules():
  """Logical axis name -> mesh axes (MaxText style). Models name only logical axes."""
  return (
      ("batch", ("data", "fsdp")),
      ("views", None),
      ("tokens", None),
      ("embed", "fsdp"),
      ("mlp", "tensor"),
      ("heads", "tensor"),
      ("kv", None),
      ("channels", None),
      ("planes", None),
      ("height", None),
      ("width", None),
  )


def base_config() -> ml_collections.ConfigDict:
  """Defaults shared by every family: seed, data, mesh, optimiser, logging, checkpoints."""
  c = ml_collections.ConfigDict()
  c.family = ""
  c.model_name = ""
  c.variant = ""
  c.seed = 0
  c.data = data_config()
  c.mesh = mesh_config()
  c.logical_axis_rules = logical_axis_rules()

  # Image losses every family shares (train/losses.py); depth: rendered vs target depth;
  # l1 and ssim (1 - SSIM) are off unless a family sets them. A family adds the weights of
  # its own regularizers here in its config file.
  c.loss = ml_collections.ConfigDict(dict(mse=1.0, lpips=1.0, mask=1.0, depth=0.0, l1=0.0,
                                          ssim=0.0))
  c.inject_nan_at_step = -1  # testing: make the loss NaN at this step

  c.total_steps = 1000
  c.stop_at_step = -1  # >0: save and exit at this step (job time limits); resume later
  c.optimizer = ml_collections.ConfigDict(dict(
      lr=4e-4, b1=0.9, b2=0.95, weight_decay=0.05, warmup_steps=100, clip_norm=1.0,
      min_lr_ratio=0.0,
      # > 0: evaluation, checkpoints' users (evaluate, reconstruct) and the summary use an
      # exponential moving average of the parameters (state.ema_of_params).
      ema_decay=0.0))

  c.log_every = 10
  c.eval_every = 200
  c.num_eval_batches = 2
  c.checkpoint_every = 200
  c.keep_checkpoints = 3
  c.progress_bar = True

  c.resume = ""  # a checkpoint dir to resume from (train state + data iterator)
  c.init_from = ""  # a checkpoint dir to take parameters from (fresh optimiser, step 0)
  c.lpips_weights = ""  # local path to LPIPS-VGG16 weights; empty turns the loss off
  return c
