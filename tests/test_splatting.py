"""Gaussian splatting: tiled vs dense vs a sequential numpy loop, gradients, edge cases.

Scenes are small (a few hundred Gaussians, images of 32x48 so the right and bottom tiles
are cut) to keep the suite fast on a 2-core CPU; compiled functions are shared between
tests through module-scoped fixtures.
"""

import functools
import re

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from lrm_jax import cameras as cam
from lrm_jax.render import binning, projection, segments
from lrm_jax.render import dense as dense_lib
from lrm_jax.render import tiled as tiled_lib
from lrm_jax.render import splatting as sp
from lrm_jax.representations.gaussians import Gaussians

H, W = 32, 48
TILED = dict(chunk_size=8, block_tiles=4)  # small chunks: many loop steps on tiny images


def random_gaussians(n, seed=0, sh_degree=1, scale=(0.02, 0.12), batch=()):
  rng = np.random.default_rng(seed)
  shape = tuple(batch) + (n,)
  k = (sh_degree + 1) ** 2
  sh = rng.normal(size=shape + (k, 3)).astype(np.float32) * 0.3
  sh[..., 0, :] = rng.uniform(-1.5, 1.5, shape + (3,))
  return Gaussians(
      means=jnp.asarray(rng.uniform(-0.8, 0.8, shape + (3,)), jnp.float32),
      scales=jnp.asarray(rng.uniform(*scale, shape + (3,)), jnp.float32),
      quats=jnp.asarray(rng.normal(size=shape + (4,)), jnp.float32),
      opacities=jnp.asarray(rng.uniform(0.05, 0.95, shape + (1,)), jnp.float32),
      sh=jnp.asarray(sh))


def make_cameras(n, h=H, w=W, radius=2.5, seed=0):
  rng = np.random.default_rng(seed)
  c2w = cam.orbit_cameras(rng.uniform(0, 360, n), rng.uniform(-20, 40, n), radius)
  f = 0.9 * w
  k = np.tile(np.asarray([f, f * 1.05, w / 2 + 1.3, h / 2 - 0.7], np.float32), (n, 1))
  return cam.Cameras(jnp.asarray(c2w), jnp.asarray(k), h, w)


def loss_fn(backend, cameras, **kw):
  """A scalar touching rgb, depth and alpha with pixel-varying weights."""
  def loss(g):
    out = sp.rasterize(g, cameras, jnp.asarray([0.2, 0.5, 0.9]), backend=backend, **kw)
    wr = jnp.cos(jnp.arange(out["rgb"].size, dtype=jnp.float32)).reshape(out["rgb"].shape)
    return (jnp.sum(wr * out["rgb"]) + 0.1 * jnp.sum(out["depth"] * out["alpha"])
            + jnp.sum(out["alpha"] ** 2))
  return loss


@pytest.fixture(scope="module")
def scene():
  return random_gaussians(300, seed=1), make_cameras(2)


@pytest.fixture(scope="module")
def renders(scene):
  g, cams = scene
  bg = jnp.asarray([0.2, 0.5, 0.9])
  dense = jax.jit(lambda g: sp.rasterize(g, cams, bg, backend="dense"))(g)
  tiled = jax.jit(lambda g: sp.rasterize(g, cams, bg, backend="tiled", **TILED))(g)
  return dense, tiled


@pytest.fixture(scope="module")
def grads(scene):
  g, cams = scene
  dense = jax.jit(jax.grad(loss_fn("dense", cams)))(g)
  tiled_fn = jax.jit(jax.grad(loss_fn("tiled", cams, **TILED)))
  return dense, tiled_fn(g), tiled_fn(g)


def assert_close_rel(actual, expected, rtol):
  """Max error relative to the largest magnitude of the expected array."""
  actual, expected = np.asarray(actual), np.asarray(expected)
  scale = np.max(np.abs(expected))
  assert scale > 0
  err = np.max(np.abs(actual - expected)) / scale
  assert err <= rtol, f"relative error {err:.3g} > {rtol}"


def test_tiled_matches_dense_forward(renders):
  dense, tiled = renders
  assert dense["rgb"].shape == (2, H, W, 3) and dense["alpha"].shape == (2, H, W, 1)
  assert float(jnp.mean(dense["alpha"])) > 0.2  # the scene covers a good part of the image
  for k in ("rgb", "alpha"):
    np.testing.assert_allclose(tiled[k], dense[k], atol=1e-5, rtol=0)
  # Expected depth is accum / alpha: compare where alpha is not tiny.
  mask = np.asarray(dense["alpha"]) > 1e-2
  np.testing.assert_allclose(np.asarray(tiled["depth"])[mask], np.asarray(dense["depth"])[mask],
                             atol=1e-5 * 3, rtol=1e-6)
  np.testing.assert_array_equal(tiled["overflow"], 0)


