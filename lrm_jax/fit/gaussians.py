"""Per-scene optimisation of 3D Gaussians to posed views; ply, video and metrics out.

  python -m lrm_jax.fit.gaussians --input=mesh:../shared/data/cow_mesh/cow.obj --out=DIR \\
      [--num_views=32 --resolution=128 --num_held_out=4 --steps=3000 --time_limit_s=600 \\
       --config.num_gaussians=10000 --config.sh_degree=1 --config.init=carve --config.seed=0]

The views are one scene (``--scene_index``) of any source spec of
:func:`lrm_jax.data.sources.make_source`; ``--num_held_out`` evenly spaced views are kept
for evaluation (:func:`lrm_jax.fit.common.split_views`), the rest are fitted. A fixed
number of Gaussians (static shapes, one compile) is

  * initialised on the visual hull (``init=carve``): voxel centres of ``[-1, 1]^3`` that
    project inside the (1-pixel dilated) mask of every training view are kept, the hull's
    shell is sampled with jitter, colours are the mean of the pixels the points project to,
    scales the RMS distance to the 3 nearest neighbours (``init=box``: uniform in the box;
    chosen automatically when the masks carve nothing);
  * optimised with Adam at 3DGS-like learning rates, raised for short fits (means
    ``6.4e-4 * extent`` decaying exponentially to 1/100, log-scales ``1e-2``, quaternions
    ``2e-3``, opacity logits ``0.1``, SH DC ``2e-2`` and higher SH bands 1/20 of that) on
    ``(1 - w) L1 + w (1 - SSIM) + mask_weight |alpha - mask|`` of ``views_per_step``
    training views per step (epochs of shuffled views), rendered by
    :func:`lrm_jax.render.splatting.rasterize` (``backend="tiled"``);
  * every ``respawn_every`` steps (in the first ``respawn_until`` of the fit) nearly
    transparent Gaussians are moved onto opaque ones, chosen in proportion to opacity, as in
    3DGS-MCMC's relocation: the ``k`` copies share the opacity, ``1 - (1 - o)^(1 / k)``, so
    the picture barely changes (up to the jitter), and their Adam moments restart. The count
    never changes.

The schedule's progress is the larger of the step and the wall-clock fractions, so the fit
anneals fully whether ``--steps`` or ``--time_limit_s`` ends it. Everything is seeded by
``seed`` (init, view order, respawns; the rasterizer's backward is deterministic), so with
``--time_limit_s=0`` (no clock in the schedule) a fit is reproducible bit for bit. Writes:

  DIR/gaussians.ply    the Gaussians (standard 3DGS layout, :func:`lrm_jax.io.ply.save_ply`)
  DIR/turntable.mp4    (or .gif) a turn around the object at the mean training camera
                       distance and field of view
  DIR/views.png        held-out views: targets (top row) | renders (bottom row)
  DIR/summary.json     psnr, ssim, num_views (held-out views scored) and baseline_psnr as in
                       the trainer's eval block; init_psnr / init_ssim (the initial
                       Gaussians), train_psnr, steps, wall_s, cpu_s, compile_s,
                       num_gaussians, num_gaussians_visible, respawned, options, config,
                       history (see :mod:`lrm_jax.fit.common`)
"""

from __future__ import annotations

import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import flags

from lrm_jax import cameras as cam
from lrm_jax.config_defaults import check_choice
from lrm_jax.errors import ConfigError
from lrm_jax.fit import common
from lrm_jax.io import ply as ply_io
from lrm_jax.render import splatting
from lrm_jax.representations import sh as sh_lib
from lrm_jax.representations.gaussians import Gaussians
from lrm_jax.train import metrics

PROG = "python -m lrm_jax.fit.gaussians"
DEFAULT_STEPS = 3000
INITS = ("carve", "box")
Config = ml_collections.ConfigDict

