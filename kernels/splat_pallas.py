"""Tile-based Gaussian-splatting compositor as a Pallas kernel (forward + backward).

The projection and binning (EWA, tile/depth keys, sort) live in
`lrm_jax/render/projection.py` and `lrm_jax/render/binning.py`, the contract's constants
in `lrm_jax/render/splat_constants.py`; this module only composites the sorted, binned 2D
Gaussians front to back, per 16x16 tile, as 3DGS does (docs/design.md §5):

    for pixel centre p = (j + 0.5, i + 0.5) and each Gaussian of its tile, in order:
      d = p - mean2d;  power = -0.5 * (a dx^2 + c dy^2) - b dx dy;  skip if power > 0
      alpha = min(0.99, o exp(power));  skip if alpha < 1/255
      next_T = T (1 - alpha);  if next_T < 1e-4: stop (this Gaussian and all later excluded)
      accum += alpha T f;  T = next_T

Layout (why it looks like this). Neither Mosaic (TPU) nor Triton (GPU) gathers well in a
kernel, so the per-Gaussian parameters are gathered in jnp into per-intersection rows, and
each tile's rows are re-laid so that the tile starts on a chunk boundary ("chunk-aligned
layout"): a tile then owns whole chunks, reads them contiguously and, in the backward
pass, writes whole chunks of per-intersection gradients that no other tile touches (no
atomics, deterministic), which are summed per Gaussian outside by a sort and a segmented
scan (`lrm_jax/render/segments.py`: no scatter-add either, so bit-identical run to run).

    params  [B * NC * KCp] f32 (flat): per chunk a [K, chunk] block, K = 6 + C (mean x,
            mean y, conic a, b, c, opacity, features), padded to KCp = a multiple of 128
            words (TPU DMA alignment). Padding rows have opacity 0: the kernel skips them.
            NC = ceil(M / chunk) + T chunks per camera is a static bound for any binning.
    grads   same layout as params (d/dparam per intersection row).
    per tile (scalar prefetch on TPU): first chunk index, number of chunks.

Pixels of a tile are a (R, L) = (ts*ts/128, 128) block (16x16 -> 2x128 lanes), row-major,
so TPU blocks have a full 128-lane minor dim and Triton blocks are powers of two.

One algorithm, two memory paths (`backend`):
  'tpu': params/grads stay in HBM (`pl.ANY`); chunks are DMA'd into a double-buffered
         SMEM scratch (the next chunk is in flight while this one is composited), so
         per-Gaussian values are scalars broadcast onto the pixel vectors; per-chunk
         gradients are written to SMEM and DMA'd back (output aliased to zeros, so rows
         no tile reaches stay zero). Tile ranges come in by scalar prefetch.
  'gpu': Triton has no scalar prefetch or SMEM: ranges, params and grads are global
         memory refs read/written with scalar loads/stores.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu
from jax.experimental.pallas import triton as pltriton

from lrm_jax.render import scans
from lrm_jax.render.segments import sorted_segment_sum
from lrm_jax.render.splat_constants import ALPHA_MAX, ALPHA_MIN, T_MIN, TILE_SIZE

__all__ = [
    "SplatBlockConfig",
    "rasterize_tiles",
    "rasterize_tiles_reference",
]

_NGEOM = 6  # mean x, mean y, conic a, b, c, opacity
_LANES = 128
_BACKENDS = ("tpu", "gpu")
# Each chunk's block of K*chunk params is padded to a multiple of this many words: TPU
# DMAs need 1D slice offsets aligned to the (128)-word memory tiling.
_CHUNK_ALIGN = 128


def _chunk_words(nfeat: int, chunk: int) -> int:
  """Words per chunk block in the flat params/grads arrays (K * chunk, padded)."""
  return -(-(_NGEOM + nfeat) * chunk // _CHUNK_ALIGN) * _CHUNK_ALIGN


@dataclasses.dataclass(frozen=True)
class SplatBlockConfig:
  """Block sizes of the Pallas compositor.

  Attributes:
    chunk: Gaussians fetched per step (one DMA to SMEM on TPU). Each tile's rows are
      padded to a multiple of this, so smaller wastes less padding and larger amortises
      the per-chunk fetch. Multiple of 8.
    num_warps: Triton warps per tile program (GPU only).
  """

  chunk: int = 32
  num_warps: int = 4

  def __post_init__(self):
    if self.chunk < 8 or self.chunk % 8:
      raise ValueError(f"SplatBlockConfig.chunk must be a positive multiple of 8, got {self.chunk}")
    if self.num_warps < 1 or self.num_warps & (self.num_warps - 1):
      raise ValueError(f"SplatBlockConfig.num_warps must be a power of two, got {self.num_warps}")


@dataclasses.dataclass(frozen=True)
class _Static:
  """Static (hashable) problem description shared by forward and backward."""

  height: int
  width: int
  tile_size: int
  chunk: int
  num_warps: int
  backend: str | None  # None: chosen at lowering time by platform
  interpret: Any

  @property
  def tiles_x(self) -> int:
    return -(-self.width // self.tile_size)

  @property
  def tiles_y(self) -> int:
    return -(-self.height // self.tile_size)

  @property
  def num_tiles(self) -> int:
    return self.tiles_x * self.tiles_y

  @property
  def pix_block(self) -> tuple[int, int]:
    """(R, L): a tile's pixels as R rows of L lanes."""
    p = self.tile_size * self.tile_size
    lanes = min(p, _LANES)
    return p // lanes, lanes


