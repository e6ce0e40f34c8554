"""The dense oracle: every pixel against every Gaussian, with plain autodiff.

Memory ``H * W * N``, so for images up to ~64x64: the reference the tiled and Pallas
backends are tested against. It applies the same tile footprint as the binned backends
(a Gaussian only reaches the tiles its 3-sigma box touches), so all three agree to rounding.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lrm_jax.render.binning import tile_rects
from lrm_jax.render.compositing import composite_cumprod, gaussian_terms, pixel_centers_flat
from lrm_jax.render.projection import Projected
from lrm_jax.render.splat_constants import TILE_SIZE


def composite_dense(proj: Projected, features, height: int, width: int,
                    tile_size: int = TILE_SIZE):
  """Every pixel against every Gaussian (the oracle; memory ``H * W * N``).

  Args:
    proj: projected Gaussians ``[N]``; features: ``[N, F]`` per-Gaussian values to blend.
  Returns:
    ``(accum [H, W, F], final_T [H, W])`` with the semantics of the tiled rasterizer,
    including its tile footprint (a Gaussian only reaches the tiles its box touches).
  """
  x0, x1, y0, y1 = tile_rects(proj.means2d, proj.radii, height, width, tile_size)
  order = jnp.argsort(jax.lax.stop_gradient(proj.depths), stable=True)
  pix = pixel_centers_flat(height, width)  # [P, 2]
  alpha, _ = gaussian_terms(pix, proj.means2d[order], proj.conics[order],
                            proj.opacities[order])  # [N, P]
  ptx = (pix[:, 0] // tile_size).astype(jnp.int32)[None, :]
  pty = (pix[:, 1] // tile_size).astype(jnp.int32)[None, :]
  x0, x1, y0, y1 = (v[order][:, None] for v in (x0, x1, y0, y1))
  inside = (ptx >= x0) & (ptx < x1) & (pty >= y0) & (pty < y1)
  weights, trans = composite_cumprod(jnp.where(inside, alpha, 0.0))
  accum = weights.T @ features[order]  # [P, F]
  return accum.reshape(height, width, -1), trans.reshape(height, width)