def test_tiled_matches_dense_gradients(grads):
  dense, tiled, _ = grads
  for name in ("means", "scales", "quats", "opacities", "sh"):
    assert_close_rel(getattr(tiled, name), getattr(dense, name), 1e-4)
    assert np.all(np.isfinite(getattr(tiled, name)))


def test_backward_is_deterministic(grads):
  _, first, second = grads
  for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(second)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _sequential_reference(proj, features, height, width, tile_size):
  """The compositing contract written as plain loops over pixels and Gaussians."""
  x0, x1, y0, y1 = (np.asarray(v) for v in binning.tile_rects(proj.means2d, proj.radii,
                                                               height, width, tile_size))
  m, con, op = (np.asarray(v, np.float64) for v in (proj.means2d, proj.conics, proj.opacities))
  feats = np.asarray(features, np.float64)
  order = np.argsort(np.asarray(proj.depths), kind="stable")
  accum = np.zeros((height, width, feats.shape[1]))
  final_t = np.ones((height, width))
  for i in range(height):
    for j in range(width):
      t = 1.0
      for k in order:
        if not (x0[k] <= j // tile_size < x1[k] and y0[k] <= i // tile_size < y1[k]):
          continue
        dx, dy = j + 0.5 - m[k, 0], i + 0.5 - m[k, 1]
        power = -0.5 * (con[k, 0] * dx * dx + con[k, 2] * dy * dy) - con[k, 1] * dx * dy
        if power > 0:
          continue
        alpha = min(0.99, op[k] * np.exp(power))
        if alpha < 1.0 / 255.0:
          continue
        if t * (1.0 - alpha) < 1e-4:
          break
        accum[i, j] += alpha * t * feats[k]
        t *= 1.0 - alpha
      final_t[i, j] = t
  return accum, final_t


def test_compositing_matches_sequential_loop():
  """Opaque, overlapping Gaussians exercise the clamp, the 1/255 cut and the early stop."""
  h, w = 12, 20
  g = random_gaussians(40, seed=3, sh_degree=0, scale=(0.05, 0.3))
  g = g.replace(opacities=jnp.clip(g.opacities * 1.6, 0.0, 1.0))
  cams = make_cameras(1, h, w, radius=2.2, seed=4)
  proj = jax.jit(projection.project, static_argnums=(3, 4))(g, cams.c2w[0], cams.intrinsics[0],
                                                            h, w)
  feats = jnp.concatenate([proj.colors, proj.depths[:, None]], -1)
  ref_accum, ref_t = _sequential_reference(proj, feats, h, w, 8)
  assert ref_t.min() < 1e-2  # some pixels saturate: the early stop matters
  bins = jax.jit(binning.bin_gaussians, static_argnums=(1, 2, 3))(proj, h, w, 8)
  tiles = jax.jit(functools.partial(tiled_lib.rasterize_tiles, height=h, width=w, tile_size=8,
                                    chunk_size=4, block_tiles=2))
  accum, final_t = tiles(proj.means2d, proj.conics, proj.opacities, feats, bins.tile_ranges,
                         bins.isect_gids)
  np.testing.assert_allclose(accum, ref_accum, atol=2e-5)
  np.testing.assert_allclose(final_t, ref_t, atol=1e-6)
  dense_accum, dense_t = jax.jit(dense_lib.composite_dense, static_argnums=(2, 3, 4))(
      proj, feats, h, w, 8)
  np.testing.assert_allclose(dense_accum, ref_accum, atol=2e-5)
  np.testing.assert_allclose(dense_t, ref_t, atol=1e-6)


def test_opacity_aware_radii_drop_only_skipped_pixels(monkeypatch):
  """Radii shrink with opacity (0 below 1/255): the same images and gradients as the plain
  3-sigma radii, with fewer pixels covered."""
  h, w = 24, 32
  g = random_gaussians(60, seed=7, sh_degree=0, scale=(0.05, 0.3))
  rng = np.random.default_rng(8)  # opacities from 1e-4 to 1: a third below 1/255
  g = g.replace(opacities=jnp.asarray(10.0 ** rng.uniform(-4, 0, (60, 1)), jnp.float32))
  cams = make_cameras(1, h, w, radius=2.2, seed=9)

  def render(g):
    proj = projection.project(g, cams.c2w[0], cams.intrinsics[0], h, w)
    feats = jnp.concatenate([proj.colors, proj.depths[:, None]], -1)
    # 1-pixel tiles: each Gaussian reaches exactly the pixels within its radius.
    accum, final_t = dense_lib.composite_dense(proj, feats, h, w, 1)
    return jnp.sum(jnp.cos(jnp.arange(accum.size)).reshape(accum.shape) * accum) + jnp.sum(
        final_t ** 2), proj.radii

  (short_loss, short_radii), short_grad = jax.value_and_grad(render, has_aux=True)(g)
  # The reference: every Gaussian drawn to 3 sigma whatever its opacity.
  monkeypatch.setattr(projection, "opacity_sigmas", lambda o: jnp.full_like(o, 3.0))
  (full_loss, full_radii), full_grad = jax.value_and_grad(render, has_aux=True)(g)
  low = np.asarray(g.opacities[:, 0]) < 1.0 / 255.0
  assert low.sum() >= 10 and np.all(np.asarray(short_radii)[low] == 0)
  assert np.all(short_radii <= full_radii) and np.sum(short_radii) < 0.7 * np.sum(full_radii)
  np.testing.assert_allclose(short_loss, full_loss, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(short_grad), jax.tree.leaves(full_grad)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_dense_gradients_match_finite_differences():
  with jax.enable_x64(True):
    g = random_gaussians(6, seed=5, sh_degree=1, scale=(0.1, 0.3))
    g = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), g)
    c = make_cameras(1, 16, 16, radius=2.0, seed=2)
    cams = cam.Cameras(jnp.asarray(c.c2w, jnp.float64), jnp.asarray(c.intrinsics, jnp.float64),
                       16, 16)
    loss = jax.jit(loss_fn("dense", cams))
    grad = jax.jit(jax.grad(loss_fn("dense", cams)))(g)
    flat, unravel = jax.flatten_util.ravel_pytree(g)
    gflat, _ = jax.flatten_util.ravel_pytree(grad)
    rng = np.random.default_rng(0)
    eps = 1e-6
    for i in rng.choice(flat.size, 16, replace=False):
      e = jnp.zeros_like(flat).at[i].set(eps)
      fd = (loss(unravel(flat + e)) - loss(unravel(flat - e))) / (2 * eps)
      np.testing.assert_allclose(gflat[i], fd, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("backend", ["dense", "tiled"])
def test_degenerate_gaussians_give_no_nan(backend):
  """Behind the camera, at the camera centre, zero scale, zero quaternion, zero opacity."""
  cams = make_cameras(1, 16, 16, seed=6)
  eye = np.asarray(cams.c2w[0, :3, 3])
  forward = np.asarray(cams.c2w[0, :3, 2])
  means = np.stack([eye - forward, eye, np.zeros(3), 0.1 * np.ones(3), -0.1 * np.ones(3)])
  g = Gaussians.from_rgb(
      means=jnp.asarray(means, jnp.float32),
      scales=jnp.asarray([[0.1] * 3, [0.1] * 3, [0.0] * 3, [0.1] * 3, [0.05] * 3], jnp.float32),
      quats=jnp.asarray([[1, 0, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0], [0, 1, 0, 0]],
                        jnp.float32),
      opacities=jnp.asarray([[0.9], [0.9], [0.9], [0.9], [0.0]], jnp.float32),
      rgb=jnp.full((5, 3), 0.5, jnp.float32))
  kw = TILED if backend == "tiled" else {}
  out = jax.jit(functools.partial(sp.rasterize, cameras=cams, backend=backend, **kw))(g)
  for v in out.values():
    assert np.all(np.isfinite(np.asarray(v)))
  assert float(out["alpha"].max()) > 0.5  # the zero-scale Gaussian still draws (low-pass)
  grad = jax.jit(jax.grad(loss_fn(backend, cams, **kw)))(g)
  for leaf in jax.tree.leaves(grad):
    assert np.all(np.isfinite(np.asarray(leaf)))
  proj = projection.project(g, cams.c2w[0], cams.intrinsics[0], 16, 16)
  assert int(proj.radii[0]) == 0 and int(proj.radii[1]) == 0  # culled by the near plane


def test_overflow_is_reported(scene):
  g, cams = scene
  proj = jax.jit(projection.project, static_argnums=(3, 4))(g, cams.c2w[0], cams.intrinsics[0],
                                                            H, W)
  need = int(binning.count_intersections(proj, H, W))
  bins = jax.jit(binning.bin_gaussians, static_argnums=(1, 2, 3, 4))(proj, H, W, 16, need - 7)
  assert int(bins.overflow) == 7 and int(bins.num_intersections) == need
  kept = np.asarray(bins.tile_ranges[:, 1] - bins.tile_ranges[:, 0])
  budget = int(kept.max()) - 3
  # Both limits at once: the capacity drops the deepest intersections, then the budget
  # truncates the tiles that remain too long.
  out = jax.jit(lambda g: sp.rasterize(g, cams[:1], backend="tiled", capacity=need - 7,
                                       max_per_tile=budget, **TILED))(g)
  assert int(out["overflow"][0]) == 7 + int(np.maximum(kept - budget, 0).sum()) > 7


@pytest.mark.parametrize("host_sorts", [True, False])  # NumPy's sorts on CPU, or XLA's
def test_bins_are_sorted_by_tile_then_depth(scene, host_sorts):
  g, cams = scene
  proj = projection.project(g, cams.c2w[1], cams.intrinsics[1], H, W)
  bins = binning.bin_gaussians(proj, H, W, host_sorts=host_sorts)
  x0, x1, y0, y1 = (np.asarray(v) for v in binning.tile_rects(proj.means2d, proj.radii, H, W))
  depths = np.asarray(proj.depths)
  ranges, gids = np.asarray(bins.tile_ranges), np.asarray(bins.isect_gids)
  tiles_y, tiles_x = binning.tile_grid(H, W)
  assert ranges[0, 0] == 0 and np.all(ranges[1:, 0] == ranges[:-1, 1])
  for t in range(tiles_y * tiles_x):
    ids = gids[ranges[t, 0]:ranges[t, 1]]
    ty, tx = divmod(t, tiles_x)
    expect = np.nonzero((x0 <= tx) & (tx < x1) & (y0 <= ty) & (ty < y1))[0]
    expect = expect[np.argsort(depths[expect], kind="stable")]
    np.testing.assert_array_equal(ids, expect)


def test_depth_order_is_a_stable_argsort_with_ties_zeros_and_nans():
  rng = np.random.RandomState(3)
  z = (rng.randn(4000) * 3).astype(np.float32)
  z[:50], z[50:100], z[100:120], z[120:130] = 0.0, -0.0, np.nan, -np.nan
  z[130:140], z[140:150] = np.inf, -np.inf
  z[1000:2000] = z[2000:3000]  # ties
  for host_sorts in (True, False):
    order = np.asarray(jax.jit(binning._depth_order, static_argnums=1)(jnp.asarray(z),
                                                                       host_sorts))
    np.testing.assert_array_equal(order, np.argsort(z, kind="stable"))


def test_vmapped_binning_matches_one_camera_at_a_time():
  """Per-camera unrolled binning under vmap, and the batched fallback past the unroll cap,
  give each camera's own bins."""
  g = random_gaussians(200, seed=5)
  cams = make_cameras(5, seed=5)
  project = jax.vmap(lambda c, k: projection.project(g, c, k, H, W))
  bin_all = lambda c, k, cap: jax.vmap(lambda p: binning.bin_gaussians(
      p, H, W, capacity=900, max_unrolled_cameras=cap))(project(c, k))
  one = [binning.bin_gaussians(projection.project(g, cams.c2w[i], cams.intrinsics[i], H, W),
                               H, W, capacity=900) for i in range(5)]
  for cap in (16, 2):  # unrolled; batched (5 cameras > 2)
    out = jax.jit(bin_all, static_argnums=2)(cams.c2w, cams.intrinsics, cap)
    for i, b in enumerate(one):
      for a, e in zip(jax.tree.leaves(out), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(a)[i], np.asarray(e))


def test_packed_gather_matches_plain_gathers():
  rng = np.random.default_rng(0)
  values = tuple(jnp.asarray(rng.integers(0, 64, 500), jnp.int32) for _ in range(4))
  index = jnp.asarray(rng.integers(0, 500, 3000), jnp.int32)
  for bound in (63, 2**12):  # packed into one word; too wide, gathered one by one
    out = binning._gather_packed(values, index, bound)
    for o, v in zip(out, values):
      assert o.dtype == jnp.int32
      np.testing.assert_array_equal(o, np.asarray(v)[np.asarray(index)])


def test_projection_matches_numpy_ewa():
  """A Gaussian near the image centre: mean, conic and radius against a direct formula."""
  c = make_cameras(1, 64, 64, seed=7)
  c2w, k = np.asarray(c.c2w[0], np.float64), np.asarray(c.intrinsics[0], np.float64)
  mean = c2w[:3, 3] + 2.0 * c2w[:3, 2] + 0.1 * c2w[:3, 0]
  g = Gaussians.from_rgb(jnp.asarray([mean], jnp.float32), jnp.asarray([[0.05, 0.1, 0.02]]),
                         jnp.asarray([[0.9, 0.2, -0.3, 0.1]]), jnp.asarray([[0.7]]),
                         jnp.asarray([[0.1, 0.2, 0.3]]))
  proj = projection.project(g, c.c2w[0], c.intrinsics[0], 64, 64)
  q = np.asarray([0.9, 0.2, -0.3, 0.1]) / np.linalg.norm([0.9, 0.2, -0.3, 0.1])
  from scipy.spatial.transform import Rotation
  rot = Rotation.from_quat([q[1], q[2], q[3], q[0]]).as_matrix()
  sigma = rot @ np.diag([0.05, 0.1, 0.02]) ** 2 @ rot.T
  t = c2w[:3, :3].T @ (mean - c2w[:3, 3])
  jac = np.asarray([[k[0] / t[2], 0, -k[0] * t[0] / t[2] ** 2],
                    [0, k[1] / t[2], -k[1] * t[1] / t[2] ** 2]])
  cov2d = jac @ c2w[:3, :3].T @ sigma @ c2w[:3, :3] @ jac.T + 0.3 * np.eye(2)
  inv = np.linalg.inv(cov2d)
  np.testing.assert_allclose(proj.means2d[0], [k[0] * t[0] / t[2] + k[2],
                                               k[1] * t[1] / t[2] + k[3]], rtol=1e-5)
  np.testing.assert_allclose(proj.conics[0], [inv[0, 0], inv[0, 1], inv[1, 1]], rtol=1e-4)
  np.testing.assert_allclose(proj.depths[0], t[2], rtol=1e-6)
  assert int(proj.radii[0]) == int(np.ceil(3 * np.sqrt(np.linalg.eigvalsh(cov2d).max())))


def test_single_gaussian_pixel_value():
  """At the pixel under a Gaussian's centre, rgb = o * c + (1 - o) * background."""
  c = make_cameras(1, 17, 17, seed=8)
  c2w, k = np.asarray(c.c2w[0]), np.asarray(c.intrinsics[0])
  # Put the mean on the ray through pixel (8, 8)'s centre.
  d = np.asarray([(8.5 - k[2]) / k[0], (8.5 - k[3]) / k[1], 1.0])
  mean = c2w[:3, 3] + c2w[:3, :3] @ (2.0 * d)
  g = Gaussians.from_rgb(jnp.asarray([mean]), jnp.asarray([[0.1] * 3]),
                         jnp.asarray([[1.0, 0, 0, 0]]), jnp.asarray([[0.6]]),
                         jnp.asarray([[0.9, 0.1, 0.4]]))
  bg = jnp.asarray([0.0, 1.0, 0.5])
  for backend in ("dense", "tiled"):
    out = jax.jit(functools.partial(sp.rasterize, backend=backend))(g, c, bg)
    np.testing.assert_allclose(out["rgb"][0, 8, 8], 0.6 * np.asarray([0.9, 0.1, 0.4])
                               + 0.4 * np.asarray(bg), atol=1e-5)
    np.testing.assert_allclose(out["alpha"][0, 8, 8, 0], 0.6, atol=1e-6)
    np.testing.assert_allclose(out["depth"][0, 8, 8, 0], 2.0, rtol=1e-5)


def test_batched_scenes_and_views_match_one_by_one():
  g = random_gaussians(50, seed=9, sh_degree=0, batch=(2,))
  c = make_cameras(6, 16, 16, seed=10)
  cams = cam.Cameras(c.c2w.reshape(2, 3, 4, 4), c.intrinsics.reshape(2, 3, 4), 16, 16)
  bg = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 3, 3)), jnp.float32)
  out = jax.jit(functools.partial(sp.rasterize, backend="tiled", **TILED))(g, cams, bg)
  assert out["rgb"].shape == (2, 3, 16, 16, 3) and out["overflow"].shape == (2, 3)
  dense = jax.jit(functools.partial(sp.rasterize, backend="dense"))
  for b in range(2):
    gb = jax.tree.map(lambda x: x[b], g)
    for v in range(3):
      one = dense(gb, cams[b, v], bg[b, v])
      np.testing.assert_allclose(out["rgb"][b, v], one["rgb"], atol=1e-5)


