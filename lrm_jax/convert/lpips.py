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

from lrm_jax.train import lpips


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


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--vgg", required=True, help="torchvision vgg16 state_dict (.pth)")
  p.add_argument("--lin", required=True, help="lpips v0.1 vgg.pth (linear layer weights)")
  p.add_argument("--out", required=True, help="output .npz")
  args = p.parse_args(argv)
  params = lpips.params_from_torch_state(read_state_dict(args.vgg), read_state_dict(args.lin))
  lpips.save_params(args.out, params)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
