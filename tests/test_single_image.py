"""Single-image LRM inputs: shapes, recentred and rescaled masks, canonical camera."""

import glob
import os

import numpy as np
import pytest
from PIL import Image

from lrm_jax import cameras as cam
from lrm_jax.config_loading import load_config
from lrm_jax.data import single_image
from lrm_jax.errors import DataError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGES = sorted(glob.glob(os.path.join(REPO, "..", "shared", "data", "single_images", "*.png")))


def _bbox(mask):
  m = mask > 0.5
  rows, cols = np.where(m.any(1))[0], np.where(m.any(0))[0]
  return rows[0], rows[-1] + 1, cols[0], cols[-1] + 1


def _check_centred_and_scaled(mask, fill, size):
  top, bottom, left, right = _bbox(mask)
  assert abs((top + bottom) / 2 - size / 2) <= 1.5
  assert abs((left + right) / 2 - size / 2) <= 1.5
  assert abs(max(bottom - top, right - left) / size - fill) <= 2.5 / size


@pytest.mark.skipif(not IMAGES, reason="../shared/data/single_images not present")
@pytest.mark.parametrize("path", IMAGES, ids=os.path.basename)
def test_rgba_images_are_masked_centred_and_scaled(path):
  config = load_config("configs/lrm.py:tiny")
  out = single_image.load_input(path, config)
  s = config.data.input_size
  assert out["images"].shape == (1, s, s, 3) and out["masks"].shape == (1, s, s, 1)
  assert out["c2w"].shape == (1, 4, 4) and out["intrinsics"].shape == (1, 4)
  for v in out.values():
    assert v.dtype == np.float32 and np.all(np.isfinite(v))
  assert 0.0 <= out["images"].min() and out["images"].max() <= 1.0
  _check_centred_and_scaled(out["masks"][0, ..., 0], config.data.frame_fill, s)
  # Outside the mask the image is the configured background (white).
  bg = out["masks"][0, ..., 0] < 1e-3
  np.testing.assert_allclose(out["images"][0][bg], 1.0, atol=1e-3)
  # OpenLRM's canonical camera at the training distance and field of view.
  d = float(np.mean(config.data.camera_radius))
  np.testing.assert_allclose(out["c2w"][0], cam.canonical_openlrm_source_c2w(d), atol=1e-6)
  np.testing.assert_allclose(out["c2w"][0, :3, 3], [0.0, -d, 0.0], atol=1e-6)
  np.testing.assert_allclose(out["c2w"][0, :3, 2], [0.0, 1.0, 0.0], atol=1e-6)  # looks +y
  fov = np.rad2deg(cam.focal_to_fov(out["intrinsics"][0, 0], s))
  assert abs(fov - np.mean(config.data.fov_deg)) < 1e-3


def test_rgb_on_uniform_background_and_background_override(tmp_path):
  """An RGB image on grey: the mask is estimated, the object recentred, composited on black."""
  img = np.full((120, 90, 3), 128, np.uint8)
  img[10:40, 5:25] = (200, 30, 30)  # an off-centre red box
  path = str(tmp_path / "box.jpg")
  Image.fromarray(img).save(path, quality=98)
  config = load_config("configs/lrm.py:tiny", ["data.background=(0.0, 0.0, 0.0)"])
  out = single_image.load_input(str(tmp_path), config)  # a folder: its first image
  s = config.data.input_size
  mask = out["masks"][0, ..., 0]
  _check_centred_and_scaled(mask, config.data.frame_fill, s)
  assert np.all(out["images"][0][mask < 1e-3] < 1e-3)  # black outside the object
  centre = out["images"][0, s // 2, s // 2]
  assert centre[0] > 0.7 and centre[1] < 0.2


def test_textured_rgb_without_background_is_the_whole_image(tmp_path):
  rng = np.random.default_rng(0)
  img = (rng.uniform(size=(50, 70, 3)) * 255).astype(np.uint8)
  path = str(tmp_path / "noise.png")
  Image.fromarray(img).save(path)
  out = single_image.load_input(path, load_config("configs/lrm.py:tiny"))
  assert np.all(out["masks"] == 1.0)
  assert out["images"].shape[1:3] == (64, 64)


def test_bad_inputs_raise(tmp_path):
  config = load_config("configs/lrm.py:tiny")
  with pytest.raises(DataError, match="missing.png"):
    single_image.load_input(str(tmp_path / "missing.png"), config)
  (tmp_path / "broken.png").write_bytes(b"not an image")
  with pytest.raises(ValueError, match="broken.png"):
    single_image.load_input(str(tmp_path / "broken.png"), config)
  empty = np.zeros((16, 16, 4), np.uint8)
  Image.fromarray(empty, "RGBA").save(tmp_path / "empty.png")
  with pytest.raises(ValueError, match="mask is empty"):
    single_image.load_input(str(tmp_path / "empty.png"), config)
