"""Long-LRM model pieces: block runs, patches, the token merge, one Gaussian per pixel with
Long-LRM's activations, pruning, losses, and the paper variant's shapes."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lrm_jax.config_loading import load_config
from lrm_jax.models import family
from lrm_jax.models import long_lrm
from lrm_jax.train import losses


@pytest.fixture(scope="module")
def micro():
  config = load_config("configs/long_lrm.py:micro")
  fam = family.get(config)
  model = fam.build(config)
  batch = fam.dummy_batch(config)
  init = jax.jit(lambda k: model.init_with_output(k, batch["inputs"],
                                                  method=model.reconstruct))
  g, variables = init(jax.random.key(0))  # one compile for both
  return config, model, batch, nn.unbox(variables["params"]), g


def test_runs_split_at_the_merge():
  assert long_lrm.runs("mmtmmt", 3) == [("m", 2, False), ("t", 1, True), ("m", 2, False),
                                        ("t", 1, False)]
  paper = long_lrm.runs("mmmmmmmt" * 3, 8)
  assert [r[1] for r in paper] == [7, 1] * 3 and [r[2] for r in paper].index(True) == 1
  with pytest.raises(ValueError, match="pattern"):
    long_lrm.runs("mx", 1)


def test_batch_spec_refuses_views_that_do_not_tokenize():
  from lrm_jax.errors import ConfigError  # pylint: disable=g-import-not-at-top
  bad = load_config("configs/long_lrm.py:micro", ["data.input_hw=(24,32)"])
  with pytest.raises(ConfigError, match=r"32x24 .* multiples of 16 \(model.patch 8, x 2"):
    family.get(bad).batch_spec(bad)
  # Without the token merge a multiple of the patch is enough.
  no_merge = load_config("configs/long_lrm.py:micro", ["data.input_hw=(24,32)",
                                                       "model.merge_after=0"])
  spec = family.get(no_merge).batch_spec(no_merge)
  assert spec["inputs"]["images"].shape[2:4] == (24, 32)
  zero = load_config("configs/long_lrm.py:micro", ["model.token_multiple=0"])
  with pytest.raises(ConfigError, match="model.token_multiple must be >= 1"):
    family.get(zero).batch_spec(zero)


def test_patchify_round_trip_and_order():
  x = jnp.arange(2 * 16 * 8 * 3, dtype=jnp.float32).reshape(2, 16, 8, 3)
  p = long_lrm.patchify(x, 4)
  assert p.shape == (2, 4, 2, 48)
  np.testing.assert_array_equal(p[1, 2, 1].reshape(4, 4, 3), x[1, 8:12, 4:8])
  np.testing.assert_array_equal(long_lrm.unpatchify(p, 4), x)


def test_token_merge_is_a_per_view_depthwise_conv():
  views, h, w, d = 2, 4, 6, 3
  tokens = jax.random.normal(jax.random.key(0), (1, 2 + views * h * w, d))
  m = long_lrm.TokenMerge(views, h, w)
  params = nn.unbox(m.init(jax.random.key(1), tokens)["params"])
  out = np.asarray(m.apply({"params": params}, tokens))
  assert out.shape == (1, 2 + views * (h // 2) * (w // 2), 4 * d)
  k = np.asarray(params["conv"]["kernel"])  # [2, 2, 1, 4d]: output o reads channel o // 4
  bias = np.asarray(params["conv"]["bias"])
  img = np.asarray(tokens[0, 2:]).reshape(views, h, w, d)
  want = np.zeros((views, h // 2, w // 2, 4 * d))
  for o in range(4 * d):
    for dy in range(2):
      for dx in range(2):
        want[..., o] += k[dy, dx, 0, o] * img[:, dy::2, dx::2, o // 4]
  want += bias
  np.testing.assert_allclose(out[0, 2:].reshape(want.shape), want, rtol=1e-5, atol=1e-5)
  glob = np.asarray(tokens[0, :2]) @ np.asarray(params["global"]["kernel"])
  np.testing.assert_allclose(out[0, :2], glob + np.asarray(params["global"]["bias"]),
                             rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="even token grid"):
    long_lrm.TokenMerge(1, 3, 4).init(jax.random.key(0), jnp.zeros((1, 14, 2)))


def test_one_gaussian_per_input_pixel_at_the_initial_distance(micro):
  config, _, batch, _, g = micro
  b, v, h, w, _ = batch["inputs"]["images"].shape
  assert g.means.shape == (b, v * h * w, 3)
  assert g.sh.shape == (b, v * h * w, (config.model.sh_degree + 1) ** 2, 3)
  origins = np.asarray(batch["inputs"]["c2w"][:, :, None, :3, 3])  # [B, V, 1, 3]
  dist = np.linalg.norm(np.asarray(g.means).reshape(b, v, h * w, 3) - origins, axis=-1)
  # A fresh head is near zero: distances near depth_init, scales near exp(scale_bias),
  # opacity near sigmoid(-2), colours near the input pixels (color_skip).
  np.testing.assert_allclose(np.median(dist), config.model.depth_init, rtol=0.1)
  np.testing.assert_allclose(np.median(g.scales), np.exp(config.model.scale_bias), rtol=0.2)
  np.testing.assert_allclose(np.median(g.opacities), 1 / (1 + np.exp(2.0)), rtol=0.1)
  err = np.abs(np.asarray(g.rgb).reshape(b, v, h, w, 3) - batch["inputs"]["images"])
  assert err.mean() < 0.04 and err.max() < 0.2


def test_token_padding_changes_no_gaussian(micro):
  """``model.token_multiple`` pads the sequence (before and after the merge) with tokens
  that Mamba2 and attention ignore: the same Gaussians and gradients as without."""
  config, model, batch, params, g = micro
  padded_config = config.copy_and_resolve_references()
  padded_config.model.token_multiple = 128
  padded = family.get(padded_config).build(padded_config)

  def loss(mod):
    def fn(p):
      out = mod.apply({"params": p}, batch["inputs"], method=mod.reconstruct)
      return sum(jnp.sum(jnp.sin(x)) for x in jax.tree.leaves(out)), out
    return jax.jit(jax.value_and_grad(fn, has_aux=True))

  (_, want), want_grads = loss(model)(params)
  (_, got), got_grads = loss(padded)(params)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  for a, b in zip(jax.tree.leaves(got_grads), jax.tree.leaves(want_grads)):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


def test_activation_constants():
  raw = jnp.zeros((1, long_lrm.channels(3)))
  ones = jnp.ones((1, 3)) / np.sqrt(3.0)
  g = long_lrm.activation(raw, jnp.zeros((1, 3)), ones)
  np.testing.assert_allclose(np.linalg.norm(g.means), 250.0, rtol=1e-6)
  np.testing.assert_allclose(g.scales, np.exp(-6.9), rtol=1e-5)
  big = long_lrm.activation(raw.at[:, 5:8].set(100.0), jnp.zeros((1, 3)), ones)
  np.testing.assert_allclose(big.scales, np.exp(-1.2), rtol=1e-5)


def test_pruning_train_keeps_a_fixed_count_with_a_random_share(micro):
  config, model, _, params, g = micro
  n = g.num
  k = round(config.model.keep_fraction * n)
  prune = jax.jit(lambda g, key: model.apply({"params": params}, g, True,
                                             method=model.prune, rngs={"sample": key}))
  kept = prune(g, jax.random.key(3))
  assert kept.num == k
  num_random = round(config.model.random_fraction * k)
  o = np.sort(np.asarray(g.opacities[0, :, 0]))[::-1]
  ko = np.sort(np.asarray(kept.opacities[0, :, 0]))[::-1]
  np.testing.assert_array_equal(ko[:k - num_random], o[:k - num_random])
  other = prune(g, jax.random.key(4))
  assert not np.array_equal(np.asarray(kept.means), np.asarray(other.means))
  # Test time: nothing dropped, Gaussians under the threshold transparent.
  g2 = g.replace(opacities=g.opacities.at[0, :5].set(1e-4))
  test = model.apply({"params": params}, g2, False, method=model.prune)
  assert test.num == n and float(jnp.sum(test.opacities[0, :5])) == 0.0
  assert float(test.opacities[0, 5, 0]) == float(g2.opacities[0, 5, 0])


def test_regularizers_and_losses(micro):
  config, _, batch, _, g = micro
  regs = long_lrm.regularizers(g, batch, config)
  assert regs["opacity"][0] == 0.1
  np.testing.assert_allclose(regs["opacity"][1], np.mean(np.asarray(g.opacities)), rtol=1e-6)
  assert config.loss.depth == 0.01 and config.loss.mask == 0.0
  # Depth term: invariant to scale and shift of the disparity, positive otherwise, 0 where
  # the source has no depth.
  z = jax.random.uniform(jax.random.key(0), (2, 3, 8, 8, 1), minval=1.0, maxval=4.0)
  mask = jnp.ones_like(z)
  same = 1.0 / (3.0 / z + 0.2)  # disparity 3 d + 0.2
  assert float(losses.depth_regularizer(same, z, mask)) < 1e-6
  assert float(losses.depth_regularizer(z[:, :, ::-1], z, mask)) > 0.05
  assert float(losses.depth_regularizer(z, jnp.zeros_like(z), mask)) == 0.0
  nd = losses.normalized_disparity(z, mask > 0)
  flat = np.asarray(nd).reshape(6, -1)
  np.testing.assert_allclose(np.mean(np.abs(flat - np.median(flat, axis=1, keepdims=True)),
                                     axis=1), 1.0, rtol=0.05)


def test_paper_variant_shapes_without_arrays():
  config = load_config("configs/long_lrm.py:paper")
  fam = family.get(config)
  spec = fam.batch_spec(config, 1)
  assert spec["inputs"]["images"].shape == (1, 32, 544, 960, 3)
  assert spec["targets"]["images"].shape == (1, 8, 544, 960, 3)
  model = fam.build(config)
  shapes = jax.eval_shape(lambda k, x: model.init(k, x, method=model.reconstruct),
                          jax.random.key(0), spec["inputs"])
  params = nn.unbox(shapes["params"])
  n = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
  assert 100e6 < n < 300e6, n  # 21 BiMamba2 + 3 transformer blocks at widths 256/1024
  assert params["merge"]["conv"]["kernel"].shape == (2, 2, 1, 1024)
  mixer = params["run_2"]["blocks"]["mixer"]  # after the merge: width 1024, 7 scanned
  assert mixer["in_proj"].shape == (7, 1024, 2 * 2048 + 2 * 256 + 32)
  out = jax.eval_shape(lambda p, x: model.apply({"params": p}, x, method=model.reconstruct),
                       params, spec["inputs"])
  assert out.means.shape == (1, 32 * 544 * 960, 3) and out.sh.shape[-2] == 16


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("LRM_LONG_LRM_TPU"),
                    reason="1.5-6 min of TPU compile on a 2-core CPU (passed at commit "
                           "time: 85 s alone on 2026-12-07); set LRM_LONG_LRM_TPU=1 to run it")
def test_paper_architecture_step_compiles_for_tpu_v5e():
  """The paper's processor (24 blocks, widths 256/1024, d_state 256, scanned + remat, bf16)
  and the Pallas splatting kernel in one train step for a v5e 2x2 slice (FSDP over 4
  chips), at 2 views of 64^2 so the compile stays short; LPIPS off."""
  from tests.test_aot import _check_report, _compile_for_tpu  # pylint: disable=g-import-not-at-top
  small = ["data.num_input_views=2", "data.num_target_views=1", "data.input_hw=(64,64)",
           "data.input_size=64", "data.target_size=64", "data.render_size=64",
           "data.batch_size=4", "mesh.shape=(1,4,1)"]
  out = _compile_for_tpu("configs/long_lrm.py:paper", small, flags=["--nolpips"])
  params = _check_report(out, "{'data': 1, 'fsdp': 4, 'tensor': 1}")
  assert params > 100e6
