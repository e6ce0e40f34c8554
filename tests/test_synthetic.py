"""Tests of the procedural-object source and its ray caster (lrm_jax.data.synthetic)."""

import pickle

import numpy as np
import pytest

from lrm_jax import cameras
from lrm_jax.data import shading
from lrm_jax.data import synthetic

KEYS = {"images", "masks", "depths", "c2w", "intrinsics", "scene_id", "has_depth"}


# ----------------------------------------------------------------------------------------
# Independent signed distance functions (local frames), used to check the ray caster.
# ----------------------------------------------------------------------------------------


def _sdf_sphere(p, s):
  return np.linalg.norm(p, axis=-1) - s[0]


def _sdf_box(p, s):
  q = np.abs(p) - s
  return np.linalg.norm(np.maximum(q, 0.0), axis=-1) + np.minimum(q.max(-1), 0.0)


def _sdf_cylinder(p, s):
  q = np.stack([np.hypot(p[..., 0], p[..., 1]) - s[0], np.abs(p[..., 2]) - s[2]], -1)
  return np.linalg.norm(np.maximum(q, 0.0), axis=-1) + np.minimum(q.max(-1), 0.0)


def _sdf_capsule(p, s):
  axis = np.zeros_like(p)
  axis[..., 2] = np.clip(p[..., 2], -s[2], s[2])
  return np.linalg.norm(p - axis, axis=-1) - s[0]


_SDF = {synthetic.SPHERE: _sdf_sphere, synthetic.BOX: _sdf_box,
        synthetic.CYLINDER: _sdf_cylinder, synthetic.CAPSULE: _sdf_capsule}


def _union_sdf(obj, points):
  """Signed distance ``[...]`` of world points ``[..., 3]`` to the object."""
  dists = [_SDF[int(k)]((points - obj.centers[i]) @ obj.rotations[i], obj.sizes[i])
           for i, k in enumerate(obj.kinds)]
  return np.min(dists, axis=0)


def _single(kind, sizes, rotation=np.eye(3), center=(0.0, 0.0, 0.0), pattern=0):
  return synthetic.SyntheticObject(
      kinds=np.asarray([kind], np.int32), rotations=np.asarray(rotation, float)[None],
      centers=np.asarray(center, float)[None], sizes=np.asarray(sizes, float)[None],
      patterns=np.asarray([pattern], np.int32),
      colors=np.asarray([[[0.8, 0.3, 0.1], [0.1, 0.2, 0.9]]]), frequencies=np.asarray([4.0]))


def _unit_rays(c2w, intrinsics, h, w):
  o, d = cameras.get_rays(np.asarray(c2w, np.float64), np.asarray(intrinsics, np.float64), h, w)
  return o.reshape(o.shape[:-3] + (-1, 3)), d.reshape(d.shape[:-3] + (-1, 3))


def _check_views(obj, c2w, intrinsics, depth, h, w, tol=2e-5):
  """Hit pixels lie on the object's surface with nothing in front; misses hit nothing."""
  rng = np.random.default_rng(0)
  for v in range(c2w.shape[0]):
    o, d = _unit_rays(c2w[v], intrinsics[v], h, w)  # [N, 3] each
    z = depth[v].reshape(-1).astype(np.float64)
    hit = z > 0
    forward = np.asarray(c2w[v], np.float64)[:3, 2]
    t = z / (d @ forward)  # distance along the unit ray
    points = o + d * t[:, None]
    # Depth is z along the camera axis: projecting the point gives it back.
    uv, zz = cameras.project_points(points[hit], np.asarray(c2w[v], np.float64),
                                    np.asarray(intrinsics[v], np.float64))
    np.testing.assert_allclose(zz, z[hit], rtol=1e-6)
    centres = cameras.pixel_centers(h, w).reshape(-1, 2)[hit]
    np.testing.assert_allclose(uv, centres, atol=1e-3)
    assert np.all(np.abs(_union_sdf(obj, points[hit])) < tol)
    # Samples in front of every hit, and along every missed ray, are outside the object.
    s = np.sort(rng.uniform(0.0, 1.0, 96))
    far = np.where(hit, t * 0.999, np.linalg.norm(o, axis=-1) + 1.0)
    samples = o[:, None] + d[:, None] * (far[:, None] * s)[..., None]  # [N, S, 3]
    assert np.all(_union_sdf(obj, samples) > -1e-9)


