"""ViT pieces: the conv patch tokenizer, size tables, a plain ViT and the DINO encoders.

Sizes follow the ViT paper (Dosovitskiy et al. 2021) and DINO/DINOv2 (ViT-S/B/L/g).

:class:`DinoViT` reproduces the two Hugging Face layouts LRM-style models start from, so
released weights convert one to one (``lrm_jax/convert/dino.py``):

  * DINO (Caron et al. 2021), ``ViTModel`` as in ``facebook/dino-vitb16``: cls token,
    learned positions for a 224^2 grid, pre-LN blocks (LayerNorm eps 1e-12), exact-GELU MLP,
    a final LayerNorm; positions are bicubically interpolated to other grids (HF
    ``interpolate_pos_encoding=True``, as LRM runs it at 512^2).
  * DINOv2 (Oquab et al. 2024) with registers (Darcet et al. 2024),
    ``Dinov2WithRegistersModel`` as in ``facebook/dinov2-with-registers-base``: cls token,
    positions for a 518^2 grid (37 x 37 patches of 14), register tokens inserted after the
    positions are added, LayerScale on both residual branches, LayerNorm eps 1e-6, positions
    interpolated by antialiased bicubic resampling. ``Dinov2Model`` (no registers, plain
    bicubic) is the same with ``num_registers=0, pos_antialias=False``.

All return HF's ``last_hidden_state``: ``[B, 1 + R + T, D]`` (cls, registers, patches),
after the final LayerNorm.
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lrm_jax.models import layers

# name -> (depth, width, heads, mlp_dim)
SIZES = {
    "mu": (2, 64, 2, 256),
    "Ti": (12, 192, 3, 768),
    "S": (12, 384, 6, 1536),
    "B": (12, 768, 12, 3072),
    "L": (24, 1024, 16, 4096),
    "g": (40, 1536, 24, 6144),
}

# Pretrained encoders (the names of their Hugging Face checkpoints) -> DinoViT settings.
# ``image_size / patch`` is the grid the checkpoint's position embeddings were trained on.
ENCODERS = {
    # DINO ViT (HF ViTModel): facebook/dino-vit{s,b}{8,16}.
    "dino_vits16": dict(size="S", patch=16, image_size=224, num_registers=0,
                        layer_scale=False, epsilon=1e-12, pos_antialias=False),
    "dino_vitb16": dict(size="B", patch=16, image_size=224, num_registers=0,
                        layer_scale=False, epsilon=1e-12, pos_antialias=False),
    "dino_vitb8": dict(size="B", patch=8, image_size=224, num_registers=0,
                       layer_scale=False, epsilon=1e-12, pos_antialias=False),
    # DINOv2 (HF Dinov2Model): facebook/dinov2-{small,base,large}.
    "dinov2_vits14": dict(size="S", patch=14, image_size=518, num_registers=0,
                          layer_scale=True, epsilon=1e-6, pos_antialias=False),
    "dinov2_vitb14": dict(size="B", patch=14, image_size=518, num_registers=0,
                          layer_scale=True, epsilon=1e-6, pos_antialias=False),
    "dinov2_vitl14": dict(size="L", patch=14, image_size=518, num_registers=0,
                          layer_scale=True, epsilon=1e-6, pos_antialias=False),
    # DINOv2 with registers (HF Dinov2WithRegistersModel): facebook/dinov2-with-registers-*.
    # OpenLRM v1.1 uses the S and B ones.
    "dinov2_vits14_reg": dict(size="S", patch=14, image_size=518, num_registers=4,
                              layer_scale=True, epsilon=1e-6, pos_antialias=True),
    "dinov2_vitb14_reg": dict(size="B", patch=14, image_size=518, num_registers=4,
                              layer_scale=True, epsilon=1e-6, pos_antialias=True),
    "dinov2_vitl14_reg": dict(size="L", patch=14, image_size=518, num_registers=4,
                              layer_scale=True, epsilon=1e-6, pos_antialias=True),
}

# ImageNet statistics: DINO/DINOv2 (and OpenLRM's wrappers) normalise inputs with them.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PatchEmbed(nn.Module):
  """Conv with kernel = stride = ``patch``: ``[N, H, W, C] -> [N, H/p, W/p, D]``."""

  patch: int
  width: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h, w = x.shape[-3:-1]
    if h % self.patch or w % self.patch:
      raise ValueError(f"image {h}x{w} is not divisible by the patch size {self.patch}.")
    return nn.Conv(self.width, (self.patch, self.patch), strides=(self.patch, self.patch),
                   padding="VALID",
                   kernel_init=nn.with_logical_partitioning(
                       layers.dense_init(), (None, None, "channels", "embed")),
                   bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
                   name="conv")(x)


class ViT(nn.Module):
  """A plain ViT encoder: patch tokens (+ optional cls) + learned positions -> transformer.

  Returns ``[B, T, D]`` tokens (cls first when ``use_cls``), final-LayerNormed.
  """

  patch: int = 16
  size: str = "B"
  use_cls: bool = True
  num_positions: int = 0  # 0: derived from the first input
  remat_policy: str = "none"
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    depth, width, heads, mlp = SIZES[self.size]
    x = PatchEmbed(self.patch, width, name="patch_embed")(images)  # [B, h, w, D]
    b = x.shape[0]
    x = x.reshape(b, -1, width)
    if self.use_cls:
      cls = self.param("cls", nn.initializers.zeros, (1, 1, width))
      x = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, width)), x], axis=1)
    pos = self.param("pos_embedding", nn.with_logical_partitioning(
        nn.initializers.normal(0.02), (None, "tokens", "embed")), (1, x.shape[1], width))
    x = x + pos
    return layers.Transformer(depth, heads, mlp / width, self.remat_policy, dtype=self.dtype,
                              name="encoder")(x)


# ----------------------------------------------------------------------------------------
# Position-embedding interpolation (PyTorch's bicubic, as HF runs it).
# ----------------------------------------------------------------------------------------


def _cubic(x: np.ndarray, a: float) -> np.ndarray:
  """Keys' cubic convolution kernel with parameter ``a``."""
  x = np.abs(x)
  near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
  far = ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
  return np.where(x <= 1.0, near, np.where(x < 2.0, far, 0.0))


