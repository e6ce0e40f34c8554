"""3D Gaussians: the pytree, covariances, pixel-aligned unprojection, pruning.

Layout (docs/design.md §3): a set of ``N`` Gaussians, with any leading batch dims ``[...]``:

  * ``means [..., N, 3]`` world positions;
  * ``scales [..., N, 3]`` activated standard deviations along the local axes (world units);
  * ``quats [..., N, 4]`` rotations, ``(w, x, y, z)``; normalised wherever they are used, so
    un-normalised quaternions (as 3DGS stores them) are fine;
  * ``opacities [..., N, 1]`` activated, in ``[0, 1]``;
  * ``sh [..., N, K, 3]`` colour as real spherical harmonics, ``K = (degree + 1)^2``.

Colour always lives in ``sh``: plain RGB is degree 0 (``K = 1``) with the DC coefficient
``(rgb - 0.5) / C0`` (:meth:`Gaussians.from_rgb`), which renders back to exactly ``rgb``.
One colour field means one code path in the renderer, the exporters and the losses.

A family turns its raw network outputs into Gaussians in its own model file (GRM's
bounded activations in ``models/grm.py``), from the building blocks here: unit quaternions,
:func:`bounded_sigmoid`, pixel-aligned :func:`unproject`.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from lrm_jax import cameras as cameras_lib
from lrm_jax.representations import sh as sh_lib

Array = Any

@flax.struct.dataclass
class Gaussians:
  """A batch of 3D Gaussians (a pytree; see the module docstring for the layout)."""

  means: Array  # [..., N, 3]
  scales: Array  # [..., N, 3]
  quats: Array  # [..., N, 4] wxyz
  opacities: Array  # [..., N, 1]
  sh: Array  # [..., N, K, 3]

  @classmethod
  def from_rgb(cls, means, scales, quats, opacities, rgb) -> "Gaussians":
    """Gaussians whose colour is the view-independent ``rgb [..., N, 3]`` (SH degree 0)."""
    return cls(means, scales, quats, opacities, sh_lib.rgb_to_sh(rgb)[..., None, :])

  @property
  def batch_shape(self) -> tuple[int, ...]:
    return self.means.shape[:-2]

  @property
  def num(self) -> int:
    return self.means.shape[-2]

  @property
  def sh_degree(self) -> int:
    return sh_lib.sh_degree(self.sh.shape[-2])

  @property
  def rgb(self):
    """View-independent (DC) colour ``[..., N, 3]``."""
    return sh_lib.sh_to_rgb(self.sh[..., 0, :])

  def covariances(self):
    """World covariances ``[..., N, 3, 3]``."""
    return covariance(self.quats, self.scales)

  def with_sh_degree(self, degree: int) -> "Gaussians":
    """The same Gaussians with SH truncated or zero-padded to ``degree``."""
    k = sh_lib.num_sh_bases(degree)
    sh = self.sh[..., :k, :]
    if sh.shape[-2] < k:
      pad = [(0, 0)] * (sh.ndim - 2) + [(0, k - sh.shape[-2]), (0, 0)]
      sh = (jnp if isinstance(sh, jax.Array) else np).pad(sh, pad)
    return self.replace(sh=sh)

  def reshape(self, batch_shape: tuple[int, ...]) -> "Gaussians":
    """Same Gaussians with leading dims ``batch_shape`` (the per-Gaussian dims are kept)."""
    return jax.tree.map(lambda x, nd: x.reshape(tuple(batch_shape) + x.shape[-nd:]),
                        self, _FIELD_NDIMS)


# Trailing (per-Gaussian) dims of each field: [N, 3], [N, 3], [N, 4], [N, 1], [N, K, 3].
_FIELD_NDIMS = Gaussians(2, 2, 2, 2, 3)


def take(g: Gaussians, indices) -> Gaussians:
  """The Gaussians at ``indices [..., M]`` along the Gaussian axis (batch dims shared)."""
  def gather(x, nd):
    idx = indices.reshape(indices.shape + (1,) * (nd - 1))
    return jnp.take_along_axis(x, idx, axis=x.ndim - nd)
  return jax.tree.map(gather, g, _FIELD_NDIMS)


def concatenate(gs: list[Gaussians]) -> Gaussians:
  """Joins sets of Gaussians along the Gaussian axis (batch dims and SH degree must agree)."""
  return jax.tree.map(lambda nd, *xs: jnp.concatenate(xs, axis=xs[0].ndim - nd),
                      _FIELD_NDIMS, *gs)


# ----------------------------------------------------------------------------------------
# Rotations and covariances.
# ----------------------------------------------------------------------------------------


def normalize_quats(quats, eps: float = 1e-12):
  """Unit quaternions ``[..., 4]``; a zero quaternion becomes ``(1, 0, 0, 0)`` (finite grads)."""
  return jnp.stack(_unit_quat_components(quats, eps), axis=-1)


@jax.custom_vjp
def components(x):
  """The ``k`` components ``[...]`` of ``x [..., k]`` (``x[..., 0]``, ``x[..., 1]``, ...).

  The backward stacks the components' cotangents in one pass; autodiff of ``x[..., i]``
  pads each cotangent to ``[..., k]`` and adds them, a pass per component over the whole
  array (XLA:CPU, 4 views x 262,144 quaternions: four 36 ms pads against one 23 ms stack).
  """
  return tuple(jnp.moveaxis(x, -1, 0))


def _components_fwd(x):
  return components(x), None


def _components_bwd(_, cotangents):
  return (jnp.stack(cotangents, axis=-1),)


components.defvjp(_components_fwd, _components_bwd)


def _unit_quat_components(quats, eps: float = 1e-12):
  """``(w, x, y, z)``, each ``[...]``, of the normalised quaternions ``[..., 4]``.

  Componentwise (no reduction over the size-4 axis), like everything the renderer does
  per Gaussian: a TPU lays a ``[N, 4]`` or ``[N, 3, 3]`` intermediate out with its small
  last axes padded to 8 x 128, i.e. 30-100x its size (gigabytes for a million Gaussians),
  while ``[N]`` vectors are dense.
  """
  w, x, y, z = components(quats)
  sq = w * w + x * x + y * y + z * z
  ok = sq > eps
  inv = jax.lax.rsqrt(jnp.where(ok, sq, 1.0))
  return (jnp.where(ok, w * inv, 1.0), jnp.where(ok, x * inv, 0.0),
          jnp.where(ok, y * inv, 0.0), jnp.where(ok, z * inv, 0.0))


def _rotmat_rows(quats):
  """Rows of the rotation matrix (3 x 3 nested tuples of ``[...]``) of ``[..., 4]`` wxyz."""
  w, x, y, z = _unit_quat_components(quats)
  return ((1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)),
          (2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)),
          (2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)))


def quat_to_rotmat(quats):
  """Rotation matrices ``[..., 3, 3]`` of (normalised here) ``wxyz`` quaternions ``[..., 4]``."""
  return jnp.stack([jnp.stack(r, axis=-1) for r in _rotmat_rows(quats)], axis=-2)


def covariance_components(quats, scales):
  """The six entries ``(xx, xy, xz, yy, yz, zz)``, each ``[..., N]``, of ``R S S^T R^T``.

  Componentwise (see :func:`_unit_quat_components` for why); :func:`covariance` stacks them.
  """
  r = _rotmat_rows(quats)
  s2 = [s * s for s in components(scales)]
  entry = lambda i, k: sum(r[i][j] * r[k][j] * s2[j] for j in range(3))
  return entry(0, 0), entry(0, 1), entry(0, 2), entry(1, 1), entry(1, 2), entry(2, 2)


def covariance(quats, scales):
  """``Sigma = R S S^T R^T`` ``[..., N, 3, 3]`` from quaternions ``[..., N, 4]`` and scales."""
  xx, xy, xz, yy, yz, zz = covariance_components(quats, scales)
  rows = ((xx, xy, xz), (xy, yy, yz), (xz, yz, zz))
  return jnp.stack([jnp.stack(r, axis=-1) for r in rows], axis=-2)


# ----------------------------------------------------------------------------------------
# Activations of raw network outputs.
# ----------------------------------------------------------------------------------------


def bounded_sigmoid(x, lo: float, hi: float):
  """``lo + (hi - lo) * sigmoid(x)``: GRM's bounded activation."""
  return lo + (hi - lo) * jax.nn.sigmoid(x)