def test_views_in_groups_with_remat_match_all_at_once():
  # 2 scenes x 3 views, 2 views at a time (the last group padded), recomputed in the
  # backward pass: the same images and gradients as all views together.
  g = random_gaussians(60, seed=11, sh_degree=0, batch=(2,))
  c = make_cameras(6, 16, 16, seed=12)
  cams = cam.Cameras(c.c2w.reshape(2, 3, 4, 4), c.intrinsics.reshape(2, 3, 4), 16, 16)
  def loss(g, **kw):
    out = sp.rasterize(g, cams, jnp.asarray([0.2, 0.5, 0.9]), backend="tiled", **TILED, **kw)
    w = jnp.cos(jnp.arange(out["rgb"].size, dtype=jnp.float32)).reshape(out["rgb"].shape)
    return jnp.sum(w * out["rgb"]) + jnp.sum(out["alpha"] ** 2), out
  (_, whole), g_whole = jax.jit(jax.value_and_grad(loss, has_aux=True))(g)
  grouped = functools.partial(loss, views_at_once=2, remat=True)
  (_, parts), g_parts = jax.jit(jax.value_and_grad(grouped, has_aux=True))(g)
  for k in ("rgb", "alpha", "depth", "overflow"):
    assert parts[k].shape == whole[k].shape
    np.testing.assert_allclose(parts[k], whole[k], atol=1e-5)
  for a, b in zip(jax.tree.leaves(g_parts), jax.tree.leaves(g_whole)):
    assert_close_rel(a, b, 1e-4)  # summed over groups in another order