@functools.lru_cache(maxsize=64)
def bicubic_matrix(in_size: int, out_size: int, antialias: bool = False,
                   offset: float = 0.0) -> np.ndarray:
  """``[out_size, in_size]`` weights of ``torch.nn.functional.interpolate(mode="bicubic",
  align_corners=False, size=...)`` along one axis.

  ``offset > 0`` reproduces the native DINO/DINOv2 code instead, which passes
  ``scale_factor=(out + offset) / in`` (offset 0.1): the same output size, but source
  coordinates scaled by ``in / (out + offset)``.

  Without ``antialias``: source ``(i + 0.5) in / out - 0.5``, Keys kernel ``a = -0.75``,
  taps clamped to the border (PyTorch's ``upsample_bicubic2d``). With ``antialias``:
  PyTorch's separable ``_upsample_bicubic2d_aa`` (the PIL filter): ``a = -0.5``, support
  widened by the downscale factor, taps outside the image dropped and weights renormalised.
  """
  scale = in_size / (out_size + offset)
  m = np.zeros((out_size, in_size), np.float64)
  for i in range(out_size):
    if antialias:
      support = 2.0 * scale if scale >= 1.0 else 2.0
      inv = 1.0 / scale if scale >= 1.0 else 1.0
      center = scale * (i + 0.5)
      lo = max(int(center - support + 0.5), 0)
      hi = min(int(center + support + 0.5), in_size)
      j = np.arange(lo, hi)
      w = _cubic((j - center + 0.5) * inv, -0.5)
      m[i, lo:hi] = w / w.sum()
    else:
      src = (i + 0.5) * scale - 0.5
      base = math.floor(src)
      t = src - base
      for k, off in enumerate((-1, 0, 1, 2)):
        m[i, min(max(base + off, 0), in_size - 1)] += _cubic(np.asarray(t - off), -0.75)
  return m.astype(np.float32)


def interpolate_positions(pos: jax.Array, grid: int, height: int, width: int,
                          antialias: bool = False, offset: float = 0.0) -> jax.Array:
  """Bicubic resize of ``[grid * grid, D]`` patch positions to ``[height * width, D]``."""
  d = pos.shape[-1]
  if (height, width) == (grid, grid):
    return pos
  mh = jnp.asarray(bicubic_matrix(grid, height, antialias, offset))  # [h, g]
  mw = jnp.asarray(bicubic_matrix(grid, width, antialias, offset))  # [w, g]
  p = pos.reshape(grid, grid, d).astype(jnp.float32)
  out = jnp.einsum("hg,gkd,wk->hwd", mh, p, mw, precision=jax.lax.Precision.HIGHEST)
  return out.reshape(height * width, d).astype(pos.dtype)


# ----------------------------------------------------------------------------------------
# DINO / DINOv2 encoder.
# ----------------------------------------------------------------------------------------


class DinoBlock(nn.Module):
  """Pre-LN ViT block with optional LayerScale: ``x + g1 Attn(LN(x))``, ``x + g2 MLP(LN(x))``.

  Scan-compatible: ``(x [B, T, D], _) -> (x, None)``.
  """

  num_heads: int
  mlp_dim: int
  layer_scale: bool = False
  epsilon: float = 1e-6
  dtype: jnp.dtype = jnp.float32
  attention: str = "auto"  # layers.Attention.impl

  @nn.compact
  def __call__(self, x: jax.Array, _=None):
    d = x.shape[-1]
    x = layers.constrain(x, ("batch", "tokens", "embed"))
    scale = lambda name: (self.param(name, nn.with_logical_partitioning(
        nn.initializers.ones, ("embed",)), (d,)) if self.layer_scale else 1.0)
    h = layers.Attention(self.num_heads, self.dtype, self.attention, name="attn")(
        layers.LayerNorm(epsilon=self.epsilon, name="ln1")(x))
    x = x + scale("ls1") * h
    h = layers.Mlp(self.mlp_dim, self.dtype, name="mlp")(
        layers.LayerNorm(epsilon=self.epsilon, name="ln2")(x))
    x = x + scale("ls2") * h
    return x.astype(jnp.float32), None


