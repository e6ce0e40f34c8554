"""Gaussian splatting: the one entry point, :func:`rasterize`.

The stages live in modules of their own: EWA projection (``render/projection.py``), tile
binning (``render/binning.py``), and compositing by one of three backends that share the
semantics and the numbers:

  * ``"dense"`` (``render/dense.py``): every pixel against every Gaussian (jnp, plain
    autodiff). The oracle, for images up to ~64x64.
  * ``"tiled"`` (``render/tiled.py``): binned into 16x16 tiles, composited per tile in
    chunks (jnp, with a hand-written backward). The CPU default.
  * ``"pallas"``: the same tile lists composited by ``kernels.splat_pallas.rasterize_tiles``
    (TPU / GPU).

Semantics (3DGS / gsplat "classic", docs/design.md §5; constants in ``render/splat_constants.py``):

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

The backward passes of the tiled and Pallas backends write per-intersection gradients and
sum them by Gaussian without atomics, so gradients are bit-identical from run to run.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from lrm_jax import cameras as cameras_lib
from lrm_jax.render import binning, dense, projection, tiled
from lrm_jax.render.splat_constants import DEPTH_EPS, TILE_SIZE
from lrm_jax.representations.gaussians import Gaussians

BACKENDS = ("tiled", "dense", "pallas")


def _render_one(g: Gaussians, c2w, intrinsics, background, *, height, width, backend,
                tile_size, capacity, host_sorts, max_unrolled_cameras, options):
  """One unbatched set of Gaussians in one camera -> the output dict."""
  proj = projection.project(g, c2w, intrinsics, height, width)
  features = jnp.concatenate([proj.colors, proj.depths[:, None]], -1)  # [N, 4]
  if backend == "dense":
    accum, trans = dense.composite_dense(proj, features, height, width, tile_size)
    overflow = jnp.zeros((), jnp.int32)
  else:
    bins = binning.bin_gaussians(proj, height, width, tile_size, capacity,
                                 host_sorts=host_sorts,
                                 max_unrolled_cameras=max_unrolled_cameras)
    args = (proj.means2d, proj.conics, proj.opacities, features, bins.tile_ranges,
            bins.isect_gids)
    if backend == "tiled":
      accum, trans = tiled.rasterize_tiles(*args, height=height, width=width,
                                           tile_size=tile_size, host_sorts=host_sorts,
                                           **options)
      overflow = bins.overflow + tiled.tile_budget_overflow(bins.tile_ranges,
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
              host_sorts: bool = True,
              max_unrolled_cameras: int = binning.MAX_UNROLLED_CAMERAS,
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
    capacity: intersections per camera (default :func:`binning.default_capacity`).
    views_at_once: render the views of each set of Gaussians this many at a time, one
      group after another (``lax.map``), so only one group's binning and compositing
      buffers are alive (default: all views together).
    remat: recompute each group of views in the backward pass instead of keeping its
      projection, binning and compositing residuals: with ``views_at_once`` the render's
      memory is then that of one group, for one more forward render per step.
    host_sorts: on a single CPU device, binning's sorts (and the tiled backward's sort of
      intersections by Gaussian) run in NumPy, faster than XLA:CPU's sort, with the same
      results. Ignored on accelerators and with several devices.
    max_unrolled_cameras: under ``vmap`` (several views), binning runs as one chain per
      camera up to this many cameras, which XLA:CPU runs side by side; beyond it, batched.
      The same bins either way.
    **options: backend settings: ``chunk_size``, ``block_tiles``, ``max_per_tile`` for
      ``tiled`` (:class:`tiled.TileConfig`); passed to the Pallas kernel for ``pallas``
      (``block_config``, ``interpret``, ...).
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
                         tile_size=tile_size, capacity=capacity, host_sorts=host_sorts,
                         max_unrolled_cameras=max_unrolled_cameras, options=options)
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
  ``[1, V, N, 3]`` that autodiff emits far slower.
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
