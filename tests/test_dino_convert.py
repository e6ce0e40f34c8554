"""DINO / DINOv2 converters: randomly initialised Hugging Face models -> DinoViT, same outputs.

torch and transformers are test-only dependencies; models are built from small configs
(nothing is downloaded).
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jax  # pylint: disable=g-import-not-at-top,g-bad-import-order
import jax.numpy as jnp

from lrm_jax.convert import dino
from lrm_jax.models import vit

HIDDEN, LAYERS, HEADS, IMAGE, PATCH = 64, 2, 4, 32, 8


def _randomize(model):
  """Non-trivial values for every tensor (HF inits biases to 0, norms and scales to 1)."""
  g = torch.Generator().manual_seed(0)
  with torch.no_grad():
    for name, p in model.named_parameters():
      noise = 0.2 * torch.randn(p.shape, generator=g)
      one = "norm" in name and name.endswith("weight") or "lambda1" in name
      p.copy_(1.0 + noise if one else noise)
  return model.eval()


def _hf_vit():
  cfg = transformers.ViTConfig(hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                               num_attention_heads=HEADS, intermediate_size=128,
                               image_size=IMAGE, patch_size=PATCH)
  return _randomize(transformers.ViTModel(cfg, add_pooling_layer=False)), dict(
      patch=PATCH, width=HIDDEN, depth=LAYERS, num_heads=HEADS, mlp_dim=128,
      num_registers=0, layer_scale=False, epsilon=cfg.layer_norm_eps, pos_grid=IMAGE // PATCH,
      pos_antialias=False)


def _hf_dinov2_registers():
  cfg = transformers.Dinov2WithRegistersConfig(hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                                               num_attention_heads=HEADS, image_size=IMAGE,
                                               patch_size=PATCH, num_register_tokens=4)
  return _randomize(transformers.Dinov2WithRegistersModel(cfg)), dict(
      patch=PATCH, width=HIDDEN, depth=LAYERS, num_heads=HEADS, mlp_dim=4 * HIDDEN,
      num_registers=4, layer_scale=True, epsilon=cfg.layer_norm_eps, pos_grid=IMAGE // PATCH,
      pos_antialias=True)


def _hf_dinov2():
  cfg = transformers.Dinov2Config(hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                                  num_attention_heads=HEADS, image_size=IMAGE,
                                  patch_size=PATCH)
  return _randomize(transformers.Dinov2Model(cfg)), dict(
      patch=PATCH, width=HIDDEN, depth=LAYERS, num_heads=HEADS, mlp_dim=4 * HIDDEN,
      num_registers=0, layer_scale=True, epsilon=cfg.layer_norm_eps, pos_grid=IMAGE // PATCH,
      pos_antialias=False)


def _compare(hf, settings, size, scan=True, **hf_kwargs):
  x = np.random.default_rng(0).normal(size=(2, 3, size, size)).astype(np.float32)
  with torch.no_grad():
    want = hf(pixel_values=torch.from_numpy(x), **hf_kwargs).last_hidden_state.numpy()
  params = dino.dino_params(hf.state_dict(), settings["num_heads"], scan=scan)
  model = vit.DinoViT(**settings, scan=scan)
  nhwc = jnp.asarray(x.transpose(0, 2, 3, 1))
  abstract = jax.eval_shape(model.init, jax.random.key(0), nhwc)["params"]
  dino.check_against(params, jax.tree.map(lambda a: a.value if hasattr(a, "value") else a,
                                          abstract, is_leaf=lambda a: hasattr(a, "value")))
  got = np.asarray(model.apply({"params": params}, nhwc))
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("size", [IMAGE, 48])
def test_dino_vit_matches_hf(size):
  hf, settings = _hf_vit()
  _compare(hf, settings, size, interpolate_pos_encoding=size != IMAGE)


@pytest.mark.parametrize("size", [IMAGE, 56])
def test_dinov2_with_registers_matches_hf(size):
  hf, settings = _hf_dinov2_registers()
  _compare(hf, settings, size, scan=size == IMAGE)


def test_dinov2_matches_hf_interpolated():
  hf, settings = _hf_dinov2()
  _compare(hf, settings, 48)


def test_old_hf_names_and_native_hub_layout_convert_alike():
  """transformers<5 names and the torch.hub DINOv2 layout give the same params."""
  hf, settings = _hf_dinov2_registers()
  new = {k: v.numpy() for k, v in hf.state_dict().items()}
  old, hub = {}, {}
  for k, v in new.items():
    o = (k.replace("attention.q_proj", "attention.attention.query")
         .replace("attention.k_proj", "attention.attention.key")
         .replace("attention.v_proj", "attention.attention.value")
         .replace("attention.o_proj", "attention.output.dense"))
    old["dinov2." + o] = v
  for i in range(LAYERS):
    p = f"encoder.layer.{i}."
    hub[f"blocks.{i}.attn.qkv.weight"] = np.concatenate(
        [new[p + f"attention.{n}_proj.weight"] for n in "qkv"])
    hub[f"blocks.{i}.attn.qkv.bias"] = np.concatenate(
        [new[p + f"attention.{n}_proj.bias"] for n in "qkv"])
    for a, b in (("attention.o_proj", "attn.proj"), ("norm1", "norm1"), ("norm2", "norm2"),
                 ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2")):
      for part in ("weight", "bias"):
        hub[f"blocks.{i}.{b}.{part}"] = new[f"{p}{a}.{part}"]
    hub[f"blocks.{i}.ls1.gamma"] = new[p + "layer_scale1.lambda1"]
    hub[f"blocks.{i}.ls2.gamma"] = new[p + "layer_scale2.lambda1"]
  hub.update({"cls_token": new["embeddings.cls_token"],
              "pos_embed": new["embeddings.position_embeddings"],
              "register_tokens": new["embeddings.register_tokens"],
              "mask_token": new["embeddings.mask_token"],
              "patch_embed.proj.weight": new["embeddings.patch_embeddings.projection.weight"],
              "patch_embed.proj.bias": new["embeddings.patch_embeddings.projection.bias"],
              "norm.weight": new["layernorm.weight"], "norm.bias": new["layernorm.bias"]})
  ref = dino.dino_params(new, HEADS)
  for other in (old, {"encoder.model." + k: v for k, v in hub.items()}):
    got = dino.dino_params(other, HEADS)
    jax.tree.map(np.testing.assert_array_equal, got, ref)


def test_bicubic_matrix_matches_torch_interpolate():
  x = torch.randn(1, 3, 7, 7, generator=torch.Generator().manual_seed(1))
  for out, aa in ((12, False), (12, True), (4, True), (5, False)):
    want = torch.nn.functional.interpolate(x, size=(out, out), mode="bicubic",
                                           align_corners=False, antialias=aa).numpy()
    m = vit.bicubic_matrix(7, out, aa)
    got = np.einsum("hg,cgk,wk->chw", m, x[0].numpy(), m)
    np.testing.assert_allclose(got, want[0], atol=1e-5)
  # Native DINOv2 (torch.hub): scale_factor (out + 0.1) / in.
  want = torch.nn.functional.interpolate(x, scale_factor=(12.1 / 7, 12.1 / 7), mode="bicubic",
                                         align_corners=False).numpy()
  m = vit.bicubic_matrix(7, 12, False, 0.1)
  np.testing.assert_allclose(np.einsum("hg,cgk,wk->chw", m, x[0].numpy(), m), want[0],
                             atol=1e-5)


def test_unknown_names_and_missing_file_raise():
  with pytest.raises(ValueError, match="unrecognised"):
    dino.dino_params({"something.else": np.zeros(3)}, HEADS)
  with pytest.raises(FileNotFoundError, match="nope.safetensors"):
    dino.load("/nonexistent/nope.safetensors", HEADS)
