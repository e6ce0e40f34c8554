"""pixelNeRF's data layouts (SRN, DVR/NMR, DTU) through the folder source: round trips of
scenes written in each layout, and bad input named by file and key."""

import os

import numpy as np
import pytest

from lrm_jax import cameras as cam
from lrm_jax.data import folder
from lrm_jax.data import pixelnerf_formats as pf
from lrm_jax.errors import DataError


def _scene(v=3, h=24, w=32, seed=0):
  rng = np.random.default_rng(seed)
  c2w = cam.orbit_cameras(np.linspace(0, 360, v, endpoint=False) + 10, np.full(v, 25.0),
                          1.7).astype(np.float64)
  k = np.asarray([[30.0, 30.0, w / 2, h / 2]] * v)
  k[:, 2] += np.arange(v) * 0.25  # principal points off centre survive the round trip
  images = rng.uniform(0.0, 0.9, (v, h, w, 3)).astype(np.float32)
  images[:, :3] = 1.0  # a white band: background for SRN's mask
  return images, c2w, k


def _read(root):
  src = folder.FolderScenes(root)
  return folder.read_scene_cameras(root), src[0]


def test_srn_round_trip(tmp_path):
  images, c2w, k = _scene()
  k[:, 2:] = (16.0, 12.0)  # SRN: one focal length and principal point per scene
  root = str(tmp_path / "cars_train" / "abc")
  pf.write_srn(root, images, c2w, k[0])
  scene, ex = _read(root)
  assert scene.layout == "srn" and len(folder.find_scenes(str(tmp_path / "cars_train"))) == 1
  np.testing.assert_allclose(ex["c2w"], c2w, atol=1e-6)
  np.testing.assert_allclose(ex["intrinsics"], k, atol=1e-5)
  np.testing.assert_allclose(ex["images"], images, atol=0.5 / 255 + 1e-6)
  np.testing.assert_array_equal(ex["masks"][:, :3], 0.0)  # pure white: background
  assert ex["masks"][:, 3:].mean() > 0.99


def test_srn_intrinsics_follow_the_image_size(tmp_path):
  images, c2w, k = _scene(v=1)
  pf.write_srn(str(tmp_path), images, c2w, k[0])
  with open(tmp_path / "intrinsics.txt", "w") as f:  # written for 2x the image size
    f.write(f"{2 * k[0, 0]} {2 * k[0, 2]} {2 * k[0, 3]} 0.\n0. 0. 0.\n1.\n48 64\n")
  np.testing.assert_allclose(folder.read_scene_cameras(str(tmp_path)).intrinsics, k,
                             atol=1e-5)


def test_dvr_round_trip(tmp_path):
  images, c2w, k = _scene()
  masks = (np.random.default_rng(1).uniform(size=images.shape[:3] + (1,)) > 0.5)
  pf.write_dvr(str(tmp_path), images, c2w, k, masks.astype(np.float32))
  scene, ex = _read(str(tmp_path))
  assert scene.layout == "dvr"
  np.testing.assert_allclose(ex["c2w"], c2w, atol=1e-5)
  np.testing.assert_allclose(ex["intrinsics"], k, atol=1e-4)
  np.testing.assert_allclose(ex["images"], images, atol=0.5 / 255 + 1e-6)
  np.testing.assert_array_equal(ex["masks"], masks)


def test_dtu_round_trip_with_its_normalisation(tmp_path):
  images, c2w, k = _scene(h=30, w=40)
  pf.write_dtu(str(tmp_path), images, c2w, k, scale=250.0, offset=(10.0, -20.0, 600.0))
  scene, ex = _read(str(tmp_path))
  assert scene.layout == "dtu"
  np.testing.assert_allclose(ex["c2w"], c2w, atol=1e-5)  # back in the normalised frame
  np.testing.assert_allclose(ex["intrinsics"], k, atol=1e-4)
  np.testing.assert_array_equal(ex["masks"], 1.0)
  # The decomposition is cv2.decomposeProjectionMatrix's: P = K [R | t] up to scale.
  p = np.load(tmp_path / "cameras.npz")["world_mat_1"][:3]
  kk, pose = pf.decompose_projection(-3.0 * p)
  np.testing.assert_allclose(kk[:2, :3], [[k[1, 0], 0, k[1, 2]], [0, k[1, 1], k[1, 3]]],
                             atol=1e-6)
  np.testing.assert_allclose(pose[:3, :3], c2w[1, :3, :3], atol=1e-6)