# (key, default, help) of every hyperparameter, overridable with --config.KEY=VALUE.
HYPERPARAMETERS = (
    ("num_gaussians", 10000, "Gaussians (a fixed count: static shapes)"),
    ("sh_degree", 1, "spherical-harmonics degree of the colours, 0-3"),
    ("init", "carve", "carve: on the visual hull of the masks; box: uniform in [-1, 1]^3 "
     "(carve falls back to box when the masks carve nothing)"),
    ("init_grid", 64, "voxels per side of the carving grid"),
    ("init_opacity", 0.3, "initial opacity"),
    ("init_scale_max", 0.05, "cap on the initial nearest-neighbour scale"),
    ("views_per_step", 1, "training views rendered per step"),
    # Learning rates: 3DGS's (means 1.6e-4, scales 5e-3, quats 1e-3, opacity 5e-2, SH DC
    # 2.5e-3) are tuned for 30k steps; a fit of ~1k steps does better with larger ones
    # (cow, 32 views at 128^2, 600 steps, held-out PSNR 27.70 at 3DGS's, 28.15 at these).
    ("lr_means", 6.4e-4, "learning rate of the means (times the scene extent), decaying "
     "exponentially to lr_means_final"),
    ("lr_means_final", 6.4e-6, "final learning rate of the means (times the scene extent)"),
    ("lr_scales", 1e-2, "learning rate of the log-scales"),
    ("lr_quats", 2e-3, "learning rate of the (unnormalised) quaternions"),
    ("lr_opacity", 0.1, "learning rate of the opacity logits"),
    ("lr_sh", 2e-2, "learning rate of the SH DC; higher bands get lr_sh / 20"),
    ("ssim_weight", 0.2, "loss = (1 - w) L1 + w (1 - SSIM) + mask term"),
    ("mask_weight", 0.3, "weight of |alpha - mask| (only with informative masks)"),
    # Respawning is neutral with the carved init (cow, 600 steps: 28.15 either way) and
    # essential with the box init, where most Gaussians start in empty space (26.09 -> 28.31).
    ("respawn_every", 100, "steps between respawns of transparent Gaussians; 0: never"),
    ("respawn_until", 0.7, "fraction of the fit after which no more respawns"),
    ("respawn_threshold", 0.005, "opacity below which a Gaussian is respawned"),
    ("chunk_size", 32, "tiled rasterizer: Gaussians per compositing step"),
    ("block_tiles", 4, "tiled rasterizer: tiles processed together"),
    ("seed", 0, "seed of the init, the view order and the respawns"),
)

__doc__ += common.describe_config(HYPERPARAMETERS)
flags.adopt_module_key_flags(common)


def default_config() -> Config:
  """The hyperparameters' defaults (:data:`HYPERPARAMETERS`)."""
  return common.config_from_table(HYPERPARAMETERS)


def check_config(config: Config) -> None:
  """Raises ConfigError for a hyperparameter value the fit cannot use."""
  check_choice("init", config.init, INITS)
  try:
    sh_lib.num_sh_bases(config.sh_degree)
  except ValueError as e:
    raise ConfigError(f"config key 'sh_degree': {e}") from None
  if config.num_gaussians < 1 or config.views_per_step < 1:
    raise ConfigError("config keys 'num_gaussians' and 'views_per_step' must be >= 1.")


def scene_extent(c2w: np.ndarray) -> float:
  """3DGS's ``spatial_lr_scale``: 1.1 x the largest camera distance from their centroid."""
  centres = c2w[:, :3, 3]
  return float(1.1 * np.max(np.linalg.norm(centres - centres.mean(0), axis=-1)) + 1e-6)


# ----------------------------------------------------------------------------------------
# Initialisation.
# ----------------------------------------------------------------------------------------


def _lookup(images: np.ndarray, c2w: np.ndarray, intrinsics: np.ndarray, points: np.ndarray):
  """Pixels of ``images [V, H, W, C]`` under ``points [P, 3]``: ``(values [V, P, C],
  inside [V, P])`` (nearest pixel; ``inside`` is in front of the camera and in the image)."""
  v, h, w = images.shape[:3]
  uv, z = cam.project_points(points[None].astype(np.float32), c2w, intrinsics)  # [V, P, 2]
  j = np.floor(uv[..., 0]).astype(np.int64)
  i = np.floor(uv[..., 1]).astype(np.int64)
  inside = (z > 1e-3) & (i >= 0) & (i < h) & (j >= 0) & (j < w)
  flat = (np.arange(v)[:, None] * h + np.clip(i, 0, h - 1)) * w + np.clip(j, 0, w - 1)
  values = images.reshape(v * h * w, -1)[flat]  # [V, P, C]
  return values, inside


