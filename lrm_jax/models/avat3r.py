"""Avat3r (Kirschstein et al. ICCV 2025): 4 posed images of a head -> an animatable avatar
of 3D Gaussians, one per input pixel, driven by an expression code.

  per pixel: RGB 3 + world position map 3 + Plücker ray 6                 (12 channels)
  -> conv tokenizer (kernel = stride = patch) + per-view learned positions
  -> ViT over the tokens of all views: ``depth`` x [self-attention block, cross-attention
     block to expression tokens] (the target code -> MLP -> ``expression_tokens`` tokens)
  -> GRM's transformer upsampler to full resolution, + each pixel's own 12 channels (skip)
  -> linear heads: offset 3, rotation 4, scale 3, opacity 1, colour 3
  -> Gaussians: position = input position map + offset (bounded by ``max_offset``),
     colour = sigmoid(logit(input colour) + residual), opacity gated by the input mask;
     rendered by the shared splatting renderer.

The avatar's expression is the ``target_expression`` input field (``[B, V, E]``, the same
code for every view; the trainer's targets show that expression). Inputs may be at other
expressions (their own codes are ``expression``): with ``input_codes`` (ours, not the
paper's) each view's own code is embedded and added to its tokens, so the network knows
what to undo. With ``field_width`` > 0 (ours; needs ``input_codes``) an expression field
(:class:`ExpressionField`, an MLP on Fourier features of a point's position and a code)
adds ``field(p, target code) - field(p, the view's own code)`` to each pixel's raw offset,
colour and opacity: a change that depends on where the point is on the head, zero for a
view already at the target expression (evaluated only at the ``field_fraction`` share of
pixels of highest mask: off the mask the Gaussians are transparent). Avat3r has no public
code; sizes follow REFERENCES.md where it gives them (8 self- + 8 cross-attention layers,
4 expression tokens, 512^2 inputs); the position maps come from the data (exact for the
synthetic heads; DUSt3R's in the paper); Sapiens features are not used.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from lrm_jax import cameras as cam
from lrm_jax.errors import ConfigError
from lrm_jax.models import family
from lrm_jax.models import layers
from lrm_jax.models import pixel_gaussians
from lrm_jax.models import upsampler
from lrm_jax.models.vit import PatchEmbed
from lrm_jax.representations import gaussians as gs

# The expression code and landmark count of the embedded synthetic heads (data/heads.py).
EXPRESSION_DIMS = 8
NUM_LANDMARKS = 16

VARIANTS = {
    # Smaller than tiny: tests.
    "micro": dict(patch=4, width=32, depth=1, num_heads=2, expression_tokens=2,
                  up_channels=(16, 8), up_heads=(1, 1), up_blocks=1, window=4),
    # CPU-trainable: 32^2 inputs, patch 4 -> 8x8 tokens per view.
    "tiny": dict(patch=4, width=128, depth=3, num_heads=4, expression_tokens=4,
                 up_channels=(64, 32), up_heads=(2, 1), up_blocks=1, window=4),
    # Paper (REFERENCES.md): 512^2 inputs, 8 self- + 8 cross-attention layers, 4 expression
    # tokens; the width and the upsampler are GRM's base sizes (the paper's are not known).
    "paper": dict(patch=16, width=768, depth=8, num_heads=12, expression_tokens=4,
                  up_channels=(256, 128, 64, 32), up_heads=(4, 2, 2, 1), up_blocks=1,
                  window=8),
}

# Raw channels per pixel: offset 3, quaternion 4, scale 3, opacity 1, rgb 3.
CHANNELS = 14


def model_config(variant: str) -> ml_collections.ConfigDict:
  """The ``config.model`` section for an Avat3r variant."""
  if variant not in VARIANTS:
    raise ValueError(f"unknown Avat3r variant {variant!r}; choose one of {sorted(VARIANTS)}.")
  c = ml_collections.ConfigDict(dict(VARIANTS[variant]))
  c.variant = variant
  c.expression_dims = EXPRESSION_DIMS
  c.num_landmarks = NUM_LANDMARKS
  c.input_codes = variant in ("tiny", "micro")  # see the module docstring
  # Ours (see the module docstring): an expression field over head-space positions; needs
  # input_codes. 0 = off.
  # (tiny, 900 steps: expression gain 0.59 dB without it, 0.63 at width 64 with 4
  # frequencies, 0.77 at 128 with 6, 1.15 at 256 with 6; README "Avat3r".)
  c.field_width = {"micro": 32, "tiny": 256}.get(variant, 0)
  c.field_frequencies = 6
  # The share of input pixels (highest mask first) the field is evaluated at; 1 = all
  # (Model.expression_change).
  c.field_fraction = {"micro": 0.5, "tiny": 0.45}.get(variant, 1.0)
  c.mlp_ratio = 4.0
  c.remat_policy = "none"
  c.scan = True
  c.dtype = "float32"
  c.attention = "auto"
  c.window_group_min_tokens = 65536
  c.window_group_tokens = 4096
  # Position = input position map + max_offset * tanh(raw) (world units; heads are ~1 tall).
  c.max_offset = 0.25
  c.min_scale = 0.0005
  c.max_scale = {"micro": 0.1, "tiny": 0.06, "paper": 0.01}[variant]
  c.mask_gaussians = True  # input masks gate opacity
  c.keep_fraction = 0.6 if variant in ("tiny", "micro") else 1.0
  # Renderer (models/pixel_gaussians.render_gaussians).
  c.intersections_per_gaussian = 0
  c.render_views_at_once = 0
  c.render_remat = False
  c.backend = "auto"
  c.tile_size = 8
  c.block_tiles = 16
  c.chunk_size = 8
  c.host_sorts = True
  c.max_unrolled_cameras = 16
  return c


class ExpressionEncoder(nn.Module):
  """Expression code ``[B, E]`` -> ``num_tokens`` tokens ``[B, num_tokens, D]`` (MLP)."""

  num_tokens: int
  width: int

  @nn.compact
  def __call__(self, code: jax.Array) -> jax.Array:
    dense = lambda n, name: nn.Dense(n, kernel_init=nn.with_logical_partitioning(
        layers.dense_init(), (None, "embed")), name=name)
    h = nn.silu(dense(self.width, "fc1")(code))
    out = dense(self.num_tokens * self.width, "fc2")(h)
    return out.reshape(code.shape[0], self.num_tokens, self.width)


class ExpressionField(nn.Module):
  """``(positions [..., 3], code [..., E]) -> [..., 7]``: an offset 3, a colour-logit 3
  and an opacity-logit 1 change at each point for that expression (an MLP on Fourier
  features of the position and the code; the last layer starts at zero)."""

  width: int
  frequencies: int

  @nn.compact
  def __call__(self, positions: jax.Array, code: jax.Array) -> jax.Array:
    scales = jnp.pi * 2.0 ** jnp.arange(self.frequencies, dtype=jnp.float32)  # [L]
    angles = (positions[..., None, :] * scales[:, None]).reshape(*positions.shape[:-1], -1)
    h = jnp.concatenate([positions, jnp.sin(angles), jnp.cos(angles), code], axis=-1)
    dense = lambda n, name, init=layers.dense_init(): nn.Dense(
        n, kernel_init=nn.with_logical_partitioning(init, (None, None)), name=name)
    h = nn.silu(dense(self.width, "fc1")(h))
    h = nn.silu(dense(self.width, "fc2")(h))
    return dense(7, "out", nn.initializers.zeros)(h)


class CrossAttentionBlock(nn.Module):
  """Pre-LN cross-attention to context tokens, then an MLP: ``[B, T, D] x [B, S, D]``."""

  num_heads: int
  mlp_ratio: float = 4.0
  dtype: jnp.dtype = jnp.float32
  attention: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, context: jax.Array) -> jax.Array:
    x = layers.constrain(x, ("batch", "tokens", "embed"))
    x = x + layers.Attention(self.num_heads, self.dtype, self.attention, name="cross_attn")(
        layers.LayerNorm(name="ln_q")(x), layers.LayerNorm(name="ln_kv")(context))
    x = x + layers.Mlp(int(x.shape[-1] * self.mlp_ratio), self.dtype, name="mlp")(
        layers.LayerNorm(name="ln2")(x))
    return x.astype(jnp.float32)


class ExpressionBlock(nn.Module):
  """One self-attention block over all views' tokens, then one cross-attention block to
  the expression tokens (scan-compatible: ``(x, context) -> (x, None)``)."""

  num_heads: int
  mlp_ratio: float = 4.0
  dtype: jnp.dtype = jnp.float32
  attention: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, context: jax.Array):
    x, _ = layers.TransformerBlock(self.num_heads, self.mlp_ratio, self.dtype, self.attention,
                                   name="self")(x)
    x = CrossAttentionBlock(self.num_heads, self.mlp_ratio, self.dtype, self.attention,
                            name="cross")(x, context)
    return x, None


class ExpressionTransformer(nn.Module):
  """``depth`` :class:`ExpressionBlock` s (scanned and rematerialised as configured), then a
  final LayerNorm: ``[B, T, D] x [B, S, D] -> [B, T, D]``."""

  depth: int
  num_heads: int
  mlp_ratio: float = 4.0
  remat_policy: str = "none"
  scan: bool = True
  dtype: jnp.dtype = jnp.float32
  attention: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, context: jax.Array) -> jax.Array:
    x = layers.apply_blocks(ExpressionBlock, (self.num_heads, self.mlp_ratio, self.dtype,
                                              self.attention), self.depth, x, context,
                            remat_policy=self.remat_policy, scan=self.scan)
    return layers.LayerNorm(name="ln_final")(x)


def pixel_features(inputs: dict) -> jax.Array:
  """``[B, V, H, W, 12]``: RGB in [-1, 1], the world position map (0 off the head) and the
  Plücker ray of every input pixel."""
  images = inputs["images"]
  h, w = images.shape[2:4]
  plucker = cam.plucker_rays(inputs["c2w"], inputs["intrinsics"], h, w)
  return jnp.concatenate([images * 2.0 - 1.0, inputs["positions"], plucker], axis=-1)


class Model(family.FamilyModel):
  """Avat3r. ``reconstruct(inputs) -> Gaussians`` at ``inputs["target_expression"]``."""

  def setup(self):
    c = self.config
    if 2 ** len(c.up_channels) != c.patch:
      raise ValueError(f"Avat3r: {len(c.up_channels)} upsampler stages x2 do not undo "
                       f"patch {c.patch}; need log2(patch) stages.")
    dtype = jnp.dtype(c.dtype)
    self.tokenizer = PatchEmbed(c.patch, c.width)
    self.view_positions = upsampler.ViewPositions()
    self.expression_encoder = ExpressionEncoder(c.expression_tokens, c.width)
    if c.input_codes:
      self.input_code_encoder = ExpressionEncoder(1, c.width)
    if c.get("field_width", 0):
      if not c.input_codes:
        raise ConfigError("model.field_width > 0 needs model.input_codes (the field moves "
                          "each view's Gaussians from its own code to the target's).")
      self.expression_field = ExpressionField(c.field_width, c.field_frequencies)
    self.transformer = ExpressionTransformer(c.depth, c.num_heads, c.mlp_ratio, c.remat_policy,
                                             c.scan, dtype, c.attention)
    self.up_proj, self.up_blocks = upsampler.make_upsampler(c, dtype, c.attention)
    head = lambda n, bias=nn.initializers.zeros: nn.Dense(
        n, kernel_init=nn.with_logical_partitioning(layers.dense_init(0.1), ("mlp", None)),
        bias_init=bias, dot_general=layers.dense_dot_general)
    self.offset_head = head(3)
    self.rot_head = head(4, lambda k, s, d=jnp.float32: jnp.asarray([1.0, 0, 0, 0], d))
    self.scale_head = head(3)
    self.opacity_head = head(1)
    self.color_head = head(3)

  def encode(self, inputs: dict) -> tuple[jax.Array, jax.Array]:
    """Tokens after the ViT ``[B, V, h, w, D]`` and the per-pixel features ``[B, V, H, W, 12]``."""
    c = self.config
    pixels = pixel_features(inputs)
    b, v, h, w, ch = pixels.shape
    tok = self.tokenizer(pixels.reshape(b * v, h, w, ch))  # [B*V, h', w', D]
    hp, wp, d = tok.shape[1:]
    tok = self.view_positions(tok.reshape(b, v, hp * wp, d))  # [B, V, T, D]
    if c.input_codes:
      own = self.input_code_encoder(inputs["expression"].reshape(b * v, -1))  # [B*V, 1, D]
      tok = tok + own.reshape(b, v, 1, d)
    context = self.expression_encoder(inputs["target_expression"][:, 0])  # [B, S, D]
    tok = self.transformer(tok.reshape(b, v * hp * wp, d), context)  # [B, V*T, D]
    return tok.reshape(b, v, hp, wp, d), pixels

  def raw_attributes(self, inputs: dict) -> dict:
    """Per-pixel raw attributes ``{name: [B, V, H, W, k]}`` (before activation)."""
    feat, pixels = self.encode(inputs)
    feat = upsampler.upsample(self.up_proj, self.up_blocks, feat)
    feat = jnp.concatenate([feat, pixels], axis=-1)  # skip: each pixel's own channels
    raw = {"offset": self.offset_head(feat), "rotation": self.rot_head(feat),
           "scale": self.scale_head(feat), "opacity": self.opacity_head(feat),
           "color": self.color_head(feat)}
    if self.config.get("field_width", 0):
      change = self.expression_change(inputs)  # [B, V, H, W, 7]
      raw["offset"] = raw["offset"] + change[..., :3]
      raw["color"] = raw["color"] + change[..., 3:6]
      raw["opacity"] = raw["opacity"] + change[..., 6:]
    return raw

  def expression_change(self, inputs: dict) -> jax.Array:
    """``[B, V, H, W, 7]``: the expression field at each pixel's position under the target
    code minus the same under the view's own code (0 when they are equal).

    With ``field_fraction`` < 1 the field is evaluated at the ``ceil(field_fraction * N)``
    pixels of highest input mask (of ``N = V*H*W``) and the change is 0 at the others: off
    the mask a Gaussian is transparent whatever the field says (``mask_gaussians``), so this
    is exact while the head covers at most that share of the input pixels (the synthetic
    heads cover about a third: 0.32 on average, 0.37 at most in 30 examples).
    """
    pos = inputs["positions"]  # [B, V, H, W, 3]
    b, v, h, w, _ = pos.shape
    n = v * h * w
    per_pixel = lambda codes: jnp.repeat(codes, h * w, axis=1)  # [B, V, E] -> [B, N, E]
    pos, target, own = pos.reshape(b, n, 3), per_pixel(inputs["target_expression"]), \
        per_pixel(inputs["expression"])
    k = field_points(self.config, n)
    if k < n:
      _, idx = jax.lax.top_k(inputs["masks"].reshape(b, n), k)  # [B, K]
      take = lambda x: jnp.take_along_axis(x, idx[..., None], axis=1)
      pos, target, own = take(pos), take(target), take(own)
    # Both codes in one call: [B, 2K, 7].
    both = self.expression_field(jnp.concatenate([pos, pos], axis=1),
                                 jnp.concatenate([target, own], axis=1))
    change = both[:, :k] - both[:, k:]  # [B, K, 7]
    if k < n:
      change = jnp.zeros((b, n, change.shape[-1]), change.dtype).at[
          jnp.arange(b)[:, None], idx].set(change)
    return change.reshape(b, v, h, w, -1)

  def reconstruct(self, inputs: dict, train: bool = False) -> gs.Gaussians:
    """Inputs -> ``Gaussians`` ``[B, V*H*W]`` in (view, row, column) order, at the
    expression ``inputs["target_expression"]``."""
    del train
    c = self.config
    raw = self.raw_attributes(inputs)
    images = inputs["images"]
    b, v, h, w, _ = images.shape
    flat = lambda x: x.reshape(b, v * h * w, x.shape[-1])
    return activation(jax.tree.map(flat, raw), flat(inputs["positions"]), flat(images),
                      flat(inputs["masks"]) if c.mask_gaussians else None,
                      max_offset=c.max_offset, min_scale=c.min_scale, max_scale=c.max_scale)

  def splat_subset(self, g: gs.Gaussians) -> gs.Gaussians:
    """The ``keep_fraction`` most opaque Gaussians (a static top-k; all when it is 1)."""
    keep = self.config.keep_fraction
    if keep >= 1.0:
      return g
    return gs.prune_topk_by_opacity(g, max(1, int(round(keep * g.num))))

  def render(self, gaussians: gs.Gaussians, cameras: cam.Cameras, background,
             train: bool = False) -> dict:
    del train
    return pixel_gaussians.render_gaussians(self.config, gaussians, cameras, background)

  def __call__(self, inputs: dict, cameras: cam.Cameras, background, train: bool = False):
    g = self.reconstruct(inputs, train)
    return self.render(self.splat_subset(g), cameras, background, train), g


def field_points(config, num_pixels: int) -> int:
  """How many of ``num_pixels`` input pixels the expression field is evaluated at
  (``model.field_fraction``, 1 = all)."""
  fraction = float(config.get("field_fraction", 1.0))
  if not 0.0 < fraction <= 1.0:
    raise ConfigError(f"model.field_fraction must be in (0, 1], got {fraction}.")
  if fraction < 1.0 and not config.mask_gaussians:
    raise ConfigError("model.field_fraction < 1 needs model.mask_gaussians (the pixels left "
                      "out must be transparent).")
  return min(num_pixels, max(1, math.ceil(fraction * num_pixels)))


def _logit(p):
  return jnp.log(p) - jnp.log1p(-p)


def activation(raw: dict, positions, colors, masks, *, max_offset: float, min_scale: float,
               max_scale: float) -> gs.Gaussians:
  """Raw per-pixel outputs ``{name: [..., N, k]}`` -> Gaussians, with skips.

  position = ``positions + max_offset * tanh(offset)``; colour =
  ``sigmoid(logit(colors) + color)``; opacity = ``sigmoid(opacity) * masks`` (no gating when
  ``masks`` is None); scales in ``[min_scale, max_scale]``.
  """
  means = positions + max_offset * jnp.tanh(raw["offset"])
  rgb = jax.nn.sigmoid(_logit(jnp.clip(colors, 0.01, 0.99)) + raw["color"])
  opacity = jax.nn.sigmoid(raw["opacity"])
  if masks is not None:
    opacity = opacity * masks
  scales = gs.bounded_sigmoid(raw["scale"], min_scale, max_scale)
  return gs.Gaussians.from_rgb(means, scales, gs.normalize_quats(raw["rotation"]), opacity, rgb)


# ---- The batch: positions, expression codes and landmarks per view ------------------------


def batch_spec(config, batch: int | None = None) -> dict:
  """The shared batch plus per-view ``positions [S, S, 3]``, ``expression [E]``,
  ``target_expression [E]`` and ``landmarks [K, 3]`` (inputs and targets alike).

  Extra per-view fields pass the pipeline as they are (never resized or cropped), so the
  views must be rendered at the input size: ``data.render_size == input_size ==
  target_size`` and no ``target_crop``.
  """
  d = config.data
  if not d.render_size == d.input_size == d.target_size or d.target_crop:
    raise ConfigError(
        f"Avat3r needs data.render_size == input_size == target_size and target_crop = 0 "
        f"(its position maps and landmarks are not resized); got {d.render_size}, "
        f"{d.input_size}, {d.target_size}, crop {d.target_crop}.")
  spec = family.default_batch_spec(config, batch)
  m = config.model
  extra = {"positions": ((d.input_size, d.input_size, 3), jnp.float32),
           "expression": ((m.expression_dims,), jnp.float32),
           "target_expression": ((m.expression_dims,), jnp.float32),
           "landmarks": ((m.num_landmarks, 3), jnp.float32)}
  b = spec["scene_id"].shape[0]
  spec["inputs"] = family.view_spec(b, d.num_input_views, d.input_size, extra)
  spec["targets"] = family.view_spec(b, d.num_target_views, d.target_size, extra)
  return spec


# ---- Evaluation extras: the expression check and AKD ---------------------------------------


def landmark_gaussians(inputs: dict) -> tuple[jax.Array, jax.Array]:
  """For every landmark, the Gaussian of the input pixel it projects to, per input view.

  Returns flat Gaussian indices ``[B, Vi, K]`` (into ``V*H*W``) and visibility ``[B, Vi, K]``.
  """
  lm = inputs["landmarks"]  # [B, Vi, K, 3]
  b, v, h, w = inputs["images"].shape[:4]
  col = jnp.clip(jnp.floor(lm[..., 0]).astype(jnp.int32), 0, w - 1)
  row = jnp.clip(jnp.floor(lm[..., 1]).astype(jnp.int32), 0, h - 1)
  view = jnp.arange(v, dtype=jnp.int32)[None, :, None]
  return (view * h + row) * w + col, lm[..., 2] > 0.5


def _landmark_means(gaussians: gs.Gaussians, inputs: dict) -> tuple[jax.Array, jax.Array]:
  """The predicted centres of the landmarks' Gaussians ``[B, Vi, K, 3]`` (the Gaussian of
  the input pixel each landmark projects to, per input view) and their visibility
  ``[B, Vi, K]``."""
  idx, vis_in = landmark_gaussians(inputs)
  b, vi, k = idx.shape
  means = jnp.take_along_axis(gaussians.means, idx.reshape(b, vi * k, 1), axis=1)
  return means.reshape(b, vi, k, 3), vis_in


def akd(gaussians: gs.Gaussians, inputs: dict, targets: dict) -> jax.Array:
  """Average keypoint distance (pixels) per target view ``[B, Vt]`` (NaN without landmarks).

  A landmark's rendered position: the mean of the predicted centres of the Gaussians at the
  pixels where the landmark is visible in the input views (at the inputs' expressions);
  projected into a target view, its distance to the true projection of the landmark at the
  target expression, averaged over the landmarks visible in that target view and in at
  least one input. Zero offsets give the static error of the input position maps.
  """
  means, vis_in = _landmark_means(gaussians, inputs)
  wts = vis_in.astype(means.dtype)[..., None]
  n_in = jnp.sum(wts, axis=1)  # [B, K, 1]
  pts = jnp.sum(means * wts, axis=1) / jnp.maximum(n_in, 1.0)  # [B, K, 3]
  uv, _ = cam.project_points(pts[:, None], targets["c2w"], targets["intrinsics"])  # [B,Vt,K,2]
  true = targets["landmarks"]
  valid = (true[..., 2] > 0.5) & (n_in[:, None, :, 0] > 0)
  dist = jnp.linalg.norm(uv - true[..., :2], axis=-1)
  n = jnp.sum(valid, axis=-1)
  return jnp.where(n > 0, jnp.sum(dist * valid, -1) / jnp.maximum(n, 1), jnp.nan)


def landmark_loss(gaussians: gs.Gaussians, inputs: dict, targets: dict) -> jax.Array:
  """Mean distance, in units of the target width, between each landmark's Gaussian (per
  input view where the landmark is visible) projected into each target view and the true
  landmark there (where visible): it ties the predicted offsets to the expression's motion.
  Charbonnier (``sqrt(d^2 + 1e-6)``), so its gradient is finite at 0; 0 when no pair is
  valid."""
  means, vis_in = _landmark_means(gaussians, inputs)  # [B, Vi, K, 3], [B, Vi, K]
  b, vi, k = vis_in.shape
  uv, _ = cam.project_points(means.reshape(b, 1, vi * k, 3), targets["c2w"],
                             targets["intrinsics"])  # [B, Vt, Vi*K, 2]
  true = targets["landmarks"]  # [B, Vt, K, 3]
  vt = true.shape[1]
  uv = uv.reshape(b, vt, vi, k, 2)
  valid = (vis_in[:, None] & (true[:, :, None, :, 2] > 0.5)).astype(uv.dtype)  # [B,Vt,Vi,K]
  d2 = jnp.sum(jnp.square(uv - true[:, :, None, :, :2]), -1)
  dist = jnp.sqrt(d2 + 1e-6) / targets["images"].shape[-2]
  return jnp.sum(dist * valid) / jnp.maximum(jnp.sum(valid), 1.0)


def regularizers(representation, batch, config) -> dict:
  """``{"landmarks": (loss.landmarks, landmark_loss)}`` in training when the weight is > 0
  and the batch has landmarks (ours, not the paper's: Avat3r trains on images alone)."""
  weight = float(config.loss.get("landmarks", 0.0))
  inputs, targets = batch["inputs"], batch["targets"]
  if weight <= 0 or "landmarks" not in inputs or "landmarks" not in targets:
    return {}
  return {"landmarks": (weight, landmark_loss(representation, inputs, targets))}


def eval_metrics(model, params, batch: dict, representation, background) -> dict:
  """``{name: [B, Vt]}`` beyond PSNR/SSIM: ``akd`` (pixels), ``akd_static`` (the same with
  every Gaussian at its input position: no expression transfer), and
  ``psnr_input_expression`` (PSNR when the avatar is driven by the first input's own code
  instead of the target's)."""
  inputs, targets = batch["inputs"], batch["targets"]
  b, v, h, w = inputs["images"].shape[:4]
  static = representation.replace(means=inputs["positions"].reshape(b, v * h * w, 3))
  swapped = dict(inputs, target_expression=jnp.broadcast_to(
      inputs["expression"][:, :1], inputs["target_expression"].shape))
  cams = cam.Cameras(targets["c2w"], targets["intrinsics"], *targets["images"].shape[2:4])
  rendered, _ = model.apply({"params": params}, swapped, cams, background, train=False)
  mse = jnp.mean(jnp.square(jnp.clip(rendered["rgb"], 0.0, 1.0) - targets["images"]),
                 axis=(-3, -2, -1))
  return {"akd": akd(representation, inputs, targets),
          "akd_static": akd(static, inputs, targets),
          "psnr_input_expression": -10.0 * jnp.log10(jnp.maximum(mse, 1e-10))}


FAMILY = family.Family(name="avat3r", model=Model, model_config=model_config,
                       variants=tuple(VARIANTS), batch_spec=batch_spec,
                       regularizers=regularizers, eval_metrics=eval_metrics)
