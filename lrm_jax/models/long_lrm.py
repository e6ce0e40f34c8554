"""Long-LRM (Chen et al. ICCV 2025): many posed views -> one 3D Gaussian per input pixel,
through a hybrid of bidirectional Mamba2 and transformer blocks (arthurhero/Long-LRM).

  images [B, V, H, W, 3] * 2 - 1 + Plücker rays [B, V, H, W, 6]      (9 channels per pixel)
  -> patchify (patch p) -> linear without bias -> width D          [B, V * h * w, D]
  -> two learned global tokens prepended, LayerNorm                [B, 2 + V h w, D]
  -> blocks by ``model.pattern`` ("m": x + BiMamba2(RMSNorm(x)), "t": transformer block);
     after block ``merge_after`` a token merge: per view a depthwise conv (kernel 2, stride
     2, 4 outputs per channel: D -> 4D) halves each side, the global tokens go through a
     linear D -> 4D; the patch is then 2p
  -> LayerNorm -> linear to each token's 2p x 2p pixels x (3 xyz + 3K SH + 3 scale + 4 rot
     + 1 opacity) channels -> Gaussians by Long-LRM's activations (:func:`activation`)
  -> training: a fixed number kept (the most opaque plus a random share); test: all, the
     export prunes at opacity 0.001. Rendered by the splatting renderer (white background).

Constants from arthurhero/Long-LRM (REFERENCES.md): distance along the unit ray
``sigmoid(x) * 500``, scale ``exp(min(s - 6.9, -1.2))``, opacity ``sigmoid(o - 2)``, SH
degree 3, and test-time pruning at opacity 0.001. Ours, for CPU-sized runs (off in
``paper``): an initial distance (a bias on the distance logit), a scale bias for coarse
images and the input pixel's colour as an SH DC skip.
Deviations: the transformer blocks are :class:`layers.TransformerBlock` and the LayerNorms
are :class:`layers.LayerNorm`, both with (zero-initialised) biases where Long-LRM has none;
training-time gradient-norm skipping (Long-LRM skips steps with norm > 50) is not done.
"""

from __future__ import annotations

import logging
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from lrm_jax import cameras as cam
from lrm_jax.data import view_sampling
from lrm_jax.errors import ConfigError
from lrm_jax.models import family
from lrm_jax.models import pixel_gaussians
from lrm_jax.models import layers
from lrm_jax.models import mamba2
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


# ----------------------------------------------------------------------------------------
# Variants and config.
# ----------------------------------------------------------------------------------------

# variant -> network sizes. ``pattern``: one letter per block, "m" a bidirectional Mamba2
# block, "t" a transformer block; the token merge follows block ``merge_after``.
VARIANTS = {
    # Smallest: tests and AOT checks.
    "micro": dict(patch=8, width=32, pattern="mtmt", merge_after=2, d_state=8,
                  mamba_head_dim=16, ssd_chunk=16, head_dim=16, sh_degree=0),
    # CPU-trainable: 64^2 inputs, {2 Mamba2, 1 transformer} x 2, width 64 -> 256.
    # (SSD chunk 16: XLA:CPU runs the chunked scan ~2x faster than at 64 at these lengths.)
    "tiny": dict(patch=8, width=64, pattern="mmtmmt", merge_after=3, d_state=16,
                 mamba_head_dim=32, ssd_chunk=16, head_dim=32, sh_degree=0),
    # Paper (REFERENCES.md, Long-LRM): {7 Mamba2, 1 transformer} x 3, widths 256 -> 1024,
    # d_state 256, Mamba head dim 64, chunk 256, attention head dim 64, SH degree 3.
    "paper": dict(patch=8, width=256, pattern="mmmmmmmt" * 3, merge_after=8, d_state=256,
                  mamba_head_dim=64, ssd_chunk=256, head_dim=64, sh_degree=3),
}


