"""Nothing lost, nothing silently wrong: a finished workdir is left alone, config changes are
recorded, each step is logged once, one process per workdir, unreadable checkpoints are
moved aside (never deleted), and commands end on user errors with one line and status 2.

The runs use the toy family (tests/toy/), which compiles in a second: what is tested here
is the trainer's handling of the workdir, the same for every family.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from lrm_jax.config_loading import load_config
from lrm_jax.errors import ConfigError, DataError
from lrm_jax.train import run_state
from lrm_jax.train import trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY = "tests/toy/config.py"


def toy(*overrides):
  return load_config(TOY, ["total_steps=4", "eval_every=4", "checkpoint_every=1",
                           "keep_checkpoints=4", *overrides])


def snapshot(workdir: str) -> dict:
  """``{relative path: sha256}`` of every file under ``workdir``."""
  out = {}
  for path in glob.glob(os.path.join(workdir, "**", "*"), recursive=True):
    if os.path.isfile(path):
      with open(path, "rb") as f:
        out[os.path.relpath(path, workdir)] = hashlib.sha256(f.read()).hexdigest()
  return out


def steps_logged(workdir: str) -> list[int]:
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  return [r["step"] for r in rows if "loss" in r]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("finished"))
  trainer.train_and_evaluate(toy(), workdir)
  return workdir


def test_a_finished_workdir_is_left_alone(finished):
  before = snapshot(finished)
  assert "summary.json" in before and "config.json" in before
  summary = trainer.train_and_evaluate(toy(), finished)
  assert summary["finished"] and summary["eval"]["num_scenes"] == 2
  summary = trainer.train_and_evaluate(toy("total_steps=0"), finished)
  assert summary["finished"]
  assert snapshot(finished) == before


def test_resume_records_changed_keys_and_logs_each_step_once(tmp_path, capsys):
  workdir = str(tmp_path)
  trainer.train_and_evaluate(toy("stop_at_step=2", "log_every=1"), workdir)
  original = open(os.path.join(workdir, "config.json")).read()
  assert steps_logged(workdir) == [1, 2]
  # Rows of a step past the checkpoint (a crash after logging, before saving) are redone.
  with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
    f.write(json.dumps({"step": 3, "loss": 1.0}) + "\n" + '{"step": 4, "lo')
  trainer.train_and_evaluate(toy("log_every=1", "optimizer.lr=0.01"), workdir)
  assert steps_logged(workdir) == [1, 2, 3, 4]
  assert open(os.path.join(workdir, "config.json")).read() == original
  record = json.load(open(os.path.join(workdir, "config.2.json")))
  assert record["optimizer"]["lr"] == 0.01 and record["stop_at_step"] == -1
  out = capsys.readouterr().out
  assert "changed config (optimizer.lr, stop_at_step)" in out and "config.2.json" in out
  assert run_state.changed_keys({"a": {"b": 1}}, {"a": {"b": 2}, "c": 3}) == ["a.b", "c"]


def test_a_second_process_on_a_workdir_fails_at_once(tmp_path, capsys):
  workdir = str(tmp_path)
  lock = os.path.join(workdir, run_state.LOCK_NAME)
  with open(lock, "w") as f:  # a live process (this test's parent) holds it
    json.dump({"host": os.uname().nodename, "pid": os.getppid(), "since": 0}, f)
  with pytest.raises(ConfigError, match=rf"in use by pid {os.getppid()} on host"):
    trainer.train_and_evaluate(toy("total_steps=1"), workdir)
  assert os.listdir(workdir) == [run_state.LOCK_NAME]  # nothing else was written
  with open(lock, "w") as f:  # a process that is gone: the lock is stale
    json.dump({"host": os.uname().nodename, "pid": 2**22 + 17, "since": 0}, f)
  trainer.train_and_evaluate(toy("total_steps=1"), workdir)
  assert "removing the stale lock" in capsys.readouterr().out
  assert not os.path.exists(lock)  # released at the end


def _damage(workdir: str, step: int, how: str) -> None:
  root = os.path.join(workdir, "checkpoints", str(step))
  if how == "truncate":  # every array data file of the state cut to 10 bytes
    files = glob.glob(os.path.join(root, "state", "**", "d", "*"), recursive=True)
    assert files, os.listdir(os.path.join(root, "state"))
    for p in files:
      with open(p, "r+b") as f:
        f.truncate(10)
  elif how == "no_state":
    import shutil
    shutil.rmtree(os.path.join(root, "state"))
  elif how == "empty_data":  # the data iterator's state file, emptied
    for p in glob.glob(os.path.join(root, "data", "process_*.json")):
      open(p, "w").close()


@pytest.mark.parametrize("how", ["truncate", "no_state", "empty_data"])
def test_an_unreadable_newest_checkpoint_is_moved_aside(tmp_path, how, capsys):
  workdir = str(tmp_path)
  trainer.train_and_evaluate(toy("stop_at_step=3"), workdir)
  _damage(workdir, 3, how)
  summary = trainer.train_and_evaluate(toy(), workdir)
  out = capsys.readouterr().out
  assert "checkpoint step 3 could not be restored" in out
  assert "start at step 2 (workdir checkpoint step 2; 1 newer unreadable" in out
  assert summary["steps"] == 4
  moved = os.listdir(os.path.join(workdir, "checkpoints.unreadable"))
  assert len(moved) == 1 and moved[0].startswith("3.")  # kept, never deleted


def test_when_no_checkpoint_restores_the_error_lists_them(tmp_path):
  workdir = str(tmp_path)
  trainer.train_and_evaluate(toy("stop_at_step=2"), workdir)
  for step in (1, 2):
    _damage(workdir, step, "no_state")
  with pytest.raises(DataError, match=r"can be restored \(step 2 \(state\).*step 1 \(state\)"):
    trainer.train_and_evaluate(toy(), workdir)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints.unreadable")))[0][:2] == "1."


def _command(*args, **env):
  return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True,
                        text=True, timeout=300, env=dict(os.environ, **env))


def test_commands_print_one_line_for_user_errors(tmp_path):
  proc = _command("lrm_jax.main", f"--config={TOY}", f"--workdir={tmp_path}",
                  "--config.data.batchsize=3")
  assert proc.returncode == 2, proc.stderr
  assert proc.stderr.strip() == ("python -m lrm_jax.main: error: unknown config key "
                                 "'data.batchsize'. Did you mean 'data.batch_size'?")
  assert not os.listdir(tmp_path)
  proc = _command("lrm_jax.evaluate", f"--workdir={tmp_path}/missing")
  assert proc.returncode == 2 and "Traceback" not in proc.stderr
  assert "missing/config.json not found" in proc.stderr
  proc = _command("lrm_jax.main", f"--config={TOY}", f"--workdir={tmp_path}",
                  "--config.model.hidden=many", "--debug")
  assert proc.returncode != 0 and "Traceback" in proc.stderr
  assert "expected an integer, got 'many'" in proc.stderr


# ---- Input validation at the edge: images ----------------------------------------------

def _grey(h=4, w=5):
  return (np.arange(h * w).reshape(h, w) * 12).astype(np.uint8)  # 0 .. 228


@pytest.mark.parametrize("mode", ["1", "L", "LA", "I;16", "I", "F", "P", "RGB", "RGBA",
                                  "CMYK"])
def test_every_image_mode_reads_as_float_rgb_and_mask(tmp_path, mode):
  from PIL import Image
  from lrm_jax.data import folder
  g = _grey()
  rgb8 = np.stack([g, 255 - g, g // 2], -1)
  alpha8 = np.where(g > 100, 255, 0).astype(np.uint8)
  expected_alpha = None
  if mode == "1":
    im, expected = Image.fromarray(g > 100), np.repeat((g > 100)[..., None], 3, -1) * 1.0
  elif mode == "L":
    im, expected = Image.fromarray(g), np.repeat(g[..., None], 3, -1) / 255.0
  elif mode == "LA":
    im = Image.fromarray(np.stack([g, alpha8], -1), "LA")
    expected, expected_alpha = np.repeat(g[..., None], 3, -1) / 255.0, alpha8 / 255.0
  elif mode in ("I;16", "I"):
    g16 = g.astype(np.uint16) * 257  # the full 16-bit range: 228 * 257 = 58596
    im = Image.fromarray(g16) if mode == "I;16" else Image.fromarray(g16.astype(np.int32))
    expected = np.repeat(g16[..., None], 3, -1) / 65535.0
  elif mode == "F":
    im = Image.fromarray((g / 255.0).astype(np.float32))
    expected = np.repeat(g[..., None], 3, -1) / 255.0
  elif mode == "P":
    im = Image.fromarray(rgb8).quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    expected = np.asarray(im.convert("RGB")) / 255.0
  elif mode == "RGB":
    im, expected = Image.fromarray(rgb8), rgb8 / 255.0
  elif mode == "RGBA":
    im = Image.fromarray(np.concatenate([rgb8, alpha8[..., None]], -1), "RGBA")
    expected, expected_alpha = rgb8 / 255.0, alpha8 / 255.0
  else:  # CMYK: PIL's own conversion is the reference
    im = Image.fromarray(rgb8).convert("CMYK")
    expected = np.asarray(im.convert("RGB")) / 255.0
  assert im.mode == mode
  path = str(tmp_path / ("im.tiff" if mode in ("F", "I", "CMYK") else "im.png"))
  im.save(path)
  with Image.open(path) as back:
    assert back.mode == mode or (mode == "I;16" and back.mode.startswith("I")), back.mode
  rgb, mask = folder.load_image(path, background=(0.0, 0.0, 0.0))
  assert rgb.dtype == np.float32 and rgb.shape == (4, 5, 3) and mask.shape == (4, 5, 1)
  if expected_alpha is None:
    np.testing.assert_array_equal(mask, 1.0)
  else:
    np.testing.assert_allclose(mask[..., 0], expected_alpha, atol=1e-6)
    expected = expected * expected_alpha[..., None]  # composited on black
  np.testing.assert_allclose(rgb, expected, atol=1e-6)


def test_unreadable_images_name_the_file(tmp_path, monkeypatch):
  from PIL import Image
  from lrm_jax.data import folder
  bad = tmp_path / "float.tiff"
  Image.fromarray(np.full((4, 4), 7.5, np.float32)).save(bad)
  with pytest.raises(DataError, match=r"float.tiff: 32-bit float image with values outside"):
    folder.load_image(str(bad))
  big = tmp_path / "bomb.png"
  Image.fromarray(np.zeros((64, 64), np.uint8)).save(big)
  monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64 * 64 // 4)  # > 2x the limit: an error
  with pytest.raises(DataError, match=r"bomb.png: image too large to read safely"):
    folder.load_image(str(big))
  junk = tmp_path / "junk.png"
  junk.write_bytes(b"not a png")
  with pytest.raises(DataError, match="junk.png: cannot decode image"):
    folder.load_image(str(junk))


def _scene(tmp_path, alpha=True):
  from tests import data_fixtures as fx
  root = str(tmp_path / "scene")
  c2w, k = fx.scene_cameras(3, 8, 8)
  fx.write_opencv(root, c2w, k, 8, 8)
  return root


def test_an_all_transparent_view_is_a_warning_or_an_error(tmp_path, capsys):
  from PIL import Image
  from lrm_jax.data import folder
  root = _scene(tmp_path)
  manifest = json.load(open(os.path.join(root, "opencv_cameras.json")))
  first = os.path.normpath(os.path.join(root, manifest["frames"][0]["file_path"]))
  Image.fromarray(np.zeros((8, 8, 4), np.uint8), "RGBA").save(first)
  ex = folder.FolderScenes(root)[0]
  assert ex["images"].shape[0] == 3
  assert f"warning: {first}: alpha is zero everywhere" in capsys.readouterr().out
  with pytest.raises(DataError, match="alpha is zero everywhere"):
    folder.FolderScenes(root, transparent_views="error")[0]


def test_camera_files_cannot_read_outside_their_scene(tmp_path):
  from lrm_jax.data import folder
  root = _scene(tmp_path)
  path = os.path.join(root, "opencv_cameras.json")
  manifest = json.load(open(path))
  outside = tmp_path / "secret.png"
  import shutil
  shutil.copy(os.path.join(root, manifest["frames"][1]["file_path"]), outside)
  for name in ("../secret.png", str(outside)):
    manifest["frames"][1]["file_path"] = name
    json.dump(manifest, open(path, "w"))
    with pytest.raises(DataError, match="points outside the scene folder"):
      folder.read_scene_cameras(root)
    scene = folder.read_scene_cameras(root, allow_outside=True)
    assert scene.image_paths[1] == str(outside)


# ---- Input validation at the edge: .ply ------------------------------------------------

def _gaussians(n=6):
  from tests.test_ply import random_gaussians
  return random_gaussians(n, 1)


@pytest.mark.parametrize("field,row,value,what", [
    ("opacity", 2, np.nan, "property 'opacity': 1 non-finite"),
    ("x", 0, np.inf, "property 'x': 1 non-finite"),
    ("scale_1", 4, 1e3, r"property 'scale_1': 1 log-scale\(s\) over 88 \(an infinite size\)"),
    ("f_rest_3", 1, -np.inf, "property 'f_rest_3': 1 non-finite")])
def test_ply_values_are_checked(tmp_path, field, row, value, what):
  from lrm_jax.io import ply
  fields = ply.gaussians_to_ply_fields(_gaussians())
  fields[field][row] = value
  path = ply.write_ply(str(tmp_path / "bad.ply"), fields)
  with pytest.raises(DataError, match=rf"bad.ply: {what} \(of 6 Gaussians\)"):
    ply.load_ply(path)


def test_truncated_and_short_ply_files_name_the_file(tmp_path):
  from lrm_jax.io import ply
  path = ply.save_ply(str(tmp_path / "cut.ply"), _gaussians(10))
  data = open(path, "rb").read()
  open(path, "wb").write(data[:-50])
  with pytest.raises(DataError, match=r"cut.ply: truncated: element 'vertex' needs 10 rows x "
                                      r"\d+ bytes = \d+ bytes"):
    ply.load_ply(path)
  names = ply.gaussian_property_names(0)
  rows = "\n".join(" ".join(["0.5"] * len(names)) for _ in range(2))
  ascii_ply = ("ply\nformat ascii 1.0\nelement vertex 3\n" +
               "".join(f"property float {n}\n" for n in names) + "end_header\n" + rows + "\n")
  (tmp_path / "short.ply").write_text(ascii_ply)
  with pytest.raises(DataError, match=r"short.ply: element 'vertex' needs 3 rows of 17 "
                                      r"values \(51\), but only 34 values are left"):
    ply.load_ply(str(tmp_path / "short.ply"))


def test_zero_gaussians_render_the_background_and_say_so(tmp_path):
  from PIL import Image
  from lrm_jax.io import ply
  from tests import data_fixtures as fx
  empty = ply.gaussians_to_ply_fields(_gaussians(0))
  path = ply.write_ply(str(tmp_path / "empty.ply"), empty)
  assert ply.load_ply(path).num == 0
  cams = str(tmp_path / "cams")
  c2w, k = fx.scene_cameras(2, 8, 8)
  fx.write_opencv(cams, c2w, k, 8, 8)
  proc = _command("lrm_jax.render", f"--ply={path}", f"--cameras={cams}",
                  f"--out={tmp_path}/out", "--background=0,0,1")
  assert proc.returncode == 0, proc.stderr
  assert "0 Gaussians: every view is the background" in proc.stdout
  pngs = sorted(glob.glob(str(tmp_path / "out" / "*.png")))
  assert len(pngs) == 2
  np.testing.assert_array_equal(np.asarray(Image.open(pngs[0])), np.broadcast_to(
      np.asarray([0, 0, 255], np.uint8), (8, 8, 3)))
  proc = _command("lrm_jax.render", f"--ply={tmp_path}/nothing.ply", f"--cameras={cams}",
                  f"--out={tmp_path}/out")
  assert proc.returncode == 2 and "nothing.ply: file not found" in proc.stderr
  assert "Traceback" not in proc.stderr


# ---- kill -9 during a save -------------------------------------------------------------

def test_kill_9_during_a_save_leaves_the_last_checkpoint_readable(tmp_path):
  """The micro GRM is killed (SIGKILL) while orbax writes a checkpoint (its temporary
  directory exists) after at least one complete one, at most 3 tries; the next run resumes
  from the last complete one and finishes."""
  import signal
  import time
  args = [sys.executable, "-m", "lrm_jax.main", "--config=configs/grm.py:micro",
          f"--workdir={tmp_path}", "--config.total_steps=12", "--config.checkpoint_every=1",
          "--config.eval_every=100", "--config.keep_checkpoints=2"]
  ckpts = os.path.join(str(tmp_path), "checkpoints")
  killed = False
  for _ in range(3):
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while proc.poll() is None and time.time() < deadline:
      complete = [d for d in os.listdir(ckpts) if d.isdigit()] if os.path.isdir(ckpts) else []
      if complete and glob.glob(os.path.join(ckpts, "*.orbax-checkpoint-tmp*")):
        proc.send_signal(signal.SIGKILL)
        killed = max(int(d) for d in complete)
        break
      time.sleep(0.001)
    proc.wait(timeout=60)
    if killed:
      break
  assert killed, "never caught a save in progress"
  done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  start = int(re.search(r"start at step (\d+) \(workdir checkpoint step", done.stdout).group(1))
  assert start >= killed, (start, killed, done.stdout)
  assert "could not be restored" not in done.stdout  # the partial save was never a step
  assert json.load(open(os.path.join(str(tmp_path), "summary.json")))["steps"] == 12