def test_image_size_override_scales_intrinsics():
  g = random_gaussians(40, seed=11, sh_degree=0)
  c = make_cameras(1, 16, 24, seed=12)
  render = jax.jit(functools.partial(sp.rasterize, backend="dense"),
                   static_argnames="image_size")
  big = render(g, c, image_size=(32, 48))
  same = render(g, c.resize(32, 48))
  assert big["rgb"].shape == (1, 32, 48, 3)
  np.testing.assert_array_equal(big["rgb"], same["rgb"])


def test_h_by_w_render_is_a_crop_of_a_square_render():
  """A 32x48 render (tiled backend) is the top 32 rows of the 48x48 render of the same
  Gaussians and cameras: tile-aligned windows share their tiles, and the Gaussians only the
  larger image draws touch none of them. (Small Gaussians: gsplat's frustum clamp of the
  projection Jacobian, 1.3x the image, moves with its size; with the default scales 14 of
  9216 values differ by up to 2e-5.)"""
  g = random_gaussians(200, seed=21, sh_degree=1, scale=(0.01, 0.03))
  c = make_cameras(2, 48, 48, seed=22)
  bg = jnp.asarray([0.2, 0.5, 0.9])
  render = lambda cams: jax.jit(lambda g: sp.rasterize(g, cams, bg, backend="tiled",
                                                       **TILED))(g)
  square = render(c)
  assert float(jnp.mean(square["alpha"])) > 0.1
  out = render(c.crop(0, 0, 32, 48))
  assert out["rgb"].shape == (2, 32, 48, 3) and int(jnp.sum(out["overflow"])) == 0
  for k in ("rgb", "alpha", "depth"):
    np.testing.assert_allclose(out[k], square[k][:, :32], atol=1e-6, rtol=1e-6)