def model_config(variant: str) -> ml_collections.ConfigDict:
  """The ``config.model`` section for a Long-LRM variant."""
  if variant not in VARIANTS:
    raise ValueError(f"unknown Long-LRM variant {variant!r}; choose one of "
                     f"{sorted(VARIANTS)}.")
  c = ml_collections.ConfigDict(dict(VARIANTS[variant]))
  c.variant = variant
  c.expand = 2
  c.d_conv = 4
  c.ngroups = 1
  c.mlp_ratio = 4.0
  c.remat_policy = "full" if variant == "paper" else "none"
  c.scan = variant == "paper"
  c.dtype = "bfloat16" if variant == "paper" else "float32"
  c.attention = "auto"
  # The token sequence (2 global tokens + the image tokens) padded to a multiple of this
  # with tokens that no other token sees (Mamba2 and attention ignore them): aligned
  # lengths spare the TPU relayouts of [.., 2 + V h w, ..] arrays (1: no padding).
  c.token_multiple = 256 if variant == "paper" else 1
  # Gaussian activations (Long-LRM's constants).
  c.max_dist = MAX_DIST
  c.scale_bias = SCALE_BIAS
  c.scale_max = SCALE_MAX
  c.opacity_bias = OPACITY_BIAS
  c.prune_threshold = PRUNE_THRESHOLD
  # Ours (0 / False: Long-LRM as published): the initial distance along each ray (a bias
  # on the distance logit; Long-LRM starts at max_dist / 2) and the input pixel's colour
  # added to the SH DC coefficient. CPU-sized runs learn in hundreds of steps with them.
  c.depth_init = 0.0
  c.color_skip = False
  # Training-time pruning: keep keep_fraction of the Gaussians, random_fraction of those
  # drawn at random from the rest (Long-LRM: 40% kept, a tenth of them at random).
  c.keep_fraction = 0.4
  c.random_fraction = 0.1
  # Renderer (as GRM's: pixel_gaussians.render_gaussians).
  c.backend = "auto"
  c.tile_size = 8
  c.block_tiles = 16
  c.chunk_size = 8
  c.host_sorts = True
  c.max_unrolled_cameras = 16
  c.intersections_per_gaussian = 0
  c.render_views_at_once = 0
  c.render_remat = False
  if variant in ("micro", "tiny"):
    # Object-scale synthetic scenes at 64^2: a pixel spans ~0.03 at distance 2.3.
    c.depth_init = 2.3
    c.scale_bias = math.log(0.02)
    c.color_skip = True
  if variant == "paper":
    c.intersections_per_gaussian = 6
    c.render_views_at_once = 1
    c.render_remat = True
  return c


def runs(pattern: str, merge_after: int) -> list[tuple[str, int, bool]]:
  """``pattern`` as runs of equal blocks ``(kind, count, merge_after_this_run)``; a run is
  split at the merge. E.g. ``runs("mmtmmt", 3) == [("m", 2, False), ("t", 1, True),
  ("m", 2, False), ("t", 1, False)]``."""
  if set(pattern) - set("mt"):
    raise ValueError(f"model.pattern {pattern!r}: use 'm' (Mamba2) and 't' (transformer).")
  if not 0 <= merge_after <= len(pattern):
    raise ValueError(f"model.merge_after {merge_after} is outside the {len(pattern)} blocks.")
  out = []
  for i, kind in enumerate(pattern):
    if out and out[-1][0] == kind and not out[-1][2]:
      out[-1] = (kind, out[-1][1] + 1, i + 1 == merge_after)
    else:
      out.append((kind, 1, i + 1 == merge_after))
  return out


# ----------------------------------------------------------------------------------------
# Network.
# ----------------------------------------------------------------------------------------


