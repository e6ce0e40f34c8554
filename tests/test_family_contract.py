"""The family contract: a family defined outside the library (tests/toy/: one model file and
one config) trains, evaluates, reconstructs and compiles for a TPU through it alone."""

from __future__ import annotations

import json
import os
import re

import jax
import numpy as np
import pytest

from lrm_jax.config_loading import load_config
from lrm_jax.errors import ConfigError
from lrm_jax.models import family
from tests import test_aot

TOY = "tests/toy/config.py"
COW = os.path.join(os.path.dirname(test_aot.REPO), "shared", "data", "cow_mesh", "cow.obj")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  from lrm_jax.train import trainer
  workdir = str(tmp_path_factory.mktemp("toy"))
  summary = trainer.train_and_evaluate(load_config(TOY), workdir)
  return workdir, summary


def test_toy_family_trains_through_the_contract(trained):
  workdir, summary = trained
  assert summary["family"] == "mean_color" and summary["steps"] == 30
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  train = [r for r in rows if "loss" in r]
  assert train[-1]["mse"] < 0.7 * train[0]["mse"], (train[0], train[-1])
  # The family's regularizer and the renderer's extra reach the metrics by name.
  assert all("grey" in r for r in train)
  assert all(r["painted_pixels"] == 2 * 2 * 16 * 16 for r in train)
  ev = summary["eval"]
  assert ev["num_scenes"] == 2 and np.isfinite(ev["psnr"])


def test_toy_family_evaluates_and_reconstructs(trained, tmp_path):
  from lrm_jax import evaluate, reconstruct
  workdir, summary = trained
  result = evaluate.evaluate(workdir)
  assert result["psnr"] == pytest.approx(summary["eval"]["psnr"], abs=1e-4)
  assert os.path.isfile(os.path.join(workdir, "eval.json"))
  assert os.path.isfile(os.path.join(workdir, "eval", "eval_eval.png"))
  out = str(tmp_path / "rec")
  paths = reconstruct.reconstruct(workdir, f"mesh:{COW}", out, frames=8)
  # Neither Gaussians nor a mesh field: only rendered (views and a turntable).
  assert os.path.isfile(paths["views"]) and os.path.isfile(paths["turntable"])
  assert "gaussians" not in paths and "mesh_obj" not in paths


def test_toy_family_step_compiles_for_tpu_v5e():
  out = test_aot._compile_for_tpu(TOY, ["data.batch_size=4", "mesh.shape=(2,2,1)"],
                                  flags=["--nolpips"])
  assert "mesh {'data': 2, 'fsdp': 2, 'tensor': 1}" in out and "-> FITS" in out, out
  assert re.search(r"parameters:\s+59\b", out), out  # 3 -> 8 -> 3 dense layers


def test_batch_spec_drives_init_and_the_pipeline():
  """A family that adds a per-view field (an expression code) gets it from the source's
  examples, in init's dummy batch and in the abstract batch, without shared code knowing."""
  from lrm_jax.data import pipeline
  config = load_config(TOY)
  spec = family.default_batch_spec(config)
  spec["inputs"]["code"] = jax.ShapeDtypeStruct(spec["inputs"]["images"].shape[:2] + (6,),
                                                np.float32)
  assert pipeline.extra_view_fields(spec) == ("code",)
  fam = family.Family(name="coded", model=None, model_config=None, variants=(),
                      batch_spec=lambda c, b=None: spec)
  assert fam.dummy_batch(config)["inputs"]["code"].shape == (2, 2, 6)
  views = {"images": np.zeros((4, 8, 8, 3), np.float32), "masks": np.ones((4, 8, 8, 1)),
           "depths": np.zeros((4, 8, 8, 1)), "c2w": np.tile(np.eye(4), (4, 1, 1)),
           "intrinsics": np.tile([8.0, 8.0, 4.0, 4.0], (4, 1)), "scene_id": np.int64(3),
           "code": np.arange(24, dtype=np.float32).reshape(4, 6)}
  sampler = pipeline.ViewSampler(2, 2, 8, 8, fixed_views=True, extra_fields=("code",))
  out = sampler(views, np.random.default_rng(0))
  np.testing.assert_array_equal(out["inputs"]["code"], views["code"][:2])
  np.testing.assert_array_equal(out["targets"]["code"], views["code"][2:])
  del views["code"]
  with pytest.raises(ValueError, match="'code'"):
    sampler(views, np.random.default_rng(0))


def test_check_batch_names_the_field():
  from lrm_jax.data import pipeline
  from lrm_jax.errors import DataError
  config = load_config(TOY)
  spec = family.default_batch_spec(config)
  batch = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), spec)
  pipeline.check_batch(batch, spec)
  batch["inputs"]["images"] = np.zeros((2, 2, 8, 8, 3), np.float32)
  with pytest.raises(DataError, match=r"\['inputs'\]\['images'\]"):
    pipeline.check_batch(batch, spec)


def test_unknown_family_is_a_config_error():
  config = load_config(TOY)
  config.model_name = "no_such_family"
  with pytest.raises(ConfigError, match="no_such_family"):
    family.get(config)
  config.model_name = "lrm_jax.cameras"  # a module, but not a family
  with pytest.raises(ConfigError, match="FAMILY"):
    family.get(config)
