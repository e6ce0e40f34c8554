"""The tiled jnp compositor: per-tile front-to-back blending with a hand-written backward.

The CPU default and the jnp reference of ``kernels/splat_pallas.py``. Tiles are grouped
into blocks of ``block_tiles`` with similar list lengths and composited together,
``chunk_size`` Gaussians per loop step (unrolled), so XLA sees wide elementwise work.

Backward (``custom_vjp``): rather than storing anything per (pixel, Gaussian), it re-walks
each tile's list in the forward order, recomputing the transmittance exactly as the
forward did, and gets the light from behind each Gaussian from the saved output
(``accum - prefix``), so no division by ``1 - alpha`` unwinds T. Each intersection's
gradient row is written to its own slot of a per-intersection buffer (each slot belongs to
one tile), and the rows are summed per Gaussian by a sort and a segmented scan
(``render/segments.py``): no scatter-add, so the gradients are bit-identical from run to
run on every backend.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from lrm_jax import cameras as cameras_lib
from lrm_jax.render.binning import tile_grid
from lrm_jax.render.compositing import composite_chunk, composite_step, gaussian_terms
from lrm_jax.render.segments import sorted_segment_sum
from lrm_jax.render.splat_constants import ALPHA_MAX, TILE_SIZE


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
    host_sorts: the backward's sort of intersections by Gaussian runs in NumPy on a single
      CPU device (the same permutation as XLA's sort).
  """

  height: int
  width: int
  tile_size: int = TILE_SIZE
  chunk_size: int = 32
  block_tiles: int = 16
  max_per_tile: int | None = None
  host_sorts: bool = True


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
  """``[B, G, ...]`` per-block results -> ``[T, ...]`` in tile order.

  A gather through the inverse of the block permutation (a sort of the few tile ids),
  not a scatter.
  """
  flat = per_block.reshape((-1,) + per_block.shape[2:])
  where = jnp.argsort(blocks.reshape(-1), stable=True)[:num_tiles]  # [T] slot of each tile
  return flat[where]


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
    alpha, _ = gaussian_terms(pix, m - centre[:, None], con,
                              jnp.where(valid, o, 0.0))  # [G, C, P]
    trans, done, accum = composite_chunk(alpha, feat, trans, done, accum)
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
  separate library call per loop step.
  """
  n = x.shape[axis]
  if n & (n - 1):
    return jnp.sum(x, axis)
  while n > 1:
    n //= 2
    x = (jax.lax.slice_in_dim(x, 0, n, axis=axis) +
         jax.lax.slice_in_dim(x, n, 2 * n, axis=axis))
  return jnp.squeeze(x, axis)


def _backward_block(rows, tiles, starts, counts, table, isect_gids, g_accum, g_trans, accum,
                    final_t, cfg: TileConfig):
  """Writes the gradients of one block of tiles' intersections into ``rows [M + C, 6 + F]``
  (row ``i``: intersection ``i`` of ``isect_gids``; rows past a tile's list are kept).

  Walks the Gaussians in the forward order, recomputing the transmittance exactly as the
  forward did, and uses the saved output to get what lies behind each Gaussian:
  ``dL/dalpha_k = T_k (g . f_k) - (g . (accum - prefix_k) + gT * T_final) / (1 - alpha_k)``
  with ``prefix_k`` the accumulation up to and including ``k``.
  """
  centre = _tile_origins(tiles, cfg) + 0.5 * cfg.tile_size  # [G, 2]
  pix = _local_pixels(cfg)  # [P, 2]
  moments = _pixel_moments(pix)  # [P, 6]
  g, p = tiles.shape[0], pix.shape[0]
  ga = jnp.sum(g_accum * accum, -1)  # [G, P] g . accum
  behind_final = g_trans * final_t  # [G, P]
  tile_starts, tile_counts = starts[tiles], counts[tiles]  # [G]: loop-invariant
  num_steps = _num_steps(tile_counts, cfg)

  def cond(carry):
    step, _, done, _, _ = carry
    return (step < num_steps) & ~jnp.all(done)

  def body(carry):
    step, trans, done, g_prefix, rows = carry
    _, valid, (m, con, o, feat) = _chunk_gather(step, tile_starts, tile_counts, table,
                                                isect_gids, cfg)
    o = jnp.where(valid, o, 0.0)
    m = m - centre[:, None]
    alpha, gauss = gaussian_terms(pix, m, con, o)  # [G, C, P]
    unclamped = o[..., None] * gauss < ALPHA_MAX
    gf = _dot_features(feat, g_accum)  # [G, C, P] g . f_k
    weights, g_raws = [], []
    for k in range(cfg.chunk_size):
      a, t_before = alpha[:, k], trans
      w, included, trans, done = composite_step(a, trans, done)
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
    per_isect = jnp.concatenate([geom, g_opacity[..., None], g_feat], -1)  # [G, C, K]
    # Each tile's chunk goes to its own rows: intersections start + step * C + [0, C).
    # Read-modify-write keeps the rows that are not this tile's (past its list: another
    # tile's, or padding); with no valid row the write is a no-op even where the slice
    # start is clamped. Distinct tiles own distinct rows, so the order does not matter.
    pos = tile_starts + step * cfg.chunk_size  # [G]
    for i in range(g):
      old = jax.lax.dynamic_slice_in_dim(rows, pos[i], cfg.chunk_size, axis=0)  # [C, K]
      new = jnp.where(valid[i][:, None], per_isect[i], old)
      rows = jax.lax.dynamic_update_slice_in_dim(rows, new, pos[i], axis=0)
    return step + 1, trans, done, g_prefix, rows

  init = (jnp.zeros((), jnp.int32), jnp.ones((g, p), jnp.float32), jnp.zeros((g, p), bool),
          jnp.zeros((g, p), jnp.float32), rows)
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

  def step(rows, tiles):
    rows = _backward_block(rows, tiles, starts, counts, table, isect_gids, g_accum_t[tiles],
                           g_trans_t[tiles], accum_t[tiles], trans_t[tiles], cfg)
    return rows, None

  m, k = isect_gids.shape[0], table.shape[-1]
  rows, _ = jax.lax.scan(step, jnp.zeros((m + cfg.chunk_size, k), jnp.float32), blocks)
  # Per-intersection rows summed by Gaussian without scatter-adds (deterministic).
  # Rows past the last tile's list were never written (a static buffer's unused tail).
  used = jnp.max(jnp.minimum(tile_ranges[:, 1], m), initial=0)
  total = sorted_segment_sum(rows[:m], isect_gids, n, axis=0, host_sort=cfg.host_sorts,
                             num_rows=used)  # [N, K]
  return total[:, 0:2], total[:, 2:5], total[:, 5], total[:, 6:]


def _camera_by_camera(fn):
  """``fn`` of one camera's arrays -> a function of arrays with a leading camera axis.

  Cameras run one after another (``lax.map``), and ``vmap`` folds its axis into that
  leading axis instead of batching the loops inside: batched updates of the gradient
  buffer carried through the loops would not stay in place, which made vmapped backward
  passes several times slower.
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
                    max_per_tile: int | None = None, host_sorts: bool = True):
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
    chunk_size, block_tiles, max_per_tile, host_sorts: see :class:`TileConfig`.
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
  cfg = TileConfig(height, width, tile_size, chunk_size, block_tiles, max_per_tile, host_sorts)
  f32 = lambda x: jnp.asarray(x, jnp.float32)
  return _rasterize_tiles(cfg, f32(means2d), f32(conics), f32(opacities), f32(features),
                          tile_ranges.astype(jnp.int32), isect_gids.astype(jnp.int32))