def unproject(origins, directions, depth):
  """Points ``origins + depth * directions`` ``[..., N, 3]`` (``depth [..., N, 1]``)."""
  return origins + depth * directions


def pixel_rays(cameras: cameras_lib.Cameras):
  """Unit rays of every pixel of every view, one Gaussian per pixel.

  Cameras ``[..., V]`` (``c2w [..., V, 4, 4]``) give ``(origins, directions)``, each
  ``[..., V * H * W, 3]`` in view-major, then row-major pixel order: the order in which
  pixel-aligned Gaussians of ``[..., V, H, W, C]`` network outputs are flattened.
  """
  origins, directions = cameras.rays()  # [..., V, H, W, 3]
  shape = origins.shape[:-4] + (-1, 3)
  return origins.reshape(shape), directions.reshape(shape)


def pixel_aligned_means(cameras: cameras_lib.Cameras, depth):
  """Centres of pixel-aligned Gaussians.

  Args:
    cameras: ``[..., V]`` cameras.
    depth: ``[..., V, H, W, 1]`` distance along each pixel's unit ray.
  Returns:
    ``[..., V * H * W, 3]`` world points ``ray_origin + depth * ray_direction``.
  """
  origins, directions = pixel_rays(cameras)
  return unproject(origins, directions, depth.reshape(origins.shape[:-1] + (1,)))


