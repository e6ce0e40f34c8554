"""The scene-level synthetic source (rooms) and the frame-window sampler with Long-LRM's
scene normalisation."""

import numpy as np
import pytest

from lrm_jax import cameras as cam
from lrm_jax.data import rooms
from lrm_jax.data import scene_sampling


@pytest.fixture(scope="module")
def room_example():
  src = rooms.SyntheticRooms(num_scenes=3, views_per_scene=12, resolution=16)
  return src, src[1]


def test_room_frames_are_exact_and_deterministic(room_example):
  src, ex = room_example
  assert ex["images"].shape == (12, 16, 16, 3) and ex["depths"].shape == (12, 16, 16, 1)
  assert np.all(ex["masks"] == 1.0) and np.all(ex["depths"] > 0)
  assert 0.0 <= ex["images"].min() and ex["images"].max() <= 1.0
  np.testing.assert_array_equal(src[1]["images"], ex["images"])
  room = src.scene(1)[0]
  hx, hy, hz = room.half_extents
  # Every pixel's depth lands inside the room, and most on its walls, floor or ceiling.
  o, d = cam.get_rays(ex["c2w"].astype(np.float64), ex["intrinsics"].astype(np.float64),
                      16, 16, normalize=False)
  p = (o + ex["depths"] * d).reshape(-1, 3)
  assert np.all(np.abs(p[:, 0]) <= hx + 1e-3) and np.all(np.abs(p[:, 1]) <= hy + 1e-3)
  assert np.all(p[:, 2] >= -1e-3) and np.all(p[:, 2] <= hz + 1e-3)
  on_face = ((np.abs(np.abs(p[:, 0]) - hx) < 1e-3) | (np.abs(np.abs(p[:, 1]) - hy) < 1e-3)
             | (np.abs(p[:, 2]) < 1e-3) | (np.abs(p[:, 2] - hz) < 1e-3))
  assert 0.3 < on_face.mean() < 1.0  # walls and objects both seen
  # A smooth path: consecutive cameras a small step apart.
  steps = np.linalg.norm(np.diff(ex["c2w"][:, :3, 3], axis=0), axis=-1)
  assert steps.max() < 0.2 * min(hx, hy) * 2 and steps.max() < 2.0 * steps.min() + 1e-3


def test_window_sampler_draws_from_a_window_and_normalises(room_example):
  _, ex = room_example
  sampler = scene_sampling.WindowSampler(3, 2, 16, 16, window=(5, 8))
  rng = np.random.default_rng(0)
  orig = {tuple(np.round(c[:3, 3], 4)) for c in ex["c2w"]}
  del orig
  for _ in range(4):
    out = sampler(ex, rng)
    ins, tgs = out["inputs"], out["targets"]
    assert ins["images"].shape == (3, 16, 16, 3) and tgs["images"].shape == (2, 16, 16, 3)
    # Mean input pose is the identity; the farthest input camera is at distance 1.
    np.testing.assert_allclose(cam.average_pose(ins["c2w"]), np.eye(4), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ins["c2w"][:, :3, 3], axis=-1).max(), 1.0,
                               rtol=1e-5)
  # Depths follow the scale: a pixel's point maps like the cameras do.
  fixed = scene_sampling.WindowSampler(3, 2, 16, 16, fixed_views=True, window=(5, 8))
  out = fixed(ex, rng)
  idx = scene_sampling.evenly(8, 3)
  _, transform, scale = cam.normalize_scene(ex["c2w"][idx])
  o, d = cam.get_rays(ex["c2w"][idx[0]], ex["intrinsics"][idx[0]], 16, 16, normalize=False)
  world = o[5, 7] + ex["depths"][idx[0], 5, 7] * d[5, 7]
  o2, d2 = cam.get_rays(out["inputs"]["c2w"][0], out["inputs"]["intrinsics"][0], 16, 16,
                        normalize=False)
  got = o2[5, 7] + out["inputs"]["depths"][0, 5, 7] * d2[5, 7]
  want = (transform[:3, :3] @ world + transform[:3, 3]) * scale
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
  with pytest.raises(ValueError, match="frame_window"):
    scene_sampling.WindowSampler(6, 4, 16, 16, window=(5, 8))(ex, rng)


