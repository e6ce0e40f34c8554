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

Ray marching: rays are clipped to the box ``[-r, r]^3`` (slab test), sampled at
``num_coarse`` stratified depths, then ``num_fine`` more depths are drawn by inverse-CDF
sampling of the (mip-NeRF smoothed) coarse weights; the two sets are merged in depth order
and composited. Each sample stands for its Voronoi interval along the ray (bounded by the
midpoints to its neighbours and by the box entry/exit), so the intervals tile
``[near, far]`` exactly and a constant field composites to exactly ``1 - exp(-sigma L)``.
Only the fine samples are re-evaluated in the fine pass (as OpenLRM does); coarse values
are reused.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lrm_jax.cameras import Cameras
from lrm_jax.representations.field import MeshField

Array = jax.Array
# field_fn(points [R, S, 3], directions [R, 3]) -> (sigma [R, S], rgb [R, S, 3]).
FieldFn = Callable[[Array, Array], tuple[Array, Array]]
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


@dataclasses.dataclass(frozen=True)
class RenderConfig:
  """Static ray-marching settings (hashable: a jit static argument).

  Attributes:
    num_coarse: stratified samples per ray.
    num_fine: importance samples per ray (0: coarse only).
    box_radius: rays are clipped to ``[-box_radius, box_radius]^3``.
    near: samples start no closer than this along the ray.
    resample_padding: added to the smoothed weights before inverse-CDF sampling.
    normalize_depth: depth is ``sum w t / sum w`` instead of ``sum w t``.
    aggregate: how triplane features are combined (see :func:`sample_triplane`).
    chunk: rays per ``lax.map`` step in :func:`render_rays`.
    remat: recompute each chunk in the backward pass (memory bounded by one chunk).
    return_weights: also return per-sample ``weights`` and depths ``t`` per ray.
  """

  num_coarse: int = 48
  num_fine: int = 48
  box_radius: float = 1.0
  near: float = 0.0
  resample_padding: float = 0.01
  normalize_depth: bool = False
  aggregate: str = "concat"
  chunk: int = 4096
  remat: bool = False
  return_weights: bool = False


def ray_box_intersect(origins: Array, directions: Array, radius: float = 1.0,
                      near: float = 0.0) -> tuple[Array, Array, Array]:
  """Slab test against ``[-radius, radius]^3``.

  Zero direction components are replaced by a tiny number of the same sign, so a ray
  parallel to a slab either never leaves it (its ``t`` bounds become huge) or misses.

  Args:
    origins, directions: ``[..., 3]``.
    radius: half side of the box.
    near: lower bound on the entry distance (0: nothing behind the origin).
  Returns:
    ``t_near, t_far [...]`` (``0, 1`` for missed rays, always finite) and ``hit [...]``.
  """
  tiny = jnp.asarray(1e-9, directions.dtype)
  safe_d = jnp.where(jnp.abs(directions) < tiny, jnp.where(directions < 0, -tiny, tiny),
                     directions)
  inv_d = 1.0 / safe_d
  t0 = (-radius - origins) * inv_d  # [..., 3]
  t1 = (radius - origins) * inv_d
  t_near = jnp.maximum(jnp.minimum(t0, t1).max(-1), near)
  t_far = jnp.maximum(t0, t1).min(-1)
  hit = t_far > t_near
  t_near = jnp.where(hit, t_near, 0.0)
  t_far = jnp.where(hit, t_far, 1.0)
  return t_near, t_far, hit


def stratified_samples(t_near: Array, t_far: Array, num: int,
                       key: Array | None = None) -> Array:
  """``num`` depths per ray, one per equal bin of ``[t_near, t_far]``.

  Bin midpoints without ``key``; uniformly jittered within each bin with it.
  Returns ``[..., num]``.
  """
  shape = t_near.shape + (num,)
  if key is None:
    u = jnp.broadcast_to(jnp.asarray(0.5, t_near.dtype), shape)
  else:
    u = jax.random.uniform(key, shape, t_near.dtype)
  s = (jnp.arange(num, dtype=t_near.dtype) + u) / num  # [..., num] in (0, 1)
  return t_near[..., None] + s * (t_far - t_near)[..., None]


def interval_edges(t: Array, t_near: Array, t_far: Array) -> Array:
  """Edges ``[..., S + 1]`` of the Voronoi intervals of sorted depths ``t [..., S]``."""
  mids = 0.5 * (t[..., 1:] + t[..., :-1])
  return jnp.concatenate([t_near[..., None], mids, t_far[..., None]], -1)


