"""Pallas splat compositor vs its jnp reference, in interpret mode on CPU (tiny shapes).

The scenes come from a small numpy projection/binning: each Gaussian goes to every tile
its 3-sigma box touches; keys are sorted by (tile, depth). The 36x44 image is not a
multiple of the 16x16 tile, so the right and bottom tiles are cut. Both kernel flavours
('tpu': DMA + SMEM, 'gpu': direct scalar loads) run in the interpreter; `TestOnDevice`
runs the compiled kernels at a larger size and is skipped on CPU.
"""

import numpy as np
import jax
import jax.numpy as jnp
import pytest
from jax.experimental.pallas import tpu as pltpu

from kernels import splat_pallas as sp

TS = 16
FWD_ATOL = 1e-5
GRAD_RTOL = 1e-4


def make_scene(seed, n, height, width, *, channels=3, opacity=(0.05, 0.95), x_max=None,
               pad_to=None, ts=TS):
  """Random 2D Gaussians + numpy binning. Returns the six rasterize_tiles inputs.

  x_max: keep means left of this x (so the right tiles stay empty).
  pad_to: append isect rows outside every range (they must be ignored) up to this length.
  """
  rng = np.random.default_rng(seed)
  means = np.stack([rng.uniform(-4, (x_max or width) + 4, n), rng.uniform(-4, height + 4, n)], 1)
  sx, sy = rng.uniform(1.0, 6.0, n), rng.uniform(1.0, 6.0, n)
  th = rng.uniform(0, np.pi, n)
  c, s = np.cos(th), np.sin(th)
  cov = np.zeros((n, 2, 2))
  cov[:, 0, 0] = c * c * sx**2 + s * s * sy**2 + 0.3
  cov[:, 1, 1] = s * s * sx**2 + c * c * sy**2 + 0.3
  cov[:, 0, 1] = cov[:, 1, 0] = c * s * (sx**2 - sy**2)
  inv = np.linalg.inv(cov)
  conics = np.stack([inv[:, 0, 0], inv[:, 0, 1], inv[:, 1, 1]], 1)
  opac = rng.uniform(*opacity, n)
  feats = rng.uniform(0, 1, (n, channels))
  depth = rng.uniform(1, 10, n)
  tiles_x, tiles_y = -(-width // ts), -(-height // ts)
  mid = 0.5 * (cov[:, 0, 0] + cov[:, 1, 1])
  lam = mid + np.sqrt(np.maximum(mid**2 - np.linalg.det(cov), 0.0))
  rad = np.ceil(3.0 * np.sqrt(lam))
  x0 = np.clip(np.floor((means[:, 0] - rad) / ts), 0, tiles_x).astype(int)
  x1 = np.clip(np.ceil((means[:, 0] + rad) / ts), 0, tiles_x).astype(int)
  y0 = np.clip(np.floor((means[:, 1] - rad) / ts), 0, tiles_y).astype(int)
  y1 = np.clip(np.ceil((means[:, 1] + rad) / ts), 0, tiles_y).astype(int)
  keys = [(ty * tiles_x + tx, depth[i], i)
          for i in range(n) for ty in range(y0[i], y1[i]) for tx in range(x0[i], x1[i])]
  keys.sort()
  tile_of = np.array([k[0] for k in keys], np.int64)
  gids = np.array([k[2] for k in keys], np.int32)
  ranges = np.zeros((tiles_x * tiles_y, 2), np.int32)  # empty tiles: (0, 0)
  for t in range(tiles_x * tiles_y):
    idx = np.nonzero(tile_of == t)[0]
    if len(idx):
      ranges[t] = (idx[0], idx[-1] + 1)
  if pad_to is not None:
    assert pad_to >= len(gids)
    gids = np.concatenate([gids, rng.integers(0, n, pad_to - len(gids)).astype(np.int32)])
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  return f32(means), f32(conics), f32(opac), f32(feats), jnp.asarray(ranges), jnp.asarray(gids)


def render(args, h, w, backend="tpu", **kw):
  return sp.rasterize_tiles(*args, height=h, width=w, interpret=True, backend=backend, **kw)


_ref_jit = jax.jit(sp.rasterize_tiles_reference, static_argnames=("height", "width", "tile_size"))


def render_ref(args, h, w):
  return _ref_jit(*args, height=h, width=w)


def vjp_grads(fn, args, cts):
  _, vjp = jax.vjp(lambda *p: fn((*p, *args[4:])), *args[:4])
  return vjp(cts)


def random_cts(out, seed=1):
  rng = np.random.default_rng(seed)
  return tuple(jnp.asarray(rng.normal(size=o.shape), jnp.float32) for o in out)


def assert_grads_close(got, want, names=("means2d", "conics", "opacities", "features")):
  for g, r, name in zip(got, want, names):
    g, r = np.asarray(g), np.asarray(r)
    assert np.all(np.isfinite(g)), name
    scale = np.max(np.abs(r))
    assert scale > 0, name
    # Elementwise relative, with a floor for entries that cancel to ~0.
    np.testing.assert_allclose(g, r, rtol=GRAD_RTOL, atol=GRAD_RTOL * 1e-2 * scale, err_msg=name)
    assert np.linalg.norm(g - r) <= GRAD_RTOL * np.linalg.norm(r), name


H, W = 36, 44  # 3x3 tiles, the last row and column cut by the image edge
N, M = 100, 512  # every main scene has these shapes (rows past the ranges are ignored),
# so the jitted kernel and reference compile once for the whole module


def scene_nm(seed, **kw):
  return make_scene(seed, N, H, W, pad_to=M, **kw)


def check_against_reference(args, h=H, w=W, seed=1, **kw):
  """Forward to FWD_ATOL and vjp (random cotangent) to GRAD_RTOL; returns kernel outputs."""
  out, vjp = jax.vjp(lambda *p: render((*p, *args[4:]), h, w, **kw), *args[:4])
  ref, vjp_ref = jax.vjp(lambda *p: render_ref((*p, *args[4:]), h, w), *args[:4])
  assert out[0].shape == (h, w, args[3].shape[1]) and out[1].shape == (h, w)
  np.testing.assert_allclose(out[0], ref[0], atol=FWD_ATOL, rtol=0)
  np.testing.assert_allclose(out[1], ref[1], atol=FWD_ATOL, rtol=0)
  cts = random_cts(out, seed)
  assert_grads_close(vjp(cts), vjp_ref(cts))
  return out


@pytest.mark.parametrize("backend", ["tpu", "gpu"])
def test_forward_and_vjp_match_reference(backend):
  out = check_against_reference(scene_nm(0), backend=backend)
  assert float(jnp.min(out[1])) < 0.1  # the scene really covers pixels


def test_backward_is_deterministic():
  args = scene_nm(0)
  out, vjp = jax.vjp(lambda *p: render((*p, *args[4:]), H, W), *args[:4])
  cts = random_cts(out)
  a = vjp(cts)
  b = vjp_grads(lambda s: render(s, H, W), args, cts)  # a fresh forward + backward
  for x, y in zip(a, b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_small_chunk_and_invalid_rows():
  # chunk 8: many chunks per tile; an out-of-range id inside a range is skipped, like the
  # rows past every range.
  args = scene_nm(5)
  gids = np.asarray(args[5]).copy()
  gids[int(args[4][4, 0]) + 1] = 10_000
  check_against_reference((*args[:5], jnp.asarray(gids)), seed=5,
                          block_config=sp.SplatBlockConfig(chunk=8))


def test_early_stop():
  # Opaque Gaussians: T falls below 1e-4 after a few, so pixels stop.
  out = check_against_reference(scene_nm(1, opacity=(0.9, 1.0)), seed=2)
  assert 1e-4 <= float(jnp.min(out[1])) < 2e-4  # stopped at the threshold, never below

  # The whole tile stops inside its first chunk, so the loop must exit there: one 16x16
  # tile, 96 rows = 3 chunks of 32; rows 0-1 near-opaque, rows 2-31 alpha ~0.5, rows 32-95
  # a Gaussian with NaN features (reading them would make everything NaN).
  means = jnp.tile(jnp.asarray([[5.0, 6.5]], jnp.float32), (4, 1))
  conics = jnp.tile(jnp.asarray([[1e-3, 0.0, 1e-3]], jnp.float32), (4, 1))
  opac = jnp.asarray([0.999, 0.999, 0.5, 0.5], jnp.float32)
  feats = jnp.asarray([[1.0], [2.0], [3.0], [np.nan]], jnp.float32)
  gids = jnp.asarray(np.r_[[0, 1], np.full(30, 2), np.full(64, 3)], jnp.int32)
  poisoned = (means, conics, opac, feats, jnp.asarray([[0, 96]], jnp.int32), gids)
  clean = (means, conics, opac, feats.at[3].set(4.0), jnp.asarray([[0, 32]], jnp.int32),
           gids[:32])
  out, vjp = jax.vjp(lambda *p: render((*p, *poisoned[4:]), 16, 16), *poisoned[:4])
  ref, vjp_ref = jax.vjp(lambda *p: render_ref((*p, *clean[4:]), 16, 16), *clean[:4])
  assert np.all(np.isfinite(np.asarray(out[0])))
  np.testing.assert_allclose(out[0], ref[0], atol=FWD_ATOL, rtol=0)
  np.testing.assert_allclose(out[1], ref[1], atol=FWD_ATOL, rtol=0)
  cts = random_cts(out, seed=3)
  for g, r in zip(vjp(cts), vjp_ref(cts)):
    assert np.all(np.isfinite(np.asarray(g)))
    np.testing.assert_allclose(g, r, rtol=GRAD_RTOL, atol=1e-6 * float(jnp.max(jnp.abs(r))))


def test_empty_tiles_and_empty_scene():
  args = scene_nm(2, x_max=6)  # the right tile column stays empty
  assert np.any(np.asarray(args[4])[:, 1] == 0)
  out = check_against_reference(args, seed=4)
  np.testing.assert_array_equal(np.asarray(out[1])[:, 32:], 1.0)
  # No intersections at all (M = 0), and no Gaussians at all (N = 0).
  empty = (*args[:4], jnp.zeros_like(args[4]), jnp.zeros((0,), jnp.int32))
  (acc, t), vjp = jax.vjp(lambda *p: render((*p, *empty[4:]), H, W), *empty[:4])
  np.testing.assert_array_equal(np.asarray(acc), 0.0)
  np.testing.assert_array_equal(np.asarray(t), 1.0)
  assert all(np.all(np.asarray(x) == 0.0) for x in vjp(random_cts((acc, t))))
  none = (jnp.zeros((0, 2)), jnp.zeros((0, 3)), jnp.zeros((0,)), jnp.zeros((0, 3)),
          jnp.zeros_like(args[4]), jnp.zeros((0,), jnp.int32))
  acc, t = render(none, H, W)
  assert acc.shape == (H, W, 3) and float(jnp.max(acc)) == 0.0 and float(jnp.min(t)) == 1.0


def test_vmap_two_cameras_under_jit():
  cams = [scene_nm(10 + i) for i in range(2)]
  batched = tuple(jnp.stack(x) for x in zip(*cams))
  cts = tuple(jnp.stack(c) for c in zip(*(random_cts(render_ref(c, H, W), 7 + i)
                                            for i, c in enumerate(cams))))

  @jax.jit
  def run(batched, cts):
    def one(args, ct):
      out, vjp = jax.vjp(lambda *p: render((*p, *args[4:]), H, W), *args[:4])
      return out, vjp(ct)
    return jax.vmap(one)(batched, cts)

  outs, grads = run(batched, cts)
  for i, cam in enumerate(cams):
    ref, vjp_ref = jax.vjp(lambda *p: render_ref((*p, *cam[4:]), H, W), *cam[:4])
    np.testing.assert_allclose(outs[0][i], ref[0], atol=FWD_ATOL, rtol=0)
    np.testing.assert_allclose(outs[1][i], ref[1], atol=FWD_ATOL, rtol=0)
    assert_grads_close([g[i] for g in grads], vjp_ref(tuple(c[i] for c in cts)))


def test_strict_tpu_interpreter_tiny():
  # The TPU interpreter checks DMA/SMEM semantics and races (slow, so a 16x32 image).
  h, w = 16, 32
  args = make_scene(3, 8, h, w)
  ip = pltpu.InterpretParams(detect_races=True)
  cfg = sp.SplatBlockConfig(chunk=8)
  out, vjp = jax.vjp(lambda *p: sp.rasterize_tiles(*p, *args[4:], height=h, width=w,
                                                   interpret=ip, block_config=cfg), *args[:4])
  ref, vjp_ref = jax.vjp(lambda *p: render_ref((*p, *args[4:]), h, w), *args[:4])
  np.testing.assert_allclose(out[0], ref[0], atol=FWD_ATOL, rtol=0)
  np.testing.assert_allclose(out[1], ref[1], atol=FWD_ATOL, rtol=0)
  cts = random_cts(out, seed=6)
  assert_grads_close(vjp(cts), vjp_ref(cts))


def test_validation_errors():
  m, c, o, f, r, g = args = scene_nm(0)
  with pytest.raises(ValueError, match=r"`conics` must have shape \[100, 3\], got \[100, 2\]"):
    render((m, c[:, :2], o, f, r, g), H, W)
  with pytest.raises(ValueError, match=r"`tile_ranges` must have shape \[9, 2\], got \[5, 2\]"):
    render((m, c, o, f, r[:5], g), H, W)
  with pytest.raises(ValueError, match=r"`opacities` must be float32"):
    render((m, c, o.astype(jnp.bfloat16), f, r, g), H, W)
  with pytest.raises(ValueError, match=r"`isect_gids` must be int32"):
    render((m, c, o, f, r, g.astype(jnp.float32)), H, W)
  with pytest.raises(ValueError, match=r"`tile_size` must be a power of two"):
    render(args, H, W, tile_size=12)
  with pytest.raises(ValueError, match=r"chunk must be a positive multiple of 8"):
    sp.SplatBlockConfig(chunk=12)
  with pytest.raises(ValueError, match=r"`backend` must be one of"):
    render(args, H, W, backend="metal")


@pytest.mark.skipif(jax.default_backend() not in ("tpu", "gpu"), reason="needs a TPU or GPU")
class TestOnDevice:
  """Compiled (not interpreted) kernels at a hardware-ish size against the reference."""

  h, w = 136, 200  # ragged 9x13 tiles

  def test_forward_and_vjp(self):
    args = make_scene(20, 1500, self.h, self.w)
    f = lambda *p: sp.rasterize_tiles(*p, *args[4:], height=self.h, width=self.w)
    out, vjp = jax.vjp(f, *args[:4])
    ref, vjp_ref = jax.vjp(lambda *p: render_ref((*p, *args[4:]), self.h, self.w), *args[:4])
    np.testing.assert_allclose(out[0], ref[0], atol=FWD_ATOL, rtol=0)
    np.testing.assert_allclose(out[1], ref[1], atol=FWD_ATOL, rtol=0)
    cts = random_cts(out)
    got, want = vjp(cts), vjp_ref(cts)
    for g, r in zip(got, want):  # device exp/division round differently from XLA:CPU
      np.testing.assert_allclose(g, r, rtol=1e-3, atol=1e-5 * float(jnp.max(jnp.abs(r))))
    again = vjp(cts)
    for x, y in zip(got, again):
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
