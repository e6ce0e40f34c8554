"""End-to-end training: runs, resumes bit-exactly, survives SIGTERM, stops on NaN."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from lrm_jax.config_loading import load_config
from lrm_jax.train import checkpoint as ckpt_lib
from lrm_jax.train import trainer
from lrm_jax.train.inference import load_trained

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def micro(**overrides):
  items = ["checkpoint_every=1", "eval_every=1000", "log_every=1", "keep_checkpoints=10"]
  items += [f"{k}={v}" for k, v in overrides.items()]
  return load_config("configs/grm.py:micro", items)


def params_of(workdir, step=None):
  return jax.device_get(load_trained(str(workdir), step=step).params)


def assert_trees_equal(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(la) == len(lb)
  for x, y in zip(la, lb):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope="module")
def three_step_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("three_steps")
  return workdir, trainer.train_and_evaluate(micro(total_steps=3), str(workdir))


def test_three_step_run_writes_everything(three_step_run):
  tmp_path, summary = three_step_run
  assert summary["steps"] == 3 and summary["n_params"] > 0
  for key in ("psnr", "ssim", "baseline_psnr", "num_scenes"):
    assert np.isfinite(summary["eval"][key])
  assert summary["eval"]["lpips"] is None
  for name in ("summary.json", "config.json", "metrics.jsonl"):
    assert (tmp_path / name).is_file()
  assert sorted(os.listdir(tmp_path / "eval")) == ["step_000003.png"]
  rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  train_rows = [r for r in rows if "loss" in r]
  assert [r["step"] for r in train_rows] == [1, 2, 3]
  assert all(np.isfinite(r["loss"]) and r["overflow"] == 0 for r in train_rows)
  assert ckpt_lib.Checkpointer(str(tmp_path / "checkpoints")).latest_step() == 3


def test_resume_is_bit_equal_to_unbroken_run(tmp_path):
  trainer.train_and_evaluate(micro(total_steps=4), str(tmp_path / "unbroken"))
  first = trainer.train_and_evaluate(micro(total_steps=4, stop_at_step=2),
                                     str(tmp_path / "broken"))
  assert first["steps"] == 2 and "eval" not in first
  # Same workdir, longer schedule: resumes from step 2 (state + data iterator).
  cfg = micro(total_steps=4)
  trainer.train_and_evaluate(cfg, str(tmp_path / "broken"))
  assert_trees_equal(params_of(tmp_path / "unbroken"), params_of(tmp_path / "broken"))
  a = [json.loads(l) for l in open(tmp_path / "unbroken" / "metrics.jsonl") if '"loss"' in l]
  b = [json.loads(l) for l in open(tmp_path / "broken" / "metrics.jsonl") if '"loss"' in l]
  assert [r["loss"] for r in a] == [r["loss"] for r in b]


def test_nan_loss_stops_with_last_good_checkpoint(tmp_path):
  cfg = micro(total_steps=6, inject_nan_at_step=3)
  with pytest.raises(trainer.NonFiniteLossError, match="non-finite loss at step 4"):
    trainer.train_and_evaluate(cfg, str(tmp_path))
  ck = ckpt_lib.Checkpointer(str(tmp_path / "checkpoints"))
  last = ck.latest_step()
  assert last is not None and last <= 4
  params = params_of(tmp_path, last)
  assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(params))


def test_sigterm_then_resume_loses_no_step(tmp_path):
  total = 40
  args = [sys.executable, "-m", "lrm_jax.main", "--config=configs/grm.py:micro",
          f"--workdir={tmp_path / 'run'}", f"--config.total_steps={total}",
          "--config.checkpoint_every=1000", "--config.eval_every=1000", "--config.log_every=1"]
  proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
  metrics = tmp_path / "run" / "metrics.jsonl"
  deadline = time.time() + 240
  while time.time() < deadline:
    if metrics.is_file() and sum(1 for _ in open(metrics)) >= 3:
      break
    if proc.poll() is not None:
      break
    time.sleep(0.2)
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=240)
  assert proc.returncode == 0, out
  assert "SIGTERM: saved checkpoint at step" in out
  stopped = ckpt_lib.Checkpointer(str(tmp_path / "run" / "checkpoints")).latest_step()
  assert 3 <= stopped < total
  resumed = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert resumed.returncode == 0, resumed.stdout + resumed.stderr
  rows = [json.loads(l) for l in open(metrics) if '"loss"' in l]
  assert sorted({r["step"] for r in rows}) == list(range(1, total + 1))
  # The interrupted + resumed run equals an unbroken one, parameter for parameter.
  unbroken = micro(total_steps=total, checkpoint_every=1000)
  trainer.train_and_evaluate(unbroken, str(tmp_path / "unbroken"))
  assert_trees_equal(params_of(tmp_path / "run"), params_of(tmp_path / "unbroken"))


def test_reconstruct_writes_a_readable_ply(three_step_run, tmp_path):
  from lrm_jax import reconstruct
  from lrm_jax.io import ply
  from tests import data_fixtures as fx
  workdir, _ = three_step_run
  c2w, k = fx.scene_cameras(6, 24, 24)
  scene = fx.write_opencv(str(tmp_path / "scene"), c2w, k, 24, 24)
  out = reconstruct.reconstruct(str(workdir), scene, str(tmp_path / "out"), frames=4)
  g = ply.load_ply(out["gaussians"])
  assert g.num == out["num_gaussians"] > 0
  assert np.all(np.isfinite(g.means)) and np.all((g.opacities > 0) & (g.opacities <= 1))
  assert os.path.isfile(out["views"]) and os.path.isfile(out["turntable"])


@pytest.mark.parametrize("scale", [1e-3, 1e3])  # below and above the clipping norm
def test_optimizer_with_given_norm_matches_optax_clip_then_adamw(scale):
  """The train step hands the gradients' norm to the optimiser's clipping: the same state
  structure as ``optax.clip_by_global_norm`` followed by AdamW, the same bits below the
  clipping norm, and the same values up to rounding above it."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from lrm_jax.train import state as state_lib  # pylint: disable=g-import-not-at-top
  config = micro()
  o = config.optimizer
  ours = state_lib.make_optimizer(config)
  theirs = optax.chain(optax.clip_by_global_norm(o.clip_norm),
                       optax.adamw(state_lib.make_schedule(config), b1=o.b1, b2=o.b2,
                                   weight_decay=o.weight_decay, mask=state_lib._decay_mask))
  rng = np.random.RandomState(0)
  params = {"w": jnp.asarray(rng.randn(6, 5), jnp.float32),
            "b": jnp.asarray(rng.randn(5), jnp.float32)}
  s_ours, s_theirs = ours.init(params), theirs.init(params)
  assert jax.tree.structure(s_ours) == jax.tree.structure(s_theirs)
  if scale < 1:
    compare = assert_trees_equal
  else:
    compare = lambda a, b: jax.tree.map(
        lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7), a, b)
  for step in range(3):
    grads = jax.tree.map(lambda p: p * scale * (step + 1), params)
    assert (float(optax.tree.norm(grads)) < o.clip_norm) == (scale < 1)
    u_given, s_ours = jax.jit(lambda g, s: ours.update(g, s, params,
                                                       global_norm=optax.tree.norm(g)))(
                                                           grads, s_ours)
    u_own, _ = jax.jit(lambda g, s: ours.update(g, s, params))(grads, s_theirs)
    u_ref, s_theirs = jax.jit(lambda g, s: theirs.update(g, s, params))(grads, s_theirs)
    compare(u_given, u_ref)
    compare(u_own, u_ref)
  compare(s_ours, s_theirs)


