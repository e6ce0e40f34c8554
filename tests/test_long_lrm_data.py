"""Long-LRM's data formats: the scene list read by the folder source, the DL3DV converter
(undistortion, OpenGL -> OpenCV) and the DL3DV-140 evaluation protocol."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from lrm_jax import cameras as cam
from lrm_jax.data import dl3dv
from lrm_jax.data import dl3dv_eval
from lrm_jax.data import folder
from lrm_jax.data import scene_list
from lrm_jax.errors import DataError

KMEANS = "/work/shared/data/long_lrm/dl3dv_fold_8_kmeans_input_idx.json"


def _nerfstudio_scene(root, n=3, w=32, h=24, coeffs=(0.0, 0.0, 0.0, 0.0)):
  """A DL3DV-like scene: transforms.json at 4x the size of images_4."""
  os.makedirs(os.path.join(root, "images_4"))
  c2w = cam.orbit_cameras(np.linspace(0, 90, n), np.full(n, 20.0), 2.0)
  frames = []
  rng = np.random.default_rng(0)
  for i in range(n):
    name = f"frame_{i + 1:05d}.png"
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(
        os.path.join(root, "images_4", name))
    frames.append({"file_path": f"images/{name}",
                   "transform_matrix": cam.opencv_to_opengl(c2w[i]).tolist()})
  k1, k2, p1, p2 = coeffs
  meta = {"w": 4 * w, "h": 4 * h, "fl_x": 4 * 30.0, "fl_y": 4 * 31.0, "cx": 4 * 16.0,
          "cy": 4 * 12.0, "k1": k1, "k2": k2, "p1": p1, "p2": p2, "frames": frames[::-1]}
  with open(os.path.join(root, "transforms.json"), "w") as f:
    json.dump(meta, f)
  return c2w


def test_dl3dv_converter_and_scene_list_round_trip(tmp_path):
  src = tmp_path / "hash1" / "nerfstudio"
  c2w = _nerfstudio_scene(str(src))
  out = tmp_path / "out"
  dl3dv.main([f"--scenes={tmp_path}/*/nerfstudio", f"--out={out}"])
  listing = out / "scenes.txt"
  scenes = scene_list.read_scene_list(str(listing))
  assert [os.path.basename(s) for s in scenes] == ["hash1.json"]
  cams = folder.read_scene_cameras(scenes[0])
  np.testing.assert_allclose(cams.c2w, c2w, atol=1e-5)  # file-name order, OpenCV
  np.testing.assert_allclose(cams.intrinsics[0], [30.0, 31.0, 16.0, 12.0])
  assert (cams.height, cams.width) == (24, 32)
  source = folder.FolderScenes(str(listing))
  ex = source[0]
  assert ex["images"].shape == (3, 24, 32, 3)
  # No distortion: the pixels are the input's.
  first = np.asarray(Image.open(src / "images_4" / "frame_00001.png"), np.float32) / 255
  np.testing.assert_allclose(ex["images"][0], first, atol=1 / 255 + 1e-6)
  with open(tmp_path / "bad.txt", "w") as f:
    f.write("missing.json\n")
  with pytest.raises(DataError, match="line 1"):
    scene_list.read_scene_list(str(tmp_path / "bad.txt"))


def test_undistortion_inverts_the_distortion_model():
  h, w = 40, 50
  intr = (40.0, 40.0, 25.0, 20.0)
  coeffs = (-0.1, 0.02, 0.001, -0.002)
  v, u = np.mgrid[0:h, 0:w] + 0.5
  # A smooth pinhole image, and what the distorted lens sees of it.
  pinhole = lambda x, y: np.stack([np.sin(x), np.cos(y), x * y], -1)
  xn, yn = (u - intr[2]) / intr[0], (v - intr[3]) / intr[1]
  # Distorted image: at distorted pixel p, the pinhole value at undistort(p), by fixed point.
  xu, yu = xn.copy(), yn.copy()
  for _ in range(20):
    xd, yd = dl3dv.distort(xu, yu, *coeffs)
    xu, yu = xu + (xn - xd), yu + (yn - yd)
  seen = pinhole(xu, yu)
  got = dl3dv.undistort_image(seen, intr, coeffs)
  inner = (slice(5, -5), slice(5, -5))
  np.testing.assert_allclose(got[inner], pinhole(xn, yn)[inner], atol=5e-3)


def test_dl3dv_protocol_views():
  inputs, targets = dl3dv_eval.protocol_views(30, [1, 8, 13])
  np.testing.assert_array_equal(targets, [0, 16, 24])
  np.testing.assert_array_equal(inputs, [1, 8, 13])
  with pytest.raises(DataError, match="outside"):
    dl3dv_eval.protocol_views(10, [12])


@pytest.mark.skipif(not os.path.isfile(KMEANS), reason="the shared DL3DV index is absent")
def test_kmeans_index_reads_140_scenes():
  index = dl3dv_eval.load_input_index(KMEANS)
  assert len(index) == 140
  lists = next(iter(index.values()))
  assert len(lists[16]) == 16 and len(lists[32]) == 32
  # The k-means inputs avoid the targets (every 8th frame) in the first scene's lists.
  assert all(i % 8 for i in lists[16] + lists[32])
  inputs, targets = dl3dv_eval.protocol_views(max(lists[32]) + 1, lists[32])
  assert len(targets) == (max(lists[32]) + 8) // 8


class _Frames:
  """A fake scene source: 20 frames, frame i's pixels all equal i / 100."""

  def __len__(self):
    return 1

  def __getitem__(self, idx):
    n = 20
    c2w = cam.orbit_cameras(np.linspace(0, 60, n), np.full(n, 10.0), 2.0).astype(np.float32)
    images = np.broadcast_to((np.arange(n) / 100.0)[:, None, None, None],
                             (n, 8, 8, 3)).astype(np.float32)
    return {"images": images, "masks": np.ones((n, 8, 8, 1), np.float32),
            "depths": np.ones((n, 8, 8, 1), np.float32), "c2w": c2w,
            "intrinsics": np.tile(cam.intrinsics_from_fov(1.0, 8, 8), (n, 1)),
            "scene_id": np.int64(idx)}


