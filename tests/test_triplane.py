"""Triplane sampling, decoder and ray marching against analytic fields and references."""

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from lrm_jax import cameras as cam
from lrm_jax.render import triplane as tp


def _constant_field(sigma, color, inside=lambda p: jnp.ones(p.shape[:-1], bool)):
  """A FieldFn with density ``sigma`` where ``inside(points)`` and colour ``color``."""

  def field(points, directions):
    del directions
    s = jnp.where(inside(points), sigma, 0.0).astype(points.dtype)
    rgb = jnp.broadcast_to(jnp.asarray(color, points.dtype), points.shape)
    return s, rgb

  return field


# Rays that hit the box with known chord lengths L.
_ORIGINS = np.asarray([[-3.0, 0.2, 0.1], [-3.0, -3.0, -3.0], [0.3, -0.4, 4.0],
                       [0.0, 0.0, 0.0]], np.float32)
_DIRS = np.asarray([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, -1.0],
                    [0.0, 1.0, 0.0]], np.float32)
_DIRS = _DIRS / np.linalg.norm(_DIRS, axis=-1, keepdims=True)
_LENGTHS = np.asarray([2.0, 2.0 * np.sqrt(3.0), 2.0, 1.0], np.float32)


def test_ray_box_intersect_chords():
  t_near, t_far, hit = tp.ray_box_intersect(jnp.asarray(_ORIGINS), jnp.asarray(_DIRS))
  assert bool(hit.all())
  np.testing.assert_allclose(t_far - t_near, _LENGTHS, rtol=1e-5)


@pytest.mark.parametrize("num_fine", [0, 32])
def test_constant_density_composites_to_beer_lambert(num_fine):
  sigma = 0.7
  config = tp.RenderConfig(num_coarse=16, num_fine=num_fine)
  out = tp.march(_constant_field(sigma, [0.2, 0.4, 0.6]), jnp.asarray(_ORIGINS),
                 jnp.asarray(_DIRS), config)
  expected = 1.0 - np.exp(-sigma * _LENGTHS)
  np.testing.assert_allclose(out["alpha"][:, 0], expected, rtol=1e-5)
  np.testing.assert_allclose(out["weights"].sum(-1), expected, rtol=1e-5)


def test_slab_of_density_inside_the_box():
  # Density only in the slab |x| < 0.5: rays along x cross a chord of length 1.
  sigma = 2.0
  field = _constant_field(sigma, [1.0, 0.0, 0.0], inside=lambda p: jnp.abs(p[..., 0]) < 0.5)
  origins = jnp.asarray([[-3.0, 0.1, 0.2], [3.0, -0.5, 0.3]])
  dirs = jnp.asarray([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]])
  config = tp.RenderConfig(num_coarse=128, num_fine=128)
  out = tp.march(field, origins, dirs, config)
  # Each slab edge is resolved to about half a sample spacing.
  np.testing.assert_allclose(out["alpha"][:, 0], 1.0 - np.exp(-sigma), atol=0.01)


@pytest.mark.parametrize("background", [1.0, (0.1, 0.9, 0.3)])
def test_constant_colour_field_renders_its_colour(background):
  color = np.asarray([0.25, 0.5, 0.75], np.float32)
  config = tp.RenderConfig(num_coarse=24, num_fine=24)
  out = tp.march(_constant_field(3.0, color), jnp.asarray(_ORIGINS), jnp.asarray(_DIRS),
                 config, background=background)
  alpha = np.asarray(out["alpha"])
  expected = alpha * color + (1.0 - alpha) * np.asarray(background, np.float32)
  np.testing.assert_allclose(out["rgb"], expected, rtol=1e-5, atol=1e-6)
  # Opaque enough: the colour itself.
  dense = tp.march(_constant_field(200.0, color), jnp.asarray(_ORIGINS),
                   jnp.asarray(_DIRS), config, background=background)
  np.testing.assert_allclose(dense["rgb"], np.broadcast_to(color, (4, 3)), atol=1e-4)


