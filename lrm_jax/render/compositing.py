"""Per-(Gaussian, pixel) compositing math shared by the dense oracle and the tiled backend.

Both implement the same contract (docs/design.md §5): ``alpha = min(0.99, o * exp(power))``,
skipped when ``power > 0`` or below 1/255, front to back, stopping before the Gaussian
that would take the transmittance below 1e-4. The Pallas kernel writes the same steps in
its own layout (``kernels/splat_pallas.py``).
"""

from __future__ import annotations

import jax.numpy as jnp

from lrm_jax import cameras as cameras_lib
from lrm_jax.render.splat_constants import ALPHA_MAX, ALPHA_MIN, T_MIN


def gaussian_terms(pix, means2d, conics, opacities):
  """Opacity-weighted Gaussians at pixels.

  Args:
    pix: ``[..., P, 2]`` pixel centres; means2d ``[..., C, 2]``; conics ``[..., C, 3]``;
      opacities ``[..., C]`` (0 for padding).
  Returns:
    ``(alpha, gauss)``, each ``[..., C, P]``: the composited alpha (clamped at 0.99, zero
    when skipped) and ``exp(power)``.
  """
  dx = pix[..., None, :, 0] - means2d[..., :, None, 0]
  dy = pix[..., None, :, 1] - means2d[..., :, None, 1]
  ca = conics[..., :, None, 0]
  cb = conics[..., :, None, 1]
  cc = conics[..., :, None, 2]
  power = -0.5 * (ca * dx * dx + cc * dy * dy) - cb * dx * dy
  gauss = jnp.exp(jnp.minimum(power, 0.0))
  alpha = jnp.minimum(opacities[..., :, None] * gauss, ALPHA_MAX)
  alpha = jnp.where((power > 0) | (alpha < ALPHA_MIN), 0.0, alpha)
  return alpha, gauss


def composite_step(alpha, trans, done):
  """One Gaussian at each pixel, exactly as the sequential loop of the contract.

  Args:
    alpha: ``[..., P]`` (0 = skipped); trans: ``[..., P]`` transmittance before it;
      done: ``[..., P]`` bool, compositing stopped earlier.
  Returns:
    ``(weight, included, trans, done)``: a Gaussian is included unless compositing has
    stopped or it would take the transmittance below 1e-4, in which case it stops here.
  """
  next_trans = trans * (1.0 - alpha)
  included = ~done & (next_trans >= T_MIN)
  weight = jnp.where(included, alpha * trans, 0.0)
  return weight, included, jnp.where(included, next_trans, trans), ~included


def composite_chunk(alpha, features, trans, done, accum):
  """A chunk of Gaussians in depth order, unrolled over ``C``, blended into ``accum``.

  Args:
    alpha: ``[G, C, P]``; features: ``[G, C, F]``; trans, done: ``[G, P]``;
      accum: ``[G, P, F]``.
  Returns:
    ``(trans, done, accum)`` after the chunk. The blend is written as per-Gaussian
    products rather than a ``[C] x [F]`` matmul per tile: XLA:CPU runs such tiny batched
    dots several times slower than the fused elementwise form.
  """
  for k in range(alpha.shape[-2]):
    w, _, trans, done = composite_step(alpha[:, k], trans, done)
    accum = accum + w[..., None] * features[:, k, None, :]
  return trans, done, accum


def composite_cumprod(alpha):
  """All Gaussians ``alpha [N, P]`` in depth order at once (cumulative product form).

  The transmittance after each Gaussian only decreases, so "included while it stays
  >= 1e-4" is the same prefix the sequential loop composites. Returns
  ``(weights [N, P], final_T [P])``.
  """
  cp = jnp.cumprod(1.0 - alpha, axis=0)  # [N, P] transmittance after each
  t_before = jnp.concatenate([jnp.ones_like(cp[:1]), cp[:-1]], axis=0)
  included = cp >= T_MIN
  weights = jnp.where(included, alpha * t_before, 0.0)
  return weights, jnp.prod(jnp.where(included, 1.0 - alpha, 1.0), axis=0)


def pixel_centers_flat(height: int, width: int):
  """``[H * W, 2]`` pixel centres ``(j + 0.5, i + 0.5)`` in row-major order."""
  return cameras_lib.pixel_centers(height, width, jnp).reshape(-1, 2)

