"""Shared by the families that predict one Gaussian per input pixel from ViT tokens (GRM,
Avat3r): the learned per-view token positions and GRM's transformer upsampler.

The upsampler's modules are made by :func:`make_upsampler` inside the calling model's
``setup`` (so their parameters keep the caller's names ``up_proj_{i}`` and
``up_block_{i}_{j}``) and applied by :func:`upsample`.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from lrm_jax.models import layers


class ViewPositions(nn.Module):
  """Adds a learned position embedding per view and token: ``[B, V, T, D]``."""

  @nn.compact
  def __call__(self, tokens: jax.Array) -> jax.Array:
    pos = self.param("embedding", nn.with_logical_partitioning(
        nn.initializers.normal(0.02), ("views", "tokens", "embed")), tokens.shape[1:])
    return tokens + pos


def make_upsampler(c, dtype, attention: str):
  """Call from ``setup``: the upsampler stages of model config ``c`` (``up_channels``,
  ``up_heads``, ``up_blocks``, ``window``, ``mlp_ratio``, ``remat_policy``, window groups).

  Returns ``(projections, blocks)``: per stage a Dense to ``4 * channels`` (before a
  PixelShuffle(2)) and ``up_blocks`` windowed transformer blocks. The full-resolution
  activations dominate memory at 512^2: the blocks are rematerialised with the
  transformer's policy.
  """
  proj = [nn.Dense(4 * ch, kernel_init=nn.with_logical_partitioning(
      layers.dense_init(), ("embed", "mlp")), dot_general=layers.dense_dot_general,
      name=f"up_proj_{i}") for i, ch in enumerate(c.up_channels)]
  window_block = layers.WindowBlock if c.remat_policy == "none" else nn.remat(
      layers.WindowBlock, policy=layers.REMAT_POLICIES[c.remat_policy])
  groups = dict(group_min_tokens=c.get("window_group_min_tokens", 65536),
                group_tokens=c.get("window_group_tokens", 4096))
  blocks = [[window_block(h, c.window, c.mlp_ratio, dtype, attention, **groups,
                          name=f"up_block_{i}_{j}") for j in range(c.up_blocks)]
            for i, h in enumerate(c.up_heads)]
  return proj, blocks


def upsample(projections, blocks, feat: jax.Array) -> jax.Array:
  """``[B, V, h, w, D] -> [B, V, h * 2^S, w * 2^S, C]``: per stage a projection, a
  PixelShuffle(2) and windowed attention (windows span the same region of every view)."""
  for proj, stage in zip(projections, blocks):
    feat = layers.pixel_shuffle(proj(feat), 2)
    for block in stage:
      feat = block(feat)
  return feat