# ----------------------------------------------------------------------------------------
# Per-pixel math shared by the kernels and the reference (same op order: bit-comparable).
# ----------------------------------------------------------------------------------------


def _gauss_alpha(px, py, mx, my, ca, cb, cc, op):
  """Returns dx, dy, power, G = exp(power) (clamped at 0 so it never overflows), o*G, alpha."""
  dx = px - mx
  dy = py - my
  power = -0.5 * (ca * dx * dx + cc * dy * dy) - cb * dx * dy
  g = jnp.exp(jnp.minimum(power, 0.0))
  og = op * g
  alpha = jnp.minimum(ALPHA_MAX, og)
  return dx, dy, power, g, og, alpha


def _pixel_centres(t, st: _Static):
  """Pixel centres (R, L) of tile t (scalar int32) and the in-image mask."""
  r, l = st.pix_block
  ts = st.tile_size
  shift = int(math.log2(ts))
  ty = t // st.tiles_x
  tx = t - ty * st.tiles_x
  p = lax.broadcasted_iota(jnp.int32, (r, l), 0) * l + lax.broadcasted_iota(jnp.int32, (r, l), 1)
  xi = tx * ts + (p & (ts - 1))
  yi = ty * ts + lax.shift_right_logical(p, shift)
  px = xi.astype(jnp.float32) + 0.5
  py = yi.astype(jnp.float32) + 0.5
  inside = (xi < st.width) & (yi < st.height)
  return px, py, inside


# ----------------------------------------------------------------------------------------
# Kernels.
# ----------------------------------------------------------------------------------------


class _ChunkStream:
  """Reads chunk `ci` of a tile (chunk row = row0 + ci) as scalars: getter(ci)(j, k).

  TPU: chunks are DMA'd HBM -> SMEM into two slots (ci % 2), so the next chunk's copy runs
  while this one is composited: start(ci) / wait(ci) pair up per chunk and every started
  copy must be waited before the kernel ends. GPU: scalar loads straight from global
  memory; start/wait do nothing.
  """

  def __init__(self, backend, params_ref, row0, kc, chunk, pbuf_ref=None, sem_ref=None):
    self.backend, self.params_ref, self.row0 = backend, params_ref, row0
    self.kc, self.chunk, self.pbuf_ref, self.sem_ref = kc, chunk, pbuf_ref, sem_ref

  def _copy(self, ci):
    slot = lax.rem(ci, 2)
    off = pl.multiple_of((self.row0 + ci) * self.kc, _CHUNK_ALIGN)
    src = self.params_ref.at[pl.ds(off, self.kc)]
    dst = self.pbuf_ref.at[pl.ds(pl.multiple_of(slot * self.kc, _CHUNK_ALIGN), self.kc)]
    return pltpu.make_async_copy(src, dst, self.sem_ref.at[slot])

  def start(self, ci, when=True):
    if self.backend == "tpu":
      pl.when(when)(lambda: self._copy(ci).start())

  def wait(self, ci, when=True):
    if self.backend == "tpu":
      pl.when(when)(lambda: self._copy(ci).wait())

  def getter(self, ci):
    """get(j, k) -> param j (scalar) of Gaussian k of chunk ci (after wait(ci))."""
    if self.backend == "tpu":
      base = lax.rem(ci, 2) * self.kc
      return lambda j, k: self.pbuf_ref[base + j * self.chunk + k]
    base = (self.row0 + ci) * self.kc
    return lambda j, k: self.params_ref[base + j * self.chunk + k]