def test_room_written_as_a_scene_list_reads_back(tmp_path):
  from lrm_jax.data import folder, scene_list  # pylint: disable=g-import-not-at-top
  src = rooms.SyntheticRooms(num_scenes=2, views_per_scene=4, resolution=16)
  paths = [src.write_scene(i, str(tmp_path)) for i in range(2)]
  scene_list.write_scene_list(str(tmp_path / "scenes.txt"), paths)
  back = folder.FolderScenes(str(tmp_path / "scenes.txt"))
  assert len(back) == 2
  ex, want = back[1], src[1]
  np.testing.assert_allclose(ex["c2w"], want["c2w"], atol=1e-5)
  np.testing.assert_allclose(ex["images"], want["images"], atol=1 / 255 + 1e-6)


def test_interpolated_path_passes_through_the_poses():
  c2w = cam.orbit_cameras(np.array([0.0, 40.0, 90.0]), np.array([10.0, 20.0, 30.0]), 2.0)
  path = cam.interpolate_path(c2w, 9)  # poses at 0, 4 and 8
  np.testing.assert_allclose(path[[0, 4, 8]], c2w, atol=1e-5)
  rot = path[:, :3, :3]
  np.testing.assert_allclose(rot @ np.swapaxes(rot, 1, 2), np.broadcast_to(np.eye(3),
                                                                           rot.shape), atol=1e-5)


def test_rooms_render_h_by_w_and_the_sampler_keeps_it():
  """``resolution=(H, W)`` (``data.input_hw``) renders H x W frames whose centre square is
  the square render of the cropped camera; a square given either way is the same frames;
  the window sampler gives H x W inputs and targets, square crops inside them."""
  wide = rooms.SyntheticRooms(num_scenes=1, views_per_scene=6, resolution=(16, 32))
  ex = wide[0]
  assert ex["images"].shape == (6, 16, 32, 3) and ex["depths"].shape == (6, 16, 32, 1)
  np.testing.assert_allclose(ex["intrinsics"][0, 2:], [16.0, 8.0])
  room, c2w, _ = wide.scene(0)
  centre = cam.crop_intrinsics(ex["intrinsics"][:2], 0, 8)
  rgb, depth = rooms.render_frames(room, c2w[:2], centre, 16, 16)
  np.testing.assert_allclose(ex["images"][:2, :, 8:24], rgb, atol=1e-5)
  np.testing.assert_allclose(ex["depths"][:2, :, 8:24], depth, rtol=1e-5)
  square = rooms.SyntheticRooms(num_scenes=1, views_per_scene=6, resolution=16)
  np.testing.assert_array_equal(square[0]["images"],
                                rooms.SyntheticRooms(num_scenes=1, views_per_scene=6,
                                                     resolution=(16, 16))[0]["images"])
  sampler = scene_sampling.WindowSampler(2, 2, (16, 32), (16, 32), target_crop=12,
                                         window=(4, 6))
  out = sampler(ex, np.random.default_rng(0))
  assert out["inputs"]["images"].shape == (2, 16, 32, 3)
  assert out["targets"]["images"].shape == (2, 12, 12, 3)
  np.testing.assert_allclose(out["inputs"]["intrinsics"][0], ex["intrinsics"][0])
  evaluation = scene_sampling.WindowSampler(2, 2, (8, 16), (8, 16), fixed_views=True,
                                            window=(4, 6))(ex, np.random.default_rng(0))
  assert evaluation["targets"]["images"].shape == (2, 8, 16, 3)
  np.testing.assert_allclose(evaluation["targets"]["intrinsics"][0],
                             ex["intrinsics"][0] / 2, rtol=1e-6)
  with pytest.raises(ValueError, match="aspect ratios differ"):
    scene_sampling.WindowSampler(2, 2, 16, 16, window=(4, 6))(ex, np.random.default_rng(0))
  with pytest.raises(ValueError, match="target_crop=20 does not fit"):
    scene_sampling.WindowSampler(2, 2, (16, 32), (16, 32), target_crop=20,
                                 window=(4, 6))(ex, np.random.default_rng(0))
