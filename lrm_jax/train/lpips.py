"""LPIPS-VGG16 (Zhang et al. 2018) in flax, and loading of converted weights.

Architecture as in the ``lpips`` package (v0.1, ``net='vgg'``): inputs in [-1, 1] are
shifted/scaled, VGG16 features are tapped at relu1_2, relu2_2, relu3_3, relu4_3 and
relu5_3, unit-normalised over channels, squared differences are weighted per channel by
non-negative 1x1 "lin" layers, averaged over space and summed over taps.

Weights are never downloaded: convert the torchvision VGG16 and lpips ``vgg.pth`` files
once with ``python -m lrm_jax.convert.lpips`` and point ``config.lpips_weights`` at the
``.npz`` it writes.
"""

from __future__ import annotations

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# torchvision vgg16().features: (out_channels or "pool") in order; conv index = position.
VGG16_LAYERS = (64, 64, "pool", 128, 128, "pool", 256, 256, 256, "pool", 512, 512, 512,
                "pool", 512, 512, 512)
# Taps after these conv counts (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3).
TAPS = (2, 4, 7, 10, 13)
TAP_CHANNELS = (64, 128, 256, 512, 512)
_SHIFT = np.asarray([-0.030, -0.088, -0.188], np.float32)
_SCALE = np.asarray([0.458, 0.448, 0.450], np.float32)


class VGG16Features(nn.Module):
  """VGG16 conv trunk returning the five LPIPS taps (NHWC)."""

  @nn.compact
  def __call__(self, x: jax.Array) -> list[jax.Array]:
    taps, n_conv = [], 0
    for item in VGG16_LAYERS:
      if item == "pool":
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        continue
      x = nn.relu(nn.Conv(item, (3, 3), padding=1, name=f"conv{n_conv}")(x))
      n_conv += 1
      if n_conv in TAPS:
        taps.append(x)
    return taps


class LPIPS(nn.Module):
  """``LPIPS(x, y)`` per image for ``[N, H, W, 3]`` inputs in [0, 1] -> ``[N]``."""

  @nn.compact
  def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
    def prep(im):
      return ((im * 2.0 - 1.0) - _SHIFT) / _SCALE
    feats = VGG16Features(name="vgg")
    fx, fy = feats(prep(x)), feats(prep(y))
    total = 0.0
    for i, (a, b) in enumerate(zip(fx, fy)):
      na = a / (jnp.sqrt(jnp.sum(a * a, axis=-1, keepdims=True)) + 1e-10)
      nb = b / (jnp.sqrt(jnp.sum(b * b, axis=-1, keepdims=True)) + 1e-10)
      w = self.param(f"lin{i}", nn.initializers.ones, (TAP_CHANNELS[i],))
      total = total + jnp.mean(jnp.sum(jnp.square(na - nb) * w, axis=-1), axis=(1, 2))
    return total


def load_params(path: str) -> dict:
  """Loads converted LPIPS params from an ``.npz`` written by ``lrm_jax.convert.lpips``."""
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"LPIPS weights {path!r} not found. Convert them once with `python -m "
        "lrm_jax.convert.lpips --vgg=vgg16-397923af.pth --lin=vgg.pth --out=lpips_vgg16.npz` "
        "and set config.lpips_weights to the .npz (nothing is downloaded).")
  flat = dict(np.load(path))
  params = {"vgg": {}}
  for key, value in flat.items():
    parts = key.split("/")
    node = params
    for p in parts[:-1]:
      node = node.setdefault(p, {})
    node[parts[-1]] = jnp.asarray(value)
  return params


def lpips_fn(params: dict):
  """``f(x, y) -> [N]`` LPIPS distance with fixed (frozen) params."""
  model = LPIPS()
  frozen = jax.lax.stop_gradient(params)
  return lambda x, y: model.apply({"params": frozen}, x, y)
