"""Triplane NeRF rendering: plane sampling, the OpenLRM decoder MLP and ray marching.

Plane convention (EG3D with its plane bug fixed; docs/design.md §5). ``planes [3, H, W, C]``:

  ====== ========== ============================ ============================
  plane  name       u (along width, columns)     v (along height, rows)
  ====== ========== ============================ ============================
  0      xy         x                            y
  1      xz         x                            z
  2      yz         y                            z
  ====== ========== ============================ ============================

A coordinate in ``[-1, 1]`` maps to a continuous pixel position with ``align_corners=False``
semantics (``torch.grid_sample``'s default, which EG3D/OpenLRM use): ``-1`` is the left/top
edge of the first texel, ``+1`` the right/bottom edge of the last, texel centres sit at
``-1 + (2 k + 1) / W``. So the point ``(x, y, z)`` reads plane 0 at row
``((y + 1) H - 1) / 2`` and column ``((x + 1) W - 1) / 2``. Lookups outside the texel
centres clamp to the border texels (``padding_mode="border"``).

Ray marching is :mod:`lrm_jax.render.raymarch` (the one volume renderer); its names are
re-exported here.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lrm_jax.cameras import Cameras
from lrm_jax.render import raymarch
from lrm_jax.render.raymarch import (RenderConfig, composite, depth_samples,  # noqa: F401
                                     interval_edges, march, ray_box_intersect, sample_pdf,
                                     smooth_weights, stratified_samples)
from lrm_jax.representations.field import MeshField

Array = jax.Array
FieldFn = raymarch.FieldFn
# decoder_apply(decoder_params, features [..., F]) -> (sigma [...], rgb [..., 3]).
DecoderApply = Callable[[Any, Array], tuple[Array, Array]]

# (u axis, v axis) of planes xy, xz, yz.
PLANE_AXES = np.asarray([[0, 1], [0, 2], [1, 2]], np.int32)


# ----------------------------------------------------------------------------------------
# Triplane sampling.
# ----------------------------------------------------------------------------------------


def _bilinear_taps(coord: Array, size: int) -> tuple[Array, Array, Array]:
  """Texel indices and the upper tap's weight along one axis (align_corners=False, clamp).

  Args:
    coord: ``[...]`` coordinates in ``[-1, 1]`` (anything outside is clamped).
    size: number of texels along the axis.
  Returns:
    ``(i0, i1, frac)``: ``[...]`` int32 lower/upper texels and the weight of ``i1``.
  """
  pos = jnp.clip(((coord + 1.0) * size - 1.0) * 0.5, 0.0, size - 1.0)
  i0 = jnp.floor(pos)
  frac = pos - i0
  i0 = i0.astype(jnp.int32)
  i1 = jnp.minimum(i0 + 1, size - 1)
  return i0, i1, frac


def sample_planes(planes: Array, points: Array) -> Array:
  """Bilinear features of each plane at the projections of ``points``.

  Args:
    planes: ``[3, H, W, C]`` (xy, xz, yz).
    points: ``[..., 3]`` world points; the box ``[-1, 1]^3`` spans the planes.
  Returns:
    ``[..., 3, C]`` per-plane features.
  """
  n_planes, height, width, channels = planes.shape
  if n_planes != 3:
    raise ValueError(f"planes must be [3, H, W, C], got {planes.shape}.")
  uv = points[..., PLANE_AXES]  # [..., 3, 2]
  x0, x1, fx = _bilinear_taps(uv[..., 0], width)  # [..., 3]
  y0, y1, fy = _bilinear_taps(uv[..., 1], height)
  base = jnp.arange(3, dtype=jnp.int32) * (height * width)  # [3]
  rows0, rows1 = base + y0 * width, base + y1 * width
  idx = jnp.stack([rows0 + x0, rows0 + x1, rows1 + x0, rows1 + x1], -1)  # [..., 3, 4]
  fx, fy = fx.astype(planes.dtype), fy.astype(planes.dtype)
  w = jnp.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy], -1)
  taps = planes.reshape(3 * height * width, channels)[idx]  # [..., 3, 4, C]
  return jnp.einsum("...pk,...pkc->...pc", w, taps)


def sample_triplane(planes: Array, points: Array, aggregate: str = "concat") -> Array:
  """Triplane features at ``points``.

  Args:
    planes: ``[3, H, W, C]`` planes xy, xz, yz (see the module docstring for the mapping).
    points: ``[..., 3]``.
    aggregate: ``"concat"`` (OpenLRM: ``[..., 3C]`` in plane order xy, xz, yz), ``"sum"``
      or ``"mean"`` (EG3D: ``[..., C]``).
  Returns:
    ``[..., 3C]`` or ``[..., C]`` features.
  """
  feats = sample_planes(planes, points)  # [..., 3, C]
  if aggregate == "concat":
    return feats.reshape(feats.shape[:-2] + (-1,))
  if aggregate == "sum":
    return feats.sum(-2)
  if aggregate == "mean":
    return feats.mean(-2)
  raise ValueError(f"aggregate must be concat, sum or mean, got {aggregate!r}.")


def total_variation(planes: Array) -> Array:
  """LRM's total-variation regulariser of triplanes (a scalar).

  ``0.5 * (mean squared difference of vertically neighbouring texels + mean squared
  difference of horizontally neighbouring texels)``, each mean taken over every plane,
  channel and batch entry. Takes ``[B, 3, H, W, C]`` (the LRM model's batched planes) or
  ``[3, H, W, C]`` (one scene, as per-scene fitting holds them); both give the same value
  for the same planes.
  """
  if planes.ndim not in (4, 5):
    raise ValueError(f"planes must be [B, 3, H, W, C] or [3, H, W, C], got {planes.shape}.")
  dh = jnp.mean(jnp.square(planes[..., 1:, :, :] - planes[..., :-1, :, :]))  # along H
  dw = jnp.mean(jnp.square(planes[..., :, 1:, :] - planes[..., :, :-1, :]))  # along W
  return 0.5 * (dh + dw)


# ----------------------------------------------------------------------------------------
# Decoder.
# ----------------------------------------------------------------------------------------


class TriplaneDecoder(nn.Module):
  """OpenLRM's NeRF MLP: ``num_layers`` Dense layers (ReLU between) -> density + rgb.

  Attributes:
    hidden: width of the hidden layers (OpenLRM: 64).
    num_layers: number of Dense layers including the output layer (OpenLRM: 4).
    hidden_activation: between the Dense layers: ``"relu"`` (OpenLRM) or ``"softplus"``
      (smooth: no derivative jump at 0, e.g. for comparing runs to float32 rounding).
    density_activation: ``"softplus"`` (EG3D/OpenLRM) or ``"exp"``.
    density_shift: added to the raw density before the activation (EG3D: -1).
  """

  hidden: int = 64
  num_layers: int = 4
  density_activation: str = "softplus"
  density_shift: float = -1.0
  hidden_activation: str = "relu"

  @nn.compact
  def __call__(self, features: Array) -> tuple[Array, Array]:
    """``features [..., F]`` -> ``(sigma [...], rgb [..., 3])``, both activated."""
    activations = {"relu": nn.relu, "softplus": nn.softplus}
    if self.hidden_activation not in activations:
      raise ValueError(f"unknown hidden_activation {self.hidden_activation!r}; "
                       f"expected one of {sorted(activations)}.")
    act = activations[self.hidden_activation]
    x = features
    for i in range(self.num_layers - 1):
      x = act(nn.Dense(self.hidden, name=f"dense_{i}")(x))
    x = nn.Dense(4, name=f"dense_{self.num_layers - 1}")(x)  # [..., 4]
    raw_sigma = x[..., 0] + self.density_shift
    if self.density_activation == "softplus":
      sigma = jax.nn.softplus(raw_sigma)
    elif self.density_activation == "exp":
      sigma = jnp.exp(raw_sigma)
    else:
      raise ValueError(f"unknown density_activation {self.density_activation!r}.")
    rgb = jax.nn.sigmoid(x[..., 1:]) * 1.002 - 0.001
    return sigma, rgb


def triplane_field(decoder_apply: DecoderApply, decoder_params: Any, planes: Array,
                   aggregate: str = "concat") -> FieldFn:
  """A :data:`FieldFn` for one scene: features of ``planes [3, H, W, C]`` -> decoder."""

  def field(points, directions):
    del directions  # the LRM decoder is not view dependent
    return decoder_apply(decoder_params, sample_triplane(planes, points, aggregate))

  return field


def _mesh_density(points, planes, decoder_params, *, decoder_apply, aggregate):
  return decoder_apply(decoder_params, sample_triplane(planes, points, aggregate))[0]


def _mesh_color(points, planes, decoder_params, *, decoder_apply, aggregate):
  return decoder_apply(decoder_params, sample_triplane(planes, points, aggregate))[1]


def mesh_field(planes: Array, decoder_apply: DecoderApply, decoder_params: Any, *,
               resolution: int = 256, threshold: float = 10.0, bound: float = 1.0,
               aggregate: str = "concat", world_to_field=None) -> MeshField:
  """One triplane NeRF as a :class:`MeshField` (``planes [3, H, W, C]``, its decoder),
  for :func:`lrm_jax.io.mesh.export_field_mesh`."""
  kw = dict(decoder_apply=decoder_apply, aggregate=aggregate)
  return MeshField(functools.partial(_mesh_density, **kw), functools.partial(_mesh_color, **kw),
                   args=(jnp.asarray(planes), decoder_params), bound=bound,
                   resolution=resolution, threshold=threshold, world_to_field=world_to_field)


# ----------------------------------------------------------------------------------------
# Ray marching.
# ----------------------------------------------------------------------------------------


# The generic marcher lives in render/raymarch.py (re-exported here for callers).


# ----------------------------------------------------------------------------------------
# Batched, chunked rendering of triplanes.
# ----------------------------------------------------------------------------------------


def _triplane_builder(decoder_apply, aggregate, decoder_params, planes):
  """:data:`raymarch.FieldBuilder` of one scene's planes (no separate fine field)."""
  return triplane_field(decoder_apply, decoder_params, planes, aggregate), None


@functools.partial(jax.jit, static_argnames=("decoder_apply", "config"))
def render_rays(decoder_apply: DecoderApply, decoder_params: Any, planes: Array,
                origins: Array, directions: Array, config: RenderConfig = RenderConfig(),
                key: Array | None = None,
                background: Array | float = 1.0) -> dict[str, Array]:
  """Renders arbitrary rays (a crop, a random pixel subset, full images) of triplanes.

  Rays are chunked with ``lax.map`` (``config.chunk`` rays per step per scene), so memory
  is bounded for any number of rays.

  Args:
    decoder_apply: ``(decoder_params, features [..., F]) -> (sigma, rgb)``, e.g.
      ``TriplaneDecoder().apply`` (static: must be hashable).
    decoder_params: the decoder's parameters (shared by all scenes).
    planes: ``[B, 3, H, W, C]`` (or ``[3, H, W, C]`` for one scene, then rays have no
      leading ``B``).
    origins, directions: ``[B, ..., 3]``.
    config: :class:`RenderConfig`.
    key: jitters samples (training); deterministic midpoint samples without it.
    background: scalar, ``[3]`` or ``[B, ..., 3]``.
  Returns:
    ``rgb [B, ..., 3]``, ``depth [B, ..., 1]``, ``alpha [B, ..., 1]`` (and ``weights``,
    ``t`` ``[B, ..., S]`` with ``config.return_weights``).
  """
  if planes.ndim == 4:
    out = render_rays(decoder_apply, decoder_params, planes[None], origins[None],
                      directions[None], config, key,
                      jnp.asarray(background)[None] if jnp.ndim(background) > 1
                      else background)
    return jax.tree.map(lambda x: x[0], out)
  builder = functools.partial(_triplane_builder, decoder_apply, config.aggregate)
  return raymarch.render_chunked(builder, decoder_params, planes, origins, directions, config,
                                 key, background)


@functools.partial(jax.jit, static_argnames=("decoder_apply", "config"))
def render_triplane(decoder_apply: DecoderApply, decoder_params: Any, planes: Array,
                    cameras: Cameras, config: RenderConfig = RenderConfig(),
                    key: Array | None = None,
                    background: Array | float = 1.0) -> dict[str, Array]:
  """Renders full images of triplanes from cameras.

  Args:
    decoder_apply, decoder_params: see :func:`render_rays`.
    planes: ``[B, 3, H, W, C]``.
    cameras: :class:`Cameras` with batch shape ``[B, V]`` (image size static).
    config, key, background: see :func:`render_rays` (background scalar or ``[3]``).
  Returns:
    ``rgb [B, V, h, w, 3]``, ``depth [B, V, h, w, 1]``, ``alpha [B, V, h, w, 1]``.
  """
  origins, directions = cameras.rays()  # [B, V, h, w, 3]
  return render_rays(decoder_apply, decoder_params, planes, origins, directions, config,
                     key, background)