def carve_visual_hull(masks: np.ndarray, c2w: np.ndarray, intrinsics: np.ndarray,
                      grid: int = 64, dilate: int = 1) -> np.ndarray:
  """Occupancy ``[grid, grid, grid]`` (bool, axes x, y, z) of the visual hull in [-1, 1]^3.

  A voxel centre survives when, in every view, it projects into the mask (dilated by
  ``dilate`` pixels against pose and sampling error) or outside the image (views that do
  not see it say nothing).
  """
  import scipy.ndimage

  fg = masks[..., 0] > 0.5  # [V, H, W]
  if dilate > 0:
    fg = np.stack([scipy.ndimage.binary_dilation(m, iterations=dilate) for m in fg])
  centres = (np.arange(grid) + 0.5) / grid * 2.0 - 1.0
  pts = np.stack(np.meshgrid(centres, centres, centres, indexing="ij"), -1).reshape(-1, 3)
  occupied = np.ones(len(pts), bool)
  for start in range(0, len(masks), 8):  # a few views at a time bounds the memory
    sl = slice(start, start + 8)
    values, inside = _lookup(fg[sl, ..., None].astype(np.float32), c2w[sl], intrinsics[sl],
                             pts)
    occupied &= np.all((values[..., 0] > 0.5) | ~inside, axis=0)
  return occupied.reshape(grid, grid, grid)


def hull_shell_points(occupied: np.ndarray, num: int, rng: np.random.Generator) -> np.ndarray:
  """``num`` points ``[num, 3]`` on the shell of an occupancy grid, jittered in the voxels."""
  import scipy.ndimage

  grid = occupied.shape[0]
  shell = occupied & ~scipy.ndimage.binary_erosion(occupied, border_value=0)
  idx = np.argwhere(shell)  # [S, 3]
  pick = rng.choice(len(idx), num, replace=len(idx) < num)
  return ((idx[pick] + rng.uniform(0.0, 1.0, (num, 3))) / grid * 2.0 - 1.0).astype(np.float32)


def nearest_neighbour_scales(points: np.ndarray, k: int = 3) -> np.ndarray:
  """RMS distance ``[P]`` of each point to its ``k`` nearest neighbours (3DGS's init)."""
  from scipy.spatial import cKDTree

  dist, _ = cKDTree(points).query(points, k=k + 1)
  return np.sqrt(np.mean(np.square(dist[:, 1:]), -1)).astype(np.float32)


def initial_gaussians(train: dict, config: Config, rng: np.random.Generator,
                      log=print) -> tuple[Gaussians, str]:
  """Gaussians ``[N]`` (numpy) for the training views and the init actually used."""
  n = config.num_gaussians
  init = check_choice("init", config.init, INITS)
  points = None
  if init == "carve":
    if common.masks_are_informative(train["masks"]):
      occ = carve_visual_hull(train["masks"], train["c2w"], train["intrinsics"],
                              config.init_grid)
      if occ.sum() >= 8:
        points = hull_shell_points(occ, n, rng)
        log(f"init: visual hull of {int(occ.sum())} voxels ({config.init_grid}^3 grid)")
    if points is None:
      log("init: the masks carve no visual hull; falling back to init=box")
      init = "box"
  if points is None:
    points = rng.uniform(-1.0, 1.0, (n, 3)).astype(np.float32)
  # Colour: the mean over the views that see the point inside their mask (all views for box).
  values, inside = _lookup(train["images"], train["c2w"], train["intrinsics"], points)
  mvals, _ = _lookup(train["masks"], train["c2w"], train["intrinsics"], points)
  weight = (inside & ((mvals[..., 0] > 0.5) | (init == "box"))).astype(np.float32)[..., None]
  rgb = np.sum(values * weight, 0) / np.maximum(np.sum(weight, 0), 1.0)
  rgb = np.where(np.sum(weight, 0) > 0, rgb, 0.5).astype(np.float32)
  scales = np.clip(nearest_neighbour_scales(points), 1e-4, config.init_scale_max)
  k = sh_lib.num_sh_bases(config.sh_degree)
  sh = np.zeros((n, k, 3), np.float32)
  sh[:, 0] = sh_lib.rgb_to_sh(np.clip(rgb, 0.02, 0.98))
  quats = np.zeros((n, 4), np.float32)
  quats[:, 0] = 1.0
  g = Gaussians(points, np.repeat(scales[:, None], 3, 1), quats,
                np.full((n, 1), config.init_opacity, np.float32), sh)
  return g, init


