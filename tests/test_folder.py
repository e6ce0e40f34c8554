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