def _fwd_kernel(cstart_ref, nch_ref, params_ref,  # inputs
                accum_ref, tfin_ref, last_ref,  # outputs
                *scratch, st: _Static, backend: str, nc: int, nfeat: int):
  """One tile: front-to-back compositing over its chunks, stops when all pixels are done.

  accum_ref [C, R, L] f32; tfin_ref [R, L] f32; last_ref [R, L] i32 (1 + index of the last
  contributing row within the tile, 0 if none).
  """
  chunk = st.chunk
  kc = _chunk_words(nfeat, chunk)
  b = pl.program_id(0)
  t = pl.program_id(1)
  bt = b * st.num_tiles + t
  row0 = b * nc + cstart_ref[bt]
  n_chunks = nch_ref[bt]
  stream = _ChunkStream(backend, params_ref, row0, kc, chunk, *scratch)
  px, py, inside = _pixel_centres(t, st)
  rl = px.shape

  def chunk_body(carry):
    ci, _, trans, alive, last, acc = carry
    stream.wait(ci)
    stream.start(ci + 1, when=ci + 1 < n_chunks)  # prefetch while compositing this one
    get = stream.getter(ci)

    def gauss_body(k, c):
      trans, alive, last, acc = c
      mx, my, ca, cb, cc, op = (get(j, k) for j in range(_NGEOM))
      _, _, power, _, _, alpha = _gauss_alpha(px, py, mx, my, ca, cb, cc, op)
      valid = (alive > 0.0) & (power <= 0.0) & (alpha >= ALPHA_MIN)
      next_t = trans * (1.0 - alpha)
      stop = valid & (next_t < T_MIN)
      contrib = valid & jnp.logical_not(stop)
      w = jnp.where(contrib, alpha * trans, 0.0)
      acc = tuple(acc[ch] + w * get(_NGEOM + ch, k) for ch in range(nfeat))
      trans = jnp.where(contrib, next_t, trans)
      alive = jnp.where(stop, 0.0, alive)
      last = jnp.where(contrib, ci * chunk + k + 1, last)
      return trans, alive, last, acc

    trans, alive, last, acc = lax.fori_loop(0, chunk, gauss_body, (trans, alive, last, acc))
    any_alive = (jnp.max(alive) > 0.0).astype(jnp.int32)
    return ci + 1, any_alive, trans, alive, last, acc

  def chunk_cond(carry):
    ci, any_alive = carry[0], carry[1]
    return (ci < n_chunks) & (any_alive > 0)

  init = (
      jnp.int32(0),
      jnp.int32(1),
      jnp.ones(rl, jnp.float32),
      jnp.where(inside, 1.0, 0.0).astype(jnp.float32),
      jnp.zeros(rl, jnp.int32),
      tuple(jnp.zeros(rl, jnp.float32) for _ in range(nfeat)),
  )
  stream.start(0, when=n_chunks > 0)
  ci_end, _, trans, _, last, acc = lax.while_loop(chunk_cond, chunk_body, init)
  stream.wait(ci_end, when=ci_end < n_chunks)  # early stop: drain the unused prefetch
  for ch in range(nfeat):
    accum_ref[ch] = acc[ch]
  tfin_ref[...] = trans
  last_ref[...] = last


def _bwd_kernel(cstart_ref, nch_ref, params_ref, tfin_ref, last_ref, gacc_ref, gt_ref,
                _zeros_ref,  # inputs (last one aliased to grads_ref)
                grads_ref,  # output
                *scratch, st: _Static, backend: str, nc: int, nfeat: int):
  """One tile: back to front from each pixel's last contributor (T by division, 3DGS).

  Writes d/d(param) of every row in the tile's chunks up to the last contributor; the
  remaining rows keep the zeros of the aliased input.
  """
  del nch_ref, _zeros_ref
  chunk = st.chunk
  kc = _chunk_words(nfeat, chunk)
  b = pl.program_id(0)
  t = pl.program_id(1)
  bt = b * st.num_tiles + t
  row0 = b * nc + cstart_ref[bt]
  if backend == "tpu":
    pbuf_ref, sem_ref, gbuf_ref = scratch
  else:
    pbuf_ref = sem_ref = gbuf_ref = None
  stream = _ChunkStream(backend, params_ref, row0, kc, chunk, pbuf_ref, sem_ref)
  px, py, _ = _pixel_centres(t, st)
  last = last_ref[...]
  t_final = tfin_ref[...]
  g_acc = tuple(gacc_ref[ch] for ch in range(nfeat))
  g_tfin = gt_ref[...] * t_final  # d(final T)/d(alpha_i) = -final_T / (1 - alpha_i)
  n_needed = (jnp.max(last) + (chunk - 1)) // chunk

  def chunk_body(i, carry):
    ci = n_needed - 1 - i
    row = row0 + ci
    stream.wait(ci)
    stream.start(ci - 1, when=ci > 0)
    get = stream.getter(ci)
    if backend == "tpu":
      put = lambda j, k, v: gbuf_ref.__setitem__(j * chunk + k, v)
    else:
      put = lambda j, k, v: grads_ref.__setitem__(row * kc + j * chunk + k, v)

    def gauss_body(kk, c):
      t_next, suffix = c
      k = chunk - 1 - kk
      mx, my, ca, cb, cc, op = (get(j, k) for j in range(_NGEOM))
      feat = tuple(get(_NGEOM + ch, k) for ch in range(nfeat))
      dx, dy, power, g, og, alpha = _gauss_alpha(px, py, mx, my, ca, cb, cc, op)
      valid = (ci * chunk + k < last) & (power <= 0.0) & (alpha >= ALPHA_MIN)
      one_m = 1.0 - alpha
      t_i = jnp.where(valid, t_next / one_m, t_next)  # T before this Gaussian
      w = jnp.where(valid, alpha * t_i, 0.0)
      g_dot_f = g_acc[0] * feat[0]
      g_dot_s = g_acc[0] * suffix[0]
      for ch in range(1, nfeat):
        g_dot_f = g_dot_f + g_acc[ch] * feat[ch]
        g_dot_s = g_dot_s + g_acc[ch] * suffix[ch]
      d_alpha = t_i * g_dot_f - (g_dot_s + g_tfin) / one_m
      d_og = jnp.where(valid & (og < ALPHA_MAX), d_alpha, 0.0)  # min(0.99, .) clamps
      d_pow = d_og * og  # d(o exp(power))/d power
      put(0, k, jnp.sum(d_pow * (ca * dx + cb * dy)))  # d mean x (dx = px - mx)
      put(1, k, jnp.sum(d_pow * (cc * dy + cb * dx)))  # d mean y
      put(2, k, jnp.sum(-0.5 * d_pow * dx * dx))  # d conic a
      put(3, k, jnp.sum(-d_pow * dx * dy))  # d conic b
      put(4, k, jnp.sum(-0.5 * d_pow * dy * dy))  # d conic c
      put(5, k, jnp.sum(d_og * g))  # d opacity
      for ch in range(nfeat):
        put(_NGEOM + ch, k, jnp.sum(g_acc[ch] * w))
      suffix = tuple(suffix[ch] + w * feat[ch] for ch in range(nfeat))
      return jnp.where(valid, t_i, t_next), suffix

    carry = lax.fori_loop(0, chunk, gauss_body, carry)
    if backend == "tpu":
      pltpu.sync_copy(gbuf_ref, grads_ref.at[pl.ds(pl.multiple_of(row * kc, _CHUNK_ALIGN), kc)])
    return carry

  init = (t_final, tuple(jnp.zeros_like(t_final) for _ in range(nfeat)))
  stream.start(n_needed - 1, when=n_needed > 0)
  lax.fori_loop(0, n_needed, chunk_body, init)