def test_protocol_scenes_feed_the_ordered_window_sampler(tmp_path):
  from lrm_jax.data import scene_sampling  # pylint: disable=g-import-not-at-top
  index = tmp_path / "index.json"
  index.write_text(json.dumps([{"scene_name": "s0", "fold_8_kmeans_3_input": [3, 9, 13]}]))
  src = dl3dv_eval.ProtocolScenes(_Frames(), ["s0"], str(index), num_inputs=3, max_targets=2)
  ex = src[0]
  # Inputs 3, 9, 13, then the targets 0, 8, 16 capped evenly at 2: 0 and 16.
  np.testing.assert_allclose(ex["images"][:, 0, 0, 0] * 100, [3, 9, 13, 0, 16])
  sampler = scene_sampling.WindowSampler(3, 2, 8, 8, fixed_views=True, window=(64, 128),
                                         ordered=True)
  out = sampler(ex, np.random.default_rng(0))
  np.testing.assert_allclose(out["inputs"]["images"][:, 0, 0, 0] * 100, [3, 9, 13], atol=1e-4)
  np.testing.assert_allclose(out["targets"]["images"][:, 0, 0, 0] * 100, [0, 16], atol=1e-4)
  np.testing.assert_allclose(np.linalg.norm(out["inputs"]["c2w"][:, :3, 3], axis=-1).max(),
                             1.0, rtol=1e-5)
  with pytest.raises(DataError, match="no 16-view input list"):
    dl3dv_eval.ProtocolScenes(_Frames(), ["s0"], str(index), num_inputs=16)[0]
