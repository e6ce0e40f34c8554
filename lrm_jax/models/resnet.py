"""ResNet (torchvision's BasicBlock layout) as pixelNeRF's multi-scale image encoder.

  image [B, H, W, 3] in [0, 1] -> x * 2 - 1
    -> conv1 7x7/2 -> bn1 -> relu                          (stem,   /2)  latent 0
    -> maxpool 3x3/2 (skipped for small images: pixelNeRF's NMR setting)
    -> layer1 (stride 1) -> layer2 (/2) -> layer3 (/2)                     latents 1-3
  each latent upsampled bilinearly (align_corners=True) to latent 0's size, concatenated:
  [B, H/2, W/2, stem + sum(widths)] (ResNet-34: 64 + 64 + 128 + 256 = 512).

BatchNorm is frozen into a per-channel affine map (``scale``, ``bias``): converted
torchvision weights fold ``gamma / sqrt(var + eps)`` and ``beta - mean * scale`` into it
(:mod:`lrm_jax.convert.resnet`), so the network has no batch statistics to carry; the
pixelNeRF reference keeps BatchNorm in train mode instead (see the model docstring).

Param names follow torchvision's (``conv1``, ``bn1``, ``layer2_0/downsample_0``, ...) so the
converter is a rename and a transpose.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# torchvision resnet34: blocks per stage; pixelNeRF uses the stem and the first 3 stages.
RESNET34_BLOCKS = (3, 4, 6, 3)
RESNET34_WIDTHS = (64, 128, 256, 512)


class Affine(nn.Module):
  """A frozen BatchNorm: ``x * scale + bias`` per channel (``[..., C]``)."""

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones,
                                                             ("channels",)), (c,))
    bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros,
                                                           ("channels",)), (c,))
    return x * scale + bias


def _conv(features, kernel, stride, name):
  pad = kernel // 2
  return nn.Conv(features, (kernel, kernel), (stride, stride), padding=((pad, pad), (pad, pad)),
                 use_bias=False, name=name,
                 kernel_init=nn.with_logical_partitioning(
                     nn.initializers.variance_scaling(2.0, "fan_out", "normal"),
                     (None, None, None, "channels")))


class BasicBlock(nn.Module):
  """``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``; 3x3 convolutions."""

  features: int
  stride: int = 1

  @nn.compact
  def __call__(self, x):  # [B, H, W, Cin] -> [B, H/s, W/s, features]
    y = nn.relu(Affine(name="bn1")(_conv(self.features, 3, self.stride, "conv1")(x)))
    y = Affine(name="bn2")(_conv(self.features, 3, 1, "conv2")(y))
    if self.stride != 1 or x.shape[-1] != self.features:
      x = Affine(name="downsample_1")(_conv(self.features, 1, self.stride, "downsample_0")(x))
    return nn.relu(x + y)


def upsample_matrix(size_in: int, size_out: int) -> np.ndarray:
  """``[size_out, size_in]`` bilinear interpolation weights, ``align_corners=True``."""
  if size_in == 1 or size_out == 1:
    return np.ones((size_out, size_in), np.float32) / size_in
  pos = np.arange(size_out) * (size_in - 1) / (size_out - 1)
  i0 = np.clip(np.floor(pos).astype(np.int64), 0, size_in - 2)
  frac = pos - i0
  m = np.zeros((size_out, size_in), np.float32)
  m[np.arange(size_out), i0] += 1.0 - frac
  m[np.arange(size_out), i0 + 1] += frac
  return m


def upsample_bilinear(x: jax.Array, height: int, width: int) -> jax.Array:
  """``[B, h, w, C] -> [B, height, width, C]`` (torch ``interpolate(..., "bilinear",
  align_corners=True)``), as two small matmuls."""
  if x.shape[1:3] == (height, width):
    return x
  mh = jnp.asarray(upsample_matrix(x.shape[1], height), x.dtype)
  mw = jnp.asarray(upsample_matrix(x.shape[2], width), x.dtype)
  return jnp.einsum("oh,bhwc,pw->bopc", mh, x, mw)


class SpatialEncoder(nn.Module):
  """pixelNeRF's encoder: ``[B, H, W, 3]`` in ``[0, 1]`` -> ``[B, H/2, W/2, C]``.

  Attributes:
    stem: channels of ``conv1`` (ResNet-34: 64).
    blocks: BasicBlocks in each used stage (ResNet-34's first three: 3, 4, 6).
    widths: channels of each used stage (64, 128, 256).
    use_first_pool: the max-pool after the stem (pixelNeRF skips it for 64^2 NMR images).
  """

  stem: int = 64
  blocks: tuple = RESNET34_BLOCKS[:3]
  widths: tuple = RESNET34_WIDTHS[:3]
  use_first_pool: bool = True
  dtype: jnp.dtype = jnp.float32

  @property
  def channels(self) -> int:
    return self.stem + sum(self.widths)

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    x = (images * 2.0 - 1.0).astype(self.dtype)  # pixelNeRF: [-1, 1], no ImageNet stats
    x = nn.relu(Affine(name="bn1")(_conv(self.stem, 7, 2, "conv1")(x)))
    latents = [x]
    if self.use_first_pool:
      x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
    for s, (n, w) in enumerate(zip(self.blocks, self.widths)):
      for i in range(n):
        stride = 2 if (i == 0 and s > 0) else 1
        x = BasicBlock(w, stride, name=f"layer{s + 1}_{i}")(x)
      latents.append(x)
    h, w = latents[0].shape[1:3]
    feats = [upsample_bilinear(z, h, w) for z in latents]
    return jnp.concatenate(feats, -1).astype(jnp.float32)  # [B, H/2, W/2, C]