# ----------------------------------------------------------------------------------------
# pallas_call wrappers: arrays carry a leading camera axis B; custom_vmap folds vmap axes
# into it so a vmapped render is one kernel launch with grid (B, tiles).
# ----------------------------------------------------------------------------------------


def _compiler_params(st: _Static, backend: str):
  if backend == "tpu":
    return pltpu.CompilerParams(dimension_semantics=("parallel", "parallel"))
  return pltriton.CompilerParams(num_warps=st.num_warps, num_stages=1)


def _forward_call_backend(backend: str, cstart, nch, params, *, st: _Static, nc: int, nfeat: int):
  """cstart, nch [B*T] i32 (first chunk, chunk count per tile); params [B*NC*KCp] f32.

  Returns accum [B, T, C, R, L] f32, final T [B, T, R, L] f32, last [B, T, R, L] i32.
  """
  nt = st.num_tiles
  bsz = cstart.shape[0] // nt
  r, l = st.pix_block
  kc = _chunk_words(nfeat, st.chunk)
  kernel = functools.partial(_fwd_kernel, st=st, backend=backend, nc=nc, nfeat=nfeat)
  out_shape = (
      jax.ShapeDtypeStruct((bsz, nt, nfeat, r, l), jnp.float32),
      jax.ShapeDtypeStruct((bsz, nt, r, l), jnp.float32),
      jax.ShapeDtypeStruct((bsz, nt, r, l), jnp.int32),
  )
  out_specs = (
      pl.BlockSpec((None, None, nfeat, r, l), lambda b, t, *_: (b, t, 0, 0, 0)),
      pl.BlockSpec((None, None, r, l), lambda b, t, *_: (b, t, 0, 0)),
      pl.BlockSpec((None, None, r, l), lambda b, t, *_: (b, t, 0, 0)),
  )
  if backend == "tpu":
    grid_spec = pltpu.PrefetchScalarGridSpec(
        num_scalar_prefetch=2,
        grid=(bsz, nt),
        in_specs=[pl.BlockSpec(memory_space=pl.ANY)],
        out_specs=out_specs,
        scratch_shapes=[pltpu.SMEM((2 * kc,), jnp.float32), pltpu.SemaphoreType.DMA((2,))],
    )
    call = pl.pallas_call(kernel, grid_spec=grid_spec, out_shape=out_shape,
                          compiler_params=_compiler_params(st, backend),
                          interpret=st.interpret, name="splat_rasterize_fwd")
  else:
    call = pl.pallas_call(kernel, grid=(bsz, nt), out_specs=out_specs, out_shape=out_shape,
                          compiler_params=_compiler_params(st, backend),
                          interpret=st.interpret, name="splat_rasterize_fwd")
  return call(cstart, nch, params)


