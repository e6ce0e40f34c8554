"""torchvision ``resnet34`` weights -> :class:`lrm_jax.models.resnet.SpatialEncoder` params.

Reads a local ``.pth``/``.safetensors``/``.npz`` state dict with torchvision's key names
(``conv1.weight``, ``bn1.running_mean``, ``layer2.0.downsample.0.weight``, ...). Nothing is
downloaded. Convolutions go from OIHW to HWIO; each BatchNorm (eval mode) is folded into a
per-channel affine map: ``scale = gamma / sqrt(var + eps)``, ``bias = beta - mean * scale``.
``fc.*`` and the stages the encoder does not use (``layer4`` for pixelNeRF) are dropped.
"""

from __future__ import annotations

import re
from typing import Mapping

import numpy as np

from lrm_jax.convert.lpips import read_state_dict

BN_EPS = 1e-5  # torchvision's BatchNorm2d default


def _bn(state: Mapping, prefix: str) -> dict:
  try:
    gamma, beta = state[f"{prefix}.weight"], state[f"{prefix}.bias"]
    mean, var = state[f"{prefix}.running_mean"], state[f"{prefix}.running_var"]
  except KeyError as e:
    raise ValueError(f"resnet weights: BatchNorm {prefix!r} lacks {e.args[0]!r}.") from e
  scale = np.asarray(gamma, np.float32) / np.sqrt(np.asarray(var, np.float32) + BN_EPS)
  return {"scale": scale, "bias": np.asarray(beta, np.float32) - np.asarray(mean) * scale}


def _conv(state: Mapping, key: str) -> dict:
  if key not in state:
    raise ValueError(f"resnet weights: no {key!r} (a torchvision resnet state dict has "
                     "conv1.weight, layer1.0.conv1.weight, ...).")
  return {"kernel": np.transpose(np.asarray(state[key], np.float32), (2, 3, 1, 0))}


def encoder_params(state: Mapping, num_stages: int = 3) -> dict:
  """The encoder's param tree from a torchvision ResNet state dict (numpy arrays).

  Args:
    state: ``{torchvision key: array}``.
    num_stages: stages the encoder uses (pixelNeRF: ``layer1``-``layer3``).
  """
  params = {"conv1": _conv(state, "conv1.weight"), "bn1": _bn(state, "bn1")}
  blocks = sorted({(int(m.group(1)), int(m.group(2))) for k in state
                   if (m := re.match(r"layer(\d+)\.(\d+)\.", k))})
  for s, i in blocks:
    if s > num_stages:
      continue
    p = f"layer{s}.{i}"
    block = {"conv1": _conv(state, f"{p}.conv1.weight"), "bn1": _bn(state, f"{p}.bn1"),
             "conv2": _conv(state, f"{p}.conv2.weight"), "bn2": _bn(state, f"{p}.bn2")}
    if f"{p}.downsample.0.weight" in state:
      block["downsample_0"] = _conv(state, f"{p}.downsample.0.weight")
      block["downsample_1"] = _bn(state, f"{p}.downsample.1")
    params[f"layer{s}_{i}"] = block
  return params


def load(path: str, num_stages: int = 3) -> dict:
  """:func:`encoder_params` of a local weights file (a clear error if it is missing)."""
  return encoder_params(read_state_dict(path), num_stages)
