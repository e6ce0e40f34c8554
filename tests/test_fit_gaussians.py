"""fit.gaussians: a tiny end-to-end fit of the cow, respawning, carving, bad specs."""

import json
import os

import jax
import numpy as np
import pytest

from lrm_jax.errors import ConfigError, DataError
from lrm_jax.fit import common, gaussians
from lrm_jax.io import ply as ply_io
from lrm_jax.representations.gaussians import Gaussians

COW = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "cow_mesh",
                   "cow.obj")


@pytest.mark.skipif(not os.path.isfile(COW), reason="needs ../shared/data/cow_mesh")
def test_tiny_fit_writes_everything_and_learns(tmp_path):
  out = str(tmp_path / "fit")
  options, config = gaussians.parse_command_line([
      f"--input=mesh:{COW}", f"--out={out}", "--num_views=8", "--num_held_out=2",
      "--resolution=32", "--steps=50", "--turntable_frames=3", "--noprogress",
      "--config.num_gaussians=300", "--config.respawn_every=20"])
  summary = gaussians.run(options, config)
  for name in ("summary.json", "views.png", "gaussians.ply"):
    assert os.path.isfile(os.path.join(out, name)), name
  assert os.path.isfile(summary["turntable"])
  assert summary["turntable"].endswith((".mp4", ".gif"))
  with open(os.path.join(out, "summary.json")) as f:
    saved = json.load(f)
  assert saved["steps"] == 50 and saved["held_out_views"] == [0, 4]
  assert saved["num_views"] == 2 and saved["num_train_views"] == 6
  assert saved["num_gaussians"] == 300 and saved["init"] == "carve"
  assert saved["config"]["num_gaussians"] == 300 and saved["config"]["respawn_every"] == 20
  assert np.isfinite(saved["psnr"]) and np.isfinite(saved["init_psnr"])
  # 50 steps on 6 views of 32x32 pixels: a modest but clear gain over the initialisation,
  # and better than either trivial prediction of the held-out views.
  assert saved["psnr"] > saved["init_psnr"] + 0.5
  assert saved["psnr"] > saved["baseline_psnr"]
  assert saved["train_psnr"] > saved["init_psnr"]
  assert 0.0 < saved["ssim"] <= 1.0 and saved["ssim"] > saved["init_ssim"]
  assert len(saved["psnr_per_view"]) == 2 and saved["history"][-1]["step"] == 50
  g = ply_io.load_ply(os.path.join(out, "gaussians.ply"))
  assert g.means.shape == (300, 3) and g.sh.shape == (300, 4, 3)  # default SH degree 1
  assert np.all(np.isfinite(g.means)) and np.all(g.scales > 0)


def test_bad_views_spec_fails_clearly(tmp_path, capsys):
  with pytest.raises(DataError, match="--input='mesh:/no/such/cow.obj'.*does not exist"):
    common.load_views("mesh:/no/such/cow.obj")
  with pytest.raises(SystemExit) as exit_info:
    gaussians.main(["--input=nonsense:thing", f"--out={tmp_path / 'x'}"])
  assert exit_info.value.code == 2
  err = capsys.readouterr().err
  assert "--input='nonsense:thing'" in err and "unknown data source" in err
  assert not os.path.exists(tmp_path / "x")  # nothing written for a spec that fails


def test_respawn_moves_dead_gaussians_onto_opaque_ones():
  g = Gaussians(
      means=np.arange(12, dtype=np.float32).reshape(4, 3),
      scales=np.full((4, 3), 0.1, np.float32),
      quats=np.tile(np.asarray([1.0, 0, 0, 0], np.float32), (4, 1)),
      opacities=np.asarray([[0.001], [0.8], [0.002], [0.5]], np.float32),
      sh=np.arange(4 * 4 * 3, dtype=np.float32).reshape(4, 4, 3))
  params = gaussians.to_params(g)
  opt = gaussians.make_optimizer()
  state = jax.tree.map(lambda x: x + 1.0, opt.init(params))  # non-zero moments
  rng = np.random.default_rng(0)
  new, state, k = gaussians.respawn(params, state, rng, threshold=0.005)
  assert k == 2
  new_g = jax.device_get(gaussians.to_gaussians(new))
  assert new_g.means.shape == (4, 3)
  assert np.all(new_g.opacities >= 0.005)
  # Each opaque Gaussian and its copies composite to its old opacity.
  for src, old in ((1, 0.8), (3, 0.5)):
    copies = [i for i in (0, 2) if np.allclose(new_g.sh[i], g.sh[src])] + [src]
    o = new_g.opacities[copies, 0]
    np.testing.assert_allclose(1.0 - np.prod(1.0 - o), old, rtol=1e-4)
  # Moments of every touched Gaussian restart; count and shapes unchanged.
  for leaf in jax.tree.leaves(state.mu):
    assert leaf.shape[0] == 4
    np.testing.assert_array_equal(np.asarray(leaf)[[0, 2]], 0.0)


def test_carving_keeps_the_sphere_and_cuts_the_corners():
  from lrm_jax import cameras as cam
  c2w = cam.orbit_cameras(np.arange(8) * 45.0, np.tile([20.0, -20.0], 4), 2.5)
  k = np.tile(cam.intrinsics_from_fov(np.deg2rad(50.0), 48, 48), (8, 1))
  origins, rays = cam.get_rays(c2w, k, 48, 48)  # [8, 48, 48, 3]
  # Rays that pass within 0.5 of the origin see the sphere of radius 0.5.
  t = -np.sum(origins * rays, -1, keepdims=True)
  masks = (np.linalg.norm(origins + t * rays, axis=-1, keepdims=True) < 0.5)
  occ = gaussians.carve_visual_hull(masks.astype(np.float32), c2w, k, grid=32)
  centres = (np.arange(32) + 0.5) / 16.0 - 1.0
  r = np.linalg.norm(np.stack(np.meshgrid(centres, centres, centres, indexing="ij"), -1), axis=-1)
  assert occ[r < 0.45].all()  # the sphere survives
  assert not occ[r > 1.0].any()  # the box corners do not
  pts = gaussians.hull_shell_points(occ, 500, np.random.default_rng(0))
  assert pts.shape == (500, 3)
  assert np.all(np.abs(np.linalg.norm(pts, axis=-1) - 0.5) < 0.25)


def test_config_values_the_fit_cannot_use_are_config_errors():
  config = gaussians.default_config()
  gaussians.check_config(config)
  for key, value, message in (("init", "sphere", "init"), ("sh_degree", 5, "sh_degree")):
    bad = gaussians.default_config()
    bad[key] = value
    with pytest.raises(ConfigError, match=message):
      gaussians.check_config(bad)