def test_tile_size_8_matches_dense():
  g = random_gaussians(80, seed=13, sh_degree=0)
  c = make_cameras(1, 20, 28, seed=14)
  dense = jax.jit(lambda g: sp.rasterize(g, c, backend="dense", tile_size=8))(g)
  tiled = jax.jit(lambda g: sp.rasterize(g, c, backend="tiled", tile_size=8, chunk_size=8,
                                         block_tiles=3))(g)
  np.testing.assert_allclose(tiled["rgb"], dense["rgb"], atol=1e-5)


def test_default_capacity_fits_grm_shapes():
  """4 views x 128^2 pixel-aligned Gaussians rendered at 128^2: nothing may be dropped."""
  from lrm_jax.representations import gaussians as gl
  h = w = 128
  c2w = cam.orbit_cameras(np.asarray([0.0, 90.0, 180.0, 270.0]), np.full(4, 20.0), 2.0)
  k = np.tile(cam.intrinsics_from_fov(np.deg2rad(49.1), h, w), (4, 1))
  inputs = cam.Cameras(jnp.asarray(c2w), jnp.asarray(k), h, w)
  origins, dirs = gl.pixel_rays(inputs)  # [4 * 128 * 128, 3]
  # Depth to a sphere of radius 0.8 where the ray hits it, else a far-ish background.
  b = jnp.sum(origins * dirs, -1)
  disc = b * b - (jnp.sum(origins * origins, -1) - 0.64)
  depth = jnp.where(disc > 0, -b - jnp.sqrt(jnp.maximum(disc, 0.0)), 2.5)[:, None]
  n = depth.shape[0]
  pixel_world = depth / k[0, 0]  # one pixel's footprint at that depth
  g = Gaussians.from_rgb(gl.unproject(origins, dirs, depth),
                         jnp.broadcast_to(1.5 * pixel_world, (n, 3)),
                         jnp.tile(jnp.asarray([[1.0, 0, 0, 0]]), (n, 1)),
                         jnp.full((n, 1), 0.8), jnp.full((n, 3), 0.5))
  novel = cam.orbit_cameras(np.asarray([45.0, 135.0, 225.0, 315.0]), np.full(4, 30.0), 2.0)

  @jax.jit
  def needed(c2w_one):
    proj = projection.project(g, c2w_one, jnp.asarray(k[0]), h, w)
    bins = binning.bin_gaussians(proj, h, w)
    return bins.num_intersections, bins.overflow

  cap = binning.default_capacity(n, h, w)
  for c in novel:
    total, overflow = needed(jnp.asarray(c))
    assert int(overflow) == 0 and int(total) < cap // 2