def patchify(x: jax.Array, p: int) -> jax.Array:
  """``[N, H, W, C] -> [N, H/p, W/p, p * p * C]`` (row, column, channel within a patch)."""
  n, h, w, c = x.shape
  if h % p or w % p:
    raise ValueError(f"Long-LRM: image {h}x{w} is not divisible by the patch size {p}.")
  x = x.reshape(n, h // p, p, w // p, p, c)
  return jnp.transpose(x, (0, 1, 3, 2, 4, 5)).reshape(n, h // p, w // p, p * p * c)


def pad_tokens(x: jax.Array, multiple: int) -> jax.Array:
  """``[B, T, D] -> [B, ceil(T / multiple) * multiple, D]``, zeros appended."""
  pad = -x.shape[1] % multiple
  return jnp.pad(x, ((0, 0), (0, pad), (0, 0))) if pad else x


def unpatchify(x: jax.Array, p: int) -> jax.Array:
  """Inverse of :func:`patchify`: ``[N, h, w, p * p * C] -> [N, h p, w p, C]``."""
  n, h, w, k = x.shape
  c = k // (p * p)
  x = x.reshape(n, h, w, p, p, c)
  return jnp.transpose(x, (0, 1, 3, 2, 4, 5)).reshape(n, h * p, w * p, c)


class TokenMerge(nn.Module):
  """Long-LRM's token merge: image tokens ``[B, V * h * w, D]`` (after ``num_global``
  global tokens) -> per view a depthwise conv (kernel 2, stride 2, 4 outputs per channel)
  -> ``[B, V * h/2 * w/2, 4D]``; global tokens through a linear ``D -> 4D``."""

  views: int
  height: int
  width: int
  num_global: int = 2

  @nn.compact
  def __call__(self, tokens: jax.Array) -> jax.Array:
    b, _, d = tokens.shape
    v, h, w = self.views, self.height, self.width
    if h % 2 or w % 2:
      raise ValueError(f"Long-LRM token merge needs an even token grid, got {h}x{w} (input "
                       "size / patch): choose data sizes divisible by 2 x model.patch.")
    glob = tokens[:, :self.num_global]
    img = tokens[:, self.num_global:].reshape(b * v, h, w, d)
    img = nn.Conv(4 * d, (2, 2), strides=(2, 2), padding="VALID", feature_group_count=d,
                  kernel_init=nn.with_logical_partitioning(
                      layers.dense_init(), (None, None, None, "embed")),
                  bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
                  name="conv")(img)  # [B V, h/2, w/2, 4D]
    glob = nn.Dense(4 * d, kernel_init=nn.with_logical_partitioning(
        layers.dense_init(), (None, "embed")), name="global")(glob)
    return jnp.concatenate([glob, img.reshape(b, -1, 4 * d)], axis=1)


class Run(nn.Module):
  """``count`` equal blocks (:func:`layers.apply_blocks`): ``[B, T, D] -> [B, T, D]``."""

  block: type
  args: tuple
  count: int
  remat_policy: str = "none"
  scan: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return layers.apply_blocks(self.block, self.args, self.count, x,
                               remat_policy=self.remat_policy, scan=self.scan)


class Model(family.FamilyModel):
  """Long-LRM. ``reconstruct(inputs) -> Gaussians`` (one per input pixel, ``[B, V H W]``);
  ``render(gaussians, cameras)``; ``__call__`` prunes before rendering (see module doc)."""

  @nn.compact
  def raw_gaussians(self, pixels: jax.Array) -> jax.Array:
    """``[B, V, H, W, 9]`` (RGB in [-1, 1] + Plücker) -> ``[B, V, H, W, 11 + 3K]`` raw
    outputs in Long-LRM's order: xyz 3, SH 3K, scale 3, rotation 4, opacity 1."""
    c = self.config
    dtype = jnp.dtype(c.dtype)
    b, v, hh, ww, _ = pixels.shape
    p = c.patch
    x = patchify(pixels.reshape(b * v, hh, ww, 9), p)  # [B V, h, w, p p 9]
    h, w = x.shape[1:3]
    w_tok = self.param("tokenizer", nn.with_logical_partitioning(
        layers.dense_init(), ("channels", "embed")), (x.shape[-1], c.width))
    x = layers.dense_einsum("nhwk,kd->nhwd", x, w_tok, dtype).reshape(b, v * h * w, c.width)
    glob = self.param("global_tokens", nn.with_logical_partitioning(
        nn.initializers.normal(0.02), (None, "embed")), (2, c.width))
    x = jnp.concatenate([jnp.broadcast_to(glob, (b, 2, c.width)), x], axis=1)
    x = layers.LayerNorm(use_affine=True, name="ln_in")(x)
    valid = x.shape[1]  # 2 + V h w real tokens, then padding
    x = pad_tokens(x, c.token_multiple)
    width = c.width
    for i, (kind, count, merge) in enumerate(runs(c.pattern, c.merge_after)):
      if kind == "m":
        args = (c.d_state, c.d_conv, c.expand, c.mamba_head_dim, c.ngroups, c.ssd_chunk,
                True, dtype, valid)
        block = mamba2.MambaBlock
      else:
        if width % c.head_dim:
          raise ValueError(f"Long-LRM: width {width} is not divisible by head_dim "
                           f"{c.head_dim}.")
        args = (width // c.head_dim, c.mlp_ratio, dtype, c.attention, valid)
        block = layers.TransformerBlock
      x = Run(block, args, count, c.remat_policy, c.scan and count > 1, name=f"run_{i}")(x)
      if merge:
        x = TokenMerge(v, h, w, name="merge")(x[:, :valid])
        valid = x.shape[1]
        x = pad_tokens(x, c.token_multiple)
        h, w, p, width = h // 2, w // 2, 2 * p, 4 * width
    x = layers.LayerNorm(name="ln_out")(x[:, 2:valid])  # [B, V h w, D]: global tokens dropped
    ch = 11 + 3 * sh_lib.num_sh_bases(c.sh_degree)
    per_pixel_bias = jnp.zeros((ch,)).at[ch - 5].set(1.0)  # rotation (1, 0, 0, 0)
    head = nn.Dense(p * p * ch, kernel_init=nn.with_logical_partitioning(
        layers.dense_init(0.01), ("embed", "mlp")),
        bias_init=lambda *_: jnp.tile(per_pixel_bias, p * p), name="head")
    out = head(x).reshape(b * v, h, w, p * p * ch)
    return unpatchify(out, p).reshape(b, v, hh, ww, ch)

  def reconstruct(self, inputs: dict, train: bool = False) -> gs.Gaussians:
    """Posed input views -> Gaussians ``[B, V H W]`` in (view, row, column) order."""
    del train
    c = self.config
    images = inputs["images"]
    b, v, h, w, _ = images.shape
    origins, dirs = cam.get_rays(inputs["c2w"], inputs["intrinsics"], h, w)  # [B,V,H,W,3]
    pixels = jnp.concatenate([images * 2.0 - 1.0, cam.plucker(origins, dirs)], axis=-1)
    raw = self.raw_gaussians(pixels).astype(jnp.float32)
    k3 = 3 * sh_lib.num_sh_bases(c.sh_degree)
    xyz, sh, scale, rot, opacity = jnp.split(raw, [3, 3 + k3, 6 + k3, 10 + k3], axis=-1)
    depth = jnp.mean(xyz, axis=-1, keepdims=True)
    if c.depth_init > 0:
      frac = min(max(c.depth_init / c.max_dist, 1e-6), 1 - 1e-6)
      depth = depth + math.log(frac / (1.0 - frac))
    if c.color_skip:  # the input pixel's colour as the DC coefficient
      sh = sh.at[..., :3].add((images - 0.5) / sh_lib.SH_C0)
    packed = jnp.concatenate([depth, rot, scale, opacity, sh], axis=-1)
    n = v * h * w
    flat = lambda x: x.reshape(b, n, x.shape[-1])
    return activation(flat(packed), flat(origins), flat(dirs), sh_degree=c.sh_degree,
                      max_dist=c.max_dist, scale_bias=c.scale_bias, scale_max=c.scale_max,
                      opacity_bias=c.opacity_bias)

  def prune(self, gaussians: gs.Gaussians, train: bool) -> gs.Gaussians:
    """Training: a static ``keep_fraction`` of N, the most opaque plus a ``random_fraction``
    of them drawn from the rest (the ``sample`` rng). Test: Gaussians at opacity <=
    ``prune_threshold`` made transparent (what dropping them renders)."""
    c = self.config
    if train:
      if c.keep_fraction >= 1.0:
        return gaussians
      k = max(1, int(round(c.keep_fraction * gaussians.num)))
      key = self.make_rng("sample") if c.random_fraction > 0 else None
      return gs.prune_topk_by_opacity(gaussians, k, key, c.random_fraction)
    o = gaussians.opacities
    return gaussians.replace(opacities=jnp.where(o > c.prune_threshold, o, 0.0))

  def render(self, gaussians: gs.Gaussians, cameras: cam.Cameras, background,
             train: bool = False) -> dict:
    """Splats ``[B, N]`` Gaussians into cameras ``[B, V]`` (:func:`pixel_gaussians.render_gaussians`)."""
    del train
    return pixel_gaussians.render_gaussians(self.config, gaussians, cameras, background)

  def __call__(self, inputs: dict, cameras: cam.Cameras, background, train: bool = False):
    """-> (rendered dict of the pruned Gaussians, all Gaussians)."""
    g = self.reconstruct(inputs, train)
    return self.render(self.prune(g, train), cameras, background, train), g


def regularizers(representation, batch, config) -> dict:
  """``{"opacity": (config.loss.opacity, mean opacity of all Gaussians)}`` (Long-LRM 0.1),
  and ``input_depth`` (:func:`pixel_gaussians.pixel_depth_loss`) when ``config.loss.input_depth > 0``.

  Long-LRM's depth term (rendered vs prior disparity, normalised per view) is the shared
  ``config.loss.depth`` of :func:`lrm_jax.train.losses.image_losses`, against the source's
  depth (pixels without depth, 0, are left out).
  """
  _note_depth_prior(config)
  out = {}
  weight = float(config.loss.get("opacity", 0.0))
  if weight > 0:
    out["opacity"] = (weight, jnp.mean(representation.opacities))
  # Ours, off in paper: GRM's pull of each pixel's Gaussian to the input view's depth.
  out.update(pixel_gaussians.regularizers(representation, batch, config))
  return out


# Sources that give every pixel's depth (the depth term's prior); others give zeros.
_SOURCES_WITH_DEPTH = ("synthetic", "rooms", "mesh")
_said = set()


def _note_depth_prior(config) -> None:
  """Says once that the depth term is off for a source without depth."""
  source = str(config.data.get("source", ""))
  if config.loss.get("depth", 0.0) > 0 and not source.startswith(_SOURCES_WITH_DEPTH) \
      and source not in _said:
    _said.add(source)
    logging.warning("Long-LRM depth term: source %r has no depth maps, so the term is off "
                    "(Long-LRM uses DepthAnything's; none is bundled).", source)


def batch_spec(config, batch: int | None = None) -> dict:
  """The shared batch spec, once the input views are known to tokenize: their height and
  width must be multiples of ``model.patch`` (x 2 with the token merge). Checked here, when
  the trainer, ``evaluate`` or ``reconstruct`` starts, not when the step is traced."""
  m = config.model
  if int(m.get("token_multiple", 1)) < 1:
    raise ConfigError(f"model.token_multiple must be >= 1 (1: no padding), got "
                      f"{m.token_multiple}.")
  h, w = view_sampling.view_hw(config.data, "inputs")
  merges = any(merge for _, _, merge in runs(m.pattern, m.merge_after))
  step = m.patch * (2 if merges else 1)
  if h % step or w % step:
    why = f"model.patch {m.patch}" + (", x 2 for the token merge" if merges else "")
    raise ConfigError(f"Long-LRM: input views of {w}x{h} (width x height; data.input_hw or "
                      f"data.input_size) must have sides that are multiples of {step} "
                      f"({why}).")
  return family.default_batch_spec(config, batch)


FAMILY = family.Family(name="long_lrm", model=Model, model_config=model_config,
                       variants=tuple(VARIANTS), batch_spec=batch_spec,
                       regularizers=regularizers)
