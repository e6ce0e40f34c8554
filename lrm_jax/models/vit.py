"""ViT pieces: the conv patch tokenizer, the size table, and a plain ViT encoder.

Sizes follow the ViT paper (Dosovitskiy et al. 2021) and DINO/DINOv2 (ViT-S/B/L/g).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

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