def test_ema_of_params_against_a_numpy_loop():
  """The moving average follows ``e <- d e + (1 - d) (p + u)`` with ``d = min(decay,
  (1 + n) / (10 + n))``, starts at the initial parameters and leaves updates unchanged."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from lrm_jax.train import state as state_lib  # pylint: disable=g-import-not-at-top
  decay = 0.9
  tx = optax.chain(optax.sgd(0.1), state_lib.ema_of_params(decay))
  rng = np.random.RandomState(1)
  params = {"w": jnp.asarray(rng.randn(4, 3), jnp.float32)}
  opt = tx.init(params)
  want = np.asarray(params["w"], np.float64)
  for n in range(5):
    grads = {"w": jnp.asarray(rng.randn(4, 3), jnp.float32)}
    updates, opt = tx.update(grads, opt, params)
    np.testing.assert_allclose(updates["w"], -0.1 * np.asarray(grads["w"]), rtol=1e-6)
    params = optax.apply_updates(params, updates)
    d = min(decay, (1 + n) / (10 + n))
    want = d * want + (1 - d) * np.asarray(params["w"], np.float64)
  train_state = state_lib.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                                     opt_state=opt)
  np.testing.assert_allclose(state_lib.eval_params(train_state)["w"], want, rtol=1e-5)
  plain = state_lib.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                               opt_state=optax.sgd(0.1).init(params))
  assert state_lib.eval_params(plain) is params
  with pytest.raises(ValueError, match="ema_decay"):
    state_lib.make_optimizer(micro(**{"optimizer.ema_decay": 1.0}))


def test_run_with_ema_evaluates_and_exports_the_average_and_resumes_bit_equal(tmp_path):
  """``optimizer.ema_decay > 0``: the checkpoint holds the average in the optimiser state,
  ``load_trained`` (evaluate, reconstruct) returns it rather than the raw parameters, and
  a run stopped and resumed ends with the same bits as an unbroken one."""
  from lrm_jax.train import state as state_lib  # pylint: disable=g-import-not-at-top
  cfg = lambda **kw: micro(total_steps=3, **{"optimizer.ema_decay": 0.5}, **kw)
  trainer.train_and_evaluate(cfg(), str(tmp_path / "unbroken"))
  trainer.train_and_evaluate(cfg(stop_at_step=2), str(tmp_path / "broken"))
  trainer.train_and_evaluate(cfg(), str(tmp_path / "broken"))
  trained = load_trained(str(tmp_path / "unbroken"))
  ckpt = ckpt_lib.Checkpointer(ckpt_lib.checkpoint_dir(str(tmp_path / "unbroken")))
  state = jax.device_get(ckpt.restore(trained.program.abstract))
  ckpt.close()
  assert_trees_equal(jax.device_get(trained.params), state_lib.eval_params(state))
  moved = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(state.params),
                                                    jax.tree.leaves(trained.params))]
  assert any(moved)  # the average is not the raw parameters
  assert_trees_equal(params_of(tmp_path / "unbroken"), params_of(tmp_path / "broken"))