class DinoViT(nn.Module):
  """DINO / DINOv2(-with-registers) ViT: ``[B, H, W, 3]`` (normalised) -> ``[B, 1+R+T, D]``.

  Attributes:
    patch, width, depth, num_heads, mlp_dim: the ViT's shape.
    num_registers: register tokens (DINOv2 with registers: 4).
    layer_scale: LayerScale on both residual branches (DINOv2).
    epsilon: LayerNorm epsilon (HF ViT 1e-12, DINOv2 1e-6).
    pos_grid: side of the grid the position embeddings are stored for (a checkpoint's
      ``image_size // patch``; 0: the grid of the input). Other input grids interpolate.
    pos_antialias: antialiased bicubic interpolation (HF DINOv2 with registers).
    pos_offset: the native DINO/DINOv2 ``interpolate_offset`` (0.1 there; HF uses 0).
    remat_policy, scan, dtype, attention: as :class:`layers.Transformer`.
  """

  patch: int = 16
  width: int = 768
  depth: int = 12
  num_heads: int = 12
  mlp_dim: int = 3072
  num_registers: int = 0
  layer_scale: bool = False
  epsilon: float = 1e-6
  pos_grid: int = 0
  pos_antialias: bool = False
  pos_offset: float = 0.0
  remat_policy: str = "none"
  scan: bool = True
  dtype: jnp.dtype = jnp.float32
  attention: str = "auto"

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    d = self.width
    x = PatchEmbed(self.patch, d, name="patch_embed")(images)  # [B, h, w, D]
    b, h, w, _ = x.shape
    if self.pos_grid == 0 and h != w:
      raise ValueError(f"DinoViT with pos_grid=0 needs a square grid, got {h}x{w}.")
    grid = self.pos_grid or h
    x = x.reshape(b, h * w, d)
    cls = self.param("cls", nn.with_logical_partitioning(
        nn.initializers.normal(0.02), (None, None, "embed")), (1, 1, d))
    pos = self.param("pos_embedding", nn.with_logical_partitioning(
        nn.initializers.normal(0.02), (None, "tokens", "embed")), (1, 1 + grid * grid, d))
    patch_pos = interpolate_positions(pos[0, 1:], grid, h, w, self.pos_antialias,
                                      self.pos_offset)  # [T, D]
    x = jnp.concatenate([jnp.broadcast_to(cls + pos[:, :1], (b, 1, d)),
                         x + patch_pos[None]], axis=1)  # [B, 1 + T, D]
    if self.num_registers:
      reg = self.param("registers", nn.with_logical_partitioning(
          nn.initializers.normal(0.02), (None, None, "embed")), (1, self.num_registers, d))
      x = jnp.concatenate([x[:, :1], jnp.broadcast_to(reg, (b, self.num_registers, d)),
                           x[:, 1:]], axis=1)  # [B, 1 + R + T, D]
    args = (self.num_heads, self.mlp_dim, self.layer_scale, self.epsilon, self.dtype,
            self.attention)
    x = layers.apply_blocks(DinoBlock, args, self.depth, x, remat_policy=self.remat_policy,
                            scan=self.scan)
    return layers.LayerNorm(epsilon=self.epsilon, name="ln_final")(x)


def dino_settings(name: str) -> dict:
  """:class:`DinoViT` keyword arguments of a pretrained encoder in :data:`ENCODERS`."""
  if name not in ENCODERS:
    raise ValueError(f"unknown encoder {name!r}; choose one of {sorted(ENCODERS)}.")
  e = ENCODERS[name]
  depth, width, heads, mlp = SIZES[e["size"]]
  return dict(patch=e["patch"], width=width, depth=depth, num_heads=heads, mlp_dim=mlp,
              num_registers=e["num_registers"], layer_scale=e["layer_scale"],
              epsilon=e["epsilon"], pos_grid=e["image_size"] // e["patch"],
              pos_antialias=e["pos_antialias"], pos_offset=0.0)


def normalize_imagenet(images: jax.Array) -> jax.Array:
  """``[..., 3]`` images in [0, 1] -> ImageNet-normalised (what DINO models expect)."""
  mean = jnp.asarray(IMAGENET_MEAN, images.dtype)
  std = jnp.asarray(IMAGENET_STD, images.dtype)
  return (images - mean) / std
