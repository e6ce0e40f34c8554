"""LRM: ModLN, camera embedding and canonical frame, shapes, a learning step, paper size,
mesh export."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lrm_jax import cameras as cam
from lrm_jax.config_loading import load_config
from lrm_jax.data import pipeline
from lrm_jax.io import export
from lrm_jax.models import layers
from lrm_jax.models import lrm
from lrm_jax.render import triplane as tp
from lrm_jax.train import state as state_lib

SMALL = ["data.target_size=8", "data.target_crop=0", "data.num_target_views=2",
         "data.batch_size=2", "model.num_coarse=8", "model.num_fine=8", "model.depth=2",
         "model.mesh_resolution=24"]


def small_config(extra=()):
  return load_config("configs/lrm.py:tiny", SMALL + list(extra))


def dummy_inputs(config, batch: int):
  """The inputs and target cameras the family initialises with."""
  b = lrm.FAMILY.dummy_batch(config, batch)
  return b["inputs"], pipeline.batch_cameras(b["targets"])


@pytest.fixture(scope="module")
def tiny():
  config = small_config()
  model = lrm.FAMILY.build(config)
  params = nn.unbox(jax.jit(lambda k: state_lib.init_variables(lrm.FAMILY, model, config, k))(
      jax.random.key(0)))
  return config, model, params


def test_modln_formula():
  x = jax.random.normal(jax.random.key(0), (2, 5, 8))
  cond = jax.random.normal(jax.random.key(1), (2, 6))
  mod = layers.ModLN()
  params = nn.unbox(mod.init(jax.random.key(2), x, cond))["params"]
  # Zero-initialised modulation: a plain LayerNorm at init.
  ln = (x - x.mean(-1, keepdims=True)) / jnp.sqrt(x.var(-1, keepdims=True) + 1e-6)
  np.testing.assert_allclose(mod.apply({"params": params}, x, cond), ln, atol=1e-5)
  w = jax.random.normal(jax.random.key(3), params["mod"]["kernel"].shape)
  b = jax.random.normal(jax.random.key(4), params["mod"]["bias"].shape)
  params = {**params, "mod": {"kernel": w, "bias": b}}
  shift, scale = jnp.split(jax.nn.silu(cond) @ w + b, 2, axis=-1)
  want = ln * (1 + scale[:, None]) + shift[:, None]
  np.testing.assert_allclose(mod.apply({"params": params}, x, cond), want, atol=1e-5)


def test_camera_embedder_and_canonical_frame():
  emb = lrm.CameraEmbedder(32)
  vec = jnp.ones((3, 16))
  params = emb.init(jax.random.key(0), vec)
  assert emb.apply(params, vec).shape == (3, 32)
  c2w = cam.orbit_cameras([10.0, 130.0, 250.0], [-15.0, 20.0, 55.0], [2.0, 2.3, 2.6])
  m = lrm.world_to_canonical(jnp.asarray(c2w))
  canon = np.asarray(m @ c2w)
  for i, d in enumerate([2.0, 2.3, 2.6]):
    np.testing.assert_allclose(canon[i], cam.canonical_openlrm_source_c2w(d), atol=1e-5)
  # Sources looking at the origin: a rotation about it (the object stays in the box).
  np.testing.assert_allclose(m[:, :3, 3], 0.0, atol=1e-5)
  np.testing.assert_allclose(np.asarray(m[:, :3, :3] @ np.swapaxes(m[:, :3, :3], 1, 2)),
                             np.broadcast_to(np.eye(3), (3, 3, 3)), atol=1e-5)
  vec = cam.openlrm_camera_vector(canon, np.tile([50.0, 50.0, 32.0, 32.0], (3, 1)), 64, 64)
  assert vec.shape == (3, 16)
  np.testing.assert_allclose(vec[:, 12:], np.tile([50 / 64, 50 / 64, 0.5, 0.5], (3, 1)))


def test_plane_upsample_is_conv_transpose():
  x = jax.random.normal(jax.random.key(0), (1, 3, 2, 3, 4))
  up = lrm.PlaneUpsample(5)
  params = nn.unbox(up.init(jax.random.key(1), x))["params"]
  params["bias"] = jnp.arange(5.0)
  out = np.asarray(up.apply({"params": params}, x))
  k = np.asarray(params["kernel_dabc"])
  want = np.zeros((1, 3, 4, 6, 5))
  for i in range(2):
    for j in range(3):
      for a in range(2):
        for b in range(2):
          want[:, :, 2 * i + a, 2 * j + b] = np.asarray(x)[:, :, i, j] @ k[:, a, b] + np.arange(5)
  np.testing.assert_allclose(out, want, atol=1e-5)


def test_forward_shapes_and_finite(tiny):
  config, model, params = tiny
  inputs, cams = dummy_inputs(config, batch=2)
  bg = jnp.ones(3)
  rendered, rep = jax.jit(lambda p: model.apply({"params": p}, inputs, cams, bg))(params)
  n, ch = 2 * config.model.triplane_tokens, config.model.triplane_channels
  assert rep["planes"].shape == (2, 3, n, n, ch)
  assert rep["world_to_canonical"].shape == (2, 4, 4)
  t = config.data.target_size
  assert rendered["rgb"].shape == (2, 2, t, t, 3)
  assert rendered["depth"].shape == rendered["alpha"].shape == (2, 2, t, t, 1)
  for v in jax.tree.leaves((rendered, rep)):
    assert np.all(np.isfinite(np.asarray(v)))
  # Deterministic without train; jittered (and still finite) with it.
  train_rgb = jax.jit(lambda p, k: model.apply({"params": p}, inputs, cams, bg, train=True,
                                               rngs={"sample": k})[0]["rgb"])
  a, b = train_rgb(params, jax.random.key(5)), train_rgb(params, jax.random.key(6))
  assert np.all(np.isfinite(np.asarray(a))) and not np.allclose(a, b)
  assert "tv" in lrm.regularizers(rep, {}, config)


def test_renders_do_not_depend_on_the_world_frame(tiny):
  """Rotating the whole world (source and targets) changes nothing: the canonical frame."""
  config, model, params = tiny
  inputs, cams = dummy_inputs(config, batch=1)
  rot = np.eye(4, dtype=np.float32)
  a = np.deg2rad(37.0)
  rot[:3, :3] = [[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]]
  rot[:3, :3] = rot[:3, :3] @ np.asarray([[1, 0, 0], [0, np.cos(0.4), -np.sin(0.4)],
                                          [0, np.sin(0.4), np.cos(0.4)]], np.float32)
  moved = dict(inputs, c2w=rot @ inputs["c2w"])
  moved_cams = cam.Cameras(rot @ np.asarray(cams.c2w), cams.intrinsics, cams.height,
                           cams.width)
  f = jax.jit(lambda p, x, c: model.apply({"params": p}, x, c, jnp.ones(3))[0]["rgb"])
  np.testing.assert_allclose(f(params, moved, moved_cams), f(params, inputs, cams), atol=2e-4)


def test_gradient_steps_reduce_the_loss_on_a_fixed_batch(tiny):
  config, model, params = tiny
  batch = next(pipeline.make_iterator(config, "train"))
  cams = pipeline.batch_cameras(batch["targets"])
  bg = jnp.ones(3)
  tx = optax.adam(2e-3)

  def loss_fn(p):
    out, rep = model.apply({"params": p}, batch["inputs"], cams, bg)
    return (jnp.mean(jnp.square(out["rgb"] - batch["targets"]["images"])) +
            5e-4 * tp.total_variation(rep["planes"]))

  @jax.jit
  def step(p, o):
    loss, g = jax.value_and_grad(loss_fn)(p)
    u, o = tx.update(g, o, p)
    return optax.apply_updates(p, u), o, loss

  opt = tx.init(params)
  losses = []
  for _ in range(8):
    params, opt, loss = step(params, opt)
    losses.append(float(loss))
  assert np.all(np.isfinite(losses))
  assert losses[-1] < 0.8 * losses[0], losses


def test_paper_variant_parameter_count():
  config = load_config("configs/lrm.py:paper")
  assert config.model.encoder.name == "dino_vitb16" and config.data.input_size == 512
  model = lrm.FAMILY.build(config)
  abstract = jax.eval_shape(lambda k: state_lib.init_variables(lrm.FAMILY, model, config, k),
                            jax.random.key(0))
  n = state_lib.count_params(abstract)
  enc = state_lib.count_params(abstract["encoder"])
  assert 85e6 < enc < 87e6, enc  # ViT-B/16
  assert 300e6 < n < 600e6, n
  planes = abstract["upsampler"]["kernel_dabc"]
  assert nn.unbox(planes).shape == (1024, 2, 2, 80)


def test_export_writes_a_mesh_in_the_world_frame(tiny, tmp_path):
  config, model, params = tiny
  inputs, _ = dummy_inputs(config, batch=1)
  rep = jax.jit(lambda p: model.apply({"params": p}, inputs, method=model.reconstruct))(params)
  paths = export.export(rep, str(tmp_path), lrm.mesh_field(model, params, rep, config))
  assert os.path.getsize(paths["mesh_obj"]) > 0 and os.path.getsize(paths["mesh_glb"]) > 0
  assert paths["mesh_vertices"] > 0 and paths["mesh_faces"] > 0
  verts = np.asarray([[float(t) for t in line.split()[1:4]]
                      for line in open(paths["mesh_obj"]) if line.startswith("v ")])
  # Canonical-box vertices moved back to the world: still within the rotated unit box.
  assert np.all(np.linalg.norm(verts, axis=-1) <= np.sqrt(3) + 1e-4)


def test_plane2_zy_transposes_only_the_third_plane(tiny):
  config, model, params = tiny
  inputs, _ = dummy_inputs(config, batch=1)
  rec = lambda cfg: jax.jit(lambda p: lrm.Model(cfg.model).apply(
      {"params": p}, inputs, method=lrm.Model.reconstruct)["planes"])(params)
  a, b = rec(config), rec(small_config(["model.plane2_zy=True"]))
  np.testing.assert_array_equal(a[:, :2], b[:, :2])
  np.testing.assert_array_equal(a[:, 2].swapaxes(1, 2), b[:, 2])


def hf_vit_state(e, grid, rng):
  """A random HF ViTModel (transformers<5 names) state dict for encoder settings ``e``."""
  d, m = e.width, e.mlp_dim
  state = {"embeddings.cls_token": rng.normal(size=(1, 1, d)),
           "embeddings.position_embeddings": rng.normal(size=(1, 1 + grid * grid, d)),
           "embeddings.patch_embeddings.projection.weight": rng.normal(
               size=(d, 3, e.patch, e.patch)),
           "embeddings.patch_embeddings.projection.bias": rng.normal(size=(d,)),
           "layernorm.weight": rng.normal(size=(d,)), "layernorm.bias": rng.normal(size=(d,))}
  for i in range(e.depth):
    p = f"encoder.layer.{i}."
    for n in ("query", "key", "value"):
      state[p + f"attention.attention.{n}.weight"] = rng.normal(size=(d, d))
      state[p + f"attention.attention.{n}.bias"] = rng.normal(size=(d,))
    state[p + "attention.output.dense.weight"] = rng.normal(size=(d, d))
    state[p + "attention.output.dense.bias"] = rng.normal(size=(d,))
    state[p + "intermediate.dense.weight"] = rng.normal(size=(m, d))
    state[p + "intermediate.dense.bias"] = rng.normal(size=(m,))
    state[p + "output.dense.weight"] = rng.normal(size=(d, m))
    state[p + "output.dense.bias"] = rng.normal(size=(d,))
    for n in ("layernorm_before", "layernorm_after"):
      state[p + n + ".weight"] = rng.normal(size=(d,))
      state[p + n + ".bias"] = rng.normal(size=(d,))
  return state


def test_load_pretrained_encoder_from_a_local_file(tiny, tmp_path):
  """An HF-layout DINO state dict (.npz) replaces the encoder params; missing file raises."""
  config, _, params = tiny
  e = config.model.encoder
  state = hf_vit_state(e, config.data.input_size // e.patch, np.random.default_rng(0))
  path = str(tmp_path / "dino.npz")
  np.savez(path, **{k: v.astype(np.float32) for k, v in state.items()})
  cfg = small_config([f"model.encoder_weights={path}"])
  new = lrm.load_pretrained(params, cfg)
  np.testing.assert_allclose(new["encoder"]["cls"], state["embeddings.cls_token"], atol=1e-6)
  np.testing.assert_allclose(new["encoder"]["blocks"]["mlp"]["w1_dm"][1],
                             state["encoder.layer.1.intermediate.dense.weight"].T, atol=1e-6)
  assert new["transformer"] is params["transformer"]
  with pytest.raises(FileNotFoundError, match="nope.safetensors"):
    lrm.load_pretrained(params, small_config(["model.encoder_weights=/x/nope.safetensors"]))


def _layer_norm(x, g=None, b=None, eps=1e-6):
  y = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps)
  return y if g is None else y * g + b


def _torch_mha(x, kv, wq, wk, wv, wo, heads):
  """nn.MultiheadAttention(bias=False, batch_first=True) in numpy: ``[B, N, D]``."""
  b, n, d = x.shape
  q = (x @ wq.T).reshape(b, n, heads, -1)
  k = (kv @ wk.T).reshape(b, kv.shape[1], heads, -1)
  v = (kv @ wv.T).reshape(b, kv.shape[1], heads, -1)
  logits = np.einsum("bqhk,bshk->bhqs", q, k) / np.sqrt(q.shape[-1])
  att = np.exp(logits - logits.max(-1, keepdims=True))
  att /= att.sum(-1, keepdims=True)
  return np.einsum("bhqs,bshk->bqhk", att, v).reshape(b, n, d) @ wo.T


def _openlrm_layer_state(rng, p, d, de, dc, mlp):
  s = {}
  for j in (1, 2, 3):
    s[f"{p}norm{j}.norm.weight"] = 1 + 0.3 * rng.normal(size=(d,))
    s[f"{p}norm{j}.norm.bias"] = 0.3 * rng.normal(size=(d,))
    s[f"{p}norm{j}.mlp.1.weight"] = 0.3 * rng.normal(size=(2 * d, dc))
    s[f"{p}norm{j}.mlp.1.bias"] = 0.3 * rng.normal(size=(2 * d,))
  s[p + "cross_attn.q_proj_weight"] = 0.3 * rng.normal(size=(d, d))
  s[p + "cross_attn.k_proj_weight"] = 0.3 * rng.normal(size=(d, de))
  s[p + "cross_attn.v_proj_weight"] = 0.3 * rng.normal(size=(d, de))
  s[p + "cross_attn.out_proj.weight"] = 0.3 * rng.normal(size=(d, d))
  s[p + "self_attn.in_proj_weight"] = 0.3 * rng.normal(size=(3 * d, d))
  s[p + "self_attn.out_proj.weight"] = 0.3 * rng.normal(size=(d, d))
  s[p + "mlp.0.weight"] = 0.3 * rng.normal(size=(mlp, d))
  s[p + "mlp.0.bias"] = 0.3 * rng.normal(size=(mlp,))
  s[p + "mlp.3.weight"] = 0.3 * rng.normal(size=(d, mlp))
  s[p + "mlp.3.bias"] = 0.3 * rng.normal(size=(d,))
  return s


def test_openlrm_block_conversion_matches_a_reference():
  """One OpenLRM ConditionModulationBlock (affine ModLN, bias-free attention) in numpy vs
  our DecoderBlock with converted (ModLN-folded) weights."""
  from lrm_jax.convert import openlrm
  d, de, dc, heads, mlp = 16, 12, 8, 2, 64
  rng = np.random.default_rng(0)
  s = _openlrm_layer_state(rng, "", d, de, dc, mlp)
  x = rng.normal(size=(2, 5, d))
  img = rng.normal(size=(2, 7, de))
  cond = rng.normal(size=(2, dc))
  silu = cond / (1 + np.exp(-cond))

  def modln(j, h):
    shift, scale = np.split(silu @ s[f"norm{j}.mlp.1.weight"].T + s[f"norm{j}.mlp.1.bias"], 2, -1)
    return _layer_norm(h, s[f"norm{j}.norm.weight"], s[f"norm{j}.norm.bias"]) * (
        1 + scale[:, None]) + shift[:, None]

  want = x + _torch_mha(modln(1, x), img, s["cross_attn.q_proj_weight"],
                        s["cross_attn.k_proj_weight"], s["cross_attn.v_proj_weight"],
                        s["cross_attn.out_proj.weight"], heads)
  h = modln(2, want)
  wq, wk, wv = np.split(s["self_attn.in_proj_weight"], 3)
  want = want + _torch_mha(h, h, wq, wk, wv, s["self_attn.out_proj.weight"], heads)
  h = modln(3, want) @ s["mlp.0.weight"].T + s["mlp.0.bias"]
  h = np.asarray(jax.nn.gelu(jnp.asarray(h), approximate=False))
  want = want + h @ s["mlp.3.weight"].T + s["mlp.3.bias"]

  params = openlrm._decoder_layer({k: v.astype(np.float32) for k, v in s.items()}, "", heads)
  got, _ = lrm.DecoderBlock(heads).apply({"params": params}, jnp.asarray(x, jnp.float32),
                                         jnp.asarray(img, jnp.float32),
                                         jnp.asarray(cond, jnp.float32))
  np.testing.assert_allclose(got, want, atol=2e-4, rtol=2e-4)


def test_openlrm_state_dict_converts_to_the_model(tiny):
  """A synthetic OpenLRM state dict (v1.0 layout: HF DINO encoder) with the documented names
  and shapes converts to params of exactly the model's structure, and they run."""
  from lrm_jax.convert import dino, openlrm
  config, model, params = tiny
  c = config.model
  rng = np.random.default_rng(1)
  d, de, dc, n, ch = c.width, c.encoder.width, c.camera_embed_dim, c.triplane_tokens, \
      c.triplane_channels
  state = {"encoder.model." + k: v for k, v in hf_vit_state(
      c.encoder, config.data.input_size // c.encoder.patch, rng).items()}
  state["encoder.model.pooler.dense.weight"] = rng.normal(size=(de, de))  # skipped
  state.update({"camera_embedder.mlp.0.weight": rng.normal(size=(dc, 16)),
                "camera_embedder.mlp.0.bias": rng.normal(size=(dc,)),
                "camera_embedder.mlp.2.weight": rng.normal(size=(dc, dc)),
                "camera_embedder.mlp.2.bias": rng.normal(size=(dc,)),
                "pos_embed": rng.normal(size=(1, 3 * n * n, d)),
                "transformer.norm.weight": rng.normal(size=(d,)),
                "transformer.norm.bias": rng.normal(size=(d,)),
                "upsampler.weight": rng.normal(size=(d, ch, 2, 2)),
                "upsampler.bias": rng.normal(size=(ch,))})
  for i in range(c.depth):
    state.update(_openlrm_layer_state(rng, f"transformer.layers.{i}.", d, de, dc,
                                      int(c.mlp_ratio * d)))
  sizes = [3 * ch] + [c.nerf_hidden] * (c.nerf_layers - 1) + [4]
  for i in range(c.nerf_layers):
    state[f"synthesizer.decoder.net.{2 * i}.weight"] = rng.normal(size=(sizes[i + 1], sizes[i]))
    state[f"synthesizer.decoder.net.{2 * i}.bias"] = rng.normal(size=(sizes[i + 1],))
  cfg = small_config()
  converted = openlrm.openlrm_params(state, c.num_heads, c.encoder.num_heads)
  openlrm.adapt_config(cfg, state)
  assert cfg.model.plane2_zy and cfg.model.encoder.keep_registers  # HF encoder: v1.0
  dino.check_against(converted, params, "lrm")
  np.testing.assert_allclose(converted["upsampler"]["kernel_dabc"][3, 1, 0],
                             state["upsampler.weight"][3, :, 1, 0])
  inputs, cams = dummy_inputs(cfg, batch=1)
  out, _ = jax.jit(lambda p: lrm.Model(cfg.model).apply({"params": p}, inputs, cams,
                                                        jnp.ones(3)))(converted)
  assert np.all(np.isfinite(np.asarray(out["rgb"])))
  with pytest.raises(ValueError, match="missing"):
    openlrm.openlrm_params({"pos_embed": np.zeros((1, 3, 4))}, 2, 2)
