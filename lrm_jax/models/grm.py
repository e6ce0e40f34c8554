"""GRM (Xu, Shi et al. ECCV 2024): posed views -> one pixel-aligned 3D Gaussian per pixel.

  images [B, V, H, W, 3] + Plücker rays [B, V, H, W, 6]            (9 channels per pixel)
  -> conv tokenizer (kernel = stride = patch) + per-view learned positions
  -> transformer over the tokens of all views
  -> transformer upsampler: x4 channels -> PixelShuffle(2) -> windowed self-attention,
     repeated up to full resolution (windows span the same region of every view)
  -> separate linear heads: depth 1, rotation 4, scale 3, opacity 1, rgb 3
  -> Gaussians: centre = ray origin + depth * ray direction; rendered by splatting.

GRM has no public code; sizes follow the paper (REFERENCES.md) where it gives them.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from lrm_jax import cameras as cam
from lrm_jax.models import family
from lrm_jax.models import layers
from lrm_jax.models import pixel_gaussians
from lrm_jax.models import upsampler
from lrm_jax.models.vit import PatchEmbed
from lrm_jax.representations import gaussians as gs

# variant -> transformer and upsampler sizes.
VARIANTS = {
    # CPU-trainable: 64^2 inputs, patch 8 -> 8x8 tokens per view.
    "tiny": dict(patch=8, width=192, depth=4, num_heads=4, up_channels=(96, 48, 32),
                 up_heads=(2, 2, 1), up_blocks=1, window=8),
    # Smaller than tiny, for end-to-end tests.
    "micro": dict(patch=4, width=32, depth=1, num_heads=2, up_channels=(16, 8),
                  up_heads=(1, 1), up_blocks=1, window=4),
    # Base: 12 layers, width 768 (ViT-B) at 256^2.
    "base": dict(patch=16, width=768, depth=12, num_heads=12, up_channels=(256, 128, 64, 32),
                 up_heads=(4, 2, 2, 1), up_blocks=1, window=8),
    # Paper: 512^2 inputs, 24 layers, width 1024 (~1M Gaussians from 4 views).
    "paper": dict(patch=16, width=1024, depth=24, num_heads=16,
                  up_channels=(512, 256, 128, 64), up_heads=(8, 4, 2, 1), up_blocks=1,
                  window=8),
}


# Channels of one pixel-aligned GRM Gaussian: depth 1, quaternion 4, scale 3, opacity 1,
# rgb 3 (REFERENCES.md, GRM).
CHANNELS = 12


def model_config(variant: str) -> ml_collections.ConfigDict:
  """The ``config.model`` section for a GRM variant."""
  if variant not in VARIANTS:
    raise ValueError(f"unknown GRM variant {variant!r}; choose one of {sorted(VARIANTS)}.")
  c = ml_collections.ConfigDict(dict(VARIANTS[variant]))
  c.variant = variant
  c.mlp_ratio = 4.0
  c.remat_policy = "none"
  c.scan = True
  c.dtype = "float32"
  c.attention = "auto"  # layers.Attention.impl: "auto" (blockwise where it pays) or "plain"
  # Upsampler stages of at least this many tokens per scene run their windows in groups of
  # about window_group_tokens tokens, each recomputed in the backward (layers.WindowBlock).
  c.window_group_min_tokens = 65536
  c.window_group_tokens = 4096
  # Bounded activations (GRM): depth along the ray in [near, far], scale in world units.
  c.near = 0.5
  c.far = 4.5
  c.min_scale = 0.0005
  # About twice a pixel's footprint at the camera distance (2.3) for the variant's size.
  c.max_scale = {"micro": 0.1, "tiny": 0.05, "base": 0.02, "paper": 0.01}[variant]
  # Input masks gate opacity (objects with alpha; off for scenes without masks), and only
  # the keep_fraction most opaque Gaussians are rendered (static top-k): off-object pixels
  # then cost nothing in the rasteriser.
  c.mask_gaussians = variant in ("tiny", "micro")
  # The depth head predicts a residual on a per-pixel prior: "center" (where the ray passes
  # the object centre) or "visual_hull" (where it enters the hull of the input masks: space
  # carving over hull_samples points in +-hull_range around the centre; ours, not GRM's).
  c.depth_prior = "center"
  c.hull_range = 1.0
  c.hull_samples = 48
  # Renderer memory (see Model.render; the paper config sets them): intersections per
  # Gaussian per view (0: binning.default_capacity), target views per render group (0:
  # all at once), and recomputing each group in the backward pass.
  c.intersections_per_gaussian = 0
  c.render_views_at_once = 0
  c.render_remat = False
  c.keep_fraction = 0.35 if variant in ("tiny", "micro") else 1.0
  # Renderer.
  c.backend = "auto"  # auto: pallas on TPU/GPU, tiled on CPU
  # Tiled (CPU) backend: tile side, tiles composited together (grouped by their number of
  # Gaussians) and Gaussians per compositing step. 8-pixel tiles waste less work on
  # pixel-sized Gaussians than 16 (bench/train_step.py --overrides; bench/RESULTS.md).
  c.tile_size = 8
  c.block_tiles = 16
  c.chunk_size = 8
  # Binning on one CPU device sorts in NumPy (host callbacks: not persistently cached, not
  # pure XLA); views under vmap are binned one chain per camera up to this many.
  c.host_sorts = True
  c.max_unrolled_cameras = 16
  return c


def grm_activation(raw, origins, directions, *, near: float, far: float,
                   min_scale: float, max_scale: float) -> gs.Gaussians:
  """GRM: raw per-pixel outputs -> Gaussians, with every quantity bounded.

  Args:
    raw: ``[..., N, 12]`` = depth 1, quaternion 4, scale 3, opacity 1, rgb 3.
    origins, directions: ``[..., N, 3]`` unit pixel rays (:func:`cameras.get_rays`).
    near, far: depth along the ray is ``near + (far - near) * sigmoid``.
    min_scale, max_scale: scales are ``min_scale + (max_scale - min_scale) * sigmoid``.
  Returns:
    Gaussians with SH degree 0 and colour ``sigmoid(rgb)``.
  """
  if raw.shape[-1] != CHANNELS:
    raise ValueError(f"GRM Gaussians have {CHANNELS} channels, got {raw.shape[-1]}.")
  depth = gs.bounded_sigmoid(raw[..., 0:1], near, far)  # [..., N, 1]
  quats = gs.normalize_quats(raw[..., 1:5])
  scales = gs.bounded_sigmoid(raw[..., 5:8], min_scale, max_scale)
  opacities = jax.nn.sigmoid(raw[..., 8:9])
  rgb = jax.nn.sigmoid(raw[..., 9:12])
  return gs.Gaussians.from_rgb(gs.unproject(origins, directions, depth), scales, quats,
                            opacities, rgb)


# Kept importable from here (configs and notebooks of earlier runs).
ViewPositions = upsampler.ViewPositions


class Model(family.FamilyModel):
  """GRM. ``reconstruct(inputs) -> Gaussians``; ``render(gaussians, cameras) -> images``."""

  def setup(self):
    c = self.config
    if 2 ** len(c.up_channels) != c.patch:
      raise ValueError(f"GRM: {len(c.up_channels)} upsampler stages x2 do not undo patch "
                       f"{c.patch}; need log2(patch) stages.")
    dtype = jnp.dtype(c.dtype)
    self.tokenizer = PatchEmbed(c.patch, c.width)
    self.view_positions = ViewPositions()
    # Configs saved before these knobs existed lack them: their defaults.
    attention = c.get("attention", "auto")
    self.transformer = layers.Transformer(c.depth, c.num_heads, c.mlp_ratio, c.remat_policy,
                                          c.scan, dtype, attention)
    self.up_proj, self.up_blocks = upsampler.make_upsampler(c, dtype, attention)
    head = lambda n, bias=nn.initializers.zeros: nn.Dense(
        n, kernel_init=nn.with_logical_partitioning(layers.dense_init(0.1), ("mlp", None)),
        bias_init=bias, dot_general=layers.dense_dot_general)
    self.depth_head = head(1)
    self.rot_head = head(4, lambda k, s, d=jnp.float32: jnp.asarray([1.0, 0, 0, 0], d))
    self.scale_head = head(3)  # starts mid-range: about a pixel's footprint
    self.opacity_head = head(1)
    self.color_head = head(3)

  def tokens(self, images, plucker):
    """``[B, V, H, W, 3] + [B, V, H, W, 6] -> [B, V, h, w, D]`` after the transformer."""
    b, v, h, w, _ = images.shape
    x = jnp.concatenate([images * 2.0 - 1.0, plucker], axis=-1)  # [B, V, H, W, 9]
    tok = self.tokenizer(x.reshape(b * v, h, w, 9))  # [B*V, h', w', D]
    hp, wp, d = tok.shape[1:]
    tok = self.view_positions(tok.reshape(b, v, hp * wp, d))
    tok = self.transformer(tok.reshape(b, v * hp * wp, d))  # [B, V*h*w, D]
    return tok.reshape(b, v, hp, wp, d), x

  def upsample(self, feat):
    """``[B, V, h, w, D] -> [B, V, H, W, C]`` by PixelShuffle stages + windowed attention."""
    return upsampler.upsample(self.up_proj, self.up_blocks, feat)

  def raw_attributes(self, inputs: dict, rays=None) -> dict:
    """Per-pixel raw Gaussian attributes ``{name: [B, V, H, W, k]}`` (before activation).

    ``rays``: the input views' ``(origins, dirs)`` ``[B, V, H, W, 3]`` if the caller has them.
    """
    images = inputs["images"]
    b, v, h, w, _ = images.shape
    cams = cam.Cameras(inputs["c2w"], inputs["intrinsics"], h, w)
    feat, pixels = self.tokens(images, cams.plucker())
    feat = self.upsample(feat)
    feat = jnp.concatenate([feat, pixels], axis=-1)  # skip: each pixel's own RGB + ray
    # The depth and colour heads predict residuals on per-pixel priors, so a fresh model
    # already places each Gaussian at its prior depth (config.depth_prior), in its pixel's
    # colour (a linear head at Adam's step sizes needs thousands of steps to learn either).
    origins, dirs = rays if rays is not None else cam.get_rays(
        inputs["c2w"], inputs["intrinsics"], h, w)
    return {"depth": self.depth_head(feat) + depth_prior_logit(origins, dirs, inputs,
                                                               self.config),
            "rotation": self.rot_head(feat), "scale": self.scale_head(feat),
            "opacity": self.opacity_head(feat),
            "color": self.color_head(feat) + _logit(jnp.clip(images, 0.01, 0.99))}

  def reconstruct(self, inputs: dict, train: bool = False) -> gs.Gaussians:
    """Posed input views -> pixel-aligned ``Gaussians``, ``N = V * H * W`` per scene in
    (view, row, column) order."""
    del train
    c = self.config
    h, w = inputs["images"].shape[2:4]
    origins, dirs = cam.get_rays(inputs["c2w"], inputs["intrinsics"], h, w)
    raw = self.raw_attributes(inputs, (origins, dirs))
    b, v = inputs["images"].shape[:2]
    flat = lambda x: x.reshape(b, v * h * w, x.shape[-1])  # [B, V*H*W, k]
    packed = jnp.concatenate([raw[k] for k in ("depth", "rotation", "scale", "opacity",
                                               "color")], axis=-1)
    g = grm_activation(flat(packed), flat(origins), flat(dirs), near=c.near, far=c.far,
                          min_scale=c.min_scale, max_scale=c.max_scale)
    if c.mask_gaussians:
      # Pixels off the object (input mask 0) give transparent Gaussians.
      g = g.replace(opacities=g.opacities * flat(inputs["masks"]))
    return g

  def splat_subset(self, gaussians: gs.Gaussians) -> gs.Gaussians:
    """The ``keep_fraction`` most opaque Gaussians (a static top-k; all when it is 1)."""
    keep = self.config.keep_fraction
    if keep >= 1.0:
      return gaussians
    return gs.prune_topk_by_opacity(gaussians, max(1, int(round(keep * gaussians.num))))

  def render(self, gaussians: gs.Gaussians, cameras: cam.Cameras, background,
             train: bool = False) -> dict:
    """Splats ``[B, N]`` Gaussians into cameras ``[B, V]``: rgb, depth, alpha, overflow
    (:func:`render_gaussians`)."""
    del train  # splatting is deterministic
    return pixel_gaussians.render_gaussians(self.config, gaussians, cameras, background)

  def __call__(self, inputs: dict, cameras: cam.Cameras, background, train: bool = False):
    """-> (rendered dict, all pixel-aligned Gaussians); only the ``keep_fraction`` most
    opaque are splatted."""
    g = self.reconstruct(inputs, train)
    return self.render(self.splat_subset(g), cameras, background, train), g


def _logit(p):
  return jnp.log(p) - jnp.log1p(-p)


def visual_hull_depth(origins, directions, inputs: dict, t_center, *, half_range: float,
                      samples: int):
  """Distance along each input ray to where it enters the visual hull of the input masks.

  Space carving, parameter-free: ``samples`` points per ray in ``t_center +- half_range``
  are projected into every input view; the first point inside all silhouettes (mask > 0.5
  at its pixel, in front of the camera, inside the image) is the hull entry, returned as
  the midpoint between it and the previous sample. Rays that never enter get ``t_center``.

  Args:
    origins, directions: ``[B, V, H, W, 3]`` unit rays of the input pixels.
    inputs: ``c2w [B, U, 4, 4]``, ``intrinsics [B, U, 4]``, ``masks [B, U, H, W, 1]``.
    t_center: ``[B, V, H, W, 1]`` the search centre along each ray.
  Returns:
    ``[B, V, H, W, 1]`` distances (no gradient).
  """
  b, v, h, w, _ = origins.shape
  masks = inputs["masks"]
  u_views, mh, mw = masks.shape[1:4]
  offsets = jnp.linspace(-half_range, half_range, samples)  # [S]
  ts = t_center + offsets  # [B, V, H, W, S]
  pts = origins[..., None, :] + ts[..., None] * directions[..., None, :]  # [..., S, 3]
  pts = pts.reshape(b, 1, -1, 3)  # [B, 1, P, 3]
  uv, z = cam.project_points(pts, inputs["c2w"], inputs["intrinsics"])  # [B, U, P, 2]
  col = jnp.floor(uv[..., 0]).astype(jnp.int32)
  row = jnp.floor(uv[..., 1]).astype(jnp.int32)
  inside = (z > 1e-3) & (col >= 0) & (col < mw) & (row >= 0) & (row < mh)
  flat = jnp.clip(row, 0, mh - 1) * mw + jnp.clip(col, 0, mw - 1)  # [B, U, P]
  on_mask = jnp.take_along_axis(masks.reshape(b, u_views, mh * mw), flat, axis=-1) > 0.5
  in_hull = jnp.all(inside & on_mask, axis=1).reshape(b, v, h, w, samples)
  first = jnp.argmax(in_hull, axis=-1)[..., None]  # [B, V, H, W, 1]
  step = 2.0 * half_range / max(samples - 1, 1)
  entry = jnp.take_along_axis(ts, first, axis=-1) - jnp.where(first > 0, 0.5 * step, 0.0)
  found = jnp.any(in_hull, axis=-1, keepdims=True)
  return jax.lax.stop_gradient(jnp.where(found, entry, t_center))


def depth_prior_logit(origins, directions, inputs: dict, config):
  """Raw depth (``[B, V, H, W, 1]``) whose activation is the prior depth along each ray.

  ``config.depth_prior``: ``"center"``, the ray's closest point to the world origin (the
  object centre); ``"visual_hull"``, where the ray enters the visual hull of the input
  masks (:func:`visual_hull_depth`; needs object masks). Clipped into ``(near, far)``.
  """
  t = -jnp.sum(origins * directions, axis=-1, keepdims=True)  # unit directions
  if config.depth_prior == "visual_hull":
    t = visual_hull_depth(origins, directions, inputs, t, half_range=config.hull_range,
                          samples=config.hull_samples)
  elif config.depth_prior != "center":
    raise ValueError(f"model.depth_prior must be 'center' or 'visual_hull', got "
                     f"{config.depth_prior!r}.")
  frac = jnp.clip((t - config.near) / (config.far - config.near), 0.02, 0.98)
  return jax.lax.stop_gradient(_logit(frac))


FAMILY = family.Family(name="grm", model=Model, model_config=model_config,
                       variants=tuple(VARIANTS), regularizers=pixel_gaussians.regularizers)