def smooth_weights(weights: Array, padding: float) -> Array:
  """mip-NeRF's 2-tap max then 2-tap blur of ``weights [..., S]``, plus ``padding``."""
  padded = jnp.concatenate([weights[..., :1], weights, weights[..., -1:]], -1)  # [..., S+2]
  maxed = jnp.maximum(padded[..., :-1], padded[..., 1:])  # [..., S+1]
  return 0.5 * (maxed[..., :-1] + maxed[..., 1:]) + padding  # [..., S]


def sample_pdf(edges: Array, weights: Array, num: int, key: Array | None = None) -> Array:
  """Inverse-CDF samples of the piecewise-constant density ``weights`` on ``edges``.

  Args:
    edges: ``[..., S + 1]`` increasing bin edges.
    weights: ``[..., S]`` non-negative bin weights (not all zero).
    num: samples per ray.
    key: stratified jitter of the CDF levels; evenly spaced levels without it.
  Returns:
    ``[..., num]`` sorted depths inside ``[edges[0], edges[-1]]``.
  """
  pdf = weights / weights.sum(-1, keepdims=True)
  cdf = jnp.minimum(1.0, jnp.cumsum(pdf[..., :-1], -1))
  zeros, ones = jnp.zeros_like(cdf[..., :1]), jnp.ones_like(cdf[..., :1])
  cdf = jnp.concatenate([zeros, cdf, ones], -1)  # [..., S+1]
  shape = edges.shape[:-1] + (num,)
  if key is None:
    jitter = jnp.broadcast_to(jnp.asarray(0.5, edges.dtype), shape)
  else:
    jitter = jax.random.uniform(key, shape, edges.dtype)
  u = (jnp.arange(num, dtype=edges.dtype) + jitter) / num  # [..., num] in (0, 1)
  # Index of the bin each level falls in (searchsorted right, by comparison: S is small).
  above = jnp.sum(u[..., :, None] >= cdf[..., None, :], -1)  # [..., num] in [1, S]
  above = jnp.clip(above, 1, weights.shape[-1])
  below = above - 1
  cdf0 = jnp.take_along_axis(cdf, below, -1)
  cdf1 = jnp.take_along_axis(cdf, above, -1)
  e0 = jnp.take_along_axis(edges, below, -1)
  e1 = jnp.take_along_axis(edges, above, -1)
  denom = cdf1 - cdf0
  denom = jnp.where(denom < 1e-6, 1.0, denom)
  frac = jnp.clip((u - cdf0) / denom, 0.0, 1.0)
  return e0 + frac * (e1 - e0)


def composite(t: Array, sigma: Array, rgb: Array, t_near: Array, t_far: Array,
              background: Array, normalize_depth: bool = False) -> dict[str, Array]:
  """Alpha compositing of samples at sorted depths ``t``.

  Args:
    t: ``[R, S]`` sorted depths in ``[t_near, t_far]``.
    sigma: ``[R, S]`` densities (0 where nothing is); rgb: ``[R, S, 3]``.
    t_near, t_far: ``[R]`` the ray's interval; each sample covers its Voronoi interval.
    background: anything broadcasting to ``[R, 3]``.
    normalize_depth: divide the expected depth by the accumulated alpha.
  Returns:
    ``rgb [R, 3]``, ``depth [R, 1]``, ``alpha [R, 1]``, ``weights [R, S]``, ``t [R, S]``.
  """
  edges = interval_edges(t, t_near, t_far)  # [R, S+1]
  delta = jnp.maximum(edges[..., 1:] - edges[..., :-1], 0.0)  # [R, S]
  tau = sigma * delta
  alpha = 1.0 - jnp.exp(-tau)
  # Transmittance before each sample: exp(-exclusive cumsum), stabler than a cumprod.
  trans = jnp.exp(-(jnp.cumsum(tau, -1) - tau))
  weights = alpha * trans  # [R, S]
  acc = weights.sum(-1, keepdims=True)  # [R, 1]
  color = jnp.einsum("rs,rsc->rc", weights, rgb) + (1.0 - acc) * background
  depth = jnp.sum(weights * t, -1, keepdims=True)
  if normalize_depth:
    depth = depth / jnp.maximum(acc, 1e-8)
  return {"rgb": color, "depth": depth, "alpha": acc, "weights": weights, "t": t}