# ----------------------------------------------------------------------------------------
# Parameters, optimiser, step.
# ----------------------------------------------------------------------------------------


def _logit(p):
  p = np.clip(np.asarray(p, np.float64), 1e-6, 1.0 - 1e-6)
  return (np.log(p) - np.log1p(-p)).astype(np.float32)


def to_params(g: Gaussians) -> dict[str, jax.Array]:
  """Unconstrained parameters of (numpy) Gaussians (log-scales, logits, raw quaternions)."""
  return {"means": jnp.asarray(g.means, jnp.float32),
          "log_scales": jnp.log(jnp.asarray(g.scales, jnp.float32)),
          "quats": jnp.asarray(g.quats, jnp.float32),
          "opacity_logits": jnp.asarray(_logit(g.opacities)),
          "sh_dc": jnp.asarray(g.sh[:, :1], jnp.float32),
          "sh_rest": jnp.asarray(g.sh[:, 1:], jnp.float32)}


def to_gaussians(params: dict) -> Gaussians:
  """The activated Gaussians of ``params`` (quaternions are normalised by the renderer)."""
  return Gaussians(params["means"], jnp.exp(params["log_scales"]), params["quats"],
                   jax.nn.sigmoid(params["opacity_logits"]),
                   jnp.concatenate([params["sh_dc"], params["sh_rest"]], axis=1))


def make_optimizer() -> optax.GradientTransformation:
  """Adam moments (eps 1e-15, as 3DGS); learning rates are applied in the step."""
  return optax.scale_by_adam(eps=1e-15)


def learning_rates(config: Config, extent: float, progress) -> dict[str, Any]:
  """Per-group learning rates at ``progress`` in [0, 1] (means decay exponentially)."""
  p = jnp.clip(progress, 0.0, 1.0)
  lr_means = extent * jnp.exp((1.0 - p) * math.log(config.lr_means)
                              + p * math.log(config.lr_means_final))
  return {"means": lr_means, "log_scales": config.lr_scales, "quats": config.lr_quats,
          "opacity_logits": config.lr_opacity, "sh_dc": config.lr_sh,
          "sh_rest": config.lr_sh / 20.0}


def render(params_or_gaussians, c2w, intrinsics, height: int, width: int, background,
           config: Config) -> dict:
  """Renders Gaussians (or parameters) from cameras ``[V]``: the rasterizer's dict."""
  g = params_or_gaussians
  if isinstance(g, dict):
    g = to_gaussians(g)
  cameras = cam.Cameras(c2w, intrinsics, height, width)
  return splatting.rasterize(g, cameras, jnp.asarray(background, jnp.float32),
                             backend="tiled", chunk_size=config.chunk_size,
                             block_tiles=config.block_tiles)


def image_loss(out: dict, target, mask, config: Config, use_mask: bool):
  """``(loss, terms)`` of renders ``out`` against ``target [V, H, W, 3]``."""
  l1 = jnp.mean(jnp.abs(out["rgb"] - target))
  ssim = jnp.mean(metrics.ssim(out["rgb"], target))
  loss = (1.0 - config.ssim_weight) * l1 + config.ssim_weight * (1.0 - ssim)
  mask_l1 = jnp.mean(jnp.abs(out["alpha"] - mask))
  if use_mask and config.mask_weight > 0:
    loss = loss + config.mask_weight * mask_l1
  mse = jnp.mean(jnp.square(out["rgb"] - target))
  return loss, {"loss": loss, "l1": l1, "ssim": ssim, "mask_l1": mask_l1, "mse": mse,
                "overflow": jnp.max(out["overflow"])}


def make_train_step(optimizer, train: dict, background, config: Config, extent: float,
                    use_mask: bool):
  """A jitted ``(params, opt_state, view_idx [B], progress) -> (params, opt_state, aux)``."""
  h, w = train["images"].shape[1:3]
  data = {k: jnp.asarray(train[k]) for k in ("images", "masks", "c2w", "intrinsics")}

  def loss_fn(params, data, idx):
    out = render(params, data["c2w"][idx], data["intrinsics"][idx], h, w, background, config)
    return image_loss(out, data["images"][idx], data["masks"][idx], config, use_mask)

  @jax.jit
  def step(params, opt_state, data, idx, progress):
    grads, aux = jax.grad(loss_fn, has_aux=True)(params, data, idx)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    lrs = learning_rates(config, extent, progress)
    updates = {k: -lrs[k] * u for k, u in updates.items()}
    return optax.apply_updates(params, updates), opt_state, aux

  return lambda params, opt_state, idx, progress: step(params, opt_state, data, idx,
                                                       progress)