def test_bad_input_is_named_by_file_and_key(tmp_path):
  images, c2w, k = _scene(v=2)
  srn = str(tmp_path / "srn")
  pf.write_srn(srn, images, c2w, k[0])
  with open(os.path.join(srn, "pose", "000001.txt"), "w") as f:
    f.write("1 0 0 0 1 0 0 0 1 0\n")
  with pytest.raises(DataError, match=r"pose/000001.txt: .*16 \(4x4\) or 12"):
    folder.read_scene_cameras(srn)
  dvr = str(tmp_path / "dvr")
  pf.write_dvr(dvr, images, c2w, k)
  cams = dict(np.load(os.path.join(dvr, "cameras.npz")))
  del cams["camera_mat_1"]
  np.savez(os.path.join(dvr, "cameras.npz"), **cams)
  with pytest.raises(DataError, match=r"cameras.npz: missing 'camera_mat_1'"):
    folder.read_scene_cameras(dvr)
  dtu = str(tmp_path / "dtu")
  pf.write_dtu(dtu, images, c2w, k)
  cams = dict(np.load(os.path.join(dtu, "cameras.npz")))
  cams["world_mat_0"] = np.zeros((4, 4))
  np.savez(os.path.join(dtu, "cameras.npz"), **cams)
  with pytest.raises(DataError, match=r"cameras.npz: 'world_mat_0' is not a camera"):
    folder.read_scene_cameras(dtu)


def test_evaluation_protocols_pick_inputs_and_targets():
  from lrm_jax.data import pipeline
  ins, tgs = pf.protocol_views("srn", 251, 1)
  assert list(ins) == [64] and len(tgs) == 250 and 64 not in tgs
  assert list(pf.protocol_views("srn", 251, 2)[0]) == [64, 104]
  ins, tgs = pf.protocol_views("dtu", 49, 3)
  assert list(ins) == [25, 22, 28]
  assert not set(tgs) & (set(range(3, 8)) | set(range(16, 22)) | set(range(36, 40)) | {25})
  assert len(tgs) == 49 - 3 - 15
  with pytest.raises(ValueError, match="input view 104 .* 100 views"):
    pf.protocol_views("srn", 100, 2)
  # Through the pipeline's evaluation sampler: view 2 is the input, the rest are targets.
  sampler = pipeline.ViewSampler(1, 1, 8, 8, fixed_views=True, protocol="srn",
                                 protocol_inputs=(2,))
  v = 5
  ex = {"images": np.arange(v, dtype=np.float32)[:, None, None, None] * np.ones((v, 8, 8, 3)),
        "masks": np.ones((v, 8, 8, 1)), "depths": np.zeros((v, 8, 8, 1)),
        "c2w": np.tile(np.eye(4), (v, 1, 1)), "intrinsics": np.tile([8.0, 8, 4, 4], (v, 1)),
        "scene_id": 0}
  out = sampler(ex, np.random.default_rng(0))
  assert out["inputs"]["images"][:, 0, 0, 0].tolist() == [2.0]
  assert out["targets"]["images"][:, 0, 0, 0].tolist() == [0.0, 1.0, 3.0, 4.0]


def test_training_crops_inside_the_mask_box():
  from lrm_jax.data import pipeline
  v, s = 6, 32
  masks = np.zeros((v, s, s, 1), np.float32)
  masks[:, 20:24, 2:6] = 1.0  # a small object off centre
  ex = {"images": np.ones((v, s, s, 3), np.float32), "masks": masks,
        "depths": np.zeros((v, s, s, 1)), "c2w": np.tile(np.eye(4), (v, 1, 1)),
        "intrinsics": np.tile([32.0, 32, 16, 16], (v, 1)), "scene_id": 0}
  sampler = pipeline.ViewSampler(1, 5, s, s, target_crop=8, crop_in_mask=True)
  for seed in range(5):
    out = sampler(ex, np.random.default_rng(seed))
    assert np.all(out["targets"]["masks"].sum(axis=(1, 2, 3)) > 0)  # every crop sees it
    # Intrinsics follow the crop: the principal point moves by the window's corner.
    assert np.all(out["targets"]["intrinsics"][:, 2] >= 16 - (s - 8))