def test_rasterize_tiles_validates_shapes(scene):
  g, cams = scene
  proj = projection.project(g, cams.c2w[0], cams.intrinsics[0], H, W)
  bins = binning.bin_gaussians(proj, H, W)
  feats = proj.colors
  with pytest.raises(ValueError, match="tile_ranges"):
    tiled_lib.rasterize_tiles(proj.means2d, proj.conics, proj.opacities, feats,
                              bins.tile_ranges[:-1], bins.isect_gids, height=H, width=W)
  with pytest.raises(ValueError, match="conics"):
    tiled_lib.rasterize_tiles(proj.means2d, proj.conics[:, :2], proj.opacities, feats,
                              bins.tile_ranges, bins.isect_gids, height=H, width=W)
  with pytest.raises(ValueError, match="backend"):
    sp.rasterize(g, cams, backend="cuda")


def test_render_cli_writes_views(tmp_path):
  """python -m lrm_jax.render: a degree-3 .ply + opencv_cameras.json -> PNGs and depths."""
  from lrm_jax.io import ply
  from lrm_jax.render import __main__ as render_cli
  from tests import data_fixtures
  g = jax.tree.map(np.asarray, random_gaussians(60, seed=15, sh_degree=3))
  ply_path = ply.save_ply(str(tmp_path / "scene.ply"), g)
  c2w, k = data_fixtures.scene_cameras(n=2, h=12, w=16)
  data_fixtures.write_opencv(str(tmp_path / "cams"), c2w, k, 12, 16)
  out_dir = tmp_path / "out"
  assert render_cli.main([f"--ply={ply_path}", f"--cameras={tmp_path / 'cams'}",
                          f"--out={out_dir}", "--width=24", "--background=white"]) == 0
  from PIL import Image
  png = np.asarray(Image.open(out_dir / "frame_00001.png"))
  depth = np.load(out_dir / "depth_frame_00001.npy")
  assert png.shape == (18, 24, 3) and depth.shape == (18, 24)
  cams = cam.Cameras(jnp.asarray(c2w), jnp.asarray(k), 12, 16).resize(18, 24)
  ref = jax.jit(functools.partial(sp.rasterize, backend="dense"))(ply.load_ply(ply_path), cams[1],
                                                                  jnp.ones(3))
  np.testing.assert_allclose(png / 255.0, np.clip(ref["rgb"], 0, 1), atol=1 / 255 + 1e-6)
  assert depth.max() > 1.0