# ----------------------------------------------------------------------------------------
# Tests.
# ----------------------------------------------------------------------------------------


def test_example_shapes_and_ranges():
  src = synthetic.SyntheticObjects(num_scenes=4, views_per_scene=5, resolution=64)
  ex = src[1]
  assert set(ex) == KEYS
  assert ex["images"].shape == (5, 64, 64, 3) and ex["images"].dtype == np.float32
  assert ex["masks"].shape == (5, 64, 64, 1) and ex["masks"].dtype == np.float32
  assert ex["depths"].shape == (5, 64, 64, 1) and ex["depths"].dtype == np.float32
  assert ex["c2w"].shape == (5, 4, 4) and ex["c2w"].dtype == np.float32
  assert ex["intrinsics"].shape == (5, 4) and ex["intrinsics"].dtype == np.float32
  assert ex["scene_id"].dtype == np.int64 and int(ex["scene_id"]) == 1
  assert 0.0 <= ex["images"].min() and ex["images"].max() <= 1.0
  assert set(np.unique(ex["masks"])) <= {0.0, 1.0} and ex["masks"].sum() > 0
  np.testing.assert_array_equal(ex["depths"] > 0, ex["masks"] > 0)
  np.testing.assert_array_equal(ex["images"][ex["masks"][..., 0] == 0], 1.0)  # background
  np.testing.assert_allclose(ex["c2w"][:, 3], np.tile([0, 0, 0, 1], (5, 1)))
  assert len(src) == 4 and "SyntheticObjects(split='train'" in repr(src)


def test_single_view_512():
  src = synthetic.SyntheticObjects(split="val", num_scenes=1, views_per_scene=1,
                                   resolution=512, background=(0.0, 0.0, 0.0))
  ex = src[0]
  assert ex["images"].shape == (1, 512, 512, 3) and ex["depths"].shape == (1, 512, 512, 1)
  np.testing.assert_array_equal(ex["images"][ex["masks"][..., 0] == 0], 0.0)
  np.testing.assert_allclose(ex["intrinsics"][0, 2:], [256.0, 256.0])


def test_deterministic_and_picklable():
  a = synthetic.SyntheticObjects(num_scenes=10, views_per_scene=3, resolution=64, seed=3)
  b = pickle.loads(pickle.dumps(synthetic.SyntheticObjects(num_scenes=10, views_per_scene=3,
                                                           resolution=64, seed=3)))
  for idx in (7, 2, 7):
    ea, eb = a[idx], b[np.int64(idx)]
    for k in KEYS:
      np.testing.assert_array_equal(ea[k], eb[k])
  assert not np.array_equal(a[7]["images"], synthetic.SyntheticObjects(
      num_scenes=10, views_per_scene=3, resolution=64, seed=4)[7]["images"])


def test_same_scene_at_any_resolution():
  lo = synthetic.SyntheticObjects(num_scenes=3, views_per_scene=2, resolution=64)
  hi = synthetic.SyntheticObjects(num_scenes=3, views_per_scene=2, resolution=128)
  obj_lo, c2w_lo, k_lo = lo.scene(2)
  obj_hi, c2w_hi, k_hi = hi.scene(2)
  np.testing.assert_array_equal(obj_lo.centers, obj_hi.centers)
  np.testing.assert_array_equal(c2w_lo, c2w_hi)
  np.testing.assert_allclose(k_hi, 2.0 * k_lo, rtol=1e-6)


def test_splits_are_disjoint():
  srcs = {s: synthetic.SyntheticObjects(split=s, num_scenes=20, views_per_scene=2)
          for s in ("train", "val", "test")}
  for idx in range(20):
    objs = {s: src.scene(idx)[0] for s, src in srcs.items()}
    for s1, s2 in (("train", "val"), ("train", "test"), ("val", "test")):
      a, b = objs[s1], objs[s2]
      same = (a.num_primitives == b.num_primitives and np.allclose(a.centers, b.centers)
              and np.allclose(a.sizes, b.sizes))
      assert not same, (idx, s1, s2)
  with pytest.raises(ValueError, match="split"):
    synthetic.SyntheticObjects(split="training")


def test_index_errors():
  src = synthetic.SyntheticObjects(num_scenes=3, views_per_scene=1)
  with pytest.raises(IndexError):
    src[3]
  assert int(src[-1]["scene_id"]) == 2


