"""Gaussians: covariances, spherical harmonics, activations, unprojection, pruning."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation
from scipy.special import sph_harm_y

from lrm_jax import cameras as cam
from lrm_jax.models import grm, long_lrm
from lrm_jax.representations import gaussians as gl
from lrm_jax.representations import sh as sh_lib
from lrm_jax.render import projection


def unit_dirs(n, seed=0):
  d = np.random.default_rng(seed).normal(size=(n, 3))
  return d / np.linalg.norm(d, axis=-1, keepdims=True)


def test_covariance_is_rotated_scaled_and_psd():
  rng = np.random.default_rng(0)
  q = rng.normal(size=(64, 4)).astype(np.float32) * 3.0  # not normalised
  s = rng.uniform(0.01, 2.0, (64, 3)).astype(np.float32)
  cov = np.asarray(gl.covariance(jnp.asarray(q), jnp.asarray(s)))
  rot = Rotation.from_quat(q[:, [1, 2, 3, 0]]).as_matrix()  # scipy is xyzw
  expect = rot @ (s[:, :, None] ** 2 * np.eye(3)) @ np.swapaxes(rot, 1, 2)
  np.testing.assert_allclose(cov, expect, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(cov, np.swapaxes(cov, 1, 2), atol=1e-6)
  assert np.all(np.linalg.eigvalsh(cov.astype(np.float64)) > -1e-6)
  np.testing.assert_allclose(np.linalg.det(np.asarray(gl.quat_to_rotmat(jnp.asarray(q)))), 1.0,
                             rtol=1e-5)


def test_zero_quaternion_is_identity_with_finite_gradients():
  q = jnp.zeros((1, 4))
  np.testing.assert_allclose(gl.quat_to_rotmat(q)[0], np.eye(3))
  grad = jax.grad(lambda q: jnp.sum(gl.covariance(q, jnp.ones((1, 3)) * 0.1)))(q)
  assert np.all(np.isfinite(np.asarray(grad)))


def test_sh_degree0_is_the_dc_formula():
  dc = jnp.asarray(np.random.default_rng(1).normal(size=(10, 1, 3)), jnp.float32)
  rgb = sh_lib.eval_sh(dc, jnp.asarray(unit_dirs(10), jnp.float32))
  np.testing.assert_allclose(rgb, np.maximum(0.28209479177387814 * dc[:, 0] + 0.5, 0.0),
                             rtol=1e-6)
  np.testing.assert_allclose(sh_lib.sh_to_rgb(sh_lib.rgb_to_sh(jnp.asarray([0.2, 0.7, 1.0]))),
                             [0.2, 0.7, 1.0], rtol=1e-6)


def _real_sh_scipy(l, m, dirs):
  """Orthonormal real SH from scipy's complex ones (Condon-Shortley phase removed)."""
  theta = np.arccos(np.clip(dirs[:, 2], -1, 1))  # polar
  phi = np.arctan2(dirs[:, 1], dirs[:, 0])  # azimuth
  y = sph_harm_y(l, abs(m), theta, phi)
  if m == 0:
    return y.real
  sign = (-1.0) ** m
  return np.sqrt(2.0) * sign * (y.real if m > 0 else y.imag)


@pytest.mark.parametrize("degree", [1, 2, 3])
def test_sh_basis_matches_scipy_up_to_sign(degree):
  dirs = unit_dirs(200, seed=degree)
  basis = np.asarray(sh_lib.sh_basis(jnp.asarray(dirs), degree), np.float64)
  assert basis.shape == (200, (degree + 1) ** 2)
  for l in range(degree + 1):
    for m in range(-l, l + 1):
      k = l * l + l + m
      ref = _real_sh_scipy(l, m, dirs)
      sign = np.sign(np.dot(basis[:, k], ref))
      np.testing.assert_allclose(basis[:, k], sign * ref, atol=2e-6, err_msg=f"l={l} m={m}")


