"""Long-LRM (Chen et al. 2024): the Gaussian head's activations.

The model itself (bidirectional Mamba2 + transformer hybrid, token merging, pruning) is
issue 20; it will grow here, in its family file. Constants from arthurhero/Long-LRM
(REFERENCES.md): distance along the unit ray ``sigmoid(x) * 500``, scale
``exp(min(s - 6.9, -1.2))``, opacity ``sigmoid(o - 2)``, SH degree 3, and test-time pruning
at opacity 0.001.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lrm_jax.representations import gaussians as gs
from lrm_jax.representations import sh as sh_lib

MAX_DIST = 500.0
SCALE_BIAS = -6.9
SCALE_MAX = -1.2
OPACITY_BIAS = -2.0
PRUNE_THRESHOLD = 0.001


def channels(sh_degree: int = 3) -> int:
  """Raw channels of one Long-LRM Gaussian: depth 1, quat 4, scale 3, opacity 1, SH 3K."""
  return 9 + 3 * sh_lib.num_sh_bases(sh_degree)


def activation(raw, origins, directions, *, sh_degree: int = 3, max_dist: float = MAX_DIST,
               scale_bias: float = SCALE_BIAS, scale_max: float = SCALE_MAX,
               opacity_bias: float = OPACITY_BIAS) -> gs.Gaussians:
  """Long-LRM: raw per-pixel outputs -> Gaussians (arthurhero/Long-LRM ``model/llrm.py``).

  Args:
    raw: ``[..., N, 9 + 3K]`` = depth 1, quaternion 4, scale 3, opacity 1, SH ``[K, 3]``
      flattened coefficient-major (K = (sh_degree + 1)^2). Long-LRM predicts 3 "xyz"
      channels and averages them into the depth logit; average them before calling.
    origins, directions: ``[..., N, 3]`` unit pixel rays.
  Returns:
    Gaussians at distance ``sigmoid(d) * max_dist`` along the ray, scales
    ``exp(min(s + scale_bias, scale_max))``, opacity ``sigmoid(o + opacity_bias)``, unit
    quaternions and the SH coefficients as predicted (no activation, as Long-LRM).
  """
  k = sh_lib.num_sh_bases(sh_degree)
  if raw.shape[-1] != channels(sh_degree):
    raise ValueError(f"Long-LRM Gaussians of SH degree {sh_degree} have "
                     f"{channels(sh_degree)} channels, got {raw.shape[-1]}.")
  depth = jax.nn.sigmoid(raw[..., 0:1]) * max_dist  # [..., N, 1]
  quats = gs.normalize_quats(raw[..., 1:5])
  scales = jnp.exp(jnp.minimum(raw[..., 5:8] + scale_bias, scale_max))
  opacities = jax.nn.sigmoid(raw[..., 8:9] + opacity_bias)
  sh = raw[..., 9:].reshape(raw.shape[:-1] + (k, 3))
  return gs.Gaussians(gs.unproject(origins, directions, depth), scales, quats, opacities, sh)