def test_objects_fit_and_never_touch_the_border():
  src = synthetic.SyntheticObjects(num_scenes=50, views_per_scene=12, resolution=64)
  kinds = set()
  for idx in range(len(src)):
    obj, _, _ = src.scene(idx)
    kinds.update(int(k) for k in obj.kinds)
    assert obj.bounding_radius() <= src.max_radius + 1e-9 <= 1.0 + 1e-9
    m = src[idx]["masks"][..., 0]  # [V, H, W]
    assert m.sum(axis=(1, 2)).min() > 0, idx  # the object is in every view
    border = m[:, 0].sum() + m[:, -1].sum() + m[:, :, 0].sum() + m[:, :, -1].sum()
    assert border == 0, idx
  assert kinds == {0, 1, 2, 3}


def test_worst_case_ball_fits_with_margin():
  # The largest allowed object ball, seen from the nearest camera with the narrowest field.
  src = synthetic.SyntheticObjects(num_scenes=1, resolution=64)
  obj = _single(synthetic.SPHERE, [src.max_radius] * 3)
  c2w = cameras.orbit_cameras(np.asarray([0.0, 45.0]), np.asarray([0.0, 60.0]),
                              src.camera_radius[0])
  k = np.tile(cameras.intrinsics_from_fov(np.deg2rad(src.fov_deg[0]), 64, 64), (2, 1))
  _, mask, _ = synthetic.render_views(obj, c2w, k, 64, 64)
  m = mask[..., 0]
  assert m[:, :2].sum() + m[:, -2:].sum() + m[:, :, :2].sum() + m[:, :, -2:].sum() == 0
  width = m.max(axis=1).sum(-1)  # [V] columns covered
  assert np.all((width >= 54) & (width <= 58))  # ~90% of the image


def test_sphere_depth_is_analytic():
  center, radius = np.asarray([0.1, -0.2, 0.15]), 0.4
  obj = _single(synthetic.SPHERE, [radius] * 3, center=center)
  c2w = cameras.orbit_cameras(np.asarray([10.0, 130.0, 250.0]), np.asarray([-15.0, 5.0, 50.0]),
                              np.asarray([2.0, 2.3, 2.6])).astype(np.float32)
  intrinsics = np.stack([cameras.intrinsics_from_fov(np.deg2rad(f), 64, 64)
                         for f in (45.0, 50.0, 60.0)])
  _, mask, depth = synthetic.render_views(obj, c2w, intrinsics, 64, 64)
  o, d = _unit_rays(c2w, intrinsics, 64, 64)  # [V, N, 3]
  oc = o - center
  b = np.einsum("vni,vni->vn", oc, d)
  disc = b * b - (np.einsum("vni,vni->vn", oc, oc) - radius**2)
  t = -b - np.sqrt(np.maximum(disc, 0.0))
  z = t * np.einsum("vni,vi->vn", d, c2w[:, :3, 2].astype(np.float64))
  hit = disc > 0
  certain = np.abs(disc) > 1e-4  # away from the silhouette's floating-point edge
  np.testing.assert_array_equal(mask.reshape(3, -1)[certain] > 0, hit[certain])
  np.testing.assert_allclose(depth.reshape(3, -1)[hit & certain], z[hit & certain], rtol=1e-6)


@pytest.mark.parametrize("kind,sizes", [(synthetic.SPHERE, [0.45, 0.45, 0.45]),
                                        (synthetic.BOX, [0.2, 0.45, 0.3]),
                                        (synthetic.CYLINDER, [0.3, 0.3, 0.5]),
                                        (synthetic.CAPSULE, [0.25, 0.25, 0.35])])
def test_each_primitive_depth_on_surface(kind, sizes):
  rng = np.random.default_rng(kind)
  obj = _single(kind, sizes, synthetic._random_rotations(rng, 1)[0], center=[0.05, 0.0, -0.1])
  c2w, intrinsics = synthetic.sample_cameras(rng, 4, 48)
  # Include an axis-aligned camera: rays parallel to faces and to the cylinder axis.
  c2w[0] = cameras.look_at(obj.rotations[0] @ np.asarray([0.0, 0.0, 2.2]) + obj.centers[0],
                           obj.centers[0])
  _, mask, depth = synthetic.render_views(obj, c2w, intrinsics, 48, 48)
  assert mask.sum(axis=(1, 2, 3)).min() > 20
  _check_views(obj, c2w, intrinsics, depth, 48, 48)