def test_importance_samples_follow_the_weights():
  edges = jnp.linspace(0.0, 1.0, 17)[None]  # [1, 17]
  weights = jnp.full((1, 16), 1e-4).at[0, 11].set(1.0)
  t = tp.sample_pdf(edges, weights, 64)
  inside = (t >= edges[0, 11]) & (t <= edges[0, 12])
  assert float(inside.mean()) > 0.95
  assert bool(jnp.all(jnp.diff(t, axis=-1) >= 0))
  t_jit = tp.sample_pdf(edges, weights, 64, jax.random.key(0))
  assert float(((t_jit >= edges[0, 11]) & (t_jit <= edges[0, 12])).mean()) > 0.95


def test_fine_samples_concentrate_on_a_thin_shell():
  # A dense wall at x in [0.3, 0.45]: the coarse pass sees it in ~2 bins of 32.
  field = _constant_field(50.0, [0.0, 1.0, 0.0],
                          inside=lambda p: (p[..., 0] > 0.3) & (p[..., 0] < 0.45))
  origins = jnp.asarray([[-3.0, 0.0, 0.0]])
  dirs = jnp.asarray([[1.0, 0.0, 0.0]])
  config = tp.RenderConfig(num_coarse=32, num_fine=64)
  out = tp.march(field, origins, dirs, config, key=jax.random.key(3))
  x = -3.0 + out["t"][0]  # merged coarse + fine sample positions along x
  near_wall = (x > 0.3 - 0.1) & (x < 0.45 + 0.1)
  assert int(near_wall.sum()) >= 0.8 * 64
  np.testing.assert_allclose(out["rgb"][0], [0.0, 1.0, 0.0], atol=0.02)


def test_plane_convention_eg3d_fixed():
  h, w, c = 8, 16, 1
  planes = np.zeros((3, h, w, c), np.float32)
  row, col = 5, 11
  planes[0, row, col] = 1.0  # xy plane: u = x (columns), v = y (rows)
  planes[1, row, col] = 2.0  # xz plane: u = x, v = z
  planes[2, row, col] = 3.0  # yz plane: u = y, v = z
  u = -1.0 + (2 * col + 1) / w  # texel centres (align_corners=False)
  v = -1.0 + (2 * row + 1) / h
  pts = jnp.asarray([[u, v, 0.9], [u, -0.9, v], [-0.9, u, v]], jnp.float32)
  feats = np.asarray(tp.sample_planes(jnp.asarray(planes), pts))[..., 0]  # [3 pts, 3 planes]
  np.testing.assert_allclose(np.diag(feats), [1.0, 2.0, 3.0], atol=1e-6)
  np.testing.assert_allclose(feats - np.diag(np.diag(feats)), 0.0, atol=1e-6)
  # Halfway between texel centres along u: half the value.
  half = jnp.asarray([[u + 1.0 / w, v, 0.0]])
  np.testing.assert_allclose(tp.sample_planes(jnp.asarray(planes), half)[0, 0, 0], 0.5,
                             atol=1e-6)
  # Aggregations.
  both = jnp.asarray(planes)
  assert tp.sample_triplane(both, pts, "concat").shape == (3, 3 * c)
  np.testing.assert_allclose(tp.sample_triplane(both, pts, "sum")[:, 0], [1.0, 2.0, 3.0],
                             atol=1e-6)


def test_plane_sampling_clamps_at_the_border():
  planes = jnp.arange(3 * 4 * 4, dtype=jnp.float32).reshape(3, 4, 4, 1)
  inside = tp.sample_planes(planes, jnp.asarray([[-0.75, -0.75, -0.75]]))  # first texels
  outside = tp.sample_planes(planes, jnp.asarray([[-5.0, -1.0, -2.0]]))
  np.testing.assert_allclose(inside, outside)
  np.testing.assert_allclose(inside[0, :, 0], [0.0, 16.0, 32.0])


