"""Gaussian splatting: EWA projection, tile binning and front-to-back compositing.

``rasterize`` is the one entry point; three backends share its semantics and its numbers:

  * ``"dense"``: every pixel against every Gaussian (jnp, plain autodiff). The oracle, for
    images up to ~64x64.
  * ``"tiled"``: binned into 16x16 tiles, composited per tile in chunks (jnp, with a
    hand-written backward). The CPU default.
  * ``"pallas"``: the same tile lists composited by ``kernels.splat_pallas.rasterize_tiles``
    (TPU / GPU).

Semantics (3DGS / gsplat "classic", DESIGN.md §5):

  * A Gaussian behind the near plane (camera z < 0.01), with a singular 2D covariance or
    with a 3-sigma box off the image gets radius 0 and is not drawn.
  * A Gaussian touches the 16x16 tiles that its box ``mean2d +- radius`` overlaps; it is
    evaluated at *every* pixel of those tiles and at no other pixel (the dense oracle
    applies the same tile mask, so all backends agree to rounding).
  * Each pixel composites its Gaussians front to back by camera z (ties by index):
    ``alpha = min(0.99, o * exp(power))``, skipped below 1/255, and compositing stops
    before the Gaussian that would take the transmittance below 1e-4.
  * Outputs: ``rgb = sum_i alpha_i T_i c_i + T_final * background``, ``alpha = 1 - T_final``
    and the *expected* depth ``sum_i alpha_i T_i z_i / alpha`` (camera z, normalised by the
    accumulated alpha; 0 where nothing was drawn).

Static shapes: the intersection buffer has ``capacity`` entries; intersections that do not
fit (the deepest Gaussians' ones) and, with ``max_per_tile``, Gaussians beyond a tile's
budget are dropped and counted in the ``overflow`` output, never silently.

Tiled backward (``custom_vjp``): rather than storing anything per (pixel, Gaussian), it
re-walks each tile's list in the forward order, recomputing the transmittance exactly as
the forward did, and gets the light from behind each Gaussian from the saved output
(``accum - prefix``), so no division by ``1 - alpha`` unwinds T. Per-intersection
gradients are summed by Gaussian with a segment sum (sequential on CPU: runs are
bit-identical).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from lrm_jax import cameras as cameras_lib
from lrm_jax.representations import sh as sh_lib
from lrm_jax.representations.gaussians import Gaussians, components, covariance_components

Array = Any

TILE_SIZE = 16
NEAR_PLANE = 0.01
LOWPASS = 0.3  # added to the 2D covariance diagonal (pixels^2): every splat covers a pixel
FOV_CLAMP = 1.3  # the Jacobian is evaluated no further out than 1.3x the frustum
ALPHA_MAX = 0.99
ALPHA_MIN = 1.0 / 255.0
T_MIN = 1e-4
DEPTH_EPS = 1e-10
BACKENDS = ("tiled", "dense", "pallas")


@flax.struct.dataclass
class Projected:
  """Gaussians projected into one camera (all ``[N, ...]``)."""

  means2d: Array  # [N, 2] pixel coordinates (pixel centres at +0.5)
  conics: Array  # [N, 3] (a, b, c) of the inverse 2D covariance [[a, b], [b, c]]
  depths: Array  # [N] camera z
  radii: Array  # [N] int32, 0 for Gaussians that are not drawn
  colors: Array  # [N, 3]
  opacities: Array  # [N]


@flax.struct.dataclass
class Bins:
  """Tile lists of one camera: intersections sorted by (tile, depth)."""

  tile_ranges: Array  # [T, 2] int32 (start, end) into isect_gids
  isect_gids: Array  # [M] int32 Gaussian index of each intersection
  num_intersections: Array  # [] int32 wanted, including those that did not fit
  overflow: Array  # [] int32 intersections dropped for lack of capacity


# ----------------------------------------------------------------------------------------
# Projection.
# ----------------------------------------------------------------------------------------


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

  # 3-sigma radius of the larger eigenvalue (no gradient: it only selects tiles).
  sa, sc, sdet = jax.lax.stop_gradient((a, c, det))
  mid = 0.5 * (sa + sc)
  lam = mid + jnp.sqrt(jnp.maximum(0.1, mid * mid - sdet))
  radius = jnp.ceil(3.0 * jnp.sqrt(lam))
  mx, my = jax.lax.stop_gradient((mean_x, mean_y))
  on_screen = (mx + radius > 0) & (mx - radius < width) & (my + radius > 0) & (
      my - radius < height)
  radii = jnp.where(ok & on_screen, radius, 0.0).astype(jnp.int32)

  # View-dependent colour: direction from the camera centre to the mean.
  colors = sh_lib.eval_sh(g.sh, g.means - c2w[:3, 3])
  return Projected(means2d, conics, t_z, radii, colors, g.opacities[:, 0])


# ----------------------------------------------------------------------------------------
# Binning.
# ----------------------------------------------------------------------------------------


def tile_grid(height: int, width: int, tile_size: int = TILE_SIZE) -> tuple[int, int]:
  """``(tiles_y, tiles_x)`` covering the image (edge tiles may stick out)."""
  return -(-height // tile_size), -(-width // tile_size)


def tile_rects(means2d, radii, height: int, width: int, tile_size: int = TILE_SIZE):
  """Tiles ``[x0, x1) x [y0, y1)`` (each ``[N]`` int32) touched by each Gaussian's box.

  The box is ``mean2d +- radius``; Gaussians with radius 0 get an empty rectangle.
  """
  tiles_y, tiles_x = tile_grid(height, width, tile_size)
  m = jax.lax.stop_gradient(means2d)
  r = radii.astype(m.dtype)
  def span(center, n):
    lo = jnp.clip(jnp.floor((center - r) / tile_size), 0, n).astype(jnp.int32)
    hi = jnp.clip(jnp.floor((center + r) / tile_size) + 1, 0, n).astype(jnp.int32)
    return lo, jnp.where(radii > 0, jnp.maximum(hi, lo), lo)
  x0, x1 = span(m[:, 0], tiles_x)
  y0, y1 = span(m[:, 1], tiles_y)
  return x0, x1, y0, y1


def count_intersections(proj: Projected, height: int, width: int,
                        tile_size: int = TILE_SIZE):
  """Number of (Gaussian, tile) intersections ``[]`` int32: the capacity needed."""
  x0, x1, y0, y1 = tile_rects(proj.means2d, proj.radii, height, width, tile_size)
  return jnp.sum((x1 - x0) * (y1 - y0))


def default_capacity(num_gaussians: int, height: int, width: int,
                     tile_size: int = TILE_SIZE) -> int:
  """Default intersection capacity per camera: 16 tiles per Gaussian, at most all tiles.

  Pixel-aligned Gaussians seen from a comparable distance cover 1-4 tiles; 16 leaves room
  for large or near ones (GRM shapes use < 4 per Gaussian). ``rasterize`` reports overflow
  when a scene needs more; ``count_intersections`` gives the exact number.
  """
  tiles_y, tiles_x = tile_grid(height, width, tile_size)
  return int(max(1, min(num_gaussians * tiles_y * tiles_x, 16 * num_gaussians)))


def _floordiv_small(a, b):
  """``a // b`` for int32 ``0 <= a < 2**24`` and ``b >= 1`` (elementwise, exact).

  Through float32 (exact for such integers) and one correction step each way: the TPU
  compiler takes minutes to compile an int32 division by a non-constant divisor over a
  few hundred thousand elements (44-70 s for 4 x 262,144 on libtpu 0.0.42), a float
  division well under a second. In binning ``a`` is an index inside one Gaussian's tile
  rectangle (fewer than the image's tiles); slots past the last intersection may exceed
  the bound, and their tiles are discarded.
  """
  q = jnp.floor(a.astype(jnp.float32) / b.astype(jnp.float32)).astype(jnp.int32)
  q = q - (q * b > a).astype(jnp.int32)
  return q + ((q + 1) * b <= a).astype(jnp.int32)


def _rank_of_slots(counts_sorted, capacity: int):
  """For each slot ``[M]``, the depth rank of the Gaussian that writes it.

  Gaussian ``r`` (in depth order) owns slots ``[start_r, start_r + count_r)``; a scatter of
  ``r`` at ``start_r`` followed by a running maximum fills each run.
  """
  n = counts_sorted.shape[0]
  start = jnp.cumsum(counts_sorted) - counts_sorted  # [N]
  marks = jnp.zeros((capacity,), jnp.int32).at[jnp.where(counts_sorted > 0, start, capacity)]
  return jax.lax.cummax(marks.max(jnp.arange(n, dtype=jnp.int32), mode="drop")), start


# Cameras that a vmapped binning unrolls into separate programs (more bin together).
MAX_UNROLLED_CAMERAS = 16


def _unrolled_under_vmap(fn):
  """``fn`` of arrays, which under ``vmap`` runs once per row (up to
  :data:`MAX_UNROLLED_CAMERAS` per batch axis) instead of batched.

  For binning, whose cost is sorts: XLA:CPU runs a batched sort row after row on one
  thread, while independent per-camera chains (their own key computations and sorts) run
  side by side on all cores. ``fn`` must take and return arrays with no gradient.
  """
  wrapped = jax.custom_batching.custom_vmap(fn)

  @wrapped.def_vmap
  def _rule(axis_size, in_batched, *args):
    if axis_size > MAX_UNROLLED_CAMERAS:
      outs = jax.vmap(fn, in_axes=tuple(0 if b else None for b in in_batched))(*args)
    else:
      rows = [wrapped(*(x[i] if b else x for x, b in zip(args, in_batched)))
              for i in range(axis_size)]
      outs = jax.tree.map(lambda *r: jnp.stack(r), *rows)
    return outs, jax.tree.map(lambda _: True, outs)

  return wrapped


def _gather_packed(values, index, bound: int):
  """``[v[index] for v in values]`` for int32 vectors with ``0 <= v <= bound``.

  Packed into one 32-bit word per element where the bits allow, so it is one gather
  instead of one per vector: XLA:CPU gathers cost ~7 (in order) to ~40 (random order) ns
  per element, and binning gathers 262,144 Gaussians and 2.6M slots per camera.
  """
  bits = max(1, bound.bit_length())
  if bits * len(values) > 32:
    return tuple(v[index] for v in values)
  packed = functools.reduce(jnp.bitwise_or, [v.astype(jnp.uint32) << (i * bits)
                                              for i, v in enumerate(values)])
  packed = packed[index]
  mask = (1 << bits) - 1
  return tuple(((packed >> (i * bits)) & mask).astype(jnp.int32) for i in range(len(values)))


def bin_gaussians(proj: Projected, height: int, width: int, tile_size: int = TILE_SIZE,
                  capacity: int | None = None) -> Bins:
  """Intersections of Gaussians and tiles, sorted by (tile, depth), in a static buffer.

  Gaussians are ordered by depth once; each then writes its tiles into consecutive slots
  (offsets from a cumulative sum), and a slot's tile follows from its rank inside the
  Gaussian's rectangle. Sorting by the key ``(tile, depth rank)``, packed into one uint32
  where it fits, gives the per-tile lists in depth order. Slots past ``capacity`` (the
  deepest Gaussians') are dropped and counted.
  """
  n = proj.means2d.shape[0]
  capacity = default_capacity(n, height, width, tile_size) if capacity is None else capacity
  fn = functools.partial(_bin_one_camera, height=height, width=width, tile_size=tile_size,
                         capacity=capacity)
  no_grad = jax.lax.stop_gradient
  return Bins(*_unrolled_under_vmap(fn)(no_grad(proj.means2d), proj.radii,
                                        no_grad(proj.depths)))


def _depth_order(depths):
  """``jnp.argsort(depths, stable=True)`` ``[N]`` int32, as a sort of integer keys.

  Floats map to uint32 keys in the same order (``-0.0`` as ``0.0``, NaNs last), sorted
  with the index as a second key: XLA compares integers faster than floats in their total
  order (262,144 depths on XLA:CPU, 65 -> 53 ms). On one CPU device NumPy sorts the keys
  (:func:`_sort_on_cpu_host`).
  """
  z = jnp.where(depths == 0, jnp.zeros_like(depths), depths)
  z = jnp.where(jnp.isnan(z), jnp.full_like(z, jnp.nan), z).astype(jnp.float32)
  bits = jax.lax.bitcast_convert_type(z, jnp.uint32)
  key = jnp.where((bits >> 31) == 1, ~bits, bits | jnp.uint32(0x80000000))
  index = jnp.arange(depths.shape[0], dtype=jnp.int32)
  return _sort_on_cpu_host(
      key, lambda k: np.argsort(k, axis=-1, kind="stable").astype(np.int32),
      lambda k: jax.lax.sort((k, index), num_keys=2, is_stable=False)[1])


# Binning's two sorts run in NumPy on a single CPU device (see _sort_on_cpu_host).
HOST_SORTS_ON_CPU = True


def _sort_on_cpu_host(keys, numpy_fn, xla_fn):
  """``xla_fn(keys)`` (a sort or argsort of uint32 ``keys`` along the last axis), which on
  the CPU backend runs as ``numpy_fn`` on the host (``jax.pure_callback``).

  XLA:CPU sorts by scalar comparisons: ~40 ns per key for 2.6M uint32 keys (102-144 ms),
  where NumPy's vectorised sort takes 11 ms. Both give the same order (sorts of integers;
  the argsorts stable), so the bins are identical. The base GRM's render of 4 views,
  forward + backward: 1.77-1.90 -> 1.47-1.54 s.

  XLA's sort is used on accelerators, with :data:`HOST_SORTS_ON_CPU` off, and whenever JAX
  sees more than one device: a callback runs on one device, so SPMD would gather every
  shard's keys to it. JAX also leaves programs with host callbacks out of its persistent
  compilation cache.
  """
  if not HOST_SORTS_ON_CPU or jax.device_count() > 1:
    return xla_fn(keys)
  out = jax.eval_shape(xla_fn, keys)
  host = lambda k: numpy_fn(np.asarray(k))
  on_cpu = lambda k: jax.pure_callback(host, out, k, vmap_method="expand_dims")
  return jax.lax.platform_dependent(keys, cpu=on_cpu, default=xla_fn)


def _bin_one_camera(means2d, radii, depths, *, height: int, width: int, tile_size: int,
                    capacity: int):
  """:func:`bin_gaussians` on arrays: ``(tile_ranges, isect_gids, total, overflow)``."""
  n = means2d.shape[0]
  tiles_y, tiles_x = tile_grid(height, width, tile_size)
  num_tiles = tiles_y * tiles_x
  x0, x1, y0, y1 = tile_rects(means2d, radii, height, width, tile_size)
  order = _depth_order(depths)  # [N] front to back
  bound = max(tiles_x, tiles_y)
  x0, x1, y0, y1 = _gather_packed((x0, x1, y0, y1), order, bound)  # in depth order now
  counts = (x1 - x0) * (y1 - y0)  # [N]
  total = jnp.sum(counts)
  rank, start = _rank_of_slots(counts, capacity)  # [M], [N]
  slots = jnp.arange(capacity, dtype=jnp.int32)
  local = slots - start[rank]  # index inside the Gaussian's rectangle
  x0, y0, w = _gather_packed((x0, y0, jnp.maximum(x1 - x0, 1)), rank, bound)
  row = _floordiv_small(local, w)
  tile = (y0 + row) * tiles_x + x0 + (local - row * w)
  tile = jnp.where(slots < total, tile, num_tiles)  # unused slots sort last
  rank_bits = max(1, (n - 1).bit_length())
  if (num_tiles + 1) << rank_bits <= 2**32:
    key = (tile.astype(jnp.uint32) << rank_bits) | rank.astype(jnp.uint32)
    key = _sort_on_cpu_host(key, lambda k: np.sort(k, axis=-1), jax.lax.sort)
    tile = (key >> rank_bits).astype(jnp.int32)
    rank = (key & ((1 << rank_bits) - 1)).astype(jnp.int32)
  else:
    tile, rank = jax.lax.sort((tile, rank), num_keys=2)
  starts = jnp.searchsorted(tile, jnp.arange(num_tiles + 1, dtype=jnp.int32), side="left")
  ranges = jnp.stack([starts[:-1], starts[1:]], -1).astype(jnp.int32)  # [T, 2]
  return (ranges, order[rank].astype(jnp.int32), total.astype(jnp.int32),
          jnp.maximum(total - capacity, 0).astype(jnp.int32))


# ----------------------------------------------------------------------------------------
# Compositing: shared per-(Gaussian, pixel) math.
# ----------------------------------------------------------------------------------------


def _gaussian_terms(pix, means2d, conics, opacities):
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


def _step(alpha, trans, done):
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


def _composite_chunk(alpha, features, trans, done, accum):
  """A chunk of Gaussians in depth order, unrolled over ``C``, blended into ``accum``.

  Args:
    alpha: ``[G, C, P]``; features: ``[G, C, F]``; trans, done: ``[G, P]``;
      accum: ``[G, P, F]``.
  Returns:
    ``(trans, done, accum)`` after the chunk. The blend is written as per-Gaussian
    products rather than a ``[C] x [F]`` matmul per tile: XLA:CPU runs such tiny batched
    dots ~10x slower than the fused elementwise form.
  """
  for k in range(alpha.shape[-2]):
    w, _, trans, done = _step(alpha[:, k], trans, done)
    accum = accum + w[..., None] * features[:, k, None, :]
  return trans, done, accum


def _composite_cumprod(alpha):
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


# ----------------------------------------------------------------------------------------
# Dense oracle.
# ----------------------------------------------------------------------------------------


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
  alpha, _ = _gaussian_terms(pix, proj.means2d[order], proj.conics[order],
                                   proj.opacities[order])  # [N, P]
  ptx = (pix[:, 0] // tile_size).astype(jnp.int32)[None, :]
  pty = (pix[:, 1] // tile_size).astype(jnp.int32)[None, :]
  x0, x1, y0, y1 = (v[order][:, None] for v in (x0, x1, y0, y1))
  inside = (ptx >= x0) & (ptx < x1) & (pty >= y0) & (pty < y1)
  weights, trans = _composite_cumprod(jnp.where(inside, alpha, 0.0))
  accum = weights.T @ features[order]  # [P, F]
  return accum.reshape(height, width, -1), trans.reshape(height, width)


# ----------------------------------------------------------------------------------------
# Tiled jnp rasterizer (the contract shared with kernels/splat_pallas.py).
# ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TileConfig:
  """Static settings of the tiled jnp rasterizer.

  Attributes:
    height, width, tile_size: image and tile size in pixels.
    chunk_size: Gaussians composited per step of a tile's loop (unrolled).
    block_tiles: tiles processed together (vectorised); tiles are grouped by their number
      of Gaussians so the tiles of a block need about the same number of steps.
    max_per_tile: optional budget: a tile composites at most its first (nearest)
      ``max_per_tile`` Gaussians (``None``: all of them).
  """

  height: int
  width: int
  tile_size: int = TILE_SIZE
  chunk_size: int = 32
  block_tiles: int = 16
  max_per_tile: int | None = None


def _tile_counts(tile_ranges, cfg: TileConfig):
  counts = tile_ranges[:, 1] - tile_ranges[:, 0]
  if cfg.max_per_tile is not None:
    counts = jnp.minimum(counts, cfg.max_per_tile)
  return counts


def tile_budget_overflow(tile_ranges, max_per_tile: int | None):
  """Intersections beyond a per-tile budget ``[]`` int32 (0 without a budget)."""
  if max_per_tile is None:
    return jnp.zeros((), jnp.int32)
  counts = tile_ranges[:, 1] - tile_ranges[:, 0]
  return jnp.sum(jnp.maximum(counts - max_per_tile, 0)).astype(jnp.int32)


def _blocks(tile_ranges, cfg: TileConfig):
  """Tiles grouped into blocks of ``block_tiles`` by decreasing count.

  Returns ``(blocks [B, G] tile ids (padding = T), starts [T + 1], counts [T + 1])``; the
  extra tile ``T`` is empty.
  """
  num_tiles = tile_ranges.shape[0]
  counts = jnp.append(_tile_counts(tile_ranges, cfg), 0)  # [T + 1]
  starts = jnp.append(tile_ranges[:, 0], 0)
  g = cfg.block_tiles
  num_blocks = -(-num_tiles // g)
  order = jnp.argsort(-counts[:num_tiles], stable=True).astype(jnp.int32)
  order = jnp.pad(order, (0, num_blocks * g - num_tiles), constant_values=num_tiles)
  return order.reshape(num_blocks, g), starts, counts


def _tile_origins(tiles, cfg: TileConfig):
  """Top-left pixel corner ``[G, 2]`` (x, y) of tiles ``[G]``."""
  _, tiles_x = tile_grid(cfg.height, cfg.width, cfg.tile_size)
  return jnp.stack([tiles % tiles_x, tiles // tiles_x], -1).astype(jnp.float32) * cfg.tile_size


def _local_pixels(cfg: TileConfig):
  """Pixel centres ``[P, 2]`` of a tile relative to the tile's centre (row-major)."""
  local = cameras_lib.pixel_centers(cfg.tile_size, cfg.tile_size, jnp).reshape(-1, 2)
  return local - 0.5 * cfg.tile_size


def _attribute_table(means2d, conics, opacities, features):
  """``[N, 6 + F]``: what compositing reads of each Gaussian, one row per Gaussian, so a
  chunk takes one gather instead of four (each a separate op per loop step on CPU)."""
  return jnp.concatenate([means2d, conics, opacities[:, None], features], -1)


def _chunk_gather(step, tile_starts, tile_counts, table, isect_gids, cfg: TileConfig):
  """The ``step``-th chunk of Gaussians of each tile of a block (``tile_starts``,
  ``tile_counts [G]``: where each tile's list starts in ``isect_gids`` and its length).

  Returns ``(gid [G, C], valid [G, C], (means2d [G, C, 2], conics [G, C, 3],
  opacities [G, C], features [G, C, F]))`` from the rows of :func:`_attribute_table`.
  """
  offs = step * cfg.chunk_size + jnp.arange(cfg.chunk_size, dtype=jnp.int32)  # [C]
  valid = offs[None, :] < tile_counts[:, None]  # [G, C]
  idx = jnp.where(valid, tile_starts[:, None] + offs[None, :], 0)
  gid = isect_gids[idx]  # [G, C]
  rows = table[gid]  # [G, C, 6 + F]
  return gid, valid, (rows[..., 0:2], rows[..., 2:5], rows[..., 5], rows[..., 6:])


def _to_tiles(image, cfg: TileConfig):
  """``[H, W, ...]`` -> ``[T, P, ...]`` (zero-padded to whole tiles)."""
  ts = cfg.tile_size
  tiles_y, tiles_x = tile_grid(cfg.height, cfg.width, ts)
  pad = [(0, tiles_y * ts - cfg.height), (0, tiles_x * ts - cfg.width)]
  image = jnp.pad(image, pad + [(0, 0)] * (image.ndim - 2))
  rest = image.shape[2:]
  image = image.reshape((tiles_y, ts, tiles_x, ts) + rest)
  image = jnp.swapaxes(image, 1, 2)
  return image.reshape((tiles_y * tiles_x, ts * ts) + rest)


def _from_tiles(tiles, cfg: TileConfig):
  """``[T, P, ...]`` -> ``[H, W, ...]`` (inverse of :func:`_to_tiles`, cropped)."""
  ts = cfg.tile_size
  tiles_y, tiles_x = tile_grid(cfg.height, cfg.width, ts)
  rest = tiles.shape[2:]
  image = tiles.reshape((tiles_y, tiles_x, ts, ts) + rest)
  image = jnp.swapaxes(image, 1, 2).reshape((tiles_y * ts, tiles_x * ts) + rest)
  return image[:cfg.height, :cfg.width]


def _unblock(per_block, blocks, num_tiles: int):
  """``[B, G, ...]`` per-block results -> ``[T, ...]`` in tile order."""
  flat = per_block.reshape((-1,) + per_block.shape[2:])
  out = jnp.zeros((num_tiles + 1,) + flat.shape[1:], flat.dtype)
  return out.at[blocks.reshape(-1)].set(flat)[:num_tiles]


def _num_steps(tile_counts, cfg: TileConfig):
  return -(-jnp.max(tile_counts) // cfg.chunk_size)


def _forward_block(tiles, starts, counts, table, isect_gids, cfg: TileConfig):
  """Composites one block of tiles: ``(accum [G, P, F], final_T [G, P])``.

  Pixel coordinates are taken relative to each tile's centre (means shifted to match),
  so the per-pixel offsets are as exact at the far corner of a large image as at its
  origin; the backward does the same.
  """
  centre = _tile_origins(tiles, cfg) + 0.5 * cfg.tile_size  # [G, 2]
  pix = _local_pixels(cfg)  # [P, 2]
  g, p, f = tiles.shape[0], pix.shape[0], table.shape[-1] - 6
  tile_starts, tile_counts = starts[tiles], counts[tiles]  # [G]: loop-invariant
  num_steps = _num_steps(tile_counts, cfg)

  def cond(carry):
    step, _, done, _ = carry
    return (step < num_steps) & ~jnp.all(done)

  def body(carry):
    step, trans, done, accum = carry
    _, valid, (m, con, o, feat) = _chunk_gather(step, tile_starts, tile_counts, table,
                                                isect_gids, cfg)
    alpha, _ = _gaussian_terms(pix, m - centre[:, None], con,
                                     jnp.where(valid, o, 0.0))  # [G, C, P]
    trans, done, accum = _composite_chunk(alpha, feat, trans, done, accum)
    return step + 1, trans, done, accum

  init = (jnp.zeros((), jnp.int32), jnp.ones((g, p), jnp.float32),
          jnp.zeros((g, p), bool), jnp.zeros((g, p, f), jnp.float32))
  _, trans, _, accum = jax.lax.while_loop(cond, body, init)
  return accum, trans


def _pixel_moments(pix):
  """``[P, 6]`` = ``(1, x, y, x^2, xy, y^2)`` of local pixel coordinates ``[P, 2]``."""
  x, y = pix[:, 0], pix[:, 1]
  return jnp.stack([jnp.ones_like(x), x, y, x * x, x * y, y * y], -1)


def _conic_mean_grads(moments, means_local, conics):
  """Gradients ``[G, C, 5]`` (mean x, mean y, conic a, b, c) from pixel moments.

  ``moments [G, C, 6]`` are ``sum_p dL/dpower * (1, x, y, x^2, xy, y^2)``; with
  ``dx = x - mx`` the sums ``sum_p dL/dpower * (dx, dy, dx^2, dx dy, dy^2)`` follow by
  expanding the squares, which turns five reductions over pixels into one matmul.
  """
  s0, sx, sy, sxx, sxy, syy = (moments[..., i] for i in range(6))
  mx, my = means_local[..., 0], means_local[..., 1]
  sdx = sx - mx * s0
  sdy = sy - my * s0
  sdxx = sxx - 2.0 * mx * sx + mx * mx * s0
  sdxy = sxy - my * sx - mx * sy + mx * my * s0
  sdyy = syy - 2.0 * my * sy + my * my * s0
  ca, cb, cc = conics[..., 0], conics[..., 1], conics[..., 2]
  # power = -a dx^2 / 2 - b dx dy - c dy^2 / 2 and dx = x - mx.
  return jnp.stack([ca * sdx + cb * sdy, cb * sdx + cc * sdy,
                    -0.5 * sdxx, -sdxy, -0.5 * sdyy], -1)


def _dot_features(feat, g_accum):
  """``[G, C, P]`` dot products of features ``[G, C, F]`` and pixel cotangents ``[G, P, F]``.

  Few channels: explicit products, which XLA's CPU backend runs faster than a K=F matmul.
  """
  if feat.shape[-1] > 8:
    return jnp.einsum("gcf,gpf->gcp", feat, g_accum)
  return sum(feat[:, :, None, i] * g_accum[:, None, :, i] for i in range(feat.shape[-1]))


def _sum_pixels(x, axis: int):
  """``jnp.sum(x, axis)`` as a tree of halving adds when the axis is a power of two.

  Inside the rasteriser's loops the pixel axis is short (64 or 256): XLA:CPU fuses the
  adds with the products that feed them, where a reduce or a tiny batched dot becomes a
  separate library call per loop step (~1.4x the time in the base GRM's backward).
  """
  n = x.shape[axis]
  if n & (n - 1):
    return jnp.sum(x, axis)
  while n > 1:
    n //= 2
    x = (jax.lax.slice_in_dim(x, 0, n, axis=axis) +
         jax.lax.slice_in_dim(x, n, 2 * n, axis=axis))
  return jnp.squeeze(x, axis)


def _backward_block(grads, tiles, starts, counts, table, isect_gids, g_accum, g_trans, accum,
                    final_t, cfg: TileConfig):
  """Adds the gradients of one block of tiles to ``grads [N + 1, 6 + F]`` (per Gaussian).

  Walks the Gaussians in the forward order, recomputing the transmittance exactly as the
  forward did, and uses the saved output to get what lies behind each Gaussian:
  ``dL/dalpha_k = T_k (g . f_k) - (g . (accum - prefix_k) + gT * T_final) / (1 - alpha_k)``
  with ``prefix_k`` the accumulation up to and including ``k``.
  """
  centre = _tile_origins(tiles, cfg) + 0.5 * cfg.tile_size  # [G, 2]
  pix = _local_pixels(cfg)  # [P, 2]
  moments = _pixel_moments(pix)  # [P, 6]
  g, p = tiles.shape[0], pix.shape[0]
  n = table.shape[0]
  ga = jnp.sum(g_accum * accum, -1)  # [G, P] g . accum
  behind_final = g_trans * final_t  # [G, P]
  tile_starts, tile_counts = starts[tiles], counts[tiles]  # [G]: loop-invariant
  num_steps = _num_steps(tile_counts, cfg)

  def cond(carry):
    step, _, done, _, _ = carry
    return (step < num_steps) & ~jnp.all(done)

  def body(carry):
    step, trans, done, g_prefix, grads = carry
    gid, valid, (m, con, o, feat) = _chunk_gather(step, tile_starts, tile_counts, table,
                                                  isect_gids, cfg)
    o = jnp.where(valid, o, 0.0)
    m = m - centre[:, None]
    alpha, gauss = _gaussian_terms(pix, m, con, o)  # [G, C, P]
    unclamped = o[..., None] * gauss < ALPHA_MAX
    gf = _dot_features(feat, g_accum)  # [G, C, P] g . f_k
    weights, g_raws = [], []
    for k in range(cfg.chunk_size):
      a, t_before = alpha[:, k], trans
      w, included, trans, done = _step(a, trans, done)
      g_prefix = g_prefix + w * gf[:, k]
      g_alpha = t_before * gf[:, k] - (ga - g_prefix + behind_final) / (1.0 - a)
      # alpha = o * G below the clamp; skipped, clamped and excluded: no gradient.
      live = included & (a > 0) & unclamped[:, k]
      weights.append(w)
      g_raws.append(jnp.where(live, g_alpha, 0.0))
    weights = jnp.stack(weights, 1)  # [G, C, P]
    g_raw = jnp.stack(g_raws, 1)
    # dL/d(o G) summed against (1, x, y, x^2, xy, y^2): column 0 is dL/do; times o it is
    # the moments of dL/dpower = dL/d(o G) * o * G.
    sums = _sum_pixels((g_raw * gauss)[..., None] * moments, axis=2)  # [G, C, 6]
    geom = _conic_mean_grads(o[..., None] * sums, m, con)
    g_opacity = sums[..., 0]  # [G, C]
    g_feat = _sum_pixels(weights[..., None] * g_accum[:, None], axis=2)  # [G, C, F]
    per_isect = jnp.concatenate([geom, g_opacity[..., None], g_feat], -1)
    # Per-intersection gradients summed by Gaussian (a segment sum into the carry; padding
    # goes to the spare row n). Sequential on CPU, so bit-reproducible.
    grads = grads.at[jnp.where(valid, gid, n).reshape(-1)].add(
        per_isect.reshape(-1, grads.shape[-1]))
    return step + 1, trans, done, g_prefix, grads

  init = (jnp.zeros((), jnp.int32), jnp.ones((g, p), jnp.float32), jnp.zeros((g, p), bool),
          jnp.zeros((g, p), jnp.float32), grads)
  return jax.lax.while_loop(cond, body, init)[-1]


def _tiles_forward(cfg, means2d, conics, opacities, features, tile_ranges, isect_gids):
  """One camera: ``(accum [H, W, F], final_T [H, W])``."""
  blocks, starts, counts = _blocks(tile_ranges, cfg)
  table = _attribute_table(means2d, conics, opacities, features)
  fn = lambda tiles: _forward_block(tiles, starts, counts, table, isect_gids, cfg)
  accum, trans = jax.lax.map(fn, blocks)  # [B, G, P, F], [B, G, P]
  num_tiles = tile_ranges.shape[0]
  accum = _from_tiles(_unblock(accum, blocks, num_tiles), cfg)
  trans = _from_tiles(_unblock(trans, blocks, num_tiles), cfg)
  return accum, trans


def _tiles_backward(cfg, means2d, conics, opacities, features, tile_ranges, isect_gids,
                    accum, trans, g_accum, g_trans):
  """One camera: gradients for means2d, conics, opacities and features."""
  n = means2d.shape[0]
  blocks, starts, counts = _blocks(tile_ranges, cfg)
  # Per-tile views of the per-pixel quantities, with an empty padding tile at the end.
  pad_tile = lambda x: jnp.concatenate([x, jnp.zeros((1,) + x.shape[1:], x.dtype)])
  g_accum_t = pad_tile(_to_tiles(g_accum, cfg))  # [T + 1, P, F]
  g_trans_t = pad_tile(_to_tiles(g_trans, cfg))  # [T + 1, P]
  accum_t = pad_tile(_to_tiles(accum, cfg))
  trans_t = pad_tile(_to_tiles(trans, cfg))

  table = _attribute_table(means2d, conics, opacities, features)

  def step(grads, tiles):
    grads = _backward_block(grads, tiles, starts, counts, table, isect_gids, g_accum_t[tiles],
                            g_trans_t[tiles], accum_t[tiles], trans_t[tiles], cfg)
    return grads, None

  total, _ = jax.lax.scan(step, jnp.zeros((n + 1, 6 + features.shape[-1]), jnp.float32),
                          blocks)
  total = total[:n]
  return total[:, 0:2], total[:, 2:5], total[:, 5], total[:, 6:]


def _camera_by_camera(fn):
  """``fn`` of one camera's arrays -> a function of arrays with a leading camera axis.

  Cameras run one after another (``lax.map``), and ``vmap`` folds its axis into that
  leading axis instead of batching the loops inside: a batched scatter into the gradient
  carry would not stay in place, which made vmapped backward passes several times slower.
  """
  wrapped = jax.custom_batching.custom_vmap(lambda *args: jax.lax.map(lambda a: fn(*a), args))

  @wrapped.def_vmap
  def _rule(axis_size, in_batched, *args):
    merged = [(x if batched else jnp.broadcast_to(x, (axis_size,) + x.shape)).reshape(
        (axis_size * x.shape[int(batched)],) + x.shape[1 + int(batched):])
              for x, batched in zip(args, in_batched)]
    outs = wrapped(*merged)
    outs = jax.tree.map(lambda y: y.reshape((axis_size, -1) + y.shape[1:]), outs)
    return outs, jax.tree.map(lambda _: True, outs)

  return wrapped


def _one_camera(fn, *args):
  """Calls a :func:`_camera_by_camera` function on one camera's arrays."""
  return jax.tree.map(lambda y: y[0], fn(*(x[None] for x in args)))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _rasterize_tiles(cfg, *args):
  return _one_camera(_camera_by_camera(functools.partial(_tiles_forward, cfg)), *args)


def _rasterize_tiles_fwd(cfg, *args):
  accum, trans = _one_camera(_camera_by_camera(functools.partial(_tiles_forward, cfg)), *args)
  return (accum, trans), args + (accum, trans)


def _rasterize_tiles_bwd(cfg, res, cotangents):
  grads = _one_camera(_camera_by_camera(functools.partial(_tiles_backward, cfg)), *res,
                      *cotangents)
  return grads + (None, None)


_rasterize_tiles.defvjp(_rasterize_tiles_fwd, _rasterize_tiles_bwd)


def rasterize_tiles(means2d, conics, opacities, features, tile_ranges, isect_gids, *,
                    height: int, width: int, tile_size: int = TILE_SIZE,
                    chunk_size: int = 32, block_tiles: int = 16,
                    max_per_tile: int | None = None):
  """Per-tile front-to-back compositing (jnp reference of ``kernels/splat_pallas.py``).

  Args:
    means2d: ``[N, 2]`` f32 pixel coordinates (pixel centres at +0.5).
    conics: ``[N, 3]`` f32 ``(a, b, c)`` of the inverse 2D covariance.
    opacities: ``[N]`` f32 activated.
    features: ``[N, C]`` f32 values to blend (colour, camera z, ...).
    tile_ranges: ``[T, 2]`` int32 ``(start, end)`` into ``isect_gids`` per tile (row-major
      tiles of ``tile_size``).
    isect_gids: ``[M]`` int32 Gaussian ids sorted by (tile, depth).
    height, width, tile_size: static sizes.
    chunk_size, block_tiles, max_per_tile: see :class:`TileConfig`.
  Returns:
    ``accum [H, W, C] = sum_i alpha_i T_i f_i`` (no background) and ``final_T [H, W]``.
    Differentiable in the four float inputs; the backward is deterministic.
  """
  tiles_y, tiles_x = tile_grid(height, width, tile_size)
  if tile_ranges.shape != (tiles_y * tiles_x, 2):
    raise ValueError(f"tile_ranges must be [{tiles_y * tiles_x}, 2] for a {height}x{width} "
                     f"image in {tile_size}-pixel tiles, got {tile_ranges.shape}.")
  n = means2d.shape[0]
  for name, x, shape in (("means2d", means2d, (n, 2)), ("conics", conics, (n, 3)),
                         ("opacities", opacities, (n,))):
    if x.shape != shape:
      raise ValueError(f"{name} must be {shape}, got {x.shape}.")
  if features.ndim != 2 or features.shape[0] != n:
    raise ValueError(f"features must be [{n}, C], got {features.shape}.")
  cfg = TileConfig(height, width, tile_size, chunk_size, block_tiles, max_per_tile)
  f32 = lambda x: jnp.asarray(x, jnp.float32)
  return _rasterize_tiles(cfg, f32(means2d), f32(conics), f32(opacities), f32(features),
                          tile_ranges.astype(jnp.int32), isect_gids.astype(jnp.int32))


# ----------------------------------------------------------------------------------------
# The entry point.
# ----------------------------------------------------------------------------------------


def _render_one(g: Gaussians, c2w, intrinsics, background, *, height, width, backend,
                tile_size, capacity, options):
  """One unbatched set of Gaussians in one camera -> the output dict."""
  proj = project(g, c2w, intrinsics, height, width)
  features = jnp.concatenate([proj.colors, proj.depths[:, None]], -1)  # [N, 4]
  if backend == "dense":
    accum, trans = composite_dense(proj, features, height, width, tile_size)
    overflow = jnp.zeros((), jnp.int32)
  else:
    bins = bin_gaussians(proj, height, width, tile_size, capacity)
    args = (proj.means2d, proj.conics, proj.opacities, features, bins.tile_ranges,
            bins.isect_gids)
    if backend == "tiled":
      accum, trans = rasterize_tiles(*args, height=height, width=width,
                                     tile_size=tile_size, **options)
      overflow = bins.overflow + tile_budget_overflow(bins.tile_ranges,
                                                      options.get("max_per_tile"))
    else:
      from kernels.splat_pallas import rasterize_tiles as pallas_rasterize_tiles
      accum, trans = pallas_rasterize_tiles(*args, height=height, width=width,
                                            tile_size=tile_size, **options)
      overflow = bins.overflow
  alpha = 1.0 - trans[..., None]  # [H, W, 1]
  return {
      "rgb": accum[..., :3] + trans[..., None] * background,
      "depth": accum[..., 3:4] / jnp.maximum(alpha, DEPTH_EPS),
      "alpha": alpha,
      "overflow": overflow,
  }


def rasterize(gaussians: Gaussians, cameras: cameras_lib.Cameras, background=None, *,
              image_size: tuple[int, int] | None = None, backend: str = "tiled",
              tile_size: int = TILE_SIZE, capacity: int | None = None,
              views_at_once: int | None = None, remat: bool = False,
              **options) -> dict:
  """Renders Gaussians from cameras (see the module docstring for the semantics).

  Args:
    gaussians: ``[*B, N]`` Gaussians.
    cameras: ``[*B, *V]`` cameras: their leading dims match the Gaussians' batch dims and
      any further dims are views of the same Gaussians.
    background: colour broadcasting to ``[*B, *V, 3]`` (default black).
    image_size: ``(height, width)`` to render at, scaling the intrinsics; default the
      cameras' own size.
    backend: ``"tiled"`` (jnp, default), ``"dense"`` (oracle) or ``"pallas"``.
    tile_size: tile side in pixels.
    capacity: intersections per camera (default :func:`default_capacity`).
    views_at_once: render the views of each set of Gaussians this many at a time, one
      group after another (``lax.map``), so only one group's binning and compositing
      buffers are alive (default: all views together).
    remat: recompute each group of views in the backward pass instead of keeping its
      projection, binning and compositing residuals: with ``views_at_once`` the render's
      memory is then that of one group, for one more forward render per step.
    **options: backend settings: ``chunk_size``, ``block_tiles``, ``max_per_tile`` for
      ``tiled`` (:class:`TileConfig`); passed to the Pallas kernel for ``pallas``.
  Returns:
    ``{"rgb": [*B, *V, H, W, 3], "depth": [*B, *V, H, W, 1] expected camera z,
    "alpha": [*B, *V, H, W, 1], "overflow": [*B, *V] int32}``.
  """
  if backend not in BACKENDS:
    raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}.")
  if image_size is not None and tuple(image_size) != (cameras.height, cameras.width):
    cameras = cameras.resize(*image_size)
  height, width = cameras.height, cameras.width
  gb = gaussians.batch_shape
  cb = tuple(cameras.batch_shape)
  if cb[:len(gb)] != tuple(gb):
    raise ValueError(f"camera batch {cb} must start with the Gaussians' batch {gb}.")
  vb = cb[len(gb):]
  nb, nv = math.prod(gb), math.prod(vb)
  # float32 unless the Gaussians are float64 (oracle checks under enable_x64).
  dtype = jnp.promote_types(jnp.asarray(gaussians.means).dtype, jnp.float32)
  g = jax.tree.map(lambda x: jnp.asarray(x, dtype), gaussians.reshape((nb,)))
  c2w = jnp.asarray(cameras.c2w, dtype).reshape(nb, nv, 4, 4)
  intr = jnp.asarray(cameras.intrinsics, dtype).reshape(nb, nv, 4)
  bg = jnp.zeros((3,), dtype) if background is None else jnp.asarray(background, dtype)
  bg = jnp.broadcast_to(bg, cb + (3,)).reshape(nb, nv, 3)
  fn = functools.partial(_render_one, height=height, width=width, backend=backend,
                         tile_size=tile_size, capacity=capacity, options=options)
  one_scene = jax.vmap(fn)  # one scene, its views together
  views = lambda g, *cams: one_scene(_shared_by_views(g, cams[0].shape[0]), *cams)
  if views_at_once is not None and 0 < views_at_once < nv:
    views = _views_in_groups(views, nv, views_at_once, remat)
  elif remat:
    views = jax.checkpoint(views)
  out = jax.vmap(views, in_axes=(0, 0, 0, 0))(g, c2w, intr, bg)
  return jax.tree.map(lambda x: x.reshape(cb + x.shape[2:]), out)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _shared_by_views(tree, num_views: int):
  """Every leaf ``[...]`` repeated to ``[num_views, ...]``; the gradient sums the views.

  What ``vmap`` with ``in_axes=None`` does, with the backward's sum written as adds of
  whole per-view slices: XLA:CPU runs the reduction over the leading axis of
  ``[1, V, N, 3]`` that autodiff emits ~50x slower (35 vs 0.6 ms for N = 262,144).
  """
  return jax.tree.map(lambda x: jnp.broadcast_to(x, (num_views,) + x.shape), tree)


def _shared_by_views_fwd(tree, num_views):
  return _shared_by_views(tree, num_views), None


def _shared_by_views_bwd(num_views, _, cotangent):
  total = lambda x: functools.reduce(jnp.add, [x[i] for i in range(num_views)])
  return (jax.tree.map(total, cotangent),)


_shared_by_views.defvjp(_shared_by_views_fwd, _shared_by_views_bwd)


def _views_in_groups(views, nv: int, k: int, remat: bool):
  """``views(g, c2w [V], intr [V], bg [V])`` run ``k`` views at a time (``lax.map``).

  The Gaussians are shared by every group (their gradient sums over the groups); the last
  group is padded with copies of the last view, whose outputs are dropped.
  """
  groups = -(-nv // k)

  def grouped(g, c2w, intr, bg):
    def split(x):
      x = jnp.concatenate([x, jnp.repeat(x[-1:], groups * k - nv, axis=0)], axis=0)
      return x.reshape((groups, k) + x.shape[1:])
    body = lambda cams: views(g, *cams)
    if remat:
      body = jax.checkpoint(body, prevent_cse=False)  # inside a loop: no CSE to prevent
    out = jax.lax.map(body, (split(c2w), split(intr), split(bg)))
    return jax.tree.map(lambda x: x.reshape((groups * k,) + x.shape[2:])[:nv], out)

  return grouped
