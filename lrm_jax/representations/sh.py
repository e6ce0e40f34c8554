"""Real spherical harmonics up to degree 3, in the layout and sign convention of 3DGS.

Coefficients are stored ``[..., K, 3]`` with ``K = (degree + 1)^2`` and basis index
``k = l^2 + l + m`` (``m`` from ``-l`` to ``l``). The basis functions are the real SH
``Y_lm`` up to a fixed sign per ``k``, exactly as the 3DGS CUDA rasterizer evaluates them,
so coefficients in 3DGS ``.ply`` files render identically here. Colour is
``max(sum_k sh_k Y_k(d) + 0.5, 0)``: the 0.5 offset makes all-zero coefficients grey.
"""

from __future__ import annotations

import jax.numpy as jnp

SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005,
         -1.0925484305920792, 0.5462742152960396)
SH_C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658,
         0.3731763325901154, -0.4570457994644658, 1.445305721320277,
         -0.5900435899266435)
MAX_DEGREE = 3


def num_sh_bases(degree: int) -> int:
  """``K = (degree + 1)^2`` coefficients per colour channel."""
  if not 0 <= degree <= MAX_DEGREE:
    raise ValueError(f"SH degree must be in [0, {MAX_DEGREE}], got {degree}.")
  return (degree + 1) ** 2


def sh_degree(num_bases: int) -> int:
  """Inverse of :func:`num_sh_bases`; raises for a ``K`` that is not 1, 4, 9 or 16."""
  for degree in range(MAX_DEGREE + 1):
    if (degree + 1) ** 2 == num_bases:
      return degree
  raise ValueError(f"{num_bases} SH coefficients per channel is not (degree + 1)^2 for a "
                   f"degree in [0, {MAX_DEGREE}].")


def rgb_to_sh(rgb):
  """Colour ``[..., 3]`` -> the DC coefficient that renders it: ``(rgb - 0.5) / C0``."""
  return (rgb - 0.5) / SH_C0


def sh_to_rgb(dc):
  """DC coefficient ``[..., 3]`` -> its view-independent colour ``dc * C0 + 0.5``."""
  return dc * SH_C0 + 0.5


def safe_normalize(v, eps: float = 1e-12):
  """``v / |v|`` along the last axis with finite values and gradients at ``v = 0``."""
  sq = jnp.sum(v * v, axis=-1, keepdims=True)
  return v * jnp.where(sq > eps, jnp.reciprocal(jnp.sqrt(jnp.maximum(sq, eps))), 0.0)


def sh_basis(dirs, degree: int):
  """The 3DGS real-SH basis ``[..., K]`` at unit directions ``dirs [..., 3]``."""
  num_sh_bases(degree)
  x, y, z = dirs[..., 0], dirs[..., 1], dirs[..., 2]
  out = [jnp.full_like(x, SH_C0)]
  if degree >= 1:
    out += [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
  if degree >= 2:
    xx, yy, zz = x * x, y * y, z * z
    out += [SH_C2[0] * x * y, SH_C2[1] * y * z, SH_C2[2] * (2.0 * zz - xx - yy),
            SH_C2[3] * x * z, SH_C2[4] * (xx - yy)]
  if degree >= 3:
    out += [SH_C3[0] * y * (3.0 * xx - yy), SH_C3[1] * x * y * z,
            SH_C3[2] * y * (4.0 * zz - xx - yy), SH_C3[3] * z * (2.0 * zz - 3.0 * xx - 3.0 * yy),
            SH_C3[4] * x * (4.0 * zz - xx - yy), SH_C3[5] * z * (xx - yy),
            SH_C3[6] * x * (xx - 3.0 * yy)]
  return jnp.stack(out, axis=-1)


def eval_sh(sh, dirs):
  """View-dependent colour of SH coefficients.

  Args:
    sh: ``[..., K, 3]`` coefficients (K = 1, 4, 9 or 16).
    dirs: ``[..., 3]`` viewing directions (camera -> point); normalised here, and ignored
      for ``K = 1``.
  Returns:
    ``[..., 3]`` colour ``max(sum_k sh_k Y_k(dirs) + 0.5, 0)`` (as 3DGS).
  """
  degree = sh_degree(sh.shape[-2])
  if degree == 0:
    rgb = SH_C0 * sh[..., 0, :]
  else:
    basis = sh_basis(safe_normalize(dirs), degree)  # [..., K]
    rgb = jnp.einsum("...k,...kc->...c", basis.astype(sh.dtype), sh)
  return jnp.maximum(rgb + 0.5, 0.0)
