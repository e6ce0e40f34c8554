"""The animatable synthetic heads (data/heads.py): shapes, expressions change the image
where expected, landmarks lie on the mesh, identity splits, determinism."""

import numpy as np
import pytest

from lrm_jax import cameras
from lrm_jax.data import heads, sources
from lrm_jax.config_loading import load_config


def _front(res=32):
  c2w = cameras.orbit_cameras([0.0], [0.0], 1.8).astype(np.float32)
  k = cameras.intrinsics_from_fov(np.deg2rad(45.0), res, res)[None].astype(np.float32)
  return c2w, k


def test_example_fields_and_shapes():
  src = heads.SyntheticHeads(num_scenes=3, views_per_scene=6, num_input_views=4, resolution=16)
  ex = src[1]
  v, e, k = 6, heads.EXPRESSION_DIMS, heads.NUM_LANDMARKS
  assert ex["images"].shape == (v, 16, 16, 3) and ex["positions"].shape == (v, 16, 16, 3)
  assert ex["expression"].shape == (v, e) and ex["target_expression"].shape == (v, e)
  assert ex["landmarks"].shape == (v, k, 3)
  # Inputs at different expressions; the targets share the target's.
  assert len({tuple(c) for c in ex["expression"][:4]}) == 4
  np.testing.assert_array_equal(ex["expression"][4:], ex["target_expression"][4:])
  np.testing.assert_array_equal(ex["target_expression"][0], ex["target_expression"][5])
  # Positions are the unprojected depth: each foreground point re-projects onto its pixel.
  on = ex["depths"][0, ..., 0] > 0
  uv, z = cameras.project_points(ex["positions"][0][on][None], ex["c2w"][0], ex["intrinsics"][0])
  np.testing.assert_allclose(z[0], ex["depths"][0, ..., 0][on], rtol=1e-4)
  rows, cols = np.nonzero(on)
  np.testing.assert_allclose(uv[0], np.stack([cols + 0.5, rows + 0.5], -1), atol=1e-3)
  assert np.all(ex["positions"][0][~on] == 0)


def test_jaw_darkens_the_mouth_and_blink_colours_the_lids():
  ident = heads.sample_identity(np.random.default_rng(0))
  c2w, k = _front(48)
  render = lambda code: heads.render_head(heads.build_head(ident, code), c2w, k, 48)[0][0]
  neutral = render(heads.neutral())
  jaw = render(np.eye(heads.EXPRESSION_DIMS)[heads.JAW])
  blink = render(np.eye(heads.EXPRESSION_DIMS)[heads.BLINK])
  lower, upper = slice(24, 40), slice(8, 24)  # rows: the mouth is below the centre
  dark = lambda im: np.sum(im.sum(-1) < 0.4)
  assert dark(jaw[lower]) >= dark(neutral[lower]) + 8  # the mouth interior shows
  # The jaw leaves the upper face alone; the blink changes it (lids over the eyes).
  assert np.abs(jaw[upper] - neutral[upper]).max() < 0.05
  assert np.abs(blink[upper] - neutral[upper]).sum() > 3.0
  assert np.abs(blink[30:] - neutral[30:]).max() < 0.05  # the mouth region


def test_landmarks_project_onto_the_mesh():
  src = heads.SyntheticHeads(num_scenes=2, views_per_scene=6, resolution=32)
  ex = src[0]
  lm = ex["landmarks"]
  vis = lm[..., 2] > 0.5
  assert vis.mean() > 0.4
  rows = np.floor(lm[..., 1]).astype(int).clip(0, 31)
  cols = np.floor(lm[..., 0]).astype(int).clip(0, 31)
  on_mask = ex["masks"][np.arange(6)[:, None], rows, cols, 0] > 0.5
  assert np.all(on_mask[vis])


def test_splits_are_disjoint_identities_and_examples_are_deterministic():
  train = heads.SyntheticHeads("train", num_scenes=4, resolution=16)
  val = heads.SyntheticHeads("val", num_scenes=4, resolution=16)
  a = {tuple(np.round(train.identity(i).radii, 6)) for i in range(4)}
  b = {tuple(np.round(val.identity(i).radii, 6)) for i in range(4)}
  assert not a & b
  again = heads.SyntheticHeads("train", num_scenes=4, resolution=16)
  for key, x in train[2].items():
    np.testing.assert_array_equal(x, again[2][key])
  shared = heads.SyntheticHeads("train", num_scenes=4, resolution=16, num_identities=2)
  np.testing.assert_array_equal(shared.identity(0).skin, shared.identity(2).skin)


def test_the_source_is_registered_and_checks_views():
  config = load_config("configs/avat3r.py:micro")
  src = sources.make_source("heads", config.data, "eval")
  assert len(src) == config.data.num_eval_scenes
  with pytest.raises(ValueError, match="views_per_scene"):
    heads.SyntheticHeads(views_per_scene=4, num_input_views=4)
  with pytest.raises(ValueError, match="expression code"):
    heads.build_head(heads.sample_identity(np.random.default_rng(0)), np.zeros(3))


def test_head_folder_round_trip_and_clear_errors(tmp_path):
  import os
  from lrm_jax.data import head_folder
  src = heads.SyntheticHeads(num_scenes=1, views_per_scene=6, num_input_views=4, resolution=16)
  ex = src[0]
  sub = head_folder.write_example(ex, str(tmp_path))
  config = load_config("configs/avat3r.py:micro")
  folder = sources.make_source(f"head_folder:{tmp_path}", config.data, "train")
  got = folder[0]
  assert got["images"].shape == (6, 16, 16, 3) and got["positions"].shape == (6, 16, 16, 3)
  # Inputs at different frames; targets at the target frame, whose code they carry.
  assert len({tuple(c) for c in got["expression"][:4]}) == 4
  np.testing.assert_array_equal(got["expression"][4:], got["target_expression"][4:])
  # Views come back as written (PNG: 8 bits), positions derived from depth exactly.
  for i in range(6):
    j = [n for n in range(6) if np.array_equal(ex["c2w"][n], got["c2w"][i])][0]
    np.testing.assert_allclose(got["images"][i], ex["images"][j], atol=1 / 255 + 1e-6)
    np.testing.assert_allclose(got["positions"][i], ex["positions"][j], atol=1e-5)
    np.testing.assert_array_equal(got["expression"][i], ex["expression"][j])
  frame = sorted(d for d in os.listdir(sub) if d.startswith("frame"))[0]
  for f in os.listdir(os.path.join(sub, frame)):
    if f.endswith("_depth.npy"):
      os.remove(os.path.join(sub, frame, f))
  with pytest.raises(FileNotFoundError, match="neither a position map"):
    for i in range(3):
      head_folder.HeadFolder(str(tmp_path), ["subject_000"], 16, 6, 4, seed=i)[0]
  with pytest.raises(FileNotFoundError, match="not a folder"):
    sources.make_source(f"head_folder:{tmp_path}/nope", config.data, "train")