def respawn(params: dict, opt_state, rng: np.random.Generator, threshold: float,
            jitter: float = 0.5):
  """Moves Gaussians with opacity below ``threshold`` onto opaque ones (host side).

  Targets are drawn in proportion to opacity; a target chosen ``c`` times and its ``c``
  copies each get opacity ``1 - (1 - o)^(1 / (c + 1))`` (together they composite to the
  old ``o``), copies are jittered by ``jitter`` times the target's mean scale, and the
  Adam moments of every touched Gaussian restart at zero. Returns ``(params, opt_state,
  number respawned)``; the count of Gaussians is unchanged.
  """
  p = {k: np.array(v) for k, v in params.items()}
  opacity = 1.0 / (1.0 + np.exp(-p["opacity_logits"][:, 0].astype(np.float64)))
  dead = np.flatnonzero(opacity < threshold)
  live = np.flatnonzero(opacity >= threshold)
  if len(dead) == 0 or len(live) == 0:
    return params, opt_state, 0
  src = rng.choice(live, len(dead), p=opacity[live] / opacity[live].sum())
  copies = np.bincount(src, minlength=len(opacity))
  shared = 1.0 - np.power(1.0 - np.minimum(opacity, 1.0 - 1e-6), 1.0 / (copies + 1.0))
  touched = np.flatnonzero(copies)
  p["opacity_logits"][touched, 0] = _logit(shared[touched])
  for k in ("log_scales", "quats", "opacity_logits", "sh_dc", "sh_rest"):
    p[k][dead] = p[k][src]
  scale = np.exp(p["log_scales"][src]).mean(-1, keepdims=True)
  p["means"][dead] = p["means"][src] + jitter * scale * rng.normal(size=(len(dead), 3))
  reset = np.concatenate([dead, touched])
  n = len(opacity)

  def zero_rows(x):
    if getattr(x, "ndim", 0) >= 1 and x.shape[0] == n:
      return jnp.asarray(x).at[reset].set(0.0)
    return x

  opt_state = jax.tree.map(zero_rows, opt_state)
  return {k: jnp.asarray(v) for k, v in p.items()}, opt_state, len(dead)


# ----------------------------------------------------------------------------------------
# Rendering in fixed batches.
# ----------------------------------------------------------------------------------------


def make_renderer(height: int, width: int, background, config: Config, batch: int = 4):
  """``fn(gaussians, c2w [V], intrinsics [V]) -> {rgb, alpha} [V, ...]`` in fixed batches
  (one compile whatever ``V``)."""

  @jax.jit
  def render_batch(g, c2w, intrinsics):
    out = render(g, c2w, intrinsics, height, width, background, config)
    return {"rgb": out["rgb"], "alpha": out["alpha"], "overflow": out["overflow"]}

  def fn(g, c2w, intrinsics):
    g = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), g)
    v = len(c2w)
    outs = []
    for s in range(0, v, batch):
      sl = np.arange(s, s + batch) % v  # the last batch wraps around (static shape)
      outs.append(jax.device_get(render_batch(g, jnp.asarray(c2w[sl]),
                                              jnp.asarray(intrinsics[sl]))))
    return {k: np.concatenate([o[k] for o in outs])[:v] for k in outs[0]}

  return fn


# ----------------------------------------------------------------------------------------
# The fit and the command.
# ----------------------------------------------------------------------------------------