def _backward_call_backend(backend: str, cstart, nch, params, tfin, last, g_acc, g_t, *,
                           st: _Static, nc: int, nfeat: int):
  """Per-intersection gradients [B*NC*KCp] f32, same layout as `params`.

  tfin, last, g_t [B, T, R, L]; g_acc [B, T, C, R, L].
  """
  nt = st.num_tiles
  bsz = cstart.shape[0] // nt
  r, l = st.pix_block
  kc = _chunk_words(nfeat, st.chunk)
  kernel = functools.partial(_bwd_kernel, st=st, backend=backend, nc=nc, nfeat=nfeat)
  pix_spec = pl.BlockSpec((None, None, r, l), lambda b, t, *_: (b, t, 0, 0))
  feat_spec = pl.BlockSpec((None, None, nfeat, r, l), lambda b, t, *_: (b, t, 0, 0, 0))
  out_shape = jax.ShapeDtypeStruct(params.shape, jnp.float32)
  zeros = jnp.zeros(params.shape, jnp.float32)
  args = (cstart, nch, params, tfin, last, g_acc, g_t, zeros)
  aliases = {len(args) - 1: 0}  # zeros -> grads: rows no tile writes stay 0
  if backend == "tpu":
    any_spec = pl.BlockSpec(memory_space=pl.ANY)
    grid_spec = pltpu.PrefetchScalarGridSpec(
        num_scalar_prefetch=2,
        grid=(bsz, nt),
        in_specs=[any_spec, pix_spec, pix_spec, feat_spec, pix_spec, any_spec],
        out_specs=any_spec,
        scratch_shapes=[pltpu.SMEM((2 * kc,), jnp.float32), pltpu.SemaphoreType.DMA((2,)),
                        pltpu.SMEM((kc,), jnp.float32)],
    )
    call = pl.pallas_call(kernel, grid_spec=grid_spec, out_shape=out_shape,
                          input_output_aliases=aliases,
                          compiler_params=_compiler_params(st, backend),
                          interpret=st.interpret, name="splat_rasterize_bwd")
  else:
    full = pl.BlockSpec()  # whole array in global memory
    call = pl.pallas_call(kernel, grid=(bsz, nt),
                          in_specs=[full, full, full, pix_spec, pix_spec, feat_spec, pix_spec,
                                    full],
                          out_specs=full, out_shape=out_shape,
                          input_output_aliases=aliases,
                          compiler_params=_compiler_params(st, backend),
                          interpret=st.interpret, name="splat_rasterize_bwd")
  return call(*args)


def _dispatch(impl, st: _Static, *args, **kwargs):
  """Runs impl(backend, ...) for st.backend, or picks the backend at lowering time."""
  if st.backend is not None:
    return impl(st.backend, *args, st=st, **kwargs)
  # Lowering keeps only the branch of the target platform, so an AOT lowering for TPU on
  # a CPU host (or a GPU run) gets the right kernel without the caller naming it.
  gpu = functools.partial(impl, "gpu", st=st, **kwargs)
  return lax.platform_dependent(
      *args, tpu=functools.partial(impl, "tpu", st=st, **kwargs), cuda=gpu, rocm=gpu,
      default=gpu)


