"""The one volume renderer of density fields: ray/box clipping, stratified, importance and
depth-guided samples, alpha compositing, and chunked batched rendering.

Any family whose representation is a density + colour field (LRM's triplanes, pixelNeRF's
image-conditioned MLP) renders through :func:`march` (one scene's rays) and
:func:`render_chunked` (a batch of scenes, rays chunked with ``lax.map``).

Sampling: rays are clipped to the box ``[-r, r]^3`` (slab test), sampled at ``num_coarse``
stratified depths, then ``num_fine`` more depths are drawn by inverse-CDF sampling of the
(mip-NeRF smoothed) coarse weights, and ``num_depth`` around the coarse expected depth
(pixelNeRF). The sets are merged in depth order and composited. Each sample stands for its
Voronoi interval along the ray (bounded by the midpoints to its neighbours and by the box
entry/exit), so the intervals tile ``[near, far]`` exactly and a constant field composites
to exactly ``1 - exp(-sigma L)``. With one field only the new samples are evaluated in the
fine pass (coarse values are reused, as OpenLRM does); with a separate fine field (NeRF,
pixelNeRF) the fine field is evaluated at every merged sample.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
# field_fn(points [R, S, 3], directions [R, 3]) -> (sigma [R, S], rgb [R, S, 3]).
FieldFn = Callable[[Array, Array], tuple[Array, Array]]
# field_builder(shared, scene) -> (coarse FieldFn, fine FieldFn or None) for one scene.
FieldBuilder = Callable[[Any, Any], tuple[FieldFn, FieldFn | None]]


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
    aggregate: how triplane features are combined (``render/triplane.py``).
    chunk: rays per ``lax.map`` step in :func:`render_chunked`.
    remat: recompute each chunk in the backward pass (memory bounded by one chunk).
    return_weights: also return per-sample ``weights`` and depths ``t`` per ray.
    num_depth: samples drawn around the coarse pass's expected depth (pixelNeRF: 16).
    depth_std: their standard deviation (pixelNeRF: 0.01).
    return_coarse: also return the coarse pass's ``rgb_coarse``, ``depth_coarse`` and
      ``alpha_coarse`` (a loss on both passes, as NeRF and pixelNeRF train).
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
  num_depth: int = 0
  depth_std: float = 0.01
  return_coarse: bool = False


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


def depth_samples(depth: Array, t_near: Array, t_far: Array, num: int, std: float,
                  key: Array | None = None) -> Array:
  """``num`` depths per ray around ``depth [R]`` (pixelNeRF's depth-guided samples),
  clipped to ``[t_near, t_far]``. Normal noise of ``std`` with ``key``; without it the
  ``num`` normal quantiles at ``(k + 0.5) / num`` (deterministic). Returns ``[R, num]``."""
  shape = depth.shape + (num,)
  if key is None:
    q = (jnp.arange(num, dtype=depth.dtype) + 0.5) / num
    z = jnp.broadcast_to(jax.scipy.special.ndtri(q), shape)
  else:
    z = jax.random.normal(key, shape, depth.dtype)
  return jnp.clip(depth[..., None] + std * z, t_near[..., None], t_far[..., None])


def _merge(t: Array, *values: Array) -> tuple[Array, ...]:
  """Sorts depths ``t [R, S]`` and per-sample ``values [R, S, ...]`` the same way."""
  order = jnp.argsort(t, -1)
  out = [jnp.take_along_axis(t, order, -1)]
  for v in values:
    idx = order.reshape(order.shape + (1,) * (v.ndim - order.ndim))
    out.append(jnp.take_along_axis(v, idx, order.ndim - 1))
  return tuple(out)


def march(field_fn: FieldFn, origins: Array, directions: Array, config: RenderConfig,
          key: Array | None = None, background: Array | float = 1.0,
          fine_field_fn: FieldFn | None = None) -> dict[str, Array]:
  """Renders rays through any density/colour field (coarse + importance + depth samples).

  Args:
    field_fn: ``(points [R, S, 3], directions [R, 3]) -> (sigma [R, S], rgb [R, S, 3])``.
    origins, directions: ``[R, 3]`` (directions need not be unit; depth is in units of
      their length).
    config: sample counts, box and depth settings.
    key: jitters the stratified, importance and depth samples; deterministic without it.
    background: scalar, ``[3]`` or ``[R, 3]``.
    fine_field_fn: a separate fine field, evaluated at all merged samples (NeRF,
      pixelNeRF); without it ``field_fn`` is evaluated at the new samples only.
  Returns:
    the :func:`composite` dict over the merged samples (with ``config.return_coarse`` also
    ``rgb_coarse``, ``depth_coarse``, ``alpha_coarse``). Rays missing the box get the
    background, alpha 0 and depth 0.
  """
  dtype = origins.dtype
  background = jnp.broadcast_to(jnp.asarray(background, dtype), origins.shape)
  t_near, t_far, hit = ray_box_intersect(origins, directions, config.box_radius,
                                         config.near)
  # Two keys without depth samples: LRM's samples stay those of before they existed.
  key_c, key_f, key_d = ((None,) * 3 if key is None else
                         (*jax.random.split(key, 3),) if config.num_depth > 0 else
                         (*jax.random.split(key), None))

  def evaluate(fn, t):  # [R, S] -> sigma [R, S], rgb [R, S, 3]
    points = origins[:, None, :] + t[..., None] * directions[:, None, :]
    sigma, rgb = fn(points, directions)
    return jnp.where(hit[:, None], sigma, 0.0), rgb

  t = stratified_samples(t_near, t_far, config.num_coarse, key_c)  # [R, Sc]
  sigma, rgb = evaluate(field_fn, t)
  if config.num_fine <= 0 and config.num_depth <= 0 and fine_field_fn is None:
    return composite(t, sigma, rgb, t_near, t_far, background, config.normalize_depth)
  coarse = composite(t, sigma, rgb, t_near, t_far, background, config.normalize_depth)
  new = []
  if config.num_fine > 0:
    edges = interval_edges(t, t_near, t_far)
    w = smooth_weights(coarse["weights"], config.resample_padding)
    new.append(sample_pdf(jax.lax.stop_gradient(edges), jax.lax.stop_gradient(w),
                          config.num_fine, key_f))  # [R, Sf]
  if config.num_depth > 0:
    acc = jnp.maximum(coarse["alpha"][:, 0], 1e-8)
    depth = jnp.sum(coarse["weights"] * t, -1) / acc  # [R] expected depth on the surface
    new.append(depth_samples(depth, t_near, t_far, config.num_depth, config.depth_std,
                             key_d))  # [R, Sd]
  t_new = jax.lax.stop_gradient(jnp.concatenate(new, -1)) if new else t[:, :0]
  if fine_field_fn is None:
    sigma_new, rgb_new = evaluate(field_fn, t_new)
    t, sigma, rgb = _merge(jnp.concatenate([t, t_new], -1),
                           jnp.concatenate([sigma, sigma_new], -1),
                           jnp.concatenate([rgb, rgb_new], -2))
  else:
    (t,) = _merge(jnp.concatenate([jax.lax.stop_gradient(t), t_new], -1))
    sigma, rgb = evaluate(fine_field_fn, t)
  out = composite(t, sigma, rgb, t_near, t_far, background, config.normalize_depth)
  if config.return_coarse:
    out.update(rgb_coarse=coarse["rgb"], depth_coarse=coarse["depth"],
               alpha_coarse=coarse["alpha"])
  return out


def _kept(out: dict, config: RenderConfig) -> dict:
  keys = ["rgb", "depth", "alpha"]
  if config.return_weights:
    keys += ["weights", "t"]
  if config.return_coarse:
    keys += ["rgb_coarse", "depth_coarse", "alpha_coarse"]
  return {k: out[k] for k in keys if k in out}


def render_chunked(field_builder: FieldBuilder, shared: Any, scenes: Any, origins: Array,
                   directions: Array, config: RenderConfig, key: Array | None = None,
                   background: Array | float = 1.0) -> dict[str, Array]:
  """Renders rays of a batch of scenes, ``config.chunk`` rays per ``lax.map`` step.

  Traceable (call it under ``jit``); memory is bounded by one chunk per scene.

  Args:
    field_builder: ``(shared, scene) -> (field_fn, fine_field_fn or None)`` for one scene.
    shared: anything every scene uses (the decoder's parameters).
    scenes: a pytree whose leaves lead with the batch ``B`` (one scene's representation).
    origins, directions: ``[B, ..., 3]``.
    config: :class:`RenderConfig`.
    key: jitters samples (training); deterministic midpoint samples without it.
    background: scalar, ``[3]`` or ``[B, ..., 3]``.
  Returns:
    ``rgb [B, ..., 3]``, ``depth [B, ..., 1]``, ``alpha [B, ..., 1]`` (and ``weights``,
    ``t`` ``[B, ..., S]`` with ``config.return_weights``; the ``*_coarse`` images with
    ``config.return_coarse``).
  """
  batch = origins.shape[0]
  ray_shape = origins.shape[1:-1]
  n = int(np.prod(ray_shape))
  dtype = jax.tree.leaves(scenes)[0].dtype
  o = origins.reshape(batch, n, 3).astype(dtype)
  d = directions.reshape(batch, n, 3).astype(dtype)
  bg = jnp.broadcast_to(jnp.asarray(background, dtype), origins.shape).reshape(batch, n, 3)
  keys = None if key is None else jax.random.split(key, batch)

  def scene(scene_b, o_b, d_b, bg_b, key_b):  # one scene, one chunk
    field, fine = field_builder(shared, scene_b)
    return _kept(march(field, o_b, d_b, config, key_b, bg_b, fine), config)

  in_keys = 0 if keys is not None else None
  vscenes = jax.vmap(scene, in_axes=(0, 0, 0, 0, in_keys))
  chunk = min(config.chunk, n)
  num_chunks = -(-n // chunk)
  if num_chunks == 1:
    out = vscenes(scenes, o, d, bg, keys)
  else:
    pad = num_chunks * chunk - n

    def split(x):  # [B, N, k] -> [num_chunks, B, chunk, k]; padding repeats the last ray.
      x = jnp.concatenate([x, jnp.repeat(x[:, -1:], pad, 1)], 1) if pad else x
      return x.reshape(batch, num_chunks, chunk, x.shape[-1]).swapaxes(0, 1)

    def body(args):
      o_c, d_c, bg_c, i = args
      keys_c = None if keys is None else jax.vmap(jax.random.fold_in, (0, None))(keys, i)
      return vscenes(scenes, o_c, d_c, bg_c, keys_c)

    body = jax.checkpoint(body) if config.remat else body
    out = jax.lax.map(body, (split(o), split(d), split(bg), jnp.arange(num_chunks)))
    out = jax.tree.map(
        lambda x: x.swapaxes(0, 1).reshape((batch, num_chunks * chunk) + x.shape[3:])[:, :n],
        out)
  return jax.tree.map(lambda x: x.reshape((batch,) + ray_shape + x.shape[2:]), out)
