"""Non-square views for Long-LRM end to end (``data.input_hw``): a micro run trains on rooms
rendered at H x W (16 x 32), then reconstructs the 16:9 capture of
tests/test_long_lrm_reconstruct.py at H x W (its 192x108 frames centre-cropped to 2:1)."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from lrm_jax import reconstruct
from lrm_jax.config_loading import load_config
from lrm_jax.train import evaluation
from tests.test_long_lrm_reconstruct import CONFIG, N, write_capture

HW = (16, 32)  # divisible by 2 x model.patch (16): the token merge halves an 1 x 2 grid


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  from lrm_jax.train import trainer  # pylint: disable=g-import-not-at-top
  # As test_long_lrm_reconstruct's run (one Mamba2 and one transformer block around the
  # token merge), but to the end: two steps, then the evaluation of the 2 eval scenes.
  config = load_config(CONFIG, [f"data.input_hw={HW}", "total_steps=2", "eval_every=1000",
                                "model.pattern=mt", "model.merge_after=1"])
  work = str(tmp_path_factory.mktemp("work"))
  summary = trainer.train_and_evaluate(config, work)
  return config, work, summary


def test_trains_and_evaluates_on_h_by_w_rooms(run):
  _, work, summary = run
  with open(os.path.join(work, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  losses = [r["loss"] for r in rows if "loss" in r]
  assert losses and all(np.isfinite(losses)), rows  # rows every config.log_every steps
  with open(os.path.join(work, "config.json")) as f:
    assert tuple(json.load(f)["data"]["input_hw"]) == HW
  ev = summary["eval"]
  assert ev["num_scenes"] == 2 and np.isfinite(ev["psnr"]) and np.isfinite(ev["ssim"])
  assert np.isfinite(ev["baseline_psnr"])  # the nearest input view, resized to H x W
  with Image.open(os.path.join(work, "eval", "step_000002.png")) as im:
    assert im.size[1] == 3 * (HW[0] + 2) + 2  # inputs | predictions | targets, H high


def test_nearest_view_baseline_keeps_the_targets_h_by_w():
  rng = np.random.default_rng(0)
  eye = np.tile(np.eye(4, dtype=np.float32), (1, 2, 1, 1))
  inputs = {"images": rng.random((1, 2, 8, 16, 3), dtype=np.float32), "c2w": eye}
  targets = {"images": rng.random((1, 2, 16, 32, 3), dtype=np.float32), "c2w": eye}
  pred = evaluation.nearest_view_prediction(inputs, targets)
  assert pred.shape == (1, 2, 16, 32, 3)


def test_reconstructs_the_16_9_capture_at_h_by_w(run, tmp_path):
  _, work, _ = run
  h, w = HW
  root = str(tmp_path / "capture")
  write_capture(root)
  out = str(tmp_path / "out")
  paths = reconstruct.reconstruct(work, root, out, frames=4)
  assert 0 < paths["num_gaussians"] <= 2 * h * w
  assert len(os.listdir(os.path.join(out, "heldout"))) == N - 2
  with Image.open(os.path.join(out, "heldout", "000.png")) as im:
    assert im.size == (2 * w + 6, h + 4)  # render | ground truth, each w x h, padded
  with Image.open(paths["views"]) as im:  # inputs | re-rendered | held out: 3 rows, 2 columns
    assert im.size == (2 * w + 6, 3 * h + 8)
  fly = paths["flythrough"]
  if fly.endswith(".gif"):  # no ffmpeg: imageio's GIF keeps the frame size
    with Image.open(fly) as im:
      assert im.size == (w, h) and im.n_frames == 4
  else:
    import imageio.v2 as imageio  # pylint: disable=g-import-not-at-top
    frames = imageio.mimread(fly)
    assert len(frames) == 4 and frames[0].shape[:2] == (h, w)
  assert np.isfinite(paths["heldout_psnr"])
