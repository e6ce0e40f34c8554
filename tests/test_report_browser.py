"""The run report (python -m lrm_jax.report) on a real 4-step run, read in Chromium; and
the viewer's --workdir scene (a held-out reconstruction) of the same run.

The run trains the micro GRM for 4 steps with an evaluation every 2, then the viewer's
:func:`lrm_jax.view.scene.from_workdir` reconstructs its first held-out scene, which
writes ``W/view/heldout_0/turntable.mp4``: the video the report embeds.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from lrm_jax.config_loading import load_config
from lrm_jax.report import run as run_lib
from lrm_jax.report.__main__ import write_report
from lrm_jax.train import trainer
from lrm_jax.view import scene as scene_lib
from tests import browser

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """``(workdir, viewer contents)`` of a 4-step micro GRM run."""
  workdir = str(tmp_path_factory.mktemp("micro_run"))
  config = load_config("configs/grm.py:micro", [
      "total_steps=4", "eval_every=2", "log_every=1", "checkpoint_every=4",
      "data.num_workers=0"])
  trainer.train_and_evaluate(config, workdir)
  return workdir, scene_lib.from_workdir(workdir, frames=8)


def test_view_scene_of_a_workdir_is_a_heldout_reconstruction(run):
  workdir, contents = run
  assert contents.gaussians is not None and contents.gaussians.num > 0
  assert contents.mesh_path is None  # GRM: Gaussians, no mesh
  assert contents.turntable_path == os.path.join(workdir, "view", "heldout_0",
                                                 "turntable.mp4")
  roles = [v.role for v in contents.views]
  assert roles == ["input", "input", "target", "target"]  # micro: 2 in, 2 targets
  for v in contents.views:
    assert v.image.shape == (v.height, v.width, 3) and 0 < v.fov_y < np.pi
    np.testing.assert_allclose(v.c2w[:3, :3] @ v.c2w[:3, :3].T, np.eye(3), atol=1e-5)
  arrays = scene_lib.splat_arrays(contents.gaussians)
  assert np.all(np.isfinite(arrays["centers"])) and arrays["rgbs"].max() <= 1.0


def test_report_in_chromium(run):
  workdir, _ = run
  out = write_report([workdir])
  assert out == os.path.join(workdir, "report.html")
  text = open(out, encoding="utf-8").read()
  assert "http://" not in text and "https://" not in text  # self-contained
  with browser.page() as p:
    p.page.goto("file://" + out)
    p.page.wait_for_function("() => { const v = document.querySelector('video');"
                             " return v && (v.readyState >= 1 || v.error); }",
                             timeout=60_000)
    q = p.page.evaluate
    assert q("() => document.querySelector('video').error") is None  # the mp4 decodes
    assert q("() => document.querySelector('video').videoWidth") > 0
    assert q("() => document.querySelectorAll('svg.chart').length") == 2  # loss, PSNR
    assert q("() => document.querySelectorAll('svg.chart polyline.series').length") == 4
    assert q("() => document.querySelectorAll('table.evals tbody tr').length") == 2
    assert q("() => document.querySelectorAll('table.comparison tbody tr').length") == 1
    assert q("() => document.querySelector('img.grid').naturalWidth") > 0
    cost = q("() => document.querySelector('table.cost').innerText")
    assert "peak memory per device MiB" in cost and "steps/s" in cost
    assert not p.errors, p.errors
    assert all(u.startswith(("file://", "data:")) for u in p.requests), p.requests


def test_report_compares_runs_and_says_what_is_missing(run, tmp_path):
  workdir, _ = run
  young = tmp_path / "young"  # a run that has logged steps but no eval, video or compile
  young.mkdir()
  shutil.copy(os.path.join(workdir, "config.json"), young / "config.json")
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  with open(young / "metrics.jsonl", "w") as f:
    f.write("".join(json.dumps(r) + "\n" for r in rows if "loss" in r) + '{"step": 5, "lo')
  out = write_report([workdir, str(young)], str(tmp_path / "both.html"))
  text = open(out, encoding="utf-8").read()
  assert text.count('<section class="run"') == 2
  assert "No evaluation yet" in text and "No video under" in text
  assert "No compile.json" in text and "No eval grid" in text
  heads = [run_lib.headline(r) for r in map(run_lib.read_run, [workdir, str(young)])]
  assert heads[0]["PSNR"] is not None and heads[1]["PSNR"] is None
  assert heads[0]["peak MiB"] > 0 and heads[1]["steps"] == 4
  assert list(heads[0]) == list(heads[1])  # the same columns, one row a run
  assert 'class="comparison"' in text and text.count("<tr>") > 2


def test_missing_workdir_or_metrics_is_an_error_naming_the_path(tmp_path):
  with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope")):
    run_lib.read_run(str(tmp_path / "nope"))
  with pytest.raises(FileNotFoundError, match="metrics.jsonl"):
    run_lib.read_run(str(tmp_path))
  proc = subprocess.run([sys.executable, "-m", "lrm_jax.report",
                         f"--workdir={tmp_path / 'nope'}"], cwd=REPO, capture_output=True,
                        text=True, timeout=120)
  assert proc.returncode == 2 and str(tmp_path / "nope") in proc.stderr, proc.stderr
