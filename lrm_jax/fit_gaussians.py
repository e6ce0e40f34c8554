"""Per-scene optimisation of 3D Gaussians to posed images; ply, video and metrics out.

  python -m lrm_jax.fit_gaussians --views=mesh:../shared/data/cow_mesh/cow.obj --out=DIR \
      [--num_views=32 --resolution=128 --held_out=4 --steps=3000 --time_limit_s=600 \
       --num_gaussians=10000 --sh_degree=1 --init=carve --seed=0]

The views are one scene (``--scene_index``) of any source spec of
:func:`lrm_jax.data.sources.make_source`. ``--held_out`` evenly spaced views (every
``V // held_out``-th, as :mod:`lrm_jax.fit_triplane`) are kept for evaluation; the rest are
fitted. A fixed number of Gaussians (static shapes, one compile) is

  * initialised on the visual hull (``--init=carve``): voxel centres of ``[-1, 1]^3`` that
    project inside the (1-pixel dilated) mask of every training view are kept, the hull's
    shell is sampled with jitter, colours are the mean of the pixels the points project to,
    scales the RMS distance to the 3 nearest neighbours (``--init=box``: uniform in the box;
    chosen automatically when the masks carve nothing);
  * optimised with Adam at 3DGS-like learning rates, raised for short fits (means
    ``6.4e-4 * extent`` decaying exponentially to 1/100, log-scales ``1e-2``, quaternions
    ``2e-3``, opacity logits ``0.1``, SH DC ``2e-2`` and higher SH bands 1/20 of that) on
    ``(1 - w) L1 + w (1 - SSIM) + mask_weight |alpha - mask|`` of ``--views_per_step``
    training views per step (epochs of shuffled views), rendered by
    :func:`lrm_jax.render.splatting.rasterize` (``backend="tiled"``);
  * every ``--respawn_every`` steps (in the first ``--respawn_until`` of the fit) nearly
    transparent Gaussians are moved onto opaque ones, chosen in proportion to opacity, as in
    3DGS-MCMC's relocation: the ``k`` copies share the opacity, ``1 - (1 - o)^(1 / k)``, so
    the picture barely changes (up to the jitter), and their Adam moments restart. The count
    never changes.

The schedule's progress is the larger of the step and the wall-clock fractions, so the fit
anneals fully whether ``--steps`` or ``--time_limit_s`` ends it. Everything is seeded by
``--seed`` (init, view order, respawns; the rasterizer's backward is deterministic), so with
``--time_limit_s=0`` (no clock in the schedule) a fit is reproducible bit for bit. Writes:

  DIR/gaussians.ply    the Gaussians (standard 3DGS layout, :func:`lrm_jax.io.ply.save_ply`)
  DIR/turntable.mp4    (or .gif) a turn around the object at the mean training camera
                       distance and field of view
  DIR/views.png        held-out views: targets (top row) | renders (bottom row)
  DIR/summary.json     held-out PSNR / SSIM (and at step 0), train PSNR, steps, wall time,
                       steps/s, CPU time, load average, Gaussian counts, settings, history
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lrm_jax import cameras as cam
from lrm_jax.io import images as images_io
from lrm_jax.io import ply as ply_io
from lrm_jax.io import video
from lrm_jax.representations import sh as sh_lib
from lrm_jax.render import splatting
from lrm_jax.representations.gaussians import Gaussians
from lrm_jax.train import metrics

INITS = ("carve", "box")


def _opt(default, help_text: str):
  """A :class:`FitConfig` field with its command-line help."""
  return dataclasses.field(default=default, metadata={"help": help_text})


@dataclasses.dataclass(frozen=True)
class FitConfig:
  """Settings of one fit (every field is also a command-line flag)."""

  num_gaussians: int = _opt(10000, "Gaussians (a fixed count: static shapes)")
  sh_degree: int = _opt(1, "spherical-harmonics degree of the colours, 0-3")
  init: str = _opt("carve", "carve: on the visual hull of the masks; box: uniform in "
                   "[-1, 1]^3 (carve falls back to box when the masks carve nothing)")
  init_grid: int = _opt(64, "voxels per side of the carving grid")
  init_opacity: float = _opt(0.3, "initial opacity")
  init_scale_max: float = _opt(0.05, "cap on the initial nearest-neighbour scale")
  steps: int = _opt(3000, "optimisation steps (at most)")
  time_limit_s: float = _opt(600.0, "stop optimising after this many seconds (compile "
                             "included); <= 0: no limit (and a reproducible schedule)")
  views_per_step: int = _opt(1, "training views rendered per step")
  # Learning rates: 3DGS's (means 1.6e-4, scales 5e-3, quats 1e-3, opacity 5e-2, SH DC
  # 2.5e-3) are tuned for 30k steps; a fit of ~1k steps does better with larger ones
  # (cow, 32 views at 128^2, 600 steps, held-out PSNR 27.70 at 3DGS's, 28.15 at these).
  lr_means: float = _opt(6.4e-4, "learning rate of the means (times the scene extent), "
                         "decaying exponentially to lr_means_final")
  lr_means_final: float = _opt(6.4e-6, "final learning rate of the means (times extent)")
  lr_scales: float = _opt(1e-2, "learning rate of the log-scales")
  lr_quats: float = _opt(2e-3, "learning rate of the (unnormalised) quaternions")
  lr_opacity: float = _opt(0.1, "learning rate of the opacity logits")
  lr_sh: float = _opt(2e-2, "learning rate of the SH DC; higher bands get lr_sh / 20")
  ssim_weight: float = _opt(0.2, "loss = (1 - w) L1 + w (1 - SSIM) + mask term")
  mask_weight: float = _opt(0.3, "weight of |alpha - mask| (only with informative masks)")
  # Respawning is neutral with the carved init (cow, 600 steps: 28.15 either way) and
  # essential with the box init, where most Gaussians start in empty space (26.09 -> 28.31).
  respawn_every: int = _opt(100, "steps between respawns of transparent Gaussians; 0: never")
  respawn_until: float = _opt(0.7, "fraction of the fit after which no more respawns")
  respawn_threshold: float = _opt(0.005, "opacity below which a Gaussian is respawned")
  chunk_size: int = _opt(32, "tiled rasterizer: Gaussians per compositing step")
  block_tiles: int = _opt(4, "tiled rasterizer: tiles processed together")
  seed: int = _opt(0, "seed of the init, the view order and the respawns")


# ----------------------------------------------------------------------------------------
# Data.
# ----------------------------------------------------------------------------------------


def parse_background(text: str) -> tuple[float, float, float]:
  """``"1,1,1"`` -> ``(1.0, 1.0, 1.0)`` (one value is grey)."""
  try:
    values = [float(x) for x in text.split(",")]
  except ValueError:
    raise ValueError(f"--background must be r,g,b numbers in [0, 1], got {text!r}.") from None
  if len(values) == 1:
    values = values * 3
  if len(values) != 3 or not all(0.0 <= v <= 1.0 for v in values):
    raise ValueError(f"--background must be r,g,b numbers in [0, 1], got {text!r}.")
  return tuple(values)


def load_views(spec: str, num_views: int = 32, resolution: int = 128, scene_index: int = 0,
               up_axis: str = "y", background=(1.0, 1.0, 1.0), data_seed: int = 0) -> dict:
  """Scene ``scene_index`` of the source ``spec`` as an example dict (numpy).

  Rendering sources (``mesh:``, ``synthetic``) render ``num_views`` views at
  ``resolution``; sources of stored views (``folder:``, ``tfds:``) give what they hold,
  of which ``num_views`` evenly spaced views are kept when there are more (0: all).
  Raises ``ValueError`` naming the spec for anything the source rejects.
  """
  from configs import common
  from lrm_jax.data import sources

  d = common.data_config()
  d.source = spec
  d.render_size = int(resolution)
  d.views_per_scene = int(num_views)
  d.up_axis = up_axis
  d.background = tuple(float(c) for c in background)
  try:
    source = sources.make_source(spec, d, "train", data_seed)
    n = len(source)
    if not 0 <= scene_index < n:
      raise ValueError(f"--scene_index={scene_index} is out of range: the source has {n} "
                       "scene(s).")
    example = dict(source[scene_index])
  except (ValueError, FileNotFoundError, KeyError, OSError) as e:
    raise ValueError(f"--views={spec!r}: {e}") from e
  v = example["images"].shape[0]
  if num_views > 0 and v > num_views:
    keep = np.round(np.linspace(0, v - 1, num_views)).astype(int)
    example = {k: (x[keep] if np.ndim(x) and np.shape(x)[0] == v else x)
               for k, x in example.items()}
  if example["images"].shape[0] < 2:
    raise ValueError(f"--views={spec!r}: need at least 2 views to fit and hold out, got "
                     f"{example['images'].shape[0]}.")
  out = {k: np.asarray(example[k], np.float32) for k in ("images", "c2w", "intrinsics")}
  masks = example.get("masks")
  out["masks"] = (np.ones(out["images"].shape[:-1] + (1,), np.float32) if masks is None
                  else np.asarray(masks, np.float32))
  return out


def held_out_indices(num_views: int, num_held_out: int) -> np.ndarray:
  """Evenly spread held-out view indices (``num_views // num_held_out`` apart)."""
  num_held_out = max(1, min(num_held_out, num_views - 1))
  return np.arange(num_held_out) * (num_views // num_held_out)


def masks_are_informative(masks: np.ndarray) -> bool:
  """Whether the masks separate an object from a background (not all foreground)."""
  return bool(np.any(masks < 0.5)) and bool(np.any(masks > 0.5))


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


def initial_gaussians(train: dict, config: FitConfig, rng: np.random.Generator,
                      log=print) -> tuple[Gaussians, str]:
  """Gaussians ``[N]`` (numpy) for the training views and the init actually used."""
  n = config.num_gaussians
  init = config.init
  if init not in INITS:
    raise ValueError(f"unknown --init {init!r}; choose one of {INITS}.")
  points = None
  if init == "carve":
    if masks_are_informative(train["masks"]):
      occ = carve_visual_hull(train["masks"], train["c2w"], train["intrinsics"],
                              config.init_grid)
      if occ.sum() >= 8:
        points = hull_shell_points(occ, n, rng)
        log(f"init: visual hull of {int(occ.sum())} voxels ({config.init_grid}^3 grid)")
    if points is None:
      log("init: the masks carve no visual hull; falling back to --init=box")
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


def learning_rates(config: FitConfig, extent: float, progress) -> dict[str, Any]:
  """Per-group learning rates at ``progress`` in [0, 1] (means decay exponentially)."""
  p = jnp.clip(progress, 0.0, 1.0)
  lr_means = extent * jnp.exp((1.0 - p) * math.log(config.lr_means)
                              + p * math.log(config.lr_means_final))
  return {"means": lr_means, "log_scales": config.lr_scales, "quats": config.lr_quats,
          "opacity_logits": config.lr_opacity, "sh_dc": config.lr_sh,
          "sh_rest": config.lr_sh / 20.0}


def render(params_or_gaussians, c2w, intrinsics, height: int, width: int, background,
           config: FitConfig) -> dict:
  """Renders Gaussians (or parameters) from cameras ``[V]``: the rasterizer's dict."""
  g = params_or_gaussians
  if isinstance(g, dict):
    g = to_gaussians(g)
  cameras = cam.Cameras(c2w, intrinsics, height, width)
  return splatting.rasterize(g, cameras, jnp.asarray(background, jnp.float32),
                             backend="tiled", chunk_size=config.chunk_size,
                             block_tiles=config.block_tiles)


def image_loss(out: dict, target, mask, config: FitConfig, use_mask: bool):
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


def make_train_step(optimizer, train: dict, background, config: FitConfig, extent: float,
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
# Evaluation and outputs.
# ----------------------------------------------------------------------------------------


def make_renderer(height: int, width: int, background, config: FitConfig, batch: int = 4):
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


def evaluate(renderer, g, views: dict, with_ssim: bool = True) -> dict[str, Any]:
  """Mean (and per-view) PSNR / SSIM of renders of ``views`` (an example dict)."""
  out = renderer(g, views["c2w"], views["intrinsics"])
  pred, target = jnp.asarray(out["rgb"]), jnp.asarray(views["images"])
  per_view = np.asarray(metrics.psnr(pred, target), np.float64)
  result = {"psnr": float(per_view.mean()), "psnr_per_view": per_view.tolist(),
            "rgb": out["rgb"], "overflow": int(np.max(out["overflow"]))}
  if with_ssim:
    result["ssim"] = float(np.mean(np.asarray(metrics.ssim(pred, target))))
  return result


def turntable_path(c2w: np.ndarray, intrinsics: np.ndarray, frames: int, width: int,
                   height: int, elevation_deg: float = 20.0):
  """``(c2w [F, 4, 4], intrinsics [F, 4])``: a turn at the mean training camera distance
  (around the world origin, z up) with the mean training field of view."""
  radius = float(np.mean(np.linalg.norm(c2w[:, :3, 3], axis=-1)))
  fov = float(np.mean(2.0 * np.arctan(0.5 * width / intrinsics[:, 0])))
  path = cam.turntable_cameras(frames, elevation_deg=elevation_deg, radius=radius)
  k = np.broadcast_to(cam.intrinsics_from_fov(fov, height, width), (frames, 4))
  return np.asarray(path, np.float32), np.asarray(k, np.float32)


# ----------------------------------------------------------------------------------------
# The fit.
# ----------------------------------------------------------------------------------------


def _pick(example: dict, idx: np.ndarray) -> dict:
  return {k: v[idx] for k, v in example.items()}


def fit(train: dict, config: FitConfig, background, log_every: int = 50,
        progress_bar: bool = True, log=print) -> tuple[dict, dict]:
  """Optimises Gaussians to the ``train`` views. Returns ``(params, info)``."""
  rng = np.random.default_rng(config.seed)
  g0, init_used = initial_gaussians(train, config, rng, log)
  params = to_params(g0)
  extent = scene_extent(train["c2w"])
  use_mask = masks_are_informative(train["masks"]) and config.mask_weight > 0
  optimizer = make_optimizer()
  opt_state = optimizer.init(params)
  step_fn = make_train_step(optimizer, train, background, config, extent, use_mask)
  num_train = train["images"].shape[0]
  b = max(1, min(config.views_per_step, num_train))
  order = np.zeros((0,), np.int64)

  def next_views():
    nonlocal order
    if len(order) < b:  # epochs of shuffled views
      order = np.concatenate([order, rng.permutation(num_train)])
    idx, order = order[:b], order[b:]
    return jnp.asarray(idx, jnp.int32)

  bar = None
  if progress_bar:
    from tqdm import tqdm
    bar = tqdm(total=config.steps, unit="step", dynamic_ncols=True, mininterval=1.0,
               file=sys.stderr)
  t0, cpu0 = time.perf_counter(), time.process_time()
  params, opt_state, aux = step_fn(params, opt_state, next_views(), 0.0)  # compiles
  jax.block_until_ready(params)
  compile_s = time.perf_counter() - t0
  steps, history, respawned, max_overflow = 1, [], 0, int(aux["overflow"])
  window = []
  limit = config.time_limit_s if config.time_limit_s > 0 else math.inf
  while steps < config.steps:
    elapsed = time.perf_counter() - t0
    if elapsed >= limit:
      break
    progress = max(steps / config.steps, elapsed / limit)
    if (config.respawn_every > 0 and steps % config.respawn_every == 0
        and progress < config.respawn_until):
      params, opt_state, k = respawn(params, opt_state, rng, config.respawn_threshold)
      respawned += k
    params, opt_state, aux = step_fn(params, opt_state, next_views(), progress)
    aux = jax.device_get(aux)  # blocks: the clock and the schedule stay honest
    steps += 1
    window.append(float(aux["mse"]))
    max_overflow = max(max_overflow, int(aux["overflow"]))
    if bar is not None:
      bar.update(1 if steps > 2 else 2)
    if steps % log_every == 0 or steps == config.steps:
      psnr = float(metrics.psnr_from_mse(np.mean(window)))
      window = []
      entry = {"step": steps, "psnr": psnr, "wall_s": time.perf_counter() - t0,
               **{k: float(v) for k, v in aux.items()}}
      history.append(entry)
      if bar is not None:
        bar.set_postfix(psnr=f"{psnr:.2f}", loss=f"{entry['loss']:.4f}", refresh=False)
      else:
        log(f"step {steps:5d}  loss {entry['loss']:.5f}  train psnr {psnr:.2f}  "
            f"{entry['wall_s']:.0f}s")
  jax.block_until_ready(params)
  if bar is not None:
    bar.close()
  wall = time.perf_counter() - t0
  info = {"steps": steps, "fit_wall_s": wall, "fit_cpu_s": time.process_time() - cpu0,
          "compile_s": compile_s,
          "steps_per_s": (steps - 1) / max(wall - compile_s, 1e-9),
          "init": init_used, "scene_extent": extent, "mask_loss": use_mask,
          "respawned": respawned, "max_overflow": max_overflow, "history": history,
          "initial_gaussians": g0}
  return params, info


def run(args) -> dict[str, Any]:
  """Loads the views, fits, evaluates and writes the outputs; returns the summary."""
  t_start, load_start = time.perf_counter(), os.getloadavg()
  config = FitConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(FitConfig)})
  if config.init not in INITS:
    raise ValueError(f"unknown --init {config.init!r}; choose one of {INITS}.")
  sh_lib.num_sh_bases(config.sh_degree)  # validates the degree
  background = parse_background(args.background)
  example = load_views(args.views, args.num_views, args.resolution, args.scene_index,
                       args.up_axis, background, args.data_seed)
  os.makedirs(args.out, exist_ok=True)
  num_views, h, w = example["images"].shape[:3]
  held_out = held_out_indices(num_views, args.held_out)
  train_idx = np.setdiff1d(np.arange(num_views), held_out)
  train, held = _pick(example, train_idx), _pick(example, held_out)

  params, info = fit(train, config, background, progress_bar=not args.no_progress)
  g = jax.device_get(to_gaussians(params))
  renderer = make_renderer(h, w, background, config)
  init_eval = evaluate(renderer, info.pop("initial_gaussians"), held)
  held_eval = evaluate(renderer, g, held)
  train_eval = evaluate(renderer, g, train, with_ssim=False)
  images_io.save_png(os.path.join(args.out, "views.png"), images_io.grid(
      [list(held["images"]), list(held_eval["rgb"])]))
  ply_io.save_ply(os.path.join(args.out, "gaussians.ply"), g)
  turntable = None
  if args.turntable_frames > 0:
    path_c2w, path_k = turntable_path(train["c2w"], train["intrinsics"],
                                      args.turntable_frames, w, h)
    frames = renderer(g, path_c2w, path_k)["rgb"]
    turntable = video.write_video(os.path.join(args.out, "turntable.mp4"), frames, fps=12)

  opacity = np.asarray(g.opacities)[:, 0]
  summary = {
      "views": args.views, "scene_index": args.scene_index, "num_views": int(num_views),
      "resolution": [int(h), int(w)], "held_out_views": held_out.tolist(),
      "psnr_heldout": held_eval["psnr"], "ssim_heldout": held_eval["ssim"],
      "psnr_heldout_per_view": held_eval["psnr_per_view"],
      "psnr_heldout_init": init_eval["psnr"], "ssim_heldout_init": init_eval["ssim"],
      "psnr_train": train_eval["psnr"],
      "steps": info["steps"], "wall_s": info["fit_wall_s"], "cpu_s": info["fit_cpu_s"],
      "compile_s": info["compile_s"], "steps_per_s": info["steps_per_s"],
      "load_avg_start": list(load_start), "load_avg_end": list(os.getloadavg()),
      "num_gaussians": int(g.means.shape[0]),
      "num_gaussians_visible": int(np.sum(opacity > config.respawn_threshold)),
      "respawned": info["respawned"], "init": info["init"],
      "scene_extent": info["scene_extent"], "mask_loss": info["mask_loss"],
      "max_overflow": max(info["max_overflow"], held_eval["overflow"]),
      "turntable": turntable, "background": list(background),
      "config": dataclasses.asdict(config), "history": info["history"],
  }
  summary["total_wall_s"] = time.perf_counter() - t_start
  with open(os.path.join(args.out, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2)
  print(json.dumps({k: v for k, v in summary.items()
                    if k not in ("history", "config", "psnr_heldout_per_view")}, indent=2))
  return summary


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(
      prog="python -m lrm_jax.fit_gaussians",
      description="Fit 3D Gaussians to posed views of one scene; writes gaussians.ply, "
      "turntable.mp4 (or .gif), views.png and summary.json to --out.",
      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  p.add_argument("--views", required=True,
                 help="source spec: mesh:PATH.obj, folder:DIR, synthetic or tfds:NAME[:DIR]")
  p.add_argument("--out", required=True, help="output folder")
  p.add_argument("--num_views", type=int, default=32,
                 help="views rendered (mesh, synthetic) or kept evenly (folder, tfds; 0: all)")
  p.add_argument("--resolution", type=int, default=128, help="view size in pixels")
  p.add_argument("--held_out", type=int, default=4,
                 help="evenly spaced views kept out of the fit for evaluation")
  p.add_argument("--scene_index", type=int, default=0, help="which scene of the source")
  p.add_argument("--up_axis", default="y",
                 help="up axis of the .obj file of a mesh: source (the world is z-up)")
  p.add_argument("--background", default="1,1,1", help="r,g,b in [0, 1]")
  p.add_argument("--data_seed", type=int, default=0,
                 help="seed of the source (cameras of mesh/synthetic sources)")
  p.add_argument("--turntable_frames", type=int, default=36, help="0: no video")
  p.add_argument("--no_progress", action="store_true", help="log lines, no progress bar")
  for field in dataclasses.fields(FitConfig):  # every FitConfig field is a flag
    p.add_argument(f"--{field.name}", type=type(field.default), default=field.default,
                   help=field.metadata["help"],
                   choices=INITS if field.name == "init" else None)
  return p.parse_args(argv)


def main(argv=None):
  args = parse_args(argv)
  try:
    run(args)
  except ValueError as e:
    print(f"fit_gaussians: error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  main()
