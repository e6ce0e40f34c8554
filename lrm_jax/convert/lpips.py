"""Convert the torchvision VGG16 + lpips ``vgg.pth`` weights to an ``.npz`` for LPIPS.

  python -m lrm_jax.convert.lpips --vgg=vgg16-397923af.pth --lin=vgg.pth --out=lpips_vgg16.npz

Both inputs are local files (the torchvision ImageNet VGG16 ``state_dict`` and the
``lpips`` package's ``weights/v0.1/vgg.pth``). Reading ``.pth`` needs torch; ``.npz`` or
``.safetensors`` inputs do not. Training then needs only numpy.
"""

from __future__ import annotations

import argparse
import os

import numpy as np



def read_state_dict(path: str) -> dict:
  """Reads a PyTorch ``.pth``/``.bin``, ``.safetensors`` or ``.npz`` into numpy arrays."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"weights file {path!r} not found.")
  if path.endswith(".npz"):
    return dict(np.load(path))
  if path.endswith(".safetensors"):
    from safetensors.numpy import load_file
    return load_file(path)
  try:
    import torch
  except ImportError as e:
    raise ImportError(f"reading {path} (a PyTorch file) needs torch: pip install torch, or "
                      "pass .safetensors/.npz weights instead.") from e
  state = torch.load(path, map_location="cpu", weights_only=True)
  if isinstance(state, dict) and "state_dict" in state:
    state = state["state_dict"]
  return {k: v.detach().float().numpy() for k, v in state.items()}


def params_from_torch_state(vgg_state: dict, lin_state: dict) -> dict:
  """Maps torchvision ``vgg16`` (``features.N.weight``) and lpips (``linK.model.1.weight``)
  state dicts of numpy arrays to the params of :class:`lrm_jax.train.lpips.LPIPS`.

  The ``k``-th convolution of ``features`` (in index order; torchvision's ``features``
  also counts ReLUs and pools) becomes ``vgg/conv{k}``.
  """
  conv_ids = sorted(int(k.split(".")[1]) for k in vgg_state
                    if k.startswith("features.") and k.endswith(".weight"))
  if len(conv_ids) != 13:
    raise KeyError(f"LPIPS weights: expected torchvision vgg16's 13 convolutions "
                   f"(features.N.weight), found {len(conv_ids)}.")
  params = {"vgg": {}}
  for n, idx in enumerate(conv_ids):
    w = np.asarray(_get(vgg_state, f"features.{idx}.weight"))  # [O, I, kh, kw]
    b = np.asarray(_get(vgg_state, f"features.{idx}.bias"))
    params["vgg"][f"conv{n}"] = {"kernel": w.transpose(2, 3, 1, 0), "bias": b}
  for i in range(5):
    w = np.asarray(_get(lin_state, f"lin{i}.model.1.weight"))  # [1, C, 1, 1]
    params[f"lin{i}"] = w.reshape(-1)
  return params


def _get(state: dict, key: str):
  if key not in state:
    raise KeyError(f"LPIPS weights: missing tensor {key!r} (have {sorted(state)[:6]}...).")
  return state[key]


def save_params(path: str, params: dict) -> None:
  """Writes params as the ``.npz`` of flattened ``a/b/c`` paths that
  :func:`lrm_jax.train.lpips.load_params` reads."""
  flat = {}
  def walk(prefix, node):
    for k, v in node.items():
      if isinstance(v, dict):
        walk(prefix + k + "/", v)
      else:
        flat[prefix + k] = np.asarray(v, np.float32)
  walk("", params)
  np.savez(path, **flat)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--vgg", required=True, help="torchvision vgg16 state_dict (.pth)")
  p.add_argument("--lin", required=True, help="lpips v0.1 vgg.pth (linear layer weights)")
  p.add_argument("--out", required=True, help="output .npz")
  args = p.parse_args(argv)
  params = params_from_torch_state(read_state_dict(args.vgg), read_state_dict(args.lin))
  save_params(args.out, params)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  from lrm_jax import cli
  cli.report_user_errors(main)(None)
