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

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lrm_jax import cameras as cam
from lrm_jax import parallel
from lrm_jax.io import ply
from lrm_jax.models import layers
from lrm_jax.models.vit import PatchEmbed
from lrm_jax.render import gaussians as gs
from lrm_jax.render import splatting

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
  c.keep_fraction = 0.35 if variant in ("tiny", "micro") else 1.0
  # Renderer.
  c.backend = "auto"  # auto: pallas on TPU/GPU, tiled on CPU
  return c


class ViewPositions(nn.Module):
  """Adds a learned position embedding per view and token: ``[B, V, T, D]``."""

  @nn.compact
  def __call__(self, tokens: jax.Array) -> jax.Array:
    pos = self.param("embedding", nn.with_logical_partitioning(
        nn.initializers.normal(0.02), ("views", "tokens", "embed")), tokens.shape[1:])
    return tokens + pos


class Model(nn.Module):
  """GRM. ``reconstruct(inputs) -> Gaussians``; ``render(gaussians, cameras) -> images``."""

  config: ml_collections.ConfigDict

  def setup(self):
    c = self.config
    if 2 ** len(c.up_channels) != c.patch:
      raise ValueError(f"GRM: {len(c.up_channels)} upsampler stages x2 do not undo patch "
                       f"{c.patch}; need log2(patch) stages.")
    dtype = jnp.dtype(c.dtype)
    self.tokenizer = PatchEmbed(c.patch, c.width)
    self.view_positions = ViewPositions()
    self.transformer = layers.Transformer(c.depth, c.num_heads, c.mlp_ratio, c.remat_policy,
                                          c.scan, dtype)
    self.up_proj = [nn.Dense(4 * ch, kernel_init=nn.with_logical_partitioning(
        layers.dense_init(), ("embed", "mlp")), name=f"up_proj_{i}")
                    for i, ch in enumerate(c.up_channels)]
    self.up_blocks = [[layers.WindowBlock(h, c.window, c.mlp_ratio, dtype,
                                          name=f"up_block_{i}_{j}")
                       for j in range(c.up_blocks)]
                      for i, h in enumerate(c.up_heads)]
    head = lambda n, bias=nn.initializers.zeros: nn.Dense(
        n, kernel_init=nn.with_logical_partitioning(layers.dense_init(0.1), ("mlp", None)),
        bias_init=bias)
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
    for proj, blocks in zip(self.up_proj, self.up_blocks):
      feat = layers.pixel_shuffle(proj(feat), 2)
      for block in blocks:
        feat = block(feat)
    return feat

  def raw_attributes(self, inputs: dict) -> dict:
    """Per-pixel raw Gaussian attributes ``{name: [B, V, H, W, k]}`` (before activation)."""
    images = inputs["images"]
    b, v, h, w, _ = images.shape
    cams = cam.Cameras(inputs["c2w"], inputs["intrinsics"], h, w)
    feat, pixels = self.tokens(images, cams.plucker())
    feat = self.upsample(feat)
    feat = jnp.concatenate([feat, pixels], axis=-1)  # skip: each pixel's own RGB + ray
    return {"depth": self.depth_head(feat), "rotation": self.rot_head(feat),
            "scale": self.scale_head(feat), "opacity": self.opacity_head(feat),
            "color": self.color_head(feat)}

  def reconstruct(self, inputs: dict, train: bool = False) -> gs.Gaussians:
    """Posed input views -> ``Gaussians`` with ``N = V * H * W`` per scene (or the
    ``keep_fraction`` most opaque of them)."""
    del train
    c = self.config
    raw = self.raw_attributes(inputs)
    h, w = inputs["images"].shape[2:4]
    origins, dirs = cam.get_rays(inputs["c2w"], inputs["intrinsics"], h, w)
    b, v = inputs["images"].shape[:2]
    flat = lambda x: x.reshape(b, v * h * w, x.shape[-1])  # [B, V*H*W, k]
    packed = jnp.concatenate([raw[k] for k in ("depth", "rotation", "scale", "opacity",
                                               "color")], axis=-1)
    g = gs.grm_activation(flat(packed), flat(origins), flat(dirs), near=c.near, far=c.far,
                          min_scale=c.min_scale, max_scale=c.max_scale)
    if c.mask_gaussians:
      # Pixels off the object (input mask 0) give transparent Gaussians.
      g = g.replace(opacities=g.opacities * flat(inputs["masks"]))
    if c.keep_fraction < 1.0:
      g = gs.prune_topk_by_opacity(g, max(1, int(round(c.keep_fraction * g.num))))
    return g

  def render(self, gaussians: gs.Gaussians, cameras: cam.Cameras, background) -> dict:
    """Splats ``[B, N]`` Gaussians into cameras ``[B, V]``: rgb, depth, alpha, overflow."""
    backend = resolve_backend(self.config.backend)
    # Per device on its batch rows (a Pallas kernel on TPU cannot be auto-partitioned).
    return parallel.batch_map(
        lambda g, c, bg: splatting.rasterize(g, c, bg, backend=backend), (gaussians, cameras),
        (jnp.zeros((3,), jnp.float32) if background is None else jnp.asarray(background),))

  def __call__(self, inputs: dict, cameras: cam.Cameras, background, train: bool = False):
    g = self.reconstruct(inputs, train)
    return self.render(g, cameras, background), g


def resolve_backend(name: str) -> str:
  """``auto``: the Pallas kernel on TPU/GPU, the tiled jnp rasteriser on CPU."""
  if name != "auto":
    return name
  return "tiled" if jax.default_backend() == "cpu" else "pallas"


def regularizers(representation, config) -> dict:
  """Family-specific loss terms (GRM has none beyond the image, mask and opacity terms)."""
  del representation, config
  return {}


def export(representation: gs.Gaussians, out_dir: str, model=None, params=None,
           config=None, min_opacity: float = 0.005) -> dict:
  """Writes the first scene's Gaussians as a standard 3DGS ``gaussians.ply``.

  Nearly transparent Gaussians (opacity < ``min_opacity``, mostly background pixels) are
  dropped; they change no rendered pixel by more than that opacity.
  """
  del model, params, config
  scene = jax.tree.map(lambda x: np.asarray(jax.device_get(x))[0], representation)
  kept = gs.prune_by_threshold(scene, min_opacity)
  path = ply.save_ply(os.path.join(out_dir, "gaussians.ply"), kept)
  return {"gaussians": path, "num_gaussians": int(kept.num)}


def num_gaussians(image_size: int, views: int) -> int:
  return views * image_size * image_size


def describe(config) -> str:
  c = config.model
  return (f"GRM-{c.variant}: patch {c.patch}, {c.depth} x width {c.width}, upsampler "
          f"{tuple(c.up_channels)}, {num_gaussians(config.data.input_size, config.data.num_input_views):,} "
          "Gaussians per scene")