def test_sh_basis_is_orthonormal_on_the_sphere():
  dirs = np.asarray(cam.fibonacci_sphere(20000), np.float64)
  basis = np.asarray(sh_lib.sh_basis(jnp.asarray(dirs), 3), np.float64)
  gram = basis.T @ basis * (4 * np.pi / len(dirs))
  np.testing.assert_allclose(gram, np.eye(16), atol=2e-3)


def test_eval_sh_is_clamped_and_view_dependent():
  sh = np.zeros((2, 4, 3), np.float32)
  sh[:, 3, 0] = 2.0  # basis -C1 * x on the red channel
  dirs = np.asarray([[1.0, 0, 0], [-2.0, 0, 0]], np.float32)  # the second is not unit
  rgb = np.asarray(sh_lib.eval_sh(jnp.asarray(sh), jnp.asarray(dirs)))
  np.testing.assert_allclose(rgb[:, 0], [0.0, 0.5 + 2 * 0.4886025119029199], rtol=1e-6)
  np.testing.assert_allclose(rgb[:, 1:], 0.5)


def test_grm_activation_bounds_and_rays():
  raw = jnp.asarray(np.random.default_rng(2).normal(size=(3, 50, 12)) * 5, jnp.float32)
  dirs = jnp.asarray(unit_dirs(150, 3).reshape(3, 50, 3), jnp.float32)
  origins = jnp.ones((3, 50, 3))
  g = grm.grm_activation(raw, origins, dirs, near=0.5, far=3.0, min_scale=0.005, max_scale=0.05)
  dist = np.linalg.norm(np.asarray(g.means - origins), axis=-1)
  assert np.all((dist >= 0.5) & (dist <= 3.0))
  np.testing.assert_allclose(np.asarray(g.means - origins) / dist[..., None], dirs, atol=1e-5)
  assert np.all((np.asarray(g.scales) >= 0.005) & (np.asarray(g.scales) <= 0.05))
  assert np.all((np.asarray(g.opacities) > 0) & (np.asarray(g.opacities) < 1))
  np.testing.assert_allclose(np.linalg.norm(g.quats, axis=-1), 1.0, rtol=1e-6)
  np.testing.assert_allclose(g.rgb, jax.nn.sigmoid(raw[..., 9:12]), atol=1e-6)
  assert g.sh.shape == (3, 50, 1, 3) and g.sh_degree == 0


def test_long_lrm_activation_constants():
  k = 16
  raw = np.zeros((2, 9 + 3 * k), np.float32)
  raw[1, 5:8] = 100.0  # scale far above the clamp
  raw[:, 9:] = np.arange(3 * k)
  o, d = jnp.zeros((2, 3)), jnp.asarray([[0.0, 0, 1], [0, 1, 0]])
  g = long_lrm.activation(jnp.asarray(raw), o, d)
  np.testing.assert_allclose(g.means[0], [0, 0, 250.0], rtol=1e-6)  # sigmoid(0) * 500
  np.testing.assert_allclose(g.scales[0], np.exp(-6.9), rtol=1e-5)
  np.testing.assert_allclose(g.scales[1], np.exp(-1.2), rtol=1e-5)
  np.testing.assert_allclose(g.opacities[0], 1 / (1 + np.exp(2.0)), rtol=1e-6)
  np.testing.assert_array_equal(g.sh[0], np.arange(3 * k).reshape(k, 3))
  assert g.sh_degree == 3
  with pytest.raises(ValueError, match="channels"):
    long_lrm.activation(jnp.zeros((2, 12)), o, d)