def march(field_fn: FieldFn, origins: Array, directions: Array, config: RenderConfig,
          key: Array | None = None, background: Array | float = 1.0) -> dict[str, Array]:
  """Renders rays through any density/colour field (coarse + importance samples).

  Args:
    field_fn: ``(points [R, S, 3], directions [R, 3]) -> (sigma [R, S], rgb [R, S, 3])``.
    origins, directions: ``[R, 3]`` (directions need not be unit; depth is in units of
      their length).
    config: sample counts, box and depth settings.
    key: jitters the stratified and importance samples; deterministic without it.
    background: scalar, ``[3]`` or ``[R, 3]``.
  Returns:
    the :func:`composite` dict over the merged samples. Rays missing the box get the
    background, alpha 0 and depth 0.
  """
  dtype = origins.dtype
  background = jnp.broadcast_to(jnp.asarray(background, dtype), origins.shape)
  t_near, t_far, hit = ray_box_intersect(origins, directions, config.box_radius,
                                         config.near)
  key_c, key_f = (None, None) if key is None else jax.random.split(key)

  def evaluate(t):  # [R, S] -> sigma [R, S], rgb [R, S, 3]
    points = origins[:, None, :] + t[..., None] * directions[:, None, :]
    sigma, rgb = field_fn(points, directions)
    return jnp.where(hit[:, None], sigma, 0.0), rgb

  t = stratified_samples(t_near, t_far, config.num_coarse, key_c)  # [R, Sc]
  sigma, rgb = evaluate(t)
  if config.num_fine > 0:
    coarse = composite(t, sigma, rgb, t_near, t_far, background)
    edges = interval_edges(t, t_near, t_far)
    w = smooth_weights(coarse["weights"], config.resample_padding)
    t_fine = jax.lax.stop_gradient(sample_pdf(jax.lax.stop_gradient(edges),
                                              jax.lax.stop_gradient(w),
                                              config.num_fine, key_f))  # [R, Sf]
    sigma_fine, rgb_fine = evaluate(t_fine)
    t = jnp.concatenate([t, t_fine], -1)
    order = jnp.argsort(t, -1)
    t = jnp.take_along_axis(t, order, -1)
    sigma = jnp.take_along_axis(jnp.concatenate([sigma, sigma_fine], -1), order, -1)
    rgb = jnp.take_along_axis(jnp.concatenate([rgb, rgb_fine], -2), order[..., None], -2)
  return composite(t, sigma, rgb, t_near, t_far, background, config.normalize_depth)


# ----------------------------------------------------------------------------------------
# Batched, chunked rendering of triplanes.
# ----------------------------------------------------------------------------------------


def _render_scene_rays(decoder_apply, decoder_params, planes, origins, directions,
                       background, key, config):
  """One scene's rays ``[R, 3]`` -> output dict of ``[R, ...]`` (drops weights if asked)."""
  field = triplane_field(decoder_apply, decoder_params, planes, config.aggregate)
  out = march(field, origins, directions, config, key, background)
  if not config.return_weights:
    out = {k: out[k] for k in ("rgb", "depth", "alpha")}
  return out


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
  batch = planes.shape[0]
  ray_shape = origins.shape[1:-1]
  n = int(np.prod(ray_shape))
  dtype = planes.dtype
  o = origins.reshape(batch, n, 3).astype(dtype)
  d = directions.reshape(batch, n, 3).astype(dtype)
  bg = jnp.broadcast_to(jnp.asarray(background, dtype), origins.shape).reshape(batch, n, 3)
  keys = None if key is None else jax.random.split(key, batch)

  def scene(planes_b, o_b, d_b, bg_b, key_b):  # one scene, one chunk
    return _render_scene_rays(decoder_apply, decoder_params, planes_b, o_b, d_b, bg_b,
                              key_b, config)

  in_keys = 0 if keys is not None else None
  scenes = jax.vmap(scene, in_axes=(0, 0, 0, 0, in_keys))
  chunk = min(config.chunk, n)
  num_chunks = -(-n // chunk)
  if num_chunks == 1:
    out = scenes(planes, o, d, bg, keys)
  else:
    pad = num_chunks * chunk - n

    def split(x):  # [B, N, k] -> [num_chunks, B, chunk, k]; padding repeats the last ray.
      x = jnp.concatenate([x, jnp.repeat(x[:, -1:], pad, 1)], 1) if pad else x
      return x.reshape(batch, num_chunks, chunk, x.shape[-1]).swapaxes(0, 1)

    def body(args):
      o_c, d_c, bg_c, i = args
      keys_c = None if keys is None else jax.vmap(jax.random.fold_in, (0, None))(keys, i)
      return scenes(planes, o_c, d_c, bg_c, keys_c)

    body = jax.checkpoint(body) if config.remat else body
    out = jax.lax.map(body, (split(o), split(d), split(bg), jnp.arange(num_chunks)))
    out = jax.tree.map(
        lambda x: x.swapaxes(0, 1).reshape((batch, num_chunks * chunk) + x.shape[3:])[:, :n],
        out)
  return jax.tree.map(lambda x: x.reshape((batch,) + ray_shape + x.shape[2:]), out)


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