def test_random_objects_nearest_hit_and_masks():
  src = synthetic.SyntheticObjects(split="test", num_scenes=8, views_per_scene=2,
                                   resolution=40)
  for idx in range(len(src)):
    obj, c2w, intrinsics = src.scene(idx)
    _, _, depth = synthetic.render_views(obj, c2w, intrinsics, 40, 40)
    _check_views(obj, c2w, intrinsics, depth, 40, 40)


def test_unlit_patterns_and_shading():
  obj = _single(synthetic.BOX, [0.3, 0.3, 0.3], pattern=0)
  c2w = cameras.orbit_cameras(np.asarray([30.0]), np.asarray([20.0]), 2.2)
  k = cameras.intrinsics_from_fov(np.deg2rad(50.0), 32, 32)[None]
  flat, mask, _ = synthetic.render_views(obj, c2w, k, 32, 32, lit=False)
  on = mask[0, ..., 0] > 0
  np.testing.assert_allclose(flat[0][on], np.tile(obj.colors[0, 0], (on.sum(), 1)), atol=1e-6)
  lit, _, _ = synthetic.render_views(obj, c2w, k, 32, 32)
  assert np.all(lit[0][on] <= flat[0][on] + 1e-6)
  assert lit[0][on].std(0).max() > 0.02  # faces turned differently shade differently
  checker = _single(synthetic.BOX, [0.3, 0.3, 0.3], pattern=2)
  flat, _, _ = synthetic.render_views(checker, c2w, k, 32, 32, lit=False)
  assert len(np.unique(flat[0][on].round(6), axis=0)) == 2


def test_shading_is_two_sided_and_bounded():
  n = np.asarray([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0]])
  view = np.asarray([[0.0, 0.0, -1.0], [0.0, 0.0, -1.0]])
  rgb = shading.shade(np.ones((2, 3)), n, view)
  np.testing.assert_allclose(rgb[0], rgb[1])
  assert rgb.max() <= 1.0
  np.testing.assert_allclose(shading.composite(np.zeros((1, 1, 3)), np.zeros((1, 1, 1)),
                                               (0.2, 0.4, 0.6)), [[[0.2, 0.4, 0.6]]])


def test_orbit_views_form_the_structured_input_ring():
  rng = np.random.default_rng(3)
  c2w, k = synthetic.sample_cameras(rng, 7, 32, (2.0, 2.6), (45.0, 60.0), orbit_views=4)
  eye = c2w[:4, :3, 3].astype(np.float64)
  radius = np.linalg.norm(eye, axis=-1)
  np.testing.assert_allclose(radius, 2.3, rtol=1e-5)
  np.testing.assert_allclose(np.degrees(np.arcsin(eye[:, 2] / radius)), 20.0, atol=1e-3)
  az = np.degrees(np.arctan2(eye[:, 1], eye[:, 0]))
  np.testing.assert_allclose(np.diff(np.unwrap(np.radians(az))) % (2 * np.pi), np.pi / 2,
                             atol=1e-4)
  np.testing.assert_allclose(k[:4, 0], k[0, 0])  # one field of view on the ring
  with pytest.raises(ValueError, match="orbit_views"):
    synthetic.sample_cameras(rng, 3, 32, orbit_views=4)


def test_supersampling_is_the_box_filter_of_a_finer_render():
  src = synthetic.SyntheticObjects(num_scenes=2, views_per_scene=2, resolution=16)
  obj, c2w, k = src.scene(1)
  rgb, mask, depth = synthetic.render_views(obj, c2w, k, 16, 16, supersample=2)
  fine_k = cameras.resize_intrinsics(k, (16, 16), (32, 32))
  f_rgb, f_mask, f_depth = synthetic.render_views(obj, c2w, fine_k, 32, 32)
  box = lambda x: x.reshape(2, 16, 2, 16, 2, -1).mean(axis=(2, 4))
  np.testing.assert_allclose(mask, box(f_mask), atol=1e-6)
  np.testing.assert_allclose(rgb, box(f_rgb), atol=1e-5)  # white background: linear
  covered = mask > 0
  np.testing.assert_allclose(depth[covered], box(f_depth * f_mask)[covered] / mask[covered],
                             rtol=1e-5)
  assert np.all(depth[~covered] == 0)
  assert np.any((mask > 0) & (mask < 1))  # soft edges
