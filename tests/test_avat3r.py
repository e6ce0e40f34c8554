"""Avat3r (models/avat3r.py): shapes, skips, mask gating, the expression's effect, the
loss weights, AKD, the paper size and the batch spec's checks."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lrm_jax.config_loading import load_config
from lrm_jax.data import pipeline
from lrm_jax.errors import ConfigError
from lrm_jax.models import avat3r, family
from lrm_jax.train import losses


@pytest.fixture(scope="module")
def micro():
  config = load_config("configs/avat3r.py:micro")
  fam = family.get(config)
  model = fam.build(config)
  spec = fam.batch_spec(config)
  batch = next(pipeline.make_iterator(config, "train", spec=spec))
  pipeline.check_batch(batch, spec)
  params = model.init(jax.random.PRNGKey(0), batch["inputs"], pipeline.batch_cameras(
      batch["targets"]), jnp.ones(3))["params"]
  return config, fam, model, batch, params


def _zero(params, head):
  return jax.tree_util.tree_map_with_path(
      lambda p, x: jnp.zeros_like(x) if head in jax.tree_util.keystr(p) else x, params)


def test_shapes_and_skips(micro):
  config, _, model, batch, params = micro
  inputs = batch["inputs"]
  b, v, h, w = inputs["images"].shape[:4]
  g = model.apply({"params": params}, inputs, method=model.reconstruct)
  assert g.means.shape == (b, v * h * w, 3) and g.opacities.shape == (b, v * h * w, 1)
  # Zero offset and colour heads: positions are the position map, colours the input's.
  z = _zero(_zero(params, "offset_head"), "color_head")
  g0 = model.apply({"params": z}, inputs, method=model.reconstruct)
  np.testing.assert_allclose(g0.means, inputs["positions"].reshape(b, -1, 3), atol=1e-6)
  np.testing.assert_allclose(g0.rgb, np.clip(inputs["images"], 0.01, 0.99).reshape(b, -1, 3),
                             atol=1e-5)
  assert not np.allclose(g.means, g0.means)
  # Input masks gate opacity.
  off = inputs["masks"].reshape(b, -1, 1) == 0
  assert off.any() and np.all(np.asarray(g.opacities)[off] == 0)


def test_the_target_expression_changes_the_avatar(micro):
  _, _, model, batch, params = micro
  inputs = dict(batch["inputs"])
  g1 = model.apply({"params": params}, inputs, method=model.reconstruct)
  inputs["target_expression"] = inputs["target_expression"] + 1.0
  g2 = model.apply({"params": params}, inputs, method=model.reconstruct)
  assert np.abs(np.asarray(g1.means) - np.asarray(g2.means)).max() > 1e-4


def test_eval_metrics_akd_and_input_expression(micro):
  config, fam, model, batch, params = micro
  cams = pipeline.batch_cameras(batch["targets"])
  _, g = model.apply({"params": params}, batch["inputs"], cams, jnp.ones(3))
  out = fam.eval_metrics(model, params, batch, g, jnp.ones(3))
  vt = config.data.num_target_views
  assert set(out) == {"akd", "akd_static", "psnr_input_expression"}
  for x in out.values():
    assert x.shape == (config.data.batch_size, vt)
  # AKD is 0 when the Gaussians sit exactly on the true target-expression landmarks.
  inputs, targets = batch["inputs"], batch["targets"]
  idx, vis = avat3r.landmark_gaussians(inputs)
  assert np.all(np.asarray(out["akd_static"])[np.isfinite(out["akd_static"])] >= 0)
  b = idx.shape[0]
  # Put each landmark's Gaussians at a point that projects onto the target's landmark in
  # view 0: unproject target view 0's landmark at depth 1.
  lm = targets["landmarks"][:, 0]  # [B, K, 3]
  k = targets["intrinsics"][:, 0]
  d = np.stack([(lm[..., 0] - k[:, None, 2]) / k[:, None, 0],
                (lm[..., 1] - k[:, None, 3]) / k[:, None, 1], np.ones(lm.shape[:2])], -1)
  c2w = targets["c2w"][:, 0]
  pts = np.einsum("bij,bkj->bki", c2w[:, :3, :3], d) + c2w[:, None, :3, 3]
  means = np.array(g.means)
  for bi in range(b):
    for vi in range(idx.shape[1]):
      means[bi, np.asarray(idx[bi, vi])] = pts[bi]
  exact = avat3r.akd(g.replace(means=jnp.asarray(means)), inputs, targets)
  # Not exactly 0: at 16^2 two landmarks can share an input pixel (one Gaussian for both).
  assert np.nanmax(np.asarray(exact)[:, 0]) < 0.5
  assert np.nanmean(np.asarray(exact)[:, 0]) < 0.5 * np.nanmean(np.asarray(out["akd"])[:, 0])


def test_landmark_loss_against_a_loop_and_its_gradient(micro):
  config, fam, model, batch, params = micro
  inputs, targets = batch["inputs"], batch["targets"]
  g = model.apply({"params": params}, inputs, method=model.reconstruct)
  got = float(avat3r.landmark_loss(g, inputs, targets))
  # Independent: loop over scenes, input views, target views and landmarks in float64.
  b, vi, h, w = inputs["images"].shape[:4]
  means = np.asarray(g.means, np.float64).reshape(b, vi, h, w, 3)
  lm_in, lm_t = np.asarray(inputs["landmarks"]), np.asarray(targets["landmarks"])
  total, count = 0.0, 0
  for bi in range(b):
    for i in range(vi):
      for k in range(lm_in.shape[2]):
        if lm_in[bi, i, k, 2] <= 0.5:
          continue
        col = min(max(int(np.floor(lm_in[bi, i, k, 0])), 0), w - 1)
        row = min(max(int(np.floor(lm_in[bi, i, k, 1])), 0), h - 1)
        x = means[bi, i, row, col]
        for t in range(lm_t.shape[1]):
          if lm_t[bi, t, k, 2] <= 0.5:
            continue
          c2w = np.asarray(targets["c2w"][bi, t], np.float64)
          fx, fy, cx, cy = np.asarray(targets["intrinsics"][bi, t], np.float64)
          p = c2w[:3, :3].T @ (x - c2w[:3, 3])
          uv = np.array([fx * p[0] / p[2] + cx, fy * p[1] / p[2] + cy])
          total += np.sqrt(np.sum((uv - lm_t[bi, t, k, :2]) ** 2) + 1e-6) / w
          count += 1
  assert count > 0
  np.testing.assert_allclose(got, total / count, rtol=1e-4)
  # The regulariser: off at weight 0 (the default), on otherwise, with a finite gradient
  # that reaches the landmarks' Gaussians only.
  assert fam.regularizers(g, batch, config) == {}
  on = config.copy_and_resolve_references()
  on.loss.landmarks = 1.0
  weight, value = fam.regularizers(g, batch, on)["landmarks"]
  assert weight == 1.0 and np.isclose(float(value), got)
  grad = np.asarray(jax.jit(jax.grad(lambda m: avat3r.landmark_loss(
      g.replace(means=m), inputs, targets)))(g.means))
  assert np.all(np.isfinite(grad))
  moved = np.abs(grad).sum(-1) > 0  # [B, V*H*W]
  idx, vis = avat3r.landmark_gaussians(inputs)
  expected = np.zeros_like(moved)
  for bi in range(b):
    expected[bi, np.asarray(idx[bi])[np.asarray(vis[bi])]] = True
  assert moved.any() and not np.any(moved & ~expected)


def test_l1_ssim_loss_weights_and_mse_default_unchanged():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.uniform(size=(1, 2, 16, 16, 3)), jnp.float32)
  y = jnp.asarray(rng.uniform(size=(1, 2, 16, 16, 3)), jnp.float32)
  rendered = {"rgb": x, "alpha": jnp.ones((1, 2, 16, 16, 1)), "depth": jnp.ones((1, 2, 16, 16, 1))}
  targets = {"images": y, "masks": jnp.ones((1, 2, 16, 16, 1))}
  grm = load_config("configs/grm.py:micro").loss
  terms = losses.image_losses(rendered, targets, grm)
  assert "l1" not in terms and "ssim" not in terms
  assert float(terms["total"]) == pytest.approx(float(terms["mse"] + terms["mask"]))
  av = load_config("configs/avat3r.py:micro").loss
  terms = losses.image_losses(rendered, targets, av)
  assert float(terms["l1"]) == pytest.approx(float(jnp.mean(jnp.abs(x - y))))
  assert 0 < float(terms["ssim"]) < 2
  assert float(terms["total"]) == pytest.approx(
      float(0.8 * terms["l1"] + 0.2 * terms["ssim"] + terms["mask"]), rel=1e-6)


def test_paper_variant_sizes():
  config = load_config("configs/avat3r.py:paper")
  assert config.data.input_size == 512 and config.model.depth == 8
  assert config.model.expression_tokens == 4
  fam = family.get(config)
  model = fam.build(config)
  spec = fam.batch_spec(config, batch=1)
  cams = pipeline.batch_cameras(jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                                             spec["targets"]))
  shapes = jax.eval_shape(lambda b: model.init(jax.random.PRNGKey(0), b, cams, jnp.ones(3)),
                          spec["inputs"])
  n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))
  # 8 x (self + cross) blocks at width 768 (~14M each) dominate.
  assert 100e6 < n < 200e6, n
  blocks = shapes["params"]["transformer"]["blocks"]
  assert "self" in blocks and "cross" in blocks


def test_batch_spec_refuses_resized_views():
  config = load_config("configs/avat3r.py:micro", ["data.input_size=8"])
  with pytest.raises(ConfigError, match="render_size == input_size"):
    family.get(config).batch_spec(config)


def test_animate_writes_video_frames_and_ply_and_rejects_bad_codes(tmp_path):
  import os
  from lrm_jax import animate
  from lrm_jax.data import head_folder, heads
  from lrm_jax.train import trainer
  config = load_config("configs/avat3r.py:micro", ["total_steps=1", "eval_every=1000"])
  work = str(tmp_path / "w")
  trainer.train_and_evaluate(config, work)
  ex = heads.SyntheticHeads("test", num_scenes=1, views_per_scene=6, resolution=16)[0]
  sub = head_folder.write_example(ex, str(tmp_path / "in"))
  codes = np.zeros((3, heads.EXPRESSION_DIMS), np.float32)
  codes[:, heads.JAW] = [0.0, 0.5, 1.0]
  np.save(tmp_path / "codes.npy", codes)
  out = str(tmp_path / "out")
  res = animate.animate(work, sub, str(tmp_path / "codes.npy"), out)  # one camera
  assert res["frames"].shape == (3, 16, 16, 3)
  assert sorted(os.listdir(os.path.join(out, "frames"))) == ["0000.png", "0001.png", "0002.png"]
  assert os.path.getsize(res["ply"]) > 0 and os.path.exists(res["video"])
  from lrm_jax.io import images as image_io
  strip, _ = image_io.read_image(res["strip"])  # 3 frames of 16^2, scaled 8x, 2 px apart
  assert strip.shape[:2] == (2 + 128 + 2, 2 + 3 * (128 + 2))
  np.testing.assert_allclose(strip[2:130:8, 262:390:8], res["frames"][2], atol=1 / 255)
  assert not np.allclose(res["frames"][0], res["frames"][2])  # the code drives the avatar
  front = animate.animate(work, sub, str(tmp_path / "codes.npy"), out, yaw=0.0)
  np.testing.assert_allclose(front["c2w"][:, :3, 3] / np.linalg.norm(front["c2w"][0, :3, 3]),
                             [[np.cos(np.radians(5)), 0, np.sin(np.radians(5))]] * 3,
                             atol=1e-5)  # on the face axis +x, 5 degrees up
  (tmp_path / "bad.json").write_text("[[1, 2, 3]]")
  with pytest.raises(ValueError, match=r"needs \[T, 8\]"):
    animate.animate(work, sub, str(tmp_path / "bad.json"), out)


@pytest.mark.skipif(not __import__("os").environ.get("LRM_AVAT3R_TPU"),
                    reason="~100 s TPU compile: set LRM_AVAT3R_TPU=1 (measured: 120.2M "
                           "parameters, peak 1.69 GiB per v5e chip at 64^2, batch 4)")
def test_paper_step_compiles_for_tpu_v5e():
  # The paper network (8 self + 8 cross blocks, width 768) at 64^2 images on data x fsdp.
  from tests.test_aot import _check_report, _compile_for_tpu
  out = _compile_for_tpu("configs/avat3r.py:paper",
                         ["data.batch_size=4", "mesh.shape=(2,2,1)", "data.render_size=64",
                          "data.input_size=64", "data.target_size=64"], flags=["--nolpips"])
  assert _check_report(out, "{'data': 2, 'fsdp': 2, 'tensor': 1}") > 100e6


def _numpy_field(p, positions, code, frequencies):
  """The expression field in float64 numpy: Fourier features, two SiLU layers, linear."""
  scales = np.pi * 2.0 ** np.arange(frequencies)
  angles = (positions[..., None, :] * scales[:, None]).reshape(*positions.shape[:-1], -1)
  h = np.concatenate([positions, np.sin(angles), np.cos(angles), code], -1)
  silu = lambda x: x / (1.0 + np.exp(-x))
  for name in ("fc1", "fc2"):
    h = silu(h @ np.asarray(p[name]["kernel"], np.float64) + np.asarray(p[name]["bias"]))
  return h @ np.asarray(p["out"]["kernel"], np.float64) + np.asarray(p["out"]["bias"])


def test_expression_field_moves_each_view_from_its_own_code_to_the_target(micro):
  config, _, model, batch, params = micro
  params = nn.unbox(params)
  inputs = dict(batch["inputs"])
  # A field that does something (its last layer starts at zero).
  field = dict(params["expression_field"])
  field["out"] = {"kernel": 0.3 * jax.random.normal(jax.random.key(1),
                                                    field["out"]["kernel"].shape),
                  "bias": jnp.zeros_like(field["out"]["bias"])}
  p = dict(params, expression_field=field)
  change = model.apply({"params": p}, inputs, method=model.expression_change)
  pos = np.asarray(inputs["positions"], np.float64)
  own = np.asarray(inputs["expression"], np.float64)[:, :, None, None, :]
  target = np.asarray(inputs["target_expression"], np.float64)[:, :, None, None, :]
  shape = pos.shape[:-1] + own.shape[-1:]
  want = (_numpy_field(field, pos, np.broadcast_to(target, shape), config.model.field_frequencies)
          - _numpy_field(field, pos, np.broadcast_to(own, shape), config.model.field_frequencies))
  assert np.abs(want).max() > 1e-2
  # Evaluated at the field_fraction share of pixels of highest mask (micro: 0.5): exact on
  # the mask (which covers less than that share here), 0 at the pixels left out.
  mask = np.asarray(inputs["masks"])[..., 0] > 0  # [B, V, H, W]
  k = avat3r.field_points(config.model, mask[0].size)
  assert k < mask[0].size and mask.reshape(len(mask), -1).sum(-1).max() <= k
  change = np.asarray(change)
  np.testing.assert_allclose(change[mask], want[mask], atol=2e-5)
  evaluated = np.any(change != 0, axis=-1)
  assert evaluated.reshape(len(mask), -1).sum(-1).max() <= k
  np.testing.assert_allclose(change[evaluated], want[evaluated], atol=2e-5)
  # field_fraction = 1: every pixel.
  full = family.get(config).build(load_config("configs/avat3r.py:micro",
                                              ["model.field_fraction=1.0"]))
  np.testing.assert_allclose(full.apply({"params": p}, inputs, method=full.expression_change),
                             want, atol=2e-5)
  with pytest.raises(ConfigError, match="field_fraction"):
    avat3r.field_points(load_config("configs/avat3r.py:micro",
                                    ["model.field_fraction=0.0"]).model, 10)
  with pytest.raises(ConfigError, match="mask_gaussians"):
    avat3r.field_points(load_config("configs/avat3r.py:micro",
                                    ["model.mask_gaussians=False"]).model, 10)
  # A view already at the target expression is not moved: with every view's own code set to
  # the target, the avatar is that of a model without the field.
  same = dict(inputs, expression=inputs["target_expression"])
  g = model.apply({"params": p}, same, method=model.reconstruct)
  g0 = model.apply({"params": params}, same, method=model.reconstruct)
  np.testing.assert_array_equal(np.asarray(g.means), np.asarray(g0.means))
  # The field needs the views' own codes.
  bad = load_config("configs/avat3r.py:micro", ["model.input_codes=False"])
  fam = family.get(bad)
  with pytest.raises(ConfigError, match="input_codes"):
    fam.build(bad).init(jax.random.key(0), inputs, pipeline.batch_cameras(batch["targets"]),
                        jnp.ones(3))