# ----------------------------------------------------------------------------------------
# Pruning.
# ----------------------------------------------------------------------------------------


def _keep_indices(opacity, k: int, key, random_fraction: float):
  """Indices ``[k]`` for one scene: the most opaque, plus a random share of the rest."""
  num_random = int(round(random_fraction * k)) if key is not None else 0
  _, top = jax.lax.top_k(opacity, k - num_random)  # [k - r]
  if num_random == 0:
    return top
  taken = jnp.zeros(opacity.shape, bool).at[top].set(True)
  score = jnp.where(taken, -1.0, jax.random.uniform(key, opacity.shape))
  _, rand = jax.lax.top_k(score, num_random)  # [r] uniformly among the untaken
  return jnp.concatenate([top, rand])


def prune_topk_by_opacity(g: Gaussians, k: int, key=None,
                          random_fraction: float = 0.1) -> Gaussians:
  """Keeps a static number ``k`` of Gaussians per scene (training-time pruning).

  Without ``key`` the ``k`` most opaque are kept. With ``key`` (Long-LRM), a fraction
  ``random_fraction`` of the ``k`` is drawn uniformly from the Gaussians not already kept,
  so low-opacity Gaussians still receive gradients. Long-LRM prunes 60% of N and keeps
  10% of N at random: ``k = 0.4 * N``, ``random_fraction = 0.25``.

  Args:
    g: Gaussians ``[..., N]``.
    k: static number to keep (``<= N``).
    key: optional PRNG key (one for the whole batch).
  Returns:
    Gaussians ``[..., k]``, gathered (differentiable with respect to the kept values).
  """
  if not 0 < k <= g.num:
    raise ValueError(f"cannot keep {k} of {g.num} Gaussians.")
  opacity = g.opacities[..., 0].reshape((-1, g.num))  # [B, N]
  if key is None:
    idx = jax.vmap(lambda o: _keep_indices(o, k, None, 0.0))(opacity)
  else:
    keys = jax.random.split(key, opacity.shape[0])
    idx = jax.vmap(lambda o, kk: _keep_indices(o, k, kk, random_fraction))(opacity, keys)
  return take(g, idx.reshape(g.batch_shape + (k,)))


def prune_by_threshold(g: Gaussians, threshold: float = 0.001) -> Gaussians:
  """Test-time pruning on the host: keeps Gaussians with opacity ``> threshold``.

  ``g`` must be unbatched (``[N]``): the result has a data-dependent size, so it is
  numpy-backed and meant for export or rendering, not for jit.
  """
  if g.means.ndim != 2:
    raise ValueError(f"prune_by_threshold takes one scene [N, ...], got means "
                     f"{g.means.shape}; index the batch first.")
  keep = np.asarray(g.opacities)[:, 0] > threshold
  return jax.tree.map(lambda x: np.asarray(x)[keep], g)
