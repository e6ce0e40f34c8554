"""Training losses: image MSE, L1, SSIM, perceptual (LPIPS), mask, opacity and depth
regularisers.

``image_losses`` compares a renderer's output dict (``rgb``, ``alpha``, ``depth``) with the
batch's targets. Family-specific terms (TV on triplanes, ...) come from the model module's
``regularizers``. Weights live in ``config.loss``.
"""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp

from lrm_jax.train import lpips as lpips_lib
from lrm_jax.train import metrics as metrics_lib


def smooth_l1(x: jax.Array, beta: float = 1.0) -> jax.Array:
  ax = jnp.abs(x)
  return jnp.where(ax < beta, 0.5 * ax * ax / beta, ax - 0.5 * beta)


def normalized_disparity(depth: jax.Array, valid: jax.Array) -> jax.Array:
  """Disparity ``1 / max(z, 0.01)`` of ``[..., H, W, 1]`` depth, normalised per image over
  its valid pixels as Long-LRM does: ``(x - median) / mean|x - median|`` (scale and shift
  invariant). The median is the lower one (``torch.median``); invalid pixels give 0."""
  disp = jnp.where(valid, 1.0 / jnp.maximum(depth, 0.01), 0.0)
  lead = disp.shape[:-3]
  flat = disp.reshape(lead + (-1,))
  flat_valid = valid.reshape(lead + (-1,))
  n = jnp.sum(flat_valid, axis=-1, keepdims=True)  # [..., 1]
  ordered = jnp.sort(jnp.where(flat_valid, flat, jnp.inf), axis=-1)
  median = jnp.take_along_axis(ordered, jnp.maximum(n - 1, 0) // 2, axis=-1)
  median = jnp.where(n > 0, median, 0.0)[..., None, None]  # [..., 1, 1, 1]
  nf = jnp.maximum(n.astype(disp.dtype), 1.0)[..., None, None]
  dev = jnp.sum(jnp.abs(disp - median) * valid, axis=(-3, -2, -1), keepdims=True) / nf
  return jnp.where(valid, (disp - median) / jnp.maximum(dev, 1e-6), 0.0)


def depth_regularizer(pred_depth, target_depth, mask) -> jax.Array:
  """Long-LRM's depth term: smooth L1 between normalised disparities (per image) where the
  mask is on and the target depth known (> 0); 0 when no pixel is."""
  valid = (mask > 0.5) & (target_depth > 0)
  d = normalized_disparity(pred_depth, valid) - normalized_disparity(target_depth, valid)
  n = jnp.maximum(jnp.sum(valid), 1.0)
  return jnp.sum(smooth_l1(d) * valid) / n


class Perceptual:
  """LPIPS with frozen weights from ``config.lpips_weights``; ``None`` when unset."""

  _warned = False

  @classmethod
  def from_config(cls, config):
    path = config.get("lpips_weights", "")
    if not path:
      if not cls._warned:
        logging.warning("config.lpips_weights is empty: the perceptual (LPIPS) loss and "
                        "metric are off for this run.")
        print("note: perceptual loss off (no config.lpips_weights given).")
        cls._warned = True
      return None
    return lpips_lib.lpips_fn(lpips_lib.load_params(path))


def image_losses(rendered: dict, targets: dict, weights, perceptual=None) -> dict:
  """Loss terms (scalars) of a render against targets; ``total`` is their weighted sum.

  Args:
    rendered: ``rgb [B, V, H, W, 3]``, ``alpha [B, V, H, W, 1]``, ``depth [B, V, H, W, 1]``.
    targets: ``images``, ``masks`` (and ``depths``) of the same shapes.
    weights: ``config.loss`` with ``mse, lpips, mask, depth`` weights and optional ``l1``
      and ``ssim`` (the term ``1 - SSIM``) weights (absent or 0: off).
    perceptual: ``f(x [N, H, W, 3], y) -> [N]`` or None.
  """
  rgb, tgt = rendered["rgb"], targets["images"]
  terms = {"mse": jnp.mean(jnp.square(rgb - tgt))}
  total = weights.mse * terms["mse"]
  if weights.get("l1", 0.0) > 0:
    terms["l1"] = jnp.mean(jnp.abs(rgb - tgt))
    total = total + weights.l1 * terms["l1"]
  if weights.get("ssim", 0.0) > 0:
    terms["ssim"] = 1.0 - jnp.mean(metrics_lib.ssim(rgb, tgt))
    total = total + weights.ssim * terms["ssim"]
  if weights.mask > 0:
    terms["mask"] = jnp.mean(jnp.square(rendered["alpha"] - targets["masks"]))
    total = total + weights.mask * terms["mask"]
  if weights.lpips > 0 and perceptual is not None:
    flat = lambda x: x.reshape((-1,) + x.shape[-3:])
    terms["lpips"] = jnp.mean(perceptual(flat(rgb), flat(tgt)))
    total = total + weights.lpips * terms["lpips"]
  if weights.depth > 0 and "depths" in targets:
    terms["depth"] = depth_regularizer(rendered["depth"], targets["depths"], targets["masks"])
    total = total + weights.depth * terms["depth"]
  terms["total"] = total
  return terms


def opacity_regularizer(opacities: jax.Array) -> jax.Array:
  """Long-LRM's opacity term: mean activated opacity (pushes unused Gaussians to vanish)."""
  return jnp.mean(opacities)
