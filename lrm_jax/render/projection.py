"""EWA projection of 3D Gaussians into one camera (the first stage of splatting).

Each Gaussian becomes a 2D mean, the conic (inverse 2D covariance), its camera depth, a
3-sigma radius in pixels (0: not drawn) and its view-dependent colour, as in 3DGS / gsplat:
the 2D covariance is ``J W Sigma W^T J^T`` plus a 0.3 px^2 low-pass, with the perspective
Jacobian ``J`` evaluated at most 1.3x the frustum out, and Gaussians behind the near plane,
with a singular 2D covariance or entirely off the image get radius 0.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

from lrm_jax.render.splat_constants import ALPHA_MIN, FOV_CLAMP, LOWPASS, NEAR_PLANE
from lrm_jax.representations import sh as sh_lib
from lrm_jax.representations.gaussians import Gaussians, components, covariance_components

Array = Any


@flax.struct.dataclass
class Projected:
  """Gaussians projected into one camera (all ``[N, ...]``)."""

  means2d: Array  # [N, 2] pixel coordinates (pixel centres at +0.5)
  conics: Array  # [N, 3] (a, b, c) of the inverse 2D covariance [[a, b], [b, c]]
  depths: Array  # [N] camera z
  radii: Array  # [N] int32, 0 for Gaussians that are not drawn
  colors: Array  # [N, 3]
  opacities: Array  # [N]



def opacity_sigmas(opacities: Array) -> Array:
  """``[N]`` extent in standard deviations beyond which a Gaussian's alpha stays under
  ``ALPHA_MIN``: ``min(3, sqrt(2 ln(o / ALPHA_MIN)))``, 0 when ``o < ALPHA_MIN``."""
  # A 0.1% margin on ALPHA_MIN: a pixel on the bound is never lost to exp/log rounding.
  ratio = jnp.maximum(opacities, ALPHA_MIN) / (0.999 * ALPHA_MIN)
  k = jnp.minimum(3.0, jnp.sqrt(2.0 * jnp.log(ratio)))
  return jnp.where(opacities >= ALPHA_MIN, k, 0.0)


def project(g: Gaussians, c2w, intrinsics, height: int, width: int,
            near: float = NEAR_PLANE) -> Projected:
  """EWA projection of unbatched Gaussians ``[N]`` into one camera.

  Args:
    g: Gaussians with ``means [N, 3]`` etc.
    c2w: ``[4, 4]`` OpenCV camera-to-world; intrinsics: ``[4]`` ``(fx, fy, cx, cy)``.
    height, width: image size in pixels.
  Returns:
    :class:`Projected`. Values of undrawn Gaussians (radius 0) are finite but meaningless;
    gradients are finite everywhere (behind the camera, zero scale, zero quaternion).
  """
  # Componentwise throughout: every per-Gaussian quantity is an [N] vector (a TPU pads
  # the small last axes of [N, 3] / [N, 2, 3] intermediates to 8 x 128).
  rot = c2w[:3, :3]  # columns: camera axes in world
  d = [m - c2w[i, 3] for i, m in enumerate(components(g.means))]
  tx, ty, t_z = (d[0] * rot[0, j] + d[1] * rot[1, j] + d[2] * rot[2, j] for j in range(3))
  fx, fy, cx, cy = intrinsics[0], intrinsics[1], intrinsics[2], intrinsics[3]
  in_front = t_z > near
  tz = jnp.where(in_front, t_z, 1.0)

  # Jacobian of the perspective map, evaluated at most 1.3x the frustum out (gsplat).
  tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
  lim_x_pos = (width - cx) / fx + (FOV_CLAMP - 1.0) * tan_x
  lim_x_neg = cx / fx + (FOV_CLAMP - 1.0) * tan_x
  lim_y_pos = (height - cy) / fy + (FOV_CLAMP - 1.0) * tan_y
  lim_y_neg = cy / fy + (FOV_CLAMP - 1.0) * tan_y
  jx = jnp.clip(tx / tz, -lim_x_neg, lim_x_pos)
  jy = jnp.clip(ty / tz, -lim_y_neg, lim_y_pos)
  # Rows of J W (W = rot^T, world -> camera): J = [[fx/z, 0, -fx jx/z], [0, fy/z, -fy jy/z]].
  a0, a2 = fx / tz, -fx * jx / tz
  b1, b2 = fy / tz, -fy * jy / tz
  m0 = [a0 * rot[i, 0] + a2 * rot[i, 2] for i in range(3)]
  m1 = [b1 * rot[i, 1] + b2 * rot[i, 2] for i in range(3)]
  xx, xy, xz, yy, yz, zz = covariance_components(g.quats, g.scales)
  sig = ((xx, xy, xz), (xy, yy, yz), (xz, yz, zz))
  sm1 = [sig[i][0] * m1[0] + sig[i][1] * m1[1] + sig[i][2] * m1[2] for i in range(3)]
  sm0 = [sig[i][0] * m0[0] + sig[i][1] * m0[1] + sig[i][2] * m0[2] for i in range(3)]
  a = m0[0] * sm0[0] + m0[1] * sm0[1] + m0[2] * sm0[2] + LOWPASS  # (J W Sigma W^T J^T)
  b = m0[0] * sm1[0] + m0[1] * sm1[1] + m0[2] * sm1[2]
  c = m1[0] * sm1[0] + m1[1] * sm1[1] + m1[2] * sm1[2] + LOWPASS
  det = a * c - b * b
  ok = in_front & (det > 0)
  inv_det = 1.0 / jnp.where(ok, det, 1.0)
  conics = jnp.stack([c * inv_det, -b * inv_det, a * inv_det], -1)  # [N, 3]
  mean_x, mean_y = fx * tx / tz + cx, fy * ty / tz + cy
  means2d = jnp.stack([mean_x, mean_y], -1)  # [N, 2]

  # Radius along the larger eigenvalue (no gradient: it only selects tiles): 3 sigma, or
  # less where the opacity is low. Beyond k sigma, alpha <= o exp(-k^2 / 2), which is under
  # ALPHA_MIN (skipped by every compositor) for k >= sqrt(2 ln(o / ALPHA_MIN)): the tiles
  # dropped hold only skipped pixels, so images and gradients are unchanged, and a Gaussian
  # with o < ALPHA_MIN (a masked-out pixel's) is not drawn at all.
  sa, sc, sdet = jax.lax.stop_gradient((a, c, det))
  mid = 0.5 * (sa + sc)
  lam = mid + jnp.sqrt(jnp.maximum(0.1, mid * mid - sdet))
  sigmas = opacity_sigmas(jax.lax.stop_gradient(g.opacities[:, 0]))
  radius = jnp.ceil(sigmas * jnp.sqrt(lam))
  mx, my = jax.lax.stop_gradient((mean_x, mean_y))
  on_screen = (mx + radius > 0) & (mx - radius < width) & (my + radius > 0) & (
      my - radius < height)
  radii = jnp.where(ok & on_screen & (sigmas > 0), radius, 0.0).astype(jnp.int32)

  # View-dependent colour: direction from the camera centre to the mean.
  colors = sh_lib.eval_sh(g.sh, g.means - c2w[:3, 3])
  return Projected(means2d, conics, t_z, radii, colors, g.opacities[:, 0])

