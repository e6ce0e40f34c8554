"""Scene-level ``reconstruct`` (Long-LRM, issue 20 item 5): a micro run trained on rooms
reconstructs a 32-view capture in ``opencv_cameras.json`` form whose frames are 16:9
(192x108, standing in for 1920x1080), centre-cropped and resized to ``data.input_size``."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from lrm_jax import cameras as cam
from lrm_jax import reconstruct, reconstruct_scene
from lrm_jax.config_loading import load_config
from lrm_jax.data import rooms
from lrm_jax.errors import DataError
from lrm_jax.io import ply

CONFIG = "configs/long_lrm.py:variant=micro,rooms=True"
N, H, W = 32, 108, 192


def write_capture(root: str) -> tuple:
  """A room filmed along its camera path, written as Long-LRM's ``opencv_cameras.json``
  with ``images/frame_NNNNN.png`` at ``W x H``; returns the room, ``c2w`` and the
  horizontal field of view."""
  room, c2w, k = rooms.SyntheticRooms("test", num_scenes=1, views_per_scene=N,
                                      resolution=W).scene(0)
  fov = float(cam.focal_to_fov(k[0, 0], W))
  intr = np.tile(cam.intrinsics_from_fov(fov, H, W), (N, 1))
  rgb, _ = rooms.render_frames(room, c2w, intr, H, W)
  os.makedirs(os.path.join(root, "images"))
  w2c = cam.c2w_to_w2c(c2w.astype(np.float64))
  frames = []
  for i in range(N):
    name = f"images/frame_{i:05d}.png"
    Image.fromarray(np.round(np.clip(rgb[i], 0, 1) * 255).astype(np.uint8)).save(
        os.path.join(root, name))
    fx, fy, cx, cy = (float(v) for v in intr[i])
    frames.append({"file_path": name, "w2c": w2c[i].tolist(), "fx": fx, "fy": fy, "cx": cx,
                   "cy": cy, "w": W, "h": H})
  with open(os.path.join(root, "opencv_cameras.json"), "w") as f:
    json.dump({"frames": frames}, f)
  return room, c2w, fov


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  from lrm_jax.train import trainer  # pylint: disable=g-import-not-at-top
  # Two steps and a checkpoint (stop_at_step < total_steps skips the final evaluation); one
  # Mamba2 and one transformer block around the token merge halve micro's compile.
  config = load_config(CONFIG, ["stop_at_step=2", "eval_every=1000", "model.pattern=mt",
                                "model.merge_after=1"])
  assert config.data.frame_window  # scene-level: reconstruct goes to reconstruct_scene
  work = str(tmp_path_factory.mktemp("work"))
  trainer.train_and_evaluate(config, work)
  return config, work


def test_reconstructs_a_16_9_capture(run, tmp_path):
  config, work = run
  root = str(tmp_path / "capture")
  room, c2w, fov = write_capture(root)
  v, s = config.data.num_input_views, config.data.input_size

  # The frames are centre-cropped to 108x108 and resized to s; the intrinsics follow, so
  # the views match the room rendered at s x s by the cropped camera.
  inputs, heldout = reconstruct_scene.scene_views(root, config)
  assert inputs["images"].shape == (v, s, s, 3) and len(heldout["images"]) == N - v
  square = cam.intrinsics_from_fov(float(cam.focal_to_fov(cam.fov_to_focal(fov, W), H)), s, s)
  np.testing.assert_allclose(inputs["intrinsics"], np.tile(square, (v, 1)), rtol=1e-5)
  idx = np.asarray([0, N - 1])  # the inputs, evenly spread
  direct, _ = rooms.render_frames(room, c2w[idx], np.tile(square, (2, 1)), s, s, supersample=4)
  mse = np.mean((inputs["images"] - direct) ** 2)
  assert -10 * np.log10(mse) > 25, mse

  out = str(tmp_path / "out")
  paths = reconstruct.reconstruct(work, root, out, frames=8)
  g = ply.load_ply(paths["gaussians"])
  assert 0 < g.num == paths["num_gaussians"] <= v * s * s
  assert np.all(np.isfinite(g.means))
  assert len(os.listdir(os.path.join(out, "heldout"))) == N - v
  with Image.open(os.path.join(out, "heldout", "000.png")) as im:
    assert im.size == (2 * s + 6, s + 4)  # render | ground truth at the input size, padded
  assert os.path.isfile(paths["views"]) and paths["views"].endswith("views.png")
  fly = paths["flythrough"]  # .gif where ffmpeg is missing (io.video)
  assert fly in (os.path.join(out, "flythrough.mp4"), os.path.join(out, "flythrough.gif"))
  assert os.path.getsize(fly) > 0
  assert np.isfinite(paths["heldout_psnr"]) and paths["checkpoint_step"] == 2

  # --views: more inputs, fewer held out.
  reconstruct.reconstruct(work, root, str(tmp_path / "out3"), frames=8, views=3)
  assert len(os.listdir(os.path.join(tmp_path, "out3", "heldout"))) == N - 3

  # A missing image fails naming the file.
  os.remove(os.path.join(root, "images", "frame_00007.png"))
  with pytest.raises(DataError, match=r"opencv_cameras.json: image 'images/frame_00007.png' "
                                      "not found"):
    reconstruct.reconstruct(work, root, str(tmp_path / "out2"), frames=8)
