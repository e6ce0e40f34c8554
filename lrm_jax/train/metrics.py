"""Image metrics: PSNR, SSIM (matches scikit-image's Gaussian-window SSIM) and LPIPS."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def mse(pred: jax.Array, target: jax.Array) -> jax.Array:
  """Per-image MSE over ``[..., H, W, C]`` -> ``[...]``."""
  return jnp.mean(jnp.square(pred - target), axis=(-3, -2, -1))


def psnr(pred: jax.Array, target: jax.Array, max_value: float = 1.0) -> jax.Array:
  """Per-image PSNR in dB of ``[..., H, W, C]`` images in ``[0, max_value]`` -> ``[...]``."""
  err = jnp.maximum(mse(pred, target), 1e-10)
  return 10.0 * jnp.log10(max_value ** 2 / err)


def psnr_from_mse(err) -> np.ndarray:
  return 10.0 * np.log10(1.0 / np.maximum(np.asarray(err, np.float64), 1e-10))


def _gaussian_kernel(sigma: float = 1.5, radius: int = 5) -> jax.Array:
  x = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
  k = jnp.exp(-0.5 * (x / sigma) ** 2)
  return k / k.sum()


def _filter(x: jax.Array, k: jax.Array) -> jax.Array:
  """Separable 'valid' filtering of ``[N, H, W, C]`` along H and W."""
  n, h, w, c = x.shape
  x = jnp.moveaxis(x, -1, 1).reshape(n * c, 1, h, w)
  kh = k.reshape(1, 1, -1, 1)
  kw = k.reshape(1, 1, 1, -1)
  dn = ("NCHW", "OIHW", "NCHW")
  x = jax.lax.conv_general_dilated(x, kh, (1, 1), "VALID", dimension_numbers=dn)
  x = jax.lax.conv_general_dilated(x, kw, (1, 1), "VALID", dimension_numbers=dn)
  return jnp.moveaxis(x.reshape(n, c, x.shape[-2], x.shape[-1]), 1, -1)


def ssim(pred: jax.Array, target: jax.Array, max_value: float = 1.0) -> jax.Array:
  """Per-image SSIM of ``[..., H, W, C]`` -> ``[...]``.

  Same definition as ``skimage.metrics.structural_similarity(gaussian_weights=True,
  sigma=1.5, use_sample_covariance=False, data_range=max_value, channel_axis=-1)``: an 11-tap
  Gaussian window, constants K1 = 0.01, K2 = 0.03, averaged over the valid interior and
  channels.
  """
  batch = pred.shape[:-3]
  p = pred.reshape((-1,) + pred.shape[-3:]).astype(jnp.float32)
  t = target.reshape((-1,) + target.shape[-3:]).astype(jnp.float32)
  k = _gaussian_kernel()
  mu_p, mu_t = _filter(p, k), _filter(t, k)
  var_p = _filter(p * p, k) - mu_p ** 2
  var_t = _filter(t * t, k) - mu_t ** 2
  cov = _filter(p * t, k) - mu_p * mu_t
  c1, c2 = (0.01 * max_value) ** 2, (0.03 * max_value) ** 2
  s = ((2 * mu_p * mu_t + c1) * (2 * cov + c2)) / ((mu_p ** 2 + mu_t ** 2 + c1) *
                                                    (var_p + var_t + c2))
  return jnp.mean(s, axis=(-3, -2, -1)).reshape(batch)
