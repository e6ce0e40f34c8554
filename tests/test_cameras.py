"""Camera conventions: round trips, projection vs rays, Plücker invariance."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lrm_jax import cameras as cam


def random_c2w(n, seed=0):
  rng = np.random.default_rng(seed)
  eye = rng.normal(size=(n, 3)).astype(np.float32)
  eye = 2.3 * eye / np.linalg.norm(eye, axis=-1, keepdims=True)
  target = rng.uniform(-0.3, 0.3, size=(n, 3)).astype(np.float32)
  return cam.look_at(eye, target)


def random_intrinsics(n, h, w, seed=1):
  rng = np.random.default_rng(seed)
  f = rng.uniform(0.8, 1.5, size=n) * w
  return np.stack([f, f * rng.uniform(0.9, 1.1, n), w / 2 + rng.uniform(-3, 3, n),
                   h / 2 + rng.uniform(-3, 3, n)], -1).astype(np.float32)


def test_look_at_is_rigid_and_looks_at_target():
  c2w = random_c2w(16)
  R = c2w[:, :3, :3]
  np.testing.assert_allclose(R @ np.swapaxes(R, -1, -2), np.broadcast_to(np.eye(3), R.shape),
                             atol=1e-5)
  np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-5)
  # The principal point of each camera looks at the origin-ish target: optical axis +z.
  c = cam.look_at(np.asarray([[0.0, -2.0, 0.0]], np.float32))
  np.testing.assert_allclose(c[0, :3, 2], [0, 1, 0], atol=1e-6)  # forward +y
  np.testing.assert_allclose(c[0, :3, 1], [0, 0, -1], atol=1e-6)  # image down = world -z


def test_opengl_opencv_round_trip():
  c2w = random_c2w(8)
  gl = cam.opencv_to_opengl(c2w)
  np.testing.assert_allclose(cam.opengl_to_opencv(gl), c2w, atol=1e-6)
  # An OpenGL camera looks along its -z: that is the OpenCV +z.
  np.testing.assert_allclose(-gl[:, :3, 2], c2w[:, :3, 2], atol=1e-6)


def test_w2c_c2w_round_trip_and_inverse():
  c2w = random_c2w(8)
  w2c = cam.c2w_to_w2c(c2w)
  np.testing.assert_allclose(w2c @ c2w, np.broadcast_to(np.eye(4), c2w.shape), atol=1e-5)
  np.testing.assert_allclose(cam.w2c_to_c2w(w2c), c2w, atol=1e-5)
  np.testing.assert_allclose(np.asarray(cam.invert_rigid(jnp.asarray(c2w))),
                             np.linalg.inv(c2w), atol=1e-5)


def test_intrinsics_normalize_round_trip():
  k = random_intrinsics(5, 48, 64)
  n = cam.normalize_intrinsics(k, 48, 64)
  np.testing.assert_allclose(cam.denormalize_intrinsics(n, 48, 64), k, rtol=1e-6)


def test_openlrm_vector_round_trip():
  c2w, k = random_c2w(4), random_intrinsics(4, 32, 32)
  vec = cam.openlrm_camera_vector(c2w, k, 32, 32)
  assert vec.shape == (4, 16)
  c2, k2 = cam.from_openlrm_camera_vector(vec, 32, 32)
  np.testing.assert_allclose(c2, c2w, atol=1e-6)
  np.testing.assert_allclose(k2, k, rtol=1e-6)


@pytest.mark.parametrize("xp", [np, jnp])
def test_point_projects_onto_pixel_whose_ray_hits_it(xp):
  h, w = 24, 40
  c2w, k = random_c2w(3), random_intrinsics(3, h, w)
  o, d = cam.get_rays(xp.asarray(c2w), xp.asarray(k), h, w)
  rng = np.random.default_rng(0)
  for v in range(3):
    i, j = rng.integers(0, h), rng.integers(0, w)
    point = o[v, i, j] + 1.7 * d[v, i, j]
    uv, z = cam.project_points(point[None], xp.asarray(c2w[v]), xp.asarray(k[v]))
    np.testing.assert_allclose(np.asarray(uv[0]), [j + 0.5, i + 0.5], atol=1e-3)
    assert z[0] > 0
    assert int(np.floor(uv[0, 0])) == j and int(np.floor(uv[0, 1])) == i


def test_rays_depth_convention():
  # With normalize=False, o + t d lies at camera depth t.
  c2w, k = random_c2w(2), random_intrinsics(2, 8, 8)
  o, d = cam.get_rays(c2w, k, 8, 8, normalize=False)
  p = (o + 3.0 * d).reshape(2, -1, 3)
  _, z = cam.project_points(p, c2w, k)
  np.testing.assert_allclose(z, 3.0, rtol=1e-5)


def test_plucker_moment_constant_along_ray():
  c2w, k = random_c2w(2), random_intrinsics(2, 6, 6)
  o, d = cam.get_rays(c2w, k, 6, 6)
  p0 = cam.plucker(o, d)
  p1 = cam.plucker(o + 2.5 * d, 3.0 * d)  # another point on the ray, unnormalised direction
  np.testing.assert_allclose(p0, p1, atol=1e-5)
  assert cam.plucker_rays(c2w, k, 6, 6).shape == (2, 6, 6, 6)
  np.testing.assert_allclose(np.linalg.norm(p0[..., 3:], axis=-1), 1.0, atol=1e-6)
  # The moment is orthogonal to the direction.
  np.testing.assert_allclose(np.sum(p0[..., :3] * p0[..., 3:], -1), 0.0, atol=1e-5)


def test_resize_and_crop_follow_the_image():
  h, w = 32, 48
  c2w, k = random_c2w(1)[0], random_intrinsics(1, h, w)[0]
  point = np.asarray([[0.1, -0.2, 0.3]], np.float32)
  uv, _ = cam.project_points(point, c2w, k)
  k2 = cam.resize_intrinsics(k, (h, w), (16, 96))
  uv2, _ = cam.project_points(point, c2w, k2)
  np.testing.assert_allclose(uv2[0], uv[0] * [96 / w, 16 / h], rtol=1e-5)
  k3 = cam.crop_intrinsics(k, 5, 7)
  uv3, _ = cam.project_points(point, c2w, k3)
  np.testing.assert_allclose(uv3[0], uv[0] - [7, 5], atol=1e-4)
  cams = cam.Cameras(c2w[None], k[None], h, w).resize(16, 24).crop(2, 3, 8, 8)
  assert (cams.height, cams.width) == (8, 8)


def test_cameras_pytree_jit_and_rays():
  c = cam.Cameras(jnp.asarray(random_c2w(2)), jnp.asarray(random_intrinsics(2, 8, 8)), 8, 8)
  leaves = jax.tree.leaves(c)
  assert len(leaves) == 2
  out = jax.jit(lambda c: c.plucker())(c)
  assert out.shape == (2, 8, 8, 6)
  np.testing.assert_allclose(np.asarray(c.w2c @ c.c2w), np.broadcast_to(np.eye(4), (2, 4, 4)),
                             atol=1e-5)


def test_orbit_and_turntable_paths():
  c2w = cam.turntable_cameras(8, elevation_deg=30.0, radius=2.5)
  pos = c2w[:, :3, 3]
  np.testing.assert_allclose(np.linalg.norm(pos, axis=-1), 2.5, rtol=1e-5)
  np.testing.assert_allclose(pos[:, 2], 2.5 * np.sin(np.deg2rad(30)), rtol=1e-5)
  # Every camera looks at the origin: its optical axis is -position.
  np.testing.assert_allclose(c2w[:, :3, 2], -pos / 2.5, atol=1e-5)
  az = np.rad2deg(np.arctan2(pos[:, 1], pos[:, 0])) % 360
  np.testing.assert_allclose(np.diff(az)[:3], 45.0, atol=1e-3)


def test_object_normalization():
  pts = np.random.default_rng(0).uniform([-3, 1, 5], [1, 2, 9], size=(100, 3))
  c, s = cam.object_normalization(pts, extent=1.0)
  q = (pts - c) * s
  assert np.abs(q).max() == pytest.approx(1.0, rel=1e-5)
  np.testing.assert_allclose(0.5 * (q.min(0) + q.max(0)), 0, atol=1e-6)


def test_scene_normalization():
  rng = np.random.default_rng(0)
  eye = rng.normal(size=(10, 3)) * 3 + np.asarray([10, -4, 2])
  c2w = cam.look_at(eye.astype(np.float32), np.asarray([10, -4, 0], np.float32))
  new, transform, scale = cam.normalize_scene(c2w)
  avg = cam.average_pose(new)
  np.testing.assert_allclose(avg[:3, :3], np.eye(3), atol=1e-4)
  np.testing.assert_allclose(avg[:3, 3], 0, atol=1e-4)
  assert np.linalg.norm(new[:, :3, 3], axis=-1).max() == pytest.approx(1.0, rel=1e-5)
  R = new[:, :3, :3]
  np.testing.assert_allclose(R @ np.swapaxes(R, -1, -2), np.broadcast_to(np.eye(3), R.shape),
                             atol=1e-4)


def test_validate_c2w_rejects_bad_poses():
  bad = np.eye(4)
  bad[0, 0] = np.nan
  with pytest.raises(ValueError, match="non-finite"):
    cam.validate_c2w(bad, "cam.json")
  with pytest.raises(ValueError, match="not invertible"):
    cam.validate_c2w(np.diag([1.0, 0.0, 1.0, 1.0]), "cam.json")
