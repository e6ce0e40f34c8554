"""OpenLRM ``model.safetensors`` -> :class:`lrm_jax.models.lrm.Model` params.

  python -m lrm_jax.convert.openlrm --weights=model.safetensors --variant=base --out=base.npz

Assumed key layout: OpenLRM's ``ModelLRM`` state dict (``openlrm/models/modeling_lrm.py``,
``transformer.py``, ``block.py``, ``modulate.py``, ``rendering/synthesizer.py``), as in the
released ``zxhezexin/openlrm-*`` checkpoints. ``D`` decoder width, ``De`` encoder width,
``Dc`` camera embedding width, ``C`` plane channels, ``n`` triplane tokens per side::

  encoder.model.*                          DINO (HF ViTModel, v1.0) or DINOv2 (torch.hub
                                           layout, v1.1): see lrm_jax/convert/dino.py
  camera_embedder.mlp.0.{weight [Dc, 16], bias}
  camera_embedder.mlp.2.{weight [Dc, Dc], bias}
  pos_embed                                [1, 3 n n, D]   the learned triplane tokens
  transformer.layers.{i}.norm{1,2,3}.norm.{weight, bias}     [D]       ModLN's LayerNorm
  transformer.layers.{i}.norm{1,2,3}.mlp.1.{weight [2D, Dc], bias [2D]}  (shift, scale)
  transformer.layers.{i}.cross_attn.{q_proj_weight [D, D], k_proj_weight [D, De],
                                     v_proj_weight [D, De], out_proj.weight [D, D]}
  transformer.layers.{i}.self_attn.{in_proj_weight [3D, D], out_proj.weight [D, D]}
  transformer.layers.{i}.mlp.0.{weight [4D, D], bias}   mlp.3.{weight [D, 4D], bias}
  transformer.norm.{weight, bias}          [D]
  upsampler.{weight [D, C, 2, 2], bias [C]}                ConvTranspose2d(k=2, s=2)
  synthesizer.decoder.net.{0,2,4,6}.{weight, bias}         the 4-layer NeRF MLP

Attention biases (``in_proj_bias``, ``out_proj.bias``, ``{q,k,v}_proj``-style
``in_proj_bias``) are used when present and zero otherwise (OpenLRM: ``bias=False``).

Two conventions differ and are converted exactly:

* OpenLRM's ModLN is ``LN_affine(x) (1 + scale) + shift``; ours has no LayerNorm affine.
  With ``LN_affine = g LN + b``: ``(g LN + b)(1 + s) + t = LN (1 + s') + t'`` for
  ``s' = g s + g - 1`` and ``t' = t + b s + b``, both still linear in ``SiLU(cond)``, so
  ``g`` and ``b`` fold into the modulation Dense.
* OpenLRM's third plane is indexed ``(z, y)`` (EG3D's plane bug); the converted config sets
  ``model.plane2_zy=True`` so that plane is transposed into our ``(y, z)`` convention.

The v1.1 DINOv2 wrapper feeds only cls + patch tokens (no registers) to the decoder and
interpolates positions the torch.hub way (offset 0.1): the config gets
``encoder.keep_registers=False`` and ``encoder.pos_offset=0.1`` for hub-layout encoders.
"""

from __future__ import annotations

import argparse
import re
from typing import Any, Mapping

import numpy as np

from lrm_jax.convert import dino
from lrm_jax.convert.lpips import read_state_dict

ENCODER_PREFIX = "encoder.model."


def _np(state: Mapping[str, Any]) -> dict:
  return {k: (v.detach().float().numpy() if hasattr(v, "detach") else
              np.asarray(v, np.float32)) for k, v in state.items()}