def fit(train: dict, config: Config, background, steps: int, time_limit_s: float,
        log_every: int = 50, progress_bar: bool = True, log=print) -> tuple[dict, dict]:
  """Optimises Gaussians to the ``train`` views (:func:`lrm_jax.fit.common.optimise`).

  Returns ``(params, info)``: the optimiser's info plus ``init`` (the init used),
  ``scene_extent``, ``mask_loss``, ``respawned``, ``max_overflow`` and
  ``initial_gaussians`` (numpy, for scoring the start).
  """
  rng = np.random.default_rng(config.seed)
  g0, init_used = initial_gaussians(train, config, rng, log)
  extent = scene_extent(train["c2w"])
  use_mask = common.masks_are_informative(train["masks"]) and config.mask_weight > 0
  optimizer = make_optimizer()
  step_fn = make_train_step(optimizer, train, background, config, extent, use_mask)
  state = {"params": to_params(g0), "respawned": 0, "max_overflow": 0}
  state["opt_state"] = optimizer.init(state["params"])
  next_views = view_sampler(train["images"].shape[0], config.views_per_step, rng)

  def step(i: int, progress: float) -> dict:
    if (config.respawn_every > 0 and i > 0 and i % config.respawn_every == 0
        and progress < config.respawn_until):
      state["params"], state["opt_state"], k = respawn(state["params"], state["opt_state"],
                                                        rng, config.respawn_threshold)
      state["respawned"] += k
    state["params"], state["opt_state"], aux = step_fn(state["params"], state["opt_state"],
                                                       next_views(), progress)
    aux = jax.device_get(aux)
    state["max_overflow"] = max(state["max_overflow"], int(aux["overflow"]))
    return aux

  info = common.optimise(step, steps, time_limit_s, log_every, progress_bar, log)
  info.update(init=init_used, scene_extent=extent, mask_loss=use_mask,
              respawned=state["respawned"], max_overflow=state["max_overflow"],
              initial_gaussians=g0)
  return state["params"], info


def view_sampler(num_train: int, views_per_step: int, rng: np.random.Generator):
  """``() -> view indices [B] (int32)``: epochs of shuffled training views, B per call."""
  b = max(1, min(views_per_step, num_train))
  order = np.zeros((0,), np.int64)

  def next_views():
    nonlocal order
    if len(order) < b:
      order = np.concatenate([order, rng.permutation(num_train)])
    idx, order = order[:b], order[b:]
    return jnp.asarray(idx, jnp.int32)

  return next_views


def run(options, config: Config, log=print) -> dict[str, Any]:
  """Loads the views, fits, scores and writes the outputs; returns the summary.

  ``options``: the flags (:func:`lrm_jax.fit.common.options_from_flags`); ``config``: the
  hyperparameters (:func:`default_config` with overrides).
  """
  check_config(config)
  scene = common.load_scene(options)
  params, info = fit(scene.train, config, scene.background, options.steps,
                     options.time_limit_s, options.log_every, options.progress, log)
  g0 = info.pop("initial_gaussians")
  g = jax.device_get(to_gaussians(params))
  renderer = make_renderer(scene.height, scene.width, scene.background, config)
  overflow = {"max": info.pop("max_overflow")}  # of the training and the scored renders

  def render_fitted(c2w, intrinsics):
    out = renderer(g, c2w, intrinsics)
    overflow["max"] = max(overflow["max"], int(np.max(out["overflow"])))
    return out

  entries = common.evaluate(options, scene, render_fitted)
  init_scores, _ = common.score(lambda c2w, k: renderer(g0, c2w, k), scene.held)
  ply_io.save_ply(os.path.join(options.out, "gaussians.ply"), g)
  opacity = np.asarray(g.opacities)[:, 0]
  entries.update(
      init_psnr=init_scores["psnr"], init_ssim=init_scores["ssim"],
      num_gaussians=int(g.means.shape[0]),
      num_gaussians_visible=int(np.sum(opacity > config.respawn_threshold)),
      respawned=info.pop("respawned"), init=info.pop("init"),
      scene_extent=info.pop("scene_extent"), mask_loss=info.pop("mask_loss"),
      max_overflow=overflow["max"])
  return common.write_summary(options, config, scene, info, entries, log)


def parse_command_line(argv) -> tuple[Config, Config]:
  """``(options, config)`` of ``argv`` (no program name) as the command parses it."""
  return common.parse_command_line(argv, default_config(), DEFAULT_STEPS, prog=PROG)


def main(argv=None) -> None:
  """The command (``argv`` without the program name; default ``sys.argv``)."""
  common.main(PROG, run, default_config(), DEFAULT_STEPS, argv=argv)


if __name__ == "__main__":
  main()
