"""Prefix scans along the last axis whose TPU compile does not grow with the length.

XLA's TPU backend generates code for ``jnp.cumsum`` / ``lax.cummax`` (reduce-windows) and
for ``lax.associative_scan`` (strided slices) in proportion to the scanned length. Compiling
one such scan for one v5p chip (``jax.jit(...).lower(x).compile()`` on this project's CPU
host, libtpu): a ``jnp.cumsum`` of 1M float32 takes 20 s and 1.0 GB of host memory,
``lax.cummax`` of 1M int32 30 s and 1.4 GB, ``lax.associative_scan(add)`` of 1M 27 s and
1.7 GB and of 8M 236 s and 8.3 GB. The renderer scans every Gaussian and every
(tile, Gaussian) intersection, tens of millions at Long-LRM's paper size, so the train
step's compile outgrew the host.

Here a length-M axis is cut into rows of :data:`ROW` and scanned in two levels: within rows
(``ROW``-long scans, or ``log2(ROW)`` shifted adds for the segmented sum), then across the
rows' totals, recursively. Compiles of 1M and 8M elements take 1-2 s and ~0.5 GB either way.
The integer scans give exactly ``jnp.cumsum`` / ``lax.cummax`` (and run 1.3-3.4x faster on
XLA:CPU). The segmented float sum has a fixed association either way; its rows form is for
TPU programs: XLA:CPU runs its shifted adds ~15x slower than ``lax.associative_scan``
(``method="tree"``, the default), so the CPU renderer keeps the tree.

Mamba2's float sums over short axes (a 256-token chunk, the chunks of a sequence) are the
other TPU-compile-safe cumulative sum, :func:`lrm_jax.models.mamba2.inclusive_cumsum` (a
triangular product at full float32 precision); these here are for long integer and
segmented axes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

ROW = 1024  # scan length within a row


def _as_rows(x, fill):
  """``[..., M] -> [..., ceil(M / ROW), ROW]``, the tail filled with ``fill``."""
  pad = -x.shape[-1] % ROW
  x = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, pad)], constant_values=fill)
  return x.reshape(x.shape[:-1] + (x.shape[-1] // ROW, ROW))


def _running(x, scan, combine, identity):
  """``scan`` (inclusive, along the last axis) of a long axis as rows, then row totals."""
  m = x.shape[-1]
  if m <= ROW:
    return scan(x, axis=x.ndim - 1)
  rows = _as_rows(x, identity)
  inner = scan(rows, axis=rows.ndim - 1)  # [..., R, ROW]
  ends = _running(inner[..., -1], scan, combine, identity)  # [..., R] through each row
  carry = jnp.concatenate([jnp.full(ends.shape[:-1] + (1,), identity, x.dtype),
                           ends[..., :-1]], axis=-1)  # [..., R] before each row
  return combine(inner, carry[..., None]).reshape(x.shape[:-1] + (-1,))[..., :m]


def running_sum(x: jax.Array) -> jax.Array:
  """``jnp.cumsum(x, axis=-1)`` (inclusive) of an integer array, exactly."""
  if not jnp.issubdtype(x.dtype, jnp.integer):
    raise TypeError(f"running_sum is exact for integers only, got {x.dtype}.")
  return _running(x, jnp.cumsum, jnp.add, 0)


def running_max(x: jax.Array) -> jax.Array:
  """``jax.lax.cummax(x, axis=-1)`` of an integer array, exactly."""
  if not jnp.issubdtype(x.dtype, jnp.integer):
    raise TypeError(f"running_max is exact for integers only, got {x.dtype}.")
  return _running(x, jax.lax.cummax, jnp.maximum, jnp.iinfo(x.dtype).min)


def _shift(x, k: int, fill):
  """``x`` moved ``k`` places right along the last axis, ``fill`` entering on the left."""
  return jnp.pad(x[..., :-k], [(0, 0)] * (x.ndim - 1) + [(k, 0)], constant_values=fill)


def _segmented_in_rows(values, flags):
  """Segmented inclusive sums along the last axis by ``log2(L)`` shifted adds
  (Hillis-Steele): ``values [..., R, L]``, ``flags [R, L]`` -> (sums ``[..., R, L]``, whether a
  segment starts at or before each element of its row ``[R, L]``)."""
  k = 1
  while k < values.shape[-1]:
    values = jnp.where(flags, values, values + _shift(values, k, 0))
    flags = flags | _shift(flags, k, False)
    k *= 2
  return values, flags


def _segment_combine(a, b):
  """Segmented-scan operator on ``(starts_here, value)`` pairs (associative)."""
  fa, va = a
  fb, vb = b
  return fa | fb, jnp.where(fb, vb, va + vb)


SEGMENTED_METHODS = ("tree", "rows")


def segmented_cumsum(values: jax.Array, starts: jax.Array, method: str = "tree") -> jax.Array:
  """Inclusive sums along the last axis that restart where ``starts`` is set.

  Args:
    values: ``[..., M]`` float.
    starts: ``[M]`` bool, True at the first element of each segment.
    method: ``"tree"``, ``lax.associative_scan`` over the whole axis (fast on CPU and GPU;
      its TPU compile grows with M), or ``"rows"``, a tree within each row of :data:`ROW`
      then the earlier rows' part of the segment (for TPU programs).
  Returns:
    ``[..., M]``: at ``i``, the sum of the elements from its segment's first to ``i``.
    Only the segment's own elements enter (never a difference of prefix sums, which would
    lose the precision of small segments next to large totals), in a fixed association
    for each method; the two methods differ by float rounding.
  """
  m = values.shape[-1]
  if starts.shape != (m,):
    raise ValueError(f"starts must be [{m}], got {starts.shape}.")
  if method not in SEGMENTED_METHODS:
    raise ValueError(f"segmented_cumsum method must be one of {SEGMENTED_METHODS}, got "
                     f"{method!r}.")
  if method == "tree":
    flags = jnp.broadcast_to(starts, values.shape)
    return jax.lax.associative_scan(_segment_combine, (flags, values),
                                    axis=values.ndim - 1)[1]
  if m <= ROW:
    return _segmented_in_rows(values[..., None, :], starts[None, :])[0][..., 0, :]
  rows = _as_rows(values, 0)  # [..., R, ROW]
  inner, seen = _segmented_in_rows(rows, _as_rows(starts, False))
  # Each row's last sum continues into the next row until a start: the row ends' running
  # sums are the same segmented scan over rows (a row that has a start restarts it).
  ends = segmented_cumsum(inner[..., -1], seen[:, -1], "rows")  # [..., R]
  carry = jnp.concatenate([jnp.zeros_like(ends[..., :1]), ends[..., :-1]], axis=-1)
  out = jnp.where(seen, inner, inner + carry[..., None])
  return out.reshape(values.shape[:-1] + (-1,))[..., :m]