def _small_scene(dtype, channels=2, size=4, hidden=8):
  decoder = tp.TriplaneDecoder(hidden=hidden)
  params = decoder.init(jax.random.key(0), jnp.zeros((1, 3 * channels), dtype))
  params = jax.tree.map(lambda x: x.astype(dtype), params)
  planes = jax.random.normal(jax.random.key(1), (3, size, size, channels), dtype)
  return decoder, params, planes


def test_gradients_match_finite_differences():
  with jax.enable_x64(True):
    decoder, params, planes = _small_scene(jnp.float64)
    origins = jnp.asarray([[-2.5, 0.1, 0.3], [0.4, -2.5, -0.2], [0.2, 0.1, 2.5]],
                          jnp.float64)
    dirs = -origins / jnp.linalg.norm(origins, axis=-1, keepdims=True) + jnp.asarray(
        [0.05, -0.1, 0.07])
    config = tp.RenderConfig(num_coarse=24, num_fine=0)
    target = jax.random.uniform(jax.random.key(2), (3, 3), jnp.float64)

    def loss(planes, params):
      out = tp.render_rays(decoder.apply, params, planes, origins, dirs, config,
                           background=0.3)
      return jnp.sum((out["rgb"] - target) ** 2) + jnp.sum(out["depth"] ** 2)

    g_planes, g_params = jax.grad(loss, (0, 1))(planes, params)
    eps = 1e-6
    flat = planes.reshape(-1)
    for i in np.random.default_rng(0).choice(flat.size, 12, replace=False):
      plus = loss(flat.at[i].add(eps).reshape(planes.shape), params)
      minus = loss(flat.at[i].add(-eps).reshape(planes.shape), params)
      fd = (plus - minus) / (2 * eps)
      np.testing.assert_allclose(g_planes.reshape(-1)[i], fd, rtol=1e-5, atol=1e-9)
    flat_p, unravel = jax.flatten_util.ravel_pytree(params)
    g_flat = jax.flatten_util.ravel_pytree(g_params)[0]
    for i in np.random.default_rng(1).choice(flat_p.size, 8, replace=False):
      fd = (loss(planes, unravel(flat_p.at[i].add(eps))) -
            loss(planes, unravel(flat_p.at[i].add(-eps)))) / (2 * eps)
      np.testing.assert_allclose(g_flat[i], fd, rtol=1e-5, atol=1e-9)


def test_rays_missing_the_box_give_background_without_nans():
  decoder, params, planes = _small_scene(jnp.float32)
  origins = jnp.asarray([[-3.0, 2.0, 0.0], [0.0, 0.0, 3.0], [-3.0, 0.0, 0.0],
                         [5.0, 5.0, 5.0]])
  dirs = jnp.asarray([[1.0, 0.0, 0.0],   # parallel to the box, outside it
                      [0.0, 0.0, 1.0],   # pointing away
                      [0.0, 1.0, 0.0],   # zero components, outside
                      [1.0, 1.0, 1.0]])  # away, diagonal
  background = jnp.asarray([0.2, 0.5, 0.8])
  config = tp.RenderConfig(num_coarse=8, num_fine=8, normalize_depth=True)

  def loss(planes, params):
    out = tp.render_rays(decoder.apply, params, planes, origins, dirs, config,
                         key=jax.random.key(0), background=background)
    return jnp.sum(out["rgb"]) + jnp.sum(out["depth"]) + jnp.sum(out["alpha"]), out

  (value, out), grads = jax.value_and_grad(loss, (0, 1), has_aux=True)(planes, params)
  np.testing.assert_allclose(out["rgb"], jnp.broadcast_to(background, (4, 3)))
  np.testing.assert_array_equal(out["alpha"], 0.0)
  np.testing.assert_array_equal(out["depth"], 0.0)
  assert np.isfinite(float(value))
  for g in jax.tree.leaves(grads):
    assert bool(jnp.all(jnp.isfinite(g)))
    np.testing.assert_array_equal(g, 0.0)


