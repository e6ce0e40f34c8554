"""fit_triplane: a short end-to-end fit of the cow, the Chamfer distance, the schedule."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest
import trimesh

from lrm_jax import fit_triplane

COW = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "cow_mesh",
                   "cow.obj")


def test_chamfer_of_concentric_spheres_is_the_radius_gap():
  a = trimesh.creation.icosphere(subdivisions=4, radius=0.5)
  b = trimesh.creation.icosphere(subdivisions=4, radius=0.6)
  same = fit_triplane.chamfer_distance(a.vertices, a.faces, a.vertices, a.faces, 5000)
  gap = fit_triplane.chamfer_distance(a.vertices, a.faces, b.vertices, b.faces, 5000)
  assert same["chamfer"] < 0.02
  np.testing.assert_allclose(gap["chamfer"], 0.1, atol=0.015)


def test_schedule_and_held_out_views():
  np.testing.assert_array_equal(fit_triplane.held_out_indices(32, 4), [0, 8, 16, 24])
  f = lambda step, progress: float(fit_triplane.lr_factor(jnp.asarray(step),
                                                          jnp.asarray(progress), 10))
  assert f(0, 0.0) == pytest.approx(0.1)
  assert f(10, 0.0) == pytest.approx(1.0)
  assert f(500, 0.5) == pytest.approx(0.525)
  assert f(500, 1.0) == pytest.approx(0.05)


@pytest.mark.skipif(not os.path.isfile(COW), reason="needs ../shared/data/cow_mesh")
def test_short_fit_writes_everything_and_learns(tmp_path):
  out = str(tmp_path / "fit")
  args = fit_triplane.parse_args([
      f"--views=mesh:{COW}", f"--out={out}", "--num_views=6", "--num_held_out=1",
      "--resolution=32", "--steps=250", "--plane_size=32", "--plane_channels=8",
      "--hidden=32", "--rays_per_step=512", "--num_coarse=16", "--num_fine=16",
      "--eval_coarse=16", "--eval_fine=16", "--mesh_resolution=32", "--mesh_threshold=1.0",
      f"--reference_mesh={COW}", "--turntable_frames=2", "--warmup=10"])
  summary = fit_triplane.run(args)
  for name in ("summary.json", "views.png", "mesh.obj", "mesh.glb", "triplane.npz"):
    assert os.path.isfile(os.path.join(out, name)), name
  assert os.path.isfile(summary["turntable"])
  with open(os.path.join(out, "summary.json")) as f:
    saved = json.load(f)
  assert saved["steps"] == 250 and saved["held_out_views"] == [0]
  history = saved["history"]
  assert history[-1]["mse"] < history[0]["mse"]
  # White background + a grey cow: a blank render scores ~12 dB; a fit does much better.
  assert saved["psnr_heldout"] > 19.0
  assert 0.0 < saved["chamfer"]["chamfer"] < 0.15
  decoder, params = fit_triplane.load_triplane(os.path.join(out, "triplane.npz"))
  assert params["planes"].shape == (3, 32, 32, 8) and decoder.hidden == 32
