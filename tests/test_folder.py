"""Folder sources: the three camera layouts agree, and bad input names the file."""

import json
import os

import numpy as np
import pytest

from lrm_jax.data import folder, sources
from tests import data_fixtures as fx

H, W = 24, 32


@pytest.fixture()
def cams():
  return fx.scene_cameras(4, H, W)


@pytest.mark.parametrize("writer", ["blender_fov", "blender_focal", "opencv", "openlrm"])
def test_layouts_load_to_the_same_cameras(tmp_path, cams, writer):
  c2w, k = cams
  root = str(tmp_path / writer)
  if writer == "blender_fov":
    fx.write_blender(root, c2w, k, H, W, use_fov=True)
    k = k.copy()
    k[:, 1] = k[:, 0]
  elif writer == "blender_focal":
    fx.write_blender(root, c2w, k, H, W, use_fov=False)
  elif writer == "opencv":
    fx.write_opencv(root, c2w, k, H, W)
  else:
    fx.write_openlrm(root, c2w, k, H, W)
  scene = folder.read_scene_cameras(root)
  np.testing.assert_allclose(scene.c2w, c2w, atol=1e-5)
  np.testing.assert_allclose(scene.intrinsics, k, rtol=1e-5)
  assert (scene.height, scene.width) == (H, W)
  names, c2, k2, h, w = sources.load_cameras(root)
  assert len(names) == 4 and (h, w) == (H, W)
  ex = folder.FolderScenes(root)[0]
  assert ex["images"].shape == (4, H, W, 3) and ex["masks"].shape == (4, H, W, 1)
  # RGBA: alpha becomes the mask and the transparent part shows the background (white).
  assert ex["masks"][0, 0, 0, 0] == 0 and ex["masks"][0, H // 2, W // 2, 0] == 1
  np.testing.assert_allclose(ex["images"][0, 0, 0], 1.0)


def test_resize_follows_intrinsics(tmp_path, cams):
  c2w, k = cams
  root = fx.write_opencv(str(tmp_path / "s"), c2w, k, H, W)
  ex = folder.FolderScenes(root, resolution=12)[0]
  assert ex["images"].shape == (4, 12, 12, 3)
  # 32x24 -> centre 24x24 (left 4) -> 12x12 (x0.5).
  np.testing.assert_allclose(ex["intrinsics"][0],
                             [k[0, 0] / 2, k[0, 1] / 2, (k[0, 2] - 4) / 2, k[0, 3] / 2], rtol=1e-5)


def test_folder_of_scenes_and_splits(tmp_path, cams):
  c2w, k = cams
  for i in range(5):
    fx.write_opencv(str(tmp_path / f"scene{i}"), c2w, k, H, W)
  import ml_collections
  d = ml_collections.ConfigDict(dict(render_size=16, background=(1.0, 1.0, 1.0),
                                     eval_fraction=0.2))
  train = sources.make_source(f"folder:{tmp_path}", d, "train")
  ev = sources.make_source(f"folder:{tmp_path}", d, "eval")
  assert len(train) == 4 and len(ev) == 1
  assert ev[0]["images"].shape == (4, 16, 16, 3)


def _corrupt(root, name, fn):
  path = os.path.join(root, name)
  with open(path) as f:
    meta = json.load(f)
  fn(meta)
  with open(path, "w") as f:
    json.dump(meta, f)
  return path


def test_bad_input_errors_name_the_file(tmp_path, cams):
  c2w, k = cams
  # Missing image.
  root = fx.write_blender(str(tmp_path / "a"), c2w, k, H, W)
  os.remove(os.path.join(root, "train", "r_2.png"))
  with pytest.raises(folder.DataError, match=r"transforms.json: image './train/r_2' not found"):
    folder.read_scene_cameras(root)
  # Malformed JSON.
  root = fx.write_opencv(str(tmp_path / "b"), c2w, k, H, W)
  with open(os.path.join(root, "opencv_cameras.json"), "a") as f:
    f.write("{oops")
  with pytest.raises(folder.DataError, match="opencv_cameras.json: malformed JSON"):
    folder.read_scene_cameras(root)
  # Non-finite pose.
  root = fx.write_blender(str(tmp_path / "c"), c2w, k, H, W)
  _corrupt(root, "transforms.json",
           lambda m: m["frames"][1]["transform_matrix"][0].__setitem__(3, float("nan")))
  with pytest.raises(ValueError, match=r"transforms.json.*r_1.*non-finite"):
    folder.read_scene_cameras(root)
  # Non-invertible pose.
  root = fx.write_opencv(str(tmp_path / "d"), c2w, k, H, W)
  _corrupt(root, "opencv_cameras.json",
           lambda m: m["frames"][0].__setitem__("w2c", [[0] * 4] * 3 + [[0, 0, 0, 1]]))
  with pytest.raises(folder.DataError, match="frame_00000.*not invertible"):
    folder.read_scene_cameras(root)
  # Mismatched counts (OpenLRM).
  root = fx.write_openlrm(str(tmp_path / "e"), c2w, k, H, W)
  os.remove(os.path.join(root, "rgba", "003.png"))
  with pytest.raises(folder.DataError, match="3 images in rgba/ but 4 poses"):
    folder.read_scene_cameras(root)
  # Missing field.
  root = fx.write_opencv(str(tmp_path / "f"), c2w, k, H, W)
  _corrupt(root, "opencv_cameras.json", lambda m: m["frames"][2].pop("fx"))
  with pytest.raises(folder.DataError, match="missing field 'fx' in frame 2"):
    folder.read_scene_cameras(root)
  # Wrong shape and not a scene at all.
  root = fx.write_blender(str(tmp_path / "g"), c2w, k, H, W)
  _corrupt(root, "transforms.json", lambda m: m["frames"][0].__setitem__("transform_matrix",
                                                                         [[1, 0], [0, 1]]))
  with pytest.raises(folder.DataError, match="transform_matrix of frame 0 has shape"):
    folder.read_scene_cameras(root)
  with pytest.raises(folder.DataError, match="no camera file found|neither a scene"):
    folder.FolderScenes(str(tmp_path / "a" / "train"))
  with pytest.raises(folder.DataError, match="does not exist"):
    folder.FolderScenes(str(tmp_path / "nope"))


def test_resize_to_h_by_w_keeps_points_where_they_were(tmp_path):
  """A 16:9 frame (192x108, a stand-in for 1920x1080) to (32, 56) (as 960x544): the centre
  window of that aspect ratio (189x108) resized; a marked 3D point lands where the new
  intrinsics project it, and both follow the crop and the resize."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from lrm_jax import cameras as cam  # pylint: disable=g-import-not-at-top
  h, w, out_h, out_w = 108, 192, 32, 56
  c2w = cam.orbit_cameras(np.array([30.0]), np.array([20.0]), 2.5).astype(np.float32)
  k = np.array([[170.0, 168.0, 100.3, 50.7]], np.float32)  # off-centre principal point
  point = np.array([[0.3, -0.2, 0.25]], np.float32)
  (u, v), = np.asarray(cam.project_points(point, c2w[0], k[0])[0])
  rgb = np.ones((h, w, 3), np.float32)
  rows, cols = np.mgrid[0:h, 0:w] + 0.5
  rgb[(np.abs(cols - u) < 3) & (np.abs(rows - v) < 3)] = 0.0  # a dark 6x6 mark
  root = str(tmp_path / "capture")
  os.makedirs(os.path.join(root, "images"))
  Image.fromarray((rgb * 255).astype(np.uint8)).save(os.path.join(root, "images", "f.png"))
  with open(os.path.join(root, "opencv_cameras.json"), "w") as f:
    json.dump({"frames": [{"file_path": "images/f.png", "fx": 170.0, "fy": 168.0,
                           "cx": 100.3, "cy": 50.7, "w": w, "h": h,
                           "w2c": cam.invert_rigid(c2w[0].astype(np.float64)).tolist()}]}, f)
  assert folder.crop_window(h, w, (out_h, out_w)) == (0, 1, 108, 189)
  ex = folder.FolderScenes(root, resolution=(out_h, out_w))[0]
  assert ex["images"].shape == (1, out_h, out_w, 3) and ex["masks"].shape == (1, out_h, out_w, 1)
  np.testing.assert_allclose(ex["masks"], 1.0)
  sx, sy = out_w / 189, out_h / 108
  np.testing.assert_allclose(ex["intrinsics"][0], [170 * sx, 168 * sy, (100.3 - 1) * sx,
                                                   50.7 * sy], rtol=1e-5)
  (u2, v2), = np.asarray(cam.project_points(point, ex["c2w"][0], ex["intrinsics"][0])[0])
  np.testing.assert_allclose([u2, v2], [(u - 1) * sx, v * sy], rtol=1e-5)
  # The mark's centre (darkness-weighted) in the resized image is at the projection.
  dark = np.clip(1.0 - ex["images"][0].mean(-1), 0.0, None)
  r2, c2 = np.mgrid[0:out_h, 0:out_w] + 0.5
  centre = [np.sum(dark * c2) / dark.sum(), np.sum(dark * r2) / dark.sum()]
  np.testing.assert_allclose(centre, [u2, v2], atol=0.15)  # a 1-pixel crop offset is 0.3
  # The same (H, W) from a 1920x1080 capture: the centre 1906x1080, then 960x544.
  assert folder.crop_window(1080, 1920, (544, 960)) == (0, 7, 1080, 1906)
  # A square size is the centre square, as an int gives it.
  assert folder.crop_window(h, w, (32, 32)) == folder.crop_window(h, w, 32) == (0, 42, 108, 108)