def test_unprojected_gaussians_project_back_to_their_pixels():
  h, w = 6, 10
  c2w = cam.orbit_cameras(np.asarray([10.0, 100.0]), np.asarray([15.0, -5.0]), 2.0)
  k = np.tile(np.asarray([9.0, 8.5, 5.2, 2.9], np.float32), (2, 1))
  cams = cam.Cameras(jnp.asarray(c2w), jnp.asarray(k), h, w)
  depth = jnp.asarray(np.random.default_rng(4).uniform(1.0, 3.0, (2, h, w, 1)), jnp.float32)
  means = gl.pixel_aligned_means(cams, depth)  # [2 * h * w, 3]
  assert means.shape == (2 * h * w, 3)
  centers = cam.pixel_centers(h, w).reshape(-1, 2)
  for v in range(2):
    pts = means[v * h * w:(v + 1) * h * w]
    uv, _ = cam.project_points(pts, cams.c2w[v], cams.intrinsics[v])
    np.testing.assert_allclose(uv, centers, atol=2e-4)
    g = gl.Gaussians.from_rgb(pts, jnp.full_like(pts, 0.01), jnp.tile(jnp.eye(4)[:1], (h * w, 1)),
                              jnp.ones((h * w, 1)), jnp.zeros((h * w, 3)))
    proj = projection.project(g, cams.c2w[v], cams.intrinsics[v], h, w)
    np.testing.assert_allclose(proj.means2d, centers, atol=2e-4)
    dist = np.linalg.norm(np.asarray(pts - cams.c2w[v, :3, 3]), axis=-1)
    np.testing.assert_allclose(dist, np.asarray(depth[v]).reshape(-1), rtol=1e-5)


def _scene(batch, n, seed=5):
  rng = np.random.default_rng(seed)
  f = lambda *s: jnp.asarray(rng.uniform(size=batch + (n,) + s), jnp.float32)
  return gl.Gaussians(f(3), f(3), f(4), f(1), f(4, 3))


def test_prune_topk_keeps_the_most_opaque():
  g = _scene((2,), 20)
  kept = gl.prune_topk_by_opacity(g, 5)
  assert kept.means.shape == (2, 5, 3) and kept.sh.shape == (2, 5, 4, 3)
  for b in range(2):
    top = np.sort(np.asarray(g.opacities[b, :, 0]))[-5:]
    np.testing.assert_allclose(np.sort(np.asarray(kept.opacities[b, :, 0])), top)
    idx = np.argsort(np.asarray(g.opacities[b, :, 0]))[-5:]
    np.testing.assert_allclose(np.sort(np.asarray(kept.means[b, :, 0])),
                               np.sort(np.asarray(g.means[b, idx, 0])))


def test_prune_topk_with_random_share():
  g = _scene((3,), 40)
  kept = gl.prune_topk_by_opacity(g, 16, key=jax.random.key(0), random_fraction=0.25)
  assert kept.opacities.shape == (3, 16, 1)
  for b in range(3):
    ops = np.asarray(kept.opacities[b, :, 0])
    assert len(np.unique(ops)) == 16  # no Gaussian twice
    top12 = np.sort(np.asarray(g.opacities[b, :, 0]))[-12:]
    np.testing.assert_allclose(np.sort(ops[:12]), top12)
    assert np.all(ops[12:] < top12.min())  # the random share comes from the rest
  grad = jax.grad(lambda g: jnp.sum(gl.prune_topk_by_opacity(g, 4).means))(g)
  assert float(jnp.sum(grad.means)) == 3 * 4 * 3  # gradients reach the kept Gaussians


def test_prune_by_threshold_and_helpers():
  g = _scene((), 30)
  kept = gl.prune_by_threshold(g, 0.5)
  assert isinstance(kept.means, np.ndarray)
  np.testing.assert_array_equal(kept.opacities[:, 0], np.asarray(g.opacities)[:, 0][
      np.asarray(g.opacities)[:, 0] > 0.5])
  with pytest.raises(ValueError, match="one scene"):
    gl.prune_by_threshold(_scene((2,), 5))
  both = gl.concatenate([g, kept])
  assert both.num == 30 + kept.num
  assert g.with_sh_degree(3).sh.shape == (30, 16, 3)
  assert g.with_sh_degree(0).sh.shape == (30, 1, 3)
  assert _scene((2, 3), 5).reshape((6,)).sh.shape == (6, 5, 4, 3)