@pytest.fixture(scope="module")
def pallas_outputs(scene):
  g, cams = scene
  bg = jnp.asarray([0.2, 0.5, 0.9])
  fwd = jax.jit(lambda g: sp.rasterize(g, cams, bg, backend="pallas", interpret=True))(g)
  grad_fn = jax.jit(jax.grad(loss_fn("pallas", cams, interpret=True)))
  return fwd, grad_fn(g), grad_fn(g)


def test_pallas_backend_matches_dense_forward(renders, pallas_outputs):
  dense, _ = renders
  out, _, _ = pallas_outputs
  for k in ("rgb", "alpha"):
    np.testing.assert_allclose(out[k], dense[k], atol=1e-5, rtol=0)
  mask = np.asarray(dense["alpha"]) > 1e-2
  np.testing.assert_allclose(np.asarray(out["depth"])[mask], np.asarray(dense["depth"])[mask],
                             atol=3e-5, rtol=1e-6)


def test_pallas_backend_matches_dense_gradients_deterministically(grads, pallas_outputs):
  dense, _, _ = grads
  _, first, second = pallas_outputs
  for name in ("means", "scales", "quats", "opacities", "sh"):
    assert_close_rel(getattr(first, name), getattr(dense, name), 1e-4)
  for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(second)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _scatters(hlo: str):
  """``(element type, combiner ops)`` of every scatter in a StableHLO text."""
  found = []
  for m in re.finditer(r'"stablehlo\.scatter"\(', hlo):
    region = hlo[m.end():]
    body = region[region.index("^bb0"):region.index("})")]
    etype = re.search(r"tensor<(\w+)>", body).group(1)
    ops = set(re.findall(r"stablehlo\.(\w+)", body)) - {"return"}
    found.append((etype, ops))
  return found