def _fold_vmap(fn):
  """custom_vmap: every array of fn has a leading camera-major axis; vmap axes fold into it.

  So a vmapped render (batched cameras) is one kernel launch over (B * cams, tiles).
  """
  wrapped = jax.custom_batching.custom_vmap(fn)

  @wrapped.def_vmap
  def _rule(axis_size, in_batched, *args):
    merged = []
    for x, batched in zip(args, in_batched):
      if not batched:
        x = jnp.broadcast_to(x, (axis_size, *x.shape))
      merged.append(x.reshape(axis_size * x.shape[1], *x.shape[2:]))
    outs = wrapped(*merged)
    outs = jax.tree.map(lambda y: y.reshape(axis_size, y.shape[0] // axis_size, *y.shape[1:]), outs)
    return outs, jax.tree.map(lambda _: True, outs)

  return wrapped


def _forward_call(st: _Static, nc: int, nfeat: int, cstart, nch, params):
  fn = _fold_vmap(lambda *a: _dispatch(_forward_call_backend, st, *a, nc=nc, nfeat=nfeat))
  return fn(cstart, nch, params)


def _backward_call(st: _Static, nc: int, nfeat: int, *args):
  fn = _fold_vmap(lambda *a: _dispatch(_backward_call_backend, st, *a, nc=nc, nfeat=nfeat))
  return fn(*args)


# ----------------------------------------------------------------------------------------
# jnp glue: chunk-aligned layout, gathers, tile <-> image.
# ----------------------------------------------------------------------------------------


def _layout(tile_ranges, isect_gids, n_gauss: int, st: _Static):
  """Chunk-aligned per-intersection layout of one camera.

  tile_ranges [T, 2] i32, isect_gids [M] i32. Returns nc (static chunk capacity),
  cstart [T] i32 (first chunk of each tile), nch [T] i32 (chunks per tile),
  gid [NC*chunk] i32 (Gaussian of each row, 0 where invalid), valid [NC*chunk] bool.
  """
  chunk = st.chunk
  nt = st.num_tiles
  m = isect_gids.shape[0]
  # For disjoint ranges sum(ceil(cnt / chunk)) <= ceil(M / chunk) + T: a static bound.
  nc = -(-m // chunk) + nt
  start = jnp.clip(tile_ranges[:, 0], 0, m)
  end = jnp.clip(tile_ranges[:, 1], start, m)
  cnt = end - start
  nch = (cnt + (chunk - 1)) // chunk
  cstart = scans.running_sum(nch) - nch
  nch = jnp.clip(nc - cstart, 0, nch)  # only bites for overlapping (malformed) ranges
  cnt = jnp.minimum(cnt, nch * chunk)
  cend = cstart + nch  # non-decreasing
  rows = jnp.arange(nc * chunk, dtype=jnp.int32)
  tile = jnp.searchsorted(cend, rows // chunk, side="right").astype(jnp.int32)
  tile_c = jnp.minimum(tile, nt - 1)
  local = rows - cstart[tile_c] * chunk
  valid = (tile < nt) & (local < cnt[tile_c])
  gid = isect_gids[jnp.clip(start[tile_c] + local, 0, m - 1)]
  valid = valid & (gid >= 0) & (gid < n_gauss)
  gid = jnp.where(valid, gid, 0)
  return nc, cstart.astype(jnp.int32), nch.astype(jnp.int32), gid, valid


def _param_columns(means2d, conics, opacities, features):
  """The per-Gaussian params as K vectors ``[N]`` (mean x, mean y, conic a, b, c, opacity,
  features). Gathers and sums go through ``[N]`` / ``[M]`` vectors: a TPU pads the last
  axis of a ``[N, K]`` or ``[M, K]`` intermediate to 128 lanes (~13x for K = 10)."""
  return ([means2d[:, 0], means2d[:, 1], conics[:, 0], conics[:, 1], conics[:, 2], opacities]
          + [features[:, i] for i in range(features.shape[1])])


def _gather_params(means2d, conics, opacities, features, gid, valid, nc: int, chunk: int):
  """Per-row params [NC * KCp] f32: per chunk, K*chunk values (param-major) padded to KCp."""
  cols = _param_columns(means2d, conics, opacities, features)
  k = len(cols)
  rows = jnp.stack([jnp.where(valid, col[gid], 0.0) for col in cols])  # [K, NC*chunk]
  rows = rows.reshape(k, nc, chunk).transpose(1, 0, 2).reshape(nc, k * chunk)
  pad = _chunk_words(k - _NGEOM, chunk) - k * chunk  # invalid rows: opacity 0, skipped
  return jnp.pad(rows, ((0, 0), (0, pad))).reshape(-1)


def _tiles_to_image(x, st: _Static):
  """[T, C, R, L] -> [H, W, C]."""
  ts = st.tile_size
  c = x.shape[1]
  x = x.reshape(st.tiles_y, st.tiles_x, c, ts, ts).transpose(0, 3, 1, 4, 2)
  return x.reshape(st.tiles_y * ts, st.tiles_x * ts, c)[: st.height, : st.width]


def _image_to_tiles(img, st: _Static):
  """[H, W, C] -> [T, C, R, L] (zero padded at the edge tiles)."""
  ts = st.tile_size
  c = img.shape[-1]
  r, l = st.pix_block
  img = jnp.pad(img, ((0, st.tiles_y * ts - st.height), (0, st.tiles_x * ts - st.width), (0, 0)))
  img = img.reshape(st.tiles_y, ts, st.tiles_x, ts, c).transpose(0, 2, 4, 1, 3)
  return img.reshape(st.num_tiles, c, r, l)


# ----------------------------------------------------------------------------------------
# custom_vjp.
# ----------------------------------------------------------------------------------------


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _rasterize(st, means2d, conics, opacities, features, tile_ranges, isect_gids):
  out, _ = _rasterize_fwd(st, means2d, conics, opacities, features, tile_ranges, isect_gids)
  return out


def _rasterize_fwd(st, means2d, conics, opacities, features, tile_ranges, isect_gids):
  n, nfeat = features.shape
  nc, cstart, nch, gid, valid = _layout(tile_ranges, isect_gids, n, st)
  params = _gather_params(means2d, conics, opacities, features, gid, valid, nc, st.chunk)
  acc_t, tfin_t, last_t = _forward_call(st, nc, nfeat, cstart, nch, params)
  accum = _tiles_to_image(acc_t[0], st)  # [H, W, C]
  final_t = _tiles_to_image(tfin_t[0][:, None], st)[..., 0]  # [H, W]
  res = (means2d, conics, opacities, features, tile_ranges, isect_gids, tfin_t, last_t)
  return (accum, final_t), res


def _rasterize_bwd(st, res, cts):
  means2d, conics, opacities, features, tile_ranges, isect_gids, tfin_t, last_t = res
  g_accum, g_final_t = cts  # [H, W, C], [H, W]
  n, nfeat = features.shape
  k = _NGEOM + nfeat
  # Recomputing the layout and gather is cheaper than keeping [NC*K*chunk] alive.
  nc, cstart, nch, gid, valid = _layout(tile_ranges, isect_gids, n, st)
  params = _gather_params(means2d, conics, opacities, features, gid, valid, nc, st.chunk)
  g_acc_t = _image_to_tiles(g_accum.astype(jnp.float32), st)[None]  # [1, T, C, R, L]
  g_t_t = _image_to_tiles(g_final_t.astype(jnp.float32)[..., None], st)[None, :, 0]
  grads = _backward_call(st, nc, nfeat, cstart, nch, params, tfin_t, last_t, g_acc_t, g_t_t)
  rows = grads.reshape(nc, -1)[:, : k * st.chunk]
  rows = rows.reshape(nc, k, st.chunk).transpose(1, 0, 2).reshape(k, nc * st.chunk)
  # Each row belongs to one tile and was written by that tile only: summing rows per
  # Gaussian here, by a stable sort of the ids and a segmented scan (no atomics in the
  # kernel, no scatter-add outside), keeps the backward deterministic. The rows stay
  # [K, rows] (see _param_columns); invalid rows are dropped.
  # Rows of the scan (not one tree over all rows): the TPU compile of a tree grows with
  # the number of intersections (render/scans.py).
  per_g = sorted_segment_sum(rows, jnp.where(valid, gid, n), n, scan="rows")  # [K, N]
  stack = lambda cols: jnp.stack(cols, axis=-1)
  return (stack(per_g[0:2]), stack(per_g[2:5]), per_g[5], stack(per_g[_NGEOM:]), None, None)


_rasterize.defvjp(_rasterize_fwd, _rasterize_bwd)


# ----------------------------------------------------------------------------------------
# Public API.
# ----------------------------------------------------------------------------------------


def _check(name, x, shape, dtype):
  """shape: tuple of int | None (None: any size)."""
  x_shape = tuple(np.shape(x))
  ok = len(x_shape) == len(shape) and all(s is None or s == d for s, d in zip(shape, x_shape))
  if not ok:
    want = "[" + ", ".join("?" if s is None else str(s) for s in shape) + "]"
    raise ValueError(f"rasterize_tiles: `{name}` must have shape {want}, got {list(x_shape)}")
  if jnp.result_type(x) != dtype:
    raise ValueError(f"rasterize_tiles: `{name}` must be {np.dtype(dtype).name}, got "
                     f"{jnp.result_type(x)} (shape {list(x_shape)})")


@functools.partial(
    jax.jit,
    static_argnames=("height", "width", "tile_size", "block_config", "backend", "interpret"))
def rasterize_tiles(
    means2d: jax.Array,  # [N, 2] f32 pixel coords (x, y)
    conics: jax.Array,  # [N, 3] f32 (a, b, c) of the inverse 2D covariance
    opacities: jax.Array,  # [N] f32, activated
    features: jax.Array,  # [N, C] f32
    tile_ranges: jax.Array,  # [T, 2] i32 (start, end) into isect_gids, row-major tiles
    isect_gids: jax.Array,  # [M] i32 Gaussian ids sorted by (tile, depth)
    *,
    height: int,
    width: int,
    tile_size: int = TILE_SIZE,
    block_config: SplatBlockConfig | None = None,
    backend: str | None = None,
    interpret: Any = False,
) -> tuple[jax.Array, jax.Array]:
  """Composites binned 2D Gaussians front to back per tile (Pallas, TPU and GPU).

  Args:
    means2d, conics, opacities, features: per-Gaussian 2D parameters (see shapes above).
    tile_ranges: [T, 2] with T = ceil(H / tile_size) * ceil(W / tile_size): the rows of
      `isect_gids` of each tile. Ranges should be disjoint; entries outside every range
      and ids outside [0, N) are ignored.
    isect_gids: [M] Gaussian id of each (tile, Gaussian) intersection, front to back
      within a tile.
    height, width: image size in pixels.
    tile_size: tile edge, a power of two >= 8 (16 in 3DGS).
    block_config: `SplatBlockConfig` (chunk size, Triton warps).
    backend: 'tpu' or 'gpu' kernel flavour; None picks it when lowering for the target
      platform (with interpret=True, None means 'tpu').
    interpret: run the kernels in the Pallas interpreter (CPU tests); a
      `pltpu.InterpretParams` selects the strict TPU interpreter. Without it the kernels
      only lower for TPU/GPU ("Only interpret mode is supported on CPU backend").

  Returns:
    accum [H, W, C] f32 = sum_i alpha_i T_i f_i (no background) and final_T [H, W] f32.
    Differentiable (custom VJP) w.r.t. means2d, conics, opacities and features; works
    under jit and vmap (vmapped cameras run as one kernel launch).
  """
  cfg = SplatBlockConfig() if block_config is None else block_config
  if not isinstance(cfg, SplatBlockConfig):
    raise ValueError(f"rasterize_tiles: `block_config` must be a SplatBlockConfig, got {type(cfg)}")
  if backend is not None and backend not in _BACKENDS:
    raise ValueError(
        f"rasterize_tiles: `backend` must be one of {_BACKENDS} or None, got {backend!r}")
  if tile_size < 8 or tile_size & (tile_size - 1):
    raise ValueError(f"rasterize_tiles: `tile_size` must be a power of two >= 8, got {tile_size}")
  if height < 1 or width < 1:
    raise ValueError(f"rasterize_tiles: `height`, `width` must be >= 1, got {height}, {width}")
  if np.ndim(means2d) != 2:
    raise ValueError(
        f"rasterize_tiles: `means2d` must have shape [N, 2], got {list(np.shape(means2d))}")
  n = np.shape(means2d)[0]
  if np.ndim(features) != 2 or np.shape(features)[1] < 1:
    raise ValueError(f"rasterize_tiles: `features` must have shape [N, C] with C >= 1, "
                     f"got {list(np.shape(features))}")
  nfeat = np.shape(features)[1]
  st = _Static(height=height, width=width, tile_size=tile_size, chunk=cfg.chunk,
               num_warps=cfg.num_warps,
               backend=backend if (backend is not None or not interpret) else "tpu",
               interpret=interpret)
  if np.ndim(isect_gids) != 1:
    raise ValueError(
        f"rasterize_tiles: `isect_gids` must have shape [M], got {list(np.shape(isect_gids))}")
  _check("means2d", means2d, (n, 2), jnp.float32)
  _check("conics", conics, (n, 3), jnp.float32)
  _check("opacities", opacities, (n,), jnp.float32)
  _check("features", features, (n, nfeat), jnp.float32)
  _check("tile_ranges", tile_ranges, (st.num_tiles, 2), jnp.int32)
  _check("isect_gids", isect_gids, (None,), jnp.int32)

  if n == 0:  # nothing to draw; no kernel for an empty gather
    return (jnp.zeros((height, width, nfeat), jnp.float32), jnp.ones((height, width), jnp.float32))
  if isect_gids.shape[0] == 0:  # keep the gather non-empty; every range is then empty
    isect_gids = jnp.zeros((1,), jnp.int32)
    tile_ranges = jnp.zeros_like(tile_ranges)
  return _rasterize(st, means2d, conics, opacities, features, tile_ranges, isect_gids)


# ----------------------------------------------------------------------------------------
# Reference.
# ----------------------------------------------------------------------------------------


def rasterize_tiles_reference(
    means2d: jax.Array,  # [N, 2] f32
    conics: jax.Array,  # [N, 3] f32
    opacities: jax.Array,  # [N] f32
    features: jax.Array,  # [N, C] f32
    tile_ranges: jax.Array,  # [T, 2] i32
    isect_gids: jax.Array,  # [M] i32
    *,
    height: int,
    width: int,
    tile_size: int = TILE_SIZE,
) -> tuple[jax.Array, jax.Array]:
  """Plain-jnp oracle of `rasterize_tiles` (same semantics, autodiff for gradients).

  Every tile scans all M rows with a mask for its own range: O(T * M * ts^2), for tests.
  Returns accum [H, W, C] f32 and final_T [H, W] f32.
  """
  n, nfeat = features.shape
  ts = tile_size
  tiles_x = -(-width // ts)
  tiles_y = -(-height // ts)
  m = isect_gids.shape[0]
  ok = (isect_gids >= 0) & (isect_gids < n)
  gid = jnp.clip(isect_gids, 0, max(n - 1, 0))
  xs = (jnp.arange(m, dtype=jnp.int32), means2d[gid], conics[gid],
        jnp.where(ok, opacities[gid], 0.0), features[gid])
  p = jnp.arange(ts * ts, dtype=jnp.int32)

  def tile_fn(t, rng):
    ty, tx = t // tiles_x, t % tiles_x
    px = (tx * ts + p % ts).astype(jnp.float32) + 0.5  # [P]
    py = (ty * ts + p // ts).astype(jnp.float32) + 0.5

    def step(carry, x):
      trans, alive, acc = carry
      idx, mean, conic, op, feat = x
      _, _, power, _, _, alpha = _gauss_alpha(px, py, mean[0], mean[1], conic[0], conic[1],
                                              conic[2], op)
      in_range = (idx >= rng[0]) & (idx < rng[1])
      valid = alive & in_range & (power <= 0.0) & (alpha >= ALPHA_MIN)
      next_t = trans * (1.0 - alpha)
      stop = valid & (next_t < T_MIN)
      contrib = valid & jnp.logical_not(stop)
      w = jnp.where(contrib, alpha * trans, 0.0)
      acc = acc + w[:, None] * feat[None, :]
      return (jnp.where(contrib, next_t, trans), alive & jnp.logical_not(stop), acc), None

    init = (jnp.ones((ts * ts,), jnp.float32), jnp.ones((ts * ts,), bool),
            jnp.zeros((ts * ts, nfeat), jnp.float32))
    (trans, _, acc), _ = lax.scan(step, init, xs)
    return acc, trans

  acc, trans = jax.vmap(tile_fn)(jnp.arange(tiles_y * tiles_x), tile_ranges)  # [T, P, C], [T, P]

  def to_image(x):  # [T, P, c] -> [H, W, c]
    c = x.shape[-1]
    x = x.reshape(tiles_y, tiles_x, ts, ts, c).transpose(0, 2, 1, 3, 4)
    return x.reshape(tiles_y * ts, tiles_x * ts, c)[:height, :width]

  return to_image(acc), to_image(trans[..., None])[..., 0]
