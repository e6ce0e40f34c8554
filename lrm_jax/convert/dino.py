"""PyTorch DINO / DINOv2 ViT weights -> :class:`lrm_jax.models.vit.DinoViT` params.

  python -m lrm_jax.convert.dino --weights=model.safetensors --out=dino_vitb16.npz \
      --config=configs/lrm.py:paper   # the config whose model.encoder the weights are for

Reads a local ``.safetensors`` / ``.bin`` / ``.pth`` / ``.npz`` (or takes a state dict) in
any of these layouts (nothing is downloaded):

  * Hugging Face ``ViTModel`` (``facebook/dino-vitb16``), old names
    (``encoder.layer.{i}.attention.attention.query``, ``intermediate.dense``,
    ``output.dense``, ``layernorm_before/after``) or transformers>=5 names
    (``layers.{i}.attention.q_proj``, ``mlp.fc1``);
  * Hugging Face ``Dinov2Model`` / ``Dinov2WithRegistersModel``
    (``encoder.layer.{i}.norm1``, ``attention.attention.query`` or ``attention.q_proj``,
    ``layer_scale1.lambda1``, ``mlp.fc1``, ``embeddings.register_tokens``);
  * the native DINOv2 ``torch.hub`` layout (``blocks.{i}.attn.qkv``, ``ls1.gamma``,
    ``pos_embed``, ``register_tokens``), which OpenLRM v1.1 checkpoints embed.

Prefixes such as ``vit.``, ``dinov2.``, ``model.`` or ``encoder.model.`` are stripped; the
pooler and the mask token are unused and skipped. PyTorch ``Linear`` weights are
``[out, in]``; ours are ``[in, out]`` split by heads (``q_dnh``), and the patch conv goes
from ``[D, 3, p, p]`` to ``[p, p, 3, D]``. Stacked (``nn.scan``) layers get a leading
layer axis.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import numpy as np

from lrm_jax.convert.lpips import read_state_dict

_PREFIXES = ("encoder.model.", "model.", "vit.", "dinov2.", "backbone.")

# Per-layer name patterns (after the layer prefix) -> canonical names. First match wins, so
# ``attention.output.dense`` is tried before the MLP's ``output.dense``.
_LAYER_ALIASES = (
    (r"attention\.attention\.query\.", "q."), (r"attention\.q_proj\.", "q."),
    (r"attention\.attention\.key\.", "k."), (r"attention\.k_proj\.", "k."),
    (r"attention\.attention\.value\.", "v."), (r"attention\.v_proj\.", "v."),
    (r"attention\.output\.dense\.", "o."), (r"attention\.o_proj\.", "o."),
    (r"attn\.proj\.", "o."), (r"attn\.qkv\.", "qkv."),
    (r"layernorm_before\.", "ln1."), (r"norm1\.", "ln1."),
    (r"layernorm_after\.", "ln2."), (r"norm2\.", "ln2."),
    (r"intermediate\.dense\.", "fc1."), (r"mlp\.fc1\.", "fc1."),
    (r"output\.dense\.", "fc2."), (r"mlp\.fc2\.", "fc2."),
    (r"layer_scale1\.lambda1$", "ls1"), (r"ls1\.gamma$", "ls1"),
    (r"layer_scale2\.lambda1$", "ls2"), (r"ls2\.gamma$", "ls2"),
)
_LAYER_RE = re.compile(r"^(?:encoder\.layer|encoder\.layers|layers|blocks)\.(\d+)\.(.+)$")
_GLOBAL_ALIASES = {
    "embeddings.cls_token": "cls", "cls_token": "cls",
    "embeddings.position_embeddings": "pos", "pos_embed": "pos",
    "embeddings.register_tokens": "registers", "register_tokens": "registers",
    "embeddings.patch_embeddings.projection.weight": "patch.weight",
    "embeddings.patch_embeddings.projection.bias": "patch.bias",
    "patch_embed.proj.weight": "patch.weight", "patch_embed.proj.bias": "patch.bias",
    "layernorm.weight": "ln_final.weight", "layernorm.bias": "ln_final.bias",
    "norm.weight": "ln_final.weight", "norm.bias": "ln_final.bias",
}
_SKIP = re.compile(r"(^|\.)(pooler\..*|mask_token|embeddings\.mask_token)$")


def _strip(key: str) -> str:
  for p in _PREFIXES:
    if key.startswith(p):
      return key[len(p):]
  return key


def canonical_state(state: Mapping[str, Any]) -> tuple[dict, dict]:
  """``(globals, layers)``: canonical names -> numpy arrays; ``layers[i][name]``.

  Raises ``ValueError`` naming any key that matches no known layout.
  """
  glob, per_layer, unknown = {}, {}, []
  for raw, value in state.items():
    key = _strip(raw)
    arr = np.asarray(value, np.float32)
    if _SKIP.search(key):
      continue
    if key in _GLOBAL_ALIASES:
      glob[_GLOBAL_ALIASES[key]] = arr
      continue
    m = _LAYER_RE.match(key)
    if m:
      i, rest = int(m.group(1)), m.group(2)
      for pattern, name in _LAYER_ALIASES:
        if re.match(pattern, rest):
          suffix = rest[re.match(pattern, rest).end():]
          per_layer.setdefault(i, {})[name + suffix] = arr
          break
      else:
        unknown.append(raw)
      continue
    unknown.append(raw)
  if unknown:
    raise ValueError(f"unrecognised DINO/DINOv2 weight names (first 5): {unknown[:5]}")
  for i, lay in per_layer.items():  # native DINOv2: fused qkv [3D, D] -> q, k, v.
    for part in ("weight", "bias"):
      if f"qkv.{part}" in lay:
        q, k, v = np.split(lay.pop(f"qkv.{part}"), 3, axis=0)
        lay[f"q.{part}"], lay[f"k.{part}"], lay[f"v.{part}"] = q, k, v
  return glob, per_layer


def _heads_in(w: np.ndarray, b: np.ndarray, heads: int) -> tuple[np.ndarray, np.ndarray]:
  """torch Linear ``[H*K, D]`` -> ``q_dnh [D, H, K]``, bias ``[H, K]``."""
  out, d = w.shape
  return w.T.reshape(d, heads, out // heads), b.reshape(heads, out // heads)


def _block_params(lay: dict, heads: int, layer_scale: bool) -> dict:
  need = ["ln1.weight", "ln1.bias", "ln2.weight", "ln2.bias", "q.weight", "k.weight",
          "v.weight", "o.weight", "fc1.weight", "fc2.weight"]
  missing = [n for n in need if n not in lay]
  if missing:
    raise ValueError(f"a transformer layer is missing {missing}.")
  zeros = lambda n: np.zeros((n,), np.float32)
  attn = {}
  for n in ("q", "k", "v"):
    w = lay[f"{n}.weight"]
    attn[f"{n}_dnh"], attn[f"{n}_b"] = _heads_in(w, lay.get(f"{n}.bias", zeros(w.shape[0])),
                                                 heads)
  wo = lay["o.weight"]  # [D, H*K]
  d, hk = wo.shape
  attn["o_nhd"] = wo.T.reshape(heads, hk // heads, d)
  attn["o_b"] = lay.get("o.bias", zeros(d))
  out = {
      "ln1": {"LayerNorm_0": {"scale": lay["ln1.weight"], "bias": lay["ln1.bias"]}},
      "ln2": {"LayerNorm_0": {"scale": lay["ln2.weight"], "bias": lay["ln2.bias"]}},
      "attn": attn,
      "mlp": {"w1_dm": lay["fc1.weight"].T, "b1_m": lay.get("fc1.bias", zeros(
          lay["fc1.weight"].shape[0])), "w2_md": lay["fc2.weight"].T,
              "b2_d": lay.get("fc2.bias", zeros(d))},
  }
  if layer_scale:
    if "ls1" not in lay or "ls2" not in lay:
      raise ValueError("the model has LayerScale (DINOv2) but the weights do not "
                       "(layer_scale1/ls1): wrong encoder for these weights?")
    out["ls1"], out["ls2"] = lay["ls1"], lay["ls2"]
  elif "ls1" in lay:
    raise ValueError("the weights have LayerScale (DINOv2) but the encoder is configured "
                     "without it (layer_scale=False).")
  return out


def dino_params(state: Mapping[str, Any], num_heads: int, scan: bool = True) -> dict:
  """DinoViT ``params`` (a nested dict of numpy float32) from a PyTorch state dict.

  Args:
    state: name -> array (torch tensors are fine) in one of the module docstring's layouts.
    num_heads: attention heads (not stored in the weights).
    scan: stack the layers under ``blocks`` (``DinoViT(scan=True)``) or name them
      ``block_{i}``.
  """
  state = {k: (v.detach().float().numpy() if hasattr(v, "detach") else v)
           for k, v in state.items()}
  glob, per_layer = canonical_state(state)
  for n in ("cls", "pos", "patch.weight", "ln_final.weight"):
    if n not in glob:
      raise ValueError(f"DINO weights: no {n!r} tensor found.")
  layer_scale = any("ls1" in lay for lay in per_layer.values())
  depth = len(per_layer)
  if sorted(per_layer) != list(range(depth)):
    raise ValueError(f"DINO weights: layer indices {sorted(per_layer)} are not 0..{depth-1}.")
  blocks = [_block_params(per_layer[i], num_heads, layer_scale) for i in range(depth)]
  w = glob["patch.weight"]  # [D, 3, p, p]
  d = w.shape[0]
  params = {
      "patch_embed": {"conv": {"kernel": w.transpose(2, 3, 1, 0),
                               "bias": glob.get("patch.bias", np.zeros(d, np.float32))}},
      "cls": glob["cls"].reshape(1, 1, d),
      "pos_embedding": glob["pos"].reshape(1, -1, d),
      "ln_final": {"LayerNorm_0": {"scale": glob["ln_final.weight"],
                                   "bias": glob["ln_final.bias"]}},
  }
  if "registers" in glob:
    params["registers"] = glob["registers"].reshape(1, -1, d)
  if scan:
    import jax
    params["blocks"] = jax.tree.map(lambda *xs: np.stack(xs), *blocks)
  else:
    for i, blk in enumerate(blocks):
      params[f"block_{i}"] = blk
  return params


def load(path: str, num_heads: int, scan: bool = True) -> dict:
  """:func:`dino_params` of a local weights file (clear error if it is missing)."""
  return dino_params(read_state_dict(path), num_heads, scan)


def check_against(params: dict, reference: dict, where: str = "encoder") -> None:
  """Raises ``ValueError`` if ``params`` and ``reference`` (e.g. an ``eval_shape``) differ in
  structure or shapes, naming the first mismatch."""
  import jax
  got = {jax.tree_util.keystr(p): np.shape(x)
         for p, x in jax.tree_util.tree_flatten_with_path(params)[0]}
  want = {jax.tree_util.keystr(p): tuple(x.shape)
          for p, x in jax.tree_util.tree_flatten_with_path(reference)[0]}
  if got.keys() != want.keys():
    extra, missing = sorted(got.keys() - want.keys()), sorted(want.keys() - got.keys())
    raise ValueError(f"{where}: converted weights do not match the model: missing "
                     f"{missing[:5]}, unexpected {extra[:5]}.")
  for k, shape in want.items():
    if got[k] != shape:
      raise ValueError(f"{where}{k}: weights have shape {got[k]}, the model wants {shape}.")


def main(argv):
  """``--weights``, ``--out`` and the config whose ``model.encoder`` they are for."""
  del argv
  import flax.traverse_util
  from absl import flags
  from lrm_jax import config_loading
  encoder = config_loading.config_from_command_line().model.encoder
  params = load(flags.FLAGS.weights, encoder.num_heads)
  flat = flax.traverse_util.flatten_dict(params, sep="/")
  np.savez(flags.FLAGS.out, **flat)
  print(f"wrote {flags.FLAGS.out} ({sum(v.size for v in flat.values()):,} parameters)")


if __name__ == "__main__":
  from absl import flags
  from lrm_jax import cli, config_loading
  config_loading.define_config_flag()
  flags.declare_key_flag("config")
  flags.DEFINE_string("weights", None, "local .safetensors / .bin / .pth / .npz")
  flags.DEFINE_string("out", None, "output .npz (flattened param paths)")
  flags.mark_flags_as_required(["weights", "out"])
  cli.run(main, flags_parser=config_loading.flags_parser)
