"""Tile binning: which Gaussians each 16x16 tile composites, front to back.

:func:`bin_gaussians` turns projected Gaussians into per-tile lists sorted by (tile,
depth) in a static buffer of ``capacity`` intersections; what does not fit is dropped
(the deepest Gaussians' intersections) and counted, never silently. Binning's cost is two
sorts (the depth order and the (tile, depth) keys); on one CPU device they run in NumPy
(``host_sorts``), under ``vmap`` each camera runs as its own chain
(``max_unrolled_cameras``). Neither setting changes the bins.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from lrm_jax.render import scans
from lrm_jax.render.projection import Projected
from lrm_jax.render.segments import sort_on_cpu_host
from lrm_jax.render.splat_constants import TILE_SIZE

Array = Any

# Cameras that a vmapped binning unrolls into separate programs by default (more are
# binned together, batched).
MAX_UNROLLED_CAMERAS = 16


@flax.struct.dataclass
class Bins:
  """Tile lists of one camera: intersections sorted by (tile, depth)."""

  tile_ranges: Array  # [T, 2] int32 (start, end) into isect_gids
  isect_gids: Array  # [M] int32 Gaussian index of each intersection
  num_intersections: Array  # [] int32 wanted, including those that did not fit
  overflow: Array  # [] int32 intersections dropped for lack of capacity



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
  few hundred thousand elements, a float division well under a second. In binning ``a``
  is an index inside one Gaussian's tile rectangle (fewer than the image's tiles); slots
  past the last intersection may exceed the bound, and their tiles are discarded.
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
  start = scans.running_sum(counts_sorted) - counts_sorted  # [N]
  marks = jnp.zeros((capacity,), jnp.int32).at[jnp.where(counts_sorted > 0, start, capacity)]
  return scans.running_max(marks.max(jnp.arange(n, dtype=jnp.int32), mode="drop")), start


def _unrolled_under_vmap(fn, max_unrolled: int):
  """``fn`` of arrays, which under ``vmap`` runs once per row (up to ``max_unrolled`` per
  batch axis; batched beyond that) instead of batched.

  For binning, whose cost is sorts: XLA:CPU runs a batched sort row after row on one
  thread, while independent per-camera chains (their own key computations and sorts) run
  side by side on all cores. ``fn`` must take and return arrays with no gradient.
  """
  wrapped = jax.custom_batching.custom_vmap(fn)

  @wrapped.def_vmap
  def _rule(axis_size, in_batched, *args):
    if axis_size > max_unrolled:
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
  instead of one per vector: XLA:CPU pays per gathered element (more in random order), and
  binning gathers every Gaussian and every intersection slot of each camera.
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
                  capacity: int | None = None, *, host_sorts: bool = True,
                  max_unrolled_cameras: int = MAX_UNROLLED_CAMERAS) -> Bins:
  """Intersections of Gaussians and tiles, sorted by (tile, depth), in a static buffer.

  Gaussians are ordered by depth once; each then writes its tiles into consecutive slots
  (offsets from a cumulative sum), and a slot's tile follows from its rank inside the
  Gaussian's rectangle. Sorting by the key ``(tile, depth rank)``, packed into one uint32
  where it fits, gives the per-tile lists in depth order. Slots past ``capacity`` (the
  deepest Gaussians') are dropped and counted.

  Args:
    proj: projected Gaussians ``[N]`` of one camera (``vmap`` for more).
    height, width, tile_size: image and tile size in pixels.
    capacity: intersections kept (default :func:`default_capacity`).
    host_sorts: on a single CPU device, run the two sorts in NumPy
      (:func:`lrm_jax.render.segments.sort_on_cpu_host`); the bins are the same either way.
    max_unrolled_cameras: under ``vmap``, up to this many cameras are binned as separate
      chains (:func:`_unrolled_under_vmap`), more are batched; the bins are the same.
  Returns:
    :class:`Bins`.
  """
  n = proj.means2d.shape[0]
  capacity = default_capacity(n, height, width, tile_size) if capacity is None else capacity
  fn = functools.partial(_bin_one_camera, height=height, width=width, tile_size=tile_size,
                         capacity=capacity, host_sorts=host_sorts)
  no_grad = jax.lax.stop_gradient
  return Bins(*_unrolled_under_vmap(fn, max_unrolled_cameras)(
      no_grad(proj.means2d), proj.radii, no_grad(proj.depths)))


def _depth_order(depths, host_sorts: bool = True):
  """``jnp.argsort(depths, stable=True)`` ``[N]`` int32, as a sort of integer keys.

  Floats map to uint32 keys in the same order (``-0.0`` as ``0.0``, NaNs last), sorted
  with the index as a second key: XLA compares integers faster than floats in their total
  order. With ``host_sorts`` on one CPU device NumPy sorts the keys
  (:func:`lrm_jax.render.segments.sort_on_cpu_host`).
  """
  z = jnp.where(depths == 0, jnp.zeros_like(depths), depths)
  z = jnp.where(jnp.isnan(z), jnp.full_like(z, jnp.nan), z).astype(jnp.float32)
  bits = jax.lax.bitcast_convert_type(z, jnp.uint32)
  key = jnp.where((bits >> 31) == 1, ~bits, bits | jnp.uint32(0x80000000))
  index = jnp.arange(depths.shape[0], dtype=jnp.int32)
  return sort_on_cpu_host(
      key, lambda k: np.argsort(k, axis=-1, kind="stable").astype(np.int32),
      lambda k: jax.lax.sort((k, index), num_keys=2, is_stable=False)[1], host_sorts)


def _bin_one_camera(means2d, radii, depths, *, height: int, width: int, tile_size: int,
                    capacity: int, host_sorts: bool):
  """:func:`bin_gaussians` on arrays: ``(tile_ranges, isect_gids, total, overflow)``."""
  n = means2d.shape[0]
  tiles_y, tiles_x = tile_grid(height, width, tile_size)
  num_tiles = tiles_y * tiles_x
  x0, x1, y0, y1 = tile_rects(means2d, radii, height, width, tile_size)
  order = _depth_order(depths, host_sorts)  # [N] front to back
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
    key = sort_on_cpu_host(key, lambda k: np.sort(k, axis=-1), jax.lax.sort, host_sorts)
    tile = (key >> rank_bits).astype(jnp.int32)
    rank = (key & ((1 << rank_bits) - 1)).astype(jnp.int32)
  else:
    tile, rank = jax.lax.sort((tile, rank), num_keys=2)
  starts = jnp.searchsorted(tile, jnp.arange(num_tiles + 1, dtype=jnp.int32), side="left")
  ranges = jnp.stack([starts[:-1], starts[1:]], -1).astype(jnp.int32)  # [T, 2]
  return (ranges, order[rank].astype(jnp.int32), total.astype(jnp.int32),
          jnp.maximum(total - capacity, 0).astype(jnp.int32))

