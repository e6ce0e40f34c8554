"""fit.triplane: a short end-to-end fit of the cow, the Chamfer distance, the schedule, TV."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import trimesh

from lrm_jax.fit import triplane
from lrm_jax.render import triplane as tp

COW = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "cow_mesh",
                   "cow.obj")


def test_chamfer_of_concentric_spheres_is_the_radius_gap():
  a = trimesh.creation.icosphere(subdivisions=4, radius=0.5)
  b = trimesh.creation.icosphere(subdivisions=4, radius=0.6)
  same = triplane.chamfer_distance(a.vertices, a.faces, a.vertices, a.faces, 5000)
  gap = triplane.chamfer_distance(a.vertices, a.faces, b.vertices, b.faces, 5000)
  assert same["chamfer"] < 0.02
  np.testing.assert_allclose(gap["chamfer"], 0.1, atol=0.015)


def test_schedule():
  f = lambda step, progress: float(triplane.lr_factor(jnp.asarray(step),
                                                      jnp.asarray(progress), 10))
  assert f(0, 0.0) == pytest.approx(0.1)
  assert f(10, 0.0) == pytest.approx(1.0)
  assert f(500, 0.5) == pytest.approx(0.525)
  assert f(500, 1.0) == pytest.approx(0.05)


def test_total_variation_is_lrms_batched_or_not():
  planes = jax.random.normal(jax.random.key(0), (2, 3, 5, 7, 4))
  dh = np.mean(np.square(np.diff(np.asarray(planes), axis=2)))
  dw = np.mean(np.square(np.diff(np.asarray(planes), axis=3)))
  np.testing.assert_allclose(float(tp.total_variation(planes)), 0.5 * (dh + dw), rtol=1e-5)
  one = planes[1]
  np.testing.assert_allclose(float(tp.total_variation(one)),
                             float(tp.total_variation(one[None])), rtol=1e-6)
  with pytest.raises(ValueError, match="planes"):
    tp.total_variation(planes[0, 0])


@pytest.mark.skipif(not os.path.isfile(COW), reason="needs ../shared/data/cow_mesh")
def test_short_fit_writes_everything_and_learns(tmp_path):
  out = str(tmp_path / "fit")
  options, config = triplane.parse_command_line([
      f"--input=mesh:{COW}", f"--out={out}", "--num_views=6", "--num_held_out=1",
      "--resolution=32", "--steps=250", "--mesh_resolution=32", "--mesh_threshold=1.0",
      f"--reference_mesh={COW}", "--turntable_frames=2", "--noprogress",
      "--config.plane_size=32", "--config.plane_channels=8", "--config.hidden=32",
      "--config.rays_per_step=512", "--config.num_coarse=16", "--config.num_fine=16",
      "--config.eval_coarse=16", "--config.eval_fine=16", "--config.warmup=10"])
  summary = triplane.run(options, config)
  for name in ("summary.json", "views.png", "mesh.obj", "mesh.glb", "triplane.npz"):
    assert os.path.isfile(os.path.join(out, name)), name
  assert os.path.isfile(summary["turntable"])
  with open(os.path.join(out, "summary.json")) as f:
    saved = json.load(f)
  assert saved["steps"] == 250 and saved["held_out_views"] == [0]
  assert saved["num_views"] == 1 and saved["num_train_views"] == 5
  assert saved["mask_loss"] and saved["config"]["plane_size"] == 32
  history = saved["history"]
  assert history[-1]["mse"] < history[0]["mse"]
  # White background + a grey cow: a blank render scores ~12 dB; a fit does much better,
  # and better than the nearest training view as is.
  assert saved["psnr"] > 19.0
  assert saved["psnr"] > saved["baseline_psnr"]
  assert 0.0 < saved["ssim"] <= 1.0
  assert 0.0 < saved["chamfer"]["chamfer"] < 0.15
  decoder, params = triplane.load_triplane(os.path.join(out, "triplane.npz"))
  assert params["planes"].shape == (3, 32, 32, 8) and decoder.hidden == 32
