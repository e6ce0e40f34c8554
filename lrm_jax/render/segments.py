"""Per-segment sums without scatter-adds: deterministic on every backend.

The rasterisers' backward passes produce one gradient row per (tile, Gaussian)
intersection and must sum those rows per Gaussian. ``jax.ops.segment_sum`` lowers to a
scatter-add, which XLA:GPU runs with atomics, so the order of the float additions (and
the last bits of the gradients) changes from call to call. Here the rows are instead

  1. ordered by segment with a *stable* sort of the ids (a fixed order for fixed inputs;
     integer keys, so every sort implementation gives the same permutation),
  2. summed by a segmented inclusive scan (:func:`lrm_jax.render.scans.segmented_cumsum`:
     a fixed association order, and never a difference of a global prefix sum, which
     would lose the precision of small segments next to large totals),
  3. read at each segment's last row, found by a binary search of the sorted ids.

On a single CPU device (``host_sort``) NumPy does the same on the host: a stable argsort
and ``np.add.reduceat``, each segment's rows added one after another.

No step adds into memory that another step also adds into, so the result is bit-identical
from run to run, and it equals ``segment_sum`` up to float32 rounding (another order of
the same additions).

Also here: :func:`sort_on_cpu_host`, the NumPy path for integer sorts on one CPU device
that binning uses too.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from lrm_jax.render.scans import segmented_cumsum


def _usable_cpus() -> int:
  """CPUs this process may run on (its affinity mask; the CPU count where unknown)."""
  try:
    return len(os.sched_getaffinity(0))
  except (AttributeError, OSError):
    return os.cpu_count() or 1


def host_work_allowed(enabled: bool = True) -> bool:
  """Whether a host-callback shortcut may run: asked for, one JAX device (a callback runs
  on one device), and at least two usable CPUs. On one CPU the callback waits for
  XLA:CPU's only worker thread, which waits for the callback: the step hangs (seen with
  ``taskset -c 0``)."""
  return enabled and jax.device_count() == 1 and _usable_cpus() >= 2


def sort_on_cpu_host(keys, numpy_fn, xla_fn, enabled: bool = True):
  """``xla_fn(keys)`` (a sort or argsort of integer ``keys`` along the last axis), which on
  the CPU backend runs as ``numpy_fn`` on the host (``jax.pure_callback``) if ``enabled``.

  XLA:CPU sorts by scalar comparisons, key after key, where NumPy's vectorised sort is
  about ten times faster on millions of keys (bench/RESULTS.md has the render timings).
  Both give the same order (sorts of integers; the argsorts stable), so the results are
  identical.

  XLA's sort is used on accelerators, when not ``enabled``, and where
  :func:`host_work_allowed` says no: with more than one device (a callback runs on one
  device, so SPMD would gather every shard's keys to it) or one usable CPU. JAX also
  leaves programs with host callbacks out of its persistent compilation cache.
  """
  if not host_work_allowed(enabled):
    return xla_fn(keys)
  out = jax.eval_shape(xla_fn, keys)
  host = lambda k: numpy_fn(np.asarray(k))
  on_cpu = lambda k: jax.pure_callback(host, out, k, vmap_method="expand_dims")
  return jax.lax.platform_dependent(keys, cpu=on_cpu, default=xla_fn)


def stable_argsort(keys, host_sort: bool = False):
  """``jnp.argsort(keys, stable=True)`` ``[M]`` int32 of int32 ``keys [M]``.

  With ``host_sort``, NumPy sorts on a single CPU device (:func:`sort_on_cpu_host`); the
  permutation is the same.
  """
  keys = keys.astype(jnp.int32)
  index = jnp.arange(keys.shape[-1], dtype=jnp.int32)
  return sort_on_cpu_host(
      keys, lambda k: np.argsort(k, axis=-1, kind="stable").astype(np.int32),
      lambda k: jax.lax.sort((k, index), num_keys=1, is_stable=True)[1], host_sort)


def _sum_sorted_xla(values, ids, n: int, scan: str):
  """:func:`sorted_segment_sum` along the last axis in XLA (ids already in ``[0, n]``)."""
  order = stable_argsort(ids)  # [M]
  ids = ids[order]
  vals = jnp.take(values, order, axis=-1)
  starts = jnp.concatenate([jnp.ones((1,), bool), ids[1:] != ids[:-1]])
  sums = segmented_cumsum(vals, starts, scan)  # [..., M]
  bounds = jnp.searchsorted(ids, jnp.arange(n + 1, dtype=jnp.int32), side="left")  # [N+1]
  last = jnp.maximum(bounds[1:] - 1, 0)
  out = jnp.take(sums, last, axis=-1)
  return jnp.where(bounds[1:] > bounds[:-1], out, jnp.zeros_like(out))


def _sum_sorted_numpy(values, ids, num_rows, n: int, axis: int):
  """:func:`sorted_segment_sum` in NumPy: stable argsort, then ``np.add.reduceat``, which
  adds each segment's rows one after another (a fixed order, no prefix differences)."""
  out = np.zeros(values.shape[:axis] + (n,) + values.shape[axis + 1:], values.dtype)
  rows = max(0, min(int(num_rows), ids.shape[0]))
  ids = ids[:rows]
  values = np.swapaxes(np.swapaxes(values, 0, axis)[:rows], 0, axis)  # a view
  if ids.size == 0:
    return out
  order = np.argsort(ids, kind="stable")
  ids = ids[order]
  first = np.flatnonzero(np.concatenate([[True], ids[1:] != ids[:-1]]))
  sums = np.add.reduceat(np.take(values, order, axis=axis), first, axis=axis)
  seg = ids[first]
  keep = np.flatnonzero(seg < n)
  put = [slice(None)] * values.ndim
  take = [slice(None)] * values.ndim
  put[axis], take[axis] = seg[keep], keep
  out[tuple(put)] = sums[tuple(take)]
  return out


def sorted_segment_sum(values, segment_ids, num_segments: int, *, axis: int = -1,
                       host_sort: bool = False, num_rows=None, scan: str = "tree"):
  """``jax.ops.segment_sum`` along ``axis``, without scatter-adds (deterministic).

  Args:
    values: ``[..., M, ...]`` float, the rows to sum along ``axis`` (several quantities
      share one sort when they sit on the other axes).
    segment_ids: ``[M]`` int; ids outside ``[0, num_segments)`` are dropped.
    num_segments: static number of segments ``N``.
    axis: the row axis of ``values``.
    host_sort: on a single CPU device, the whole reduction runs in NumPy on the host
      (stable argsort + ``np.add.reduceat``: a sequential sum per segment, several times
      faster than XLA:CPU's sort and scan); elsewhere (:func:`host_work_allowed`), and
      without it, XLA's sort and segmented scan. Each path is deterministic; they differ
      by float32 rounding.
    num_rows: optional ``[]`` int: rows from this one on are dropped (the host path
      then sorts only the rows before it: a static buffer's used part).
    scan: the XLA path's segmented scan, ``"tree"`` or ``"rows"`` (for TPU programs:
      :func:`lrm_jax.render.scans.segmented_cumsum`).
  Returns:
    ``values`` with ``axis`` replaced by ``N``: the per-segment sums (0 when empty).
  """
  n = num_segments
  axis = axis % values.ndim
  ids = segment_ids.astype(jnp.int32)
  rows = jnp.arange(ids.shape[0], dtype=jnp.int32)
  num_rows = jnp.asarray(ids.shape[0] if num_rows is None else num_rows, jnp.int32)
  # Dropped rows sort last, as segment n.
  ids = jnp.where((ids >= 0) & (ids < n) & (rows < num_rows), ids, n)

  def xla_fn(values, ids):
    out = _sum_sorted_xla(jnp.moveaxis(values, axis, -1), ids, n, scan)
    return jnp.moveaxis(out, -1, axis)

  if not host_work_allowed(host_sort):
    return xla_fn(values, ids)
  shape = jax.eval_shape(xla_fn, values, ids)
  host = lambda v, i, r: _sum_sorted_numpy(np.asarray(v), np.asarray(i), r, n, axis)
  on_cpu = lambda v, i, r: jax.pure_callback(host, shape, v, i, r, vmap_method="sequential")
  return jax.lax.platform_dependent(values, ids, num_rows, cpu=on_cpu,
                                    default=lambda v, i, _: xla_fn(v, i))