@pytest.mark.parametrize("backend,kw", [("tiled", TILED),
                                        ("tiled", dict(TILED, host_sorts=False)),
                                        ("pallas", {"interpret": True})])
def test_backward_has_no_scatter_add(scene, backend, kw):
  """The per-Gaussian sums of the backward are sorts + segmented scans, not scatter-adds
  (which XLA:GPU runs with atomics, in a varying order). The only scatter left in the
  whole gradient program is binning's forward int32 scatter-max (exact, order-free)."""
  g, cams = scene
  hlo = jax.jit(jax.grad(loss_fn(backend, cams, **kw))).lower(g).as_text()
  scatters = _scatters(hlo)
  assert scatters, "binning's scatter-max should be found: the parser is broken"
  assert all(s == ("i32", {"maximum"}) for s in scatters), scatters


@pytest.mark.parametrize("host_sort", [True, False])  # NumPy on the host, or XLA
def test_sorted_segment_sum_matches_segment_sum(scene, host_sort):
  """Per-intersection rows of a real binning (plus dropped ids, an unused tail and empty
  segments) summed by Gaussian: equal to segment_sum to float32 rounding, along either
  axis, and the same bits from call to call."""
  g, cams = scene
  proj = projection.project(g, cams.c2w[0], cams.intrinsics[0], H, W)
  ids = np.array(binning.bin_gaussians(proj, H, W, capacity=2000).isect_gids)
  ids[::97] = -1  # dropped
  ids[5::101] = g.num + 3  # dropped
  rng = np.random.default_rng(0)
  values = jnp.asarray(rng.normal(size=(10, ids.size)) * rng.uniform(0.1, 100, (10, 1)),
                       jnp.float32)
  ids = jnp.asarray(ids)
  used = ids.size - 150  # rows from here on are dropped (a buffer's unused tail)
  kept = jnp.where(jnp.arange(ids.size) < used, values, 0.0)
  ref = jax.vmap(lambda v: jax.ops.segment_sum(v, ids, num_segments=g.num))(kept)
  fn = jax.jit(functools.partial(segments.sorted_segment_sum, num_segments=g.num,
                                 host_sort=host_sort, num_rows=used))
  out = fn(values, ids)
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(ref))))
  assert np.sum(np.asarray(ref) == 0) == np.sum(np.asarray(out) == 0)  # empty segments
  np.testing.assert_array_equal(fn(values, ids), out)
  rows = jax.jit(functools.partial(segments.sorted_segment_sum, num_segments=g.num, axis=0,
                                   host_sort=host_sort, num_rows=used))(values.T, ids)
  np.testing.assert_array_equal(rows, out.T)


@pytest.mark.parametrize("cpus", [1, 2])
def test_host_callbacks_only_with_two_usable_cpus(monkeypatch, cpus):
  """On one usable CPU (``taskset -c 0``, a 1-vCPU container) a host callback waits for
  XLA:CPU's only worker thread, which waits for it: both host shortcuts (the binning sorts
  and the segment sum) must then stay in XLA."""
  monkeypatch.setattr(segments, "_usable_cpus", lambda: cpus)
  ids, values = jnp.arange(8) % 3, jnp.ones((2, 8))
  jaxprs = [
      jax.make_jaxpr(functools.partial(segments.sorted_segment_sum, num_segments=3,
                                       host_sort=True))(values, ids),
      jax.make_jaxpr(functools.partial(segments.stable_argsort, host_sort=True))(ids)]
  for jaxpr in jaxprs:
    assert ("pure_callback" in str(jaxpr)) == (cpus >= 2 and jax.device_count() == 1)