def _cameras(batch, views, size):
  az = np.linspace(0.0, 300.0, batch * views)
  c2w = cam.orbit_cameras(az, np.full_like(az, 25.0), 2.2).reshape(batch, views, 4, 4)
  k = np.broadcast_to(cam.intrinsics_from_fov(np.deg2rad(45.0), size, size),
                      (batch, views, 4))
  return cam.Cameras(jnp.asarray(c2w), jnp.asarray(k), size, size)


def test_chunked_render_equals_unchunked_and_batches_are_independent():
  decoder, params, _ = _small_scene(jnp.float32, channels=4, size=8, hidden=16)
  planes = jax.random.normal(jax.random.key(5), (2, 3, 8, 8, 4))
  cameras = _cameras(2, 2, 8)
  base = tp.RenderConfig(num_coarse=8, num_fine=8, chunk=1 << 16)
  chunked = tp.RenderConfig(num_coarse=8, num_fine=8, chunk=37, remat=True)
  a = tp.render_triplane(decoder.apply, params, planes, cameras, base)
  b = tp.render_triplane(decoder.apply, params, planes, cameras, chunked)
  assert a["rgb"].shape == (2, 2, 8, 8, 3) and a["depth"].shape == (2, 2, 8, 8, 1)
  for k in ("rgb", "depth", "alpha"):
    np.testing.assert_allclose(a[k], b[k], atol=1e-6)
  # Scene 1 alone renders the same as in the batch.
  single = tp.render_triplane(decoder.apply, params, planes[1:], cameras[1:], base)
  np.testing.assert_allclose(single["rgb"][0], a["rgb"][1], atol=1e-6)
  # Gradients through lax.map + remat equal the unchunked ones.
  origins, dirs = cameras.rays()

  def loss(planes, config):
    out = tp.render_rays(decoder.apply, params, planes, origins, dirs, config)
    return jnp.mean(out["rgb"] ** 2)

  np.testing.assert_allclose(jax.grad(loss)(planes, base), jax.grad(loss)(planes, chunked),
                             rtol=1e-4, atol=1e-7)


def test_decoder_activations():
  decoder = tp.TriplaneDecoder(density_activation="exp", density_shift=0.0)
  params = decoder.init(jax.random.key(0), jnp.zeros((1, 6)))
  sigma, rgb = decoder.apply(params, jax.random.normal(jax.random.key(1), (5, 7, 6)) * 50)
  assert sigma.shape == (5, 7) and rgb.shape == (5, 7, 3)
  assert float(sigma.min()) > 0.0
  assert float(rgb.min()) >= -0.001 - 1e-6 and float(rgb.max()) <= 1.001 + 1e-6
  assert float(rgb.min()) < 0.0 and float(rgb.max()) > 1.0  # the 1.002 stretch reaches them
  assert len(params["params"]) == 4  # OpenLRM: 4 Dense layers


def test_decoder_hidden_activation_matches_a_numpy_mlp():
  x = np.asarray(jax.random.normal(jax.random.key(2), (9, 6)))
  for name, act in [("relu", lambda v: np.maximum(v, 0.0)),
                    ("softplus", lambda v: np.logaddexp(v, 0.0))]:
    decoder = tp.TriplaneDecoder(hidden=8, num_layers=3, hidden_activation=name)
    params = decoder.init(jax.random.key(0), jnp.zeros((1, 6)))
    sigma, _ = decoder.apply(params, jnp.asarray(x))
    h = x.astype(np.float64)
    for i in range(3):
      layer = params["params"][f"dense_{i}"]
      h = h @ np.asarray(layer["kernel"], np.float64) + np.asarray(layer["bias"], np.float64)
      h = act(h) if i < 2 else h
    np.testing.assert_allclose(sigma, np.logaddexp(h[:, 0] - 1.0, 0.0), rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="hidden_activation"):
    tp.TriplaneDecoder(hidden_activation="gelu").init(jax.random.key(0), jnp.zeros((1, 6)))