def _heads_in(w: np.ndarray, heads: int) -> np.ndarray:
  """torch ``[H*K, Din]`` -> ``[Din, H, K]``."""
  out, din = w.shape
  return w.T.reshape(din, heads, out // heads)


def _attention(q, k, v, o, biases, heads):
  d = o.shape[0]
  hk = q.shape[0]
  qb, kb, vb = biases.get("in", np.zeros(3 * hk, np.float32)).reshape(3, heads, hk // heads)
  return {"q_dnh": _heads_in(q, heads), "k_dnh": _heads_in(k, heads),
          "v_dnh": _heads_in(v, heads), "q_b": qb, "k_b": kb, "v_b": vb,
          "o_nhd": o.T.reshape(heads, hk // heads, d),
          "o_b": biases.get("out", np.zeros(d, np.float32))}


def fold_modln(gamma: np.ndarray, beta: np.ndarray, weight: np.ndarray,
               bias: np.ndarray) -> dict:
  """OpenLRM ModLN (affine LayerNorm, ``mlp.1`` Linear ``[2D, Dc]`` -> shift, scale) ->
  our ModLN Dense ``{kernel [Dc, 2D], bias [2D]}`` (see the module docstring)."""
  d = gamma.shape[0]
  w_t, w_s = weight[:d], weight[d:]  # [D, Dc] each
  b_t, b_s = bias[:d], bias[d:]
  w_s2 = gamma[:, None] * w_s
  b_s2 = gamma * b_s + gamma - 1.0
  w_t2 = w_t + beta[:, None] * w_s
  b_t2 = b_t + beta * b_s + beta
  return {"kernel": np.concatenate([w_t2, w_s2], 0).T, "bias": np.concatenate([b_t2, b_s2])}


def _decoder_layer(s: dict, p: str, heads: int) -> dict:
  out = {}
  for j in (1, 2, 3):
    out[f"norm{j}"] = {"mod": fold_modln(s[f"{p}norm{j}.norm.weight"], s[f"{p}norm{j}.norm.bias"],
                                         s[f"{p}norm{j}.mlp.1.weight"],
                                         s[f"{p}norm{j}.mlp.1.bias"])}
  ca = p + "cross_attn."
  biases = {}
  if ca + "in_proj_bias" in s:
    biases["in"] = s[ca + "in_proj_bias"]
  if ca + "out_proj.bias" in s:
    biases["out"] = s[ca + "out_proj.bias"]
  out["cross_attn"] = _attention(s[ca + "q_proj_weight"], s[ca + "k_proj_weight"],
                                 s[ca + "v_proj_weight"], s[ca + "out_proj.weight"], biases,
                                 heads)
  sa = p + "self_attn."
  q, k, v = np.split(s[sa + "in_proj_weight"], 3, axis=0)
  biases = {}
  if sa + "in_proj_bias" in s:
    biases["in"] = s[sa + "in_proj_bias"]
  if sa + "out_proj.bias" in s:
    biases["out"] = s[sa + "out_proj.bias"]
  out["self_attn"] = _attention(q, k, v, s[sa + "out_proj.weight"], biases, heads)
  out["mlp"] = {"w1_dm": s[p + "mlp.0.weight"].T, "b1_m": s[p + "mlp.0.bias"],
                "w2_md": s[p + "mlp.3.weight"].T, "b2_d": s[p + "mlp.3.bias"]}
  return out


def openlrm_params(state: Mapping[str, Any], num_heads: int, encoder_heads: int,
                   scan: bool = True) -> dict:
  """Our LRM ``params`` (nested numpy dict) from an OpenLRM state dict.

  Args:
    state: the ``ModelLRM`` state dict (key layout in the module docstring).
    num_heads: the decoder's attention heads; encoder_heads: the encoder's.
    scan: stacked layers (``model.scan=True``) or ``block_{i}``.
  """
  import jax
  s = _np(state)
  need = ["pos_embed", "camera_embedder.mlp.0.weight", "upsampler.weight",
          "transformer.norm.weight", "synthesizer.decoder.net.0.weight"]
  missing = [k for k in need if k not in s]
  if missing:
    raise ValueError(f"not an OpenLRM ModelLRM state dict: missing {missing}.")
  enc_state = {k[len(ENCODER_PREFIX):]: v for k, v in s.items() if k.startswith(ENCODER_PREFIX)}
  if not enc_state:
    raise ValueError(f"OpenLRM weights: no encoder tensors under {ENCODER_PREFIX!r}.")
  layer_ids = sorted({int(m.group(1)) for k in s
                      if (m := re.match(r"transformer\.layers\.(\d+)\.", k))})
  if layer_ids != list(range(len(layer_ids))):
    raise ValueError(f"OpenLRM weights: decoder layers {layer_ids} are not contiguous.")
  layers = [_decoder_layer(s, f"transformer.layers.{i}.", num_heads) for i in layer_ids]
  transformer = {"ln_final": {"LayerNorm_0": {"scale": s["transformer.norm.weight"],
                                              "bias": s["transformer.norm.bias"]}}}
  if scan:
    transformer["blocks"] = jax.tree.map(lambda *xs: np.stack(xs), *layers)
  else:
    for i, lay in enumerate(layers):
      transformer[f"block_{i}"] = lay
  nerf, i = {}, 0
  while f"synthesizer.decoder.net.{2 * i}.weight" in s:
    nerf[f"dense_{i}"] = {"kernel": s[f"synthesizer.decoder.net.{2 * i}.weight"].T,
                          "bias": s[f"synthesizer.decoder.net.{2 * i}.bias"]}
    i += 1
  return {
      "encoder": dino.dino_params(enc_state, encoder_heads, scan),
      "camera_embedder": {
          "dense_0": {"kernel": s["camera_embedder.mlp.0.weight"].T,
                      "bias": s["camera_embedder.mlp.0.bias"]},
          "dense_1": {"kernel": s["camera_embedder.mlp.2.weight"].T,
                      "bias": s["camera_embedder.mlp.2.bias"]}},
      "triplane_tokens": s["pos_embed"][0],
      "transformer": transformer,
      "upsampler": {"kernel_dabc": s["upsampler.weight"].transpose(0, 2, 3, 1),
                    "bias": s["upsampler.bias"]},
      "nerf": nerf,
  }


def is_hub_encoder(state: Mapping[str, Any]) -> bool:
  """True when the encoder is in the native DINOv2 torch.hub layout (OpenLRM v1.1)."""
  return any(k.startswith(ENCODER_PREFIX + "blocks.") for k in state)


def adapt_config(config, state: Mapping[str, Any]):
  """Sets the conventions converted OpenLRM weights need on ``config.model`` (in place)."""
  config.model.plane2_zy = True
  if is_hub_encoder(state):
    config.model.encoder.keep_registers = False
    config.model.encoder.pos_offset = 0.1
  return config


def load(path: str, config) -> dict:
  """Params for ``config`` (adapted in place by :func:`adapt_config`) from a local file."""
  state = read_state_dict(path)
  adapt_config(config, state)
  return openlrm_params(state, config.model.num_heads, config.model.encoder.num_heads,
                        config.model.scan)


def main(argv=None):
  import flax.traverse_util
  from lrm_jax.config_loading import load_config
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--weights", required=True, help="local OpenLRM model.safetensors")
  p.add_argument("--variant", required=True, choices=["small", "base", "large"])
  p.add_argument("--out", required=True, help="output .npz (flattened param paths)")
  args = p.parse_args(argv)
  config = load_config(f"configs/lrm.py:{args.variant}")
  flat = flax.traverse_util.flatten_dict(load(args.weights, config), sep="/")
  np.savez(args.out, **flat)
  print(f"wrote {args.out} ({sum(v.size for v in flat.values()):,} parameters); run it with "
        f"--config.model.plane2_zy=True --config.model.encoder.keep_registers="
        f"{config.model.encoder.keep_registers} "
        f"--config.model.encoder.pos_offset={config.model.encoder.pos_offset}")


if __name__ == "__main__":
  from lrm_jax import cli
  cli.report_user_errors(main)(None)
