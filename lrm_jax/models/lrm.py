"""LRM (Hong et al. ICLR 2024) / OpenLRM: one image + its camera -> a triplane NeRF.

  image [B, S, S, 3] -> DINO ViT (ImageNet-normalised)           -> tokens [B, T, De]
  source camera -> 16-d OpenLRM vector -> Linear, SiLU, Linear    -> cond [B, Dc]
  learned triplane tokens [3 n n, D] -> blocks of
      [ModLN(cond) -> cross-attn to image tokens, ModLN -> self-attn, ModLN -> MLP x4]
  -> LayerNorm -> ConvTranspose(k=2, s=2) -> planes [B, 3, 2n, 2n, C]
  -> NeRF MLP + ray marching (render/triplane.py) for any target cameras.

Canonical frame (OpenLRM's camera normalisation): the triplane lives in the frame where
the source camera sits at ``(0, -d, 0)`` looking along +y with z up (``d`` its distance
to the origin). :meth:`Model.reconstruct` returns the rigid ``world_to_canonical``
transform with the planes, and :meth:`Model.render` moves target cameras by it, so data
and callers stay in their world frame while the network always sees the same source pose.
A source image loaded by :mod:`lrm_jax.data.single_image` is already canonical.

Sizes: ``tiny`` (trains on a 2-core CPU), OpenLRM v1.1 ``small``/``base``/``large`` and
``paper`` (DINO ViT-B/16 at 512^2, 16 x 1024 decoder, 80-channel planes; REFERENCES.md).
"""

from __future__ import annotations

import functools
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lrm_jax import cameras as cam
from lrm_jax.models import family
from lrm_jax.models import layers
from lrm_jax.models import vit
from lrm_jax.render import triplane as tp

# Encoder settings: a pretrained name from vit.ENCODERS, or an explicit from-scratch ViT.
_SCRATCH_TINY = dict(name="scratch", patch=8, width=128, depth=2, num_heads=4, mlp_dim=512,
                     num_registers=0, layer_scale=False, epsilon=1e-6, pos_grid=0,
                     pos_antialias=False, pos_offset=0.0)

# variant -> sizes. OpenLRM v1.1 (configs/*-1.1.yaml): small/base/large; paper: LRM.
VARIANTS = {
    # CPU-trainable: 64^2 input, 8x8 patches of 8, 3 x 8 x 8 triplane tokens -> 16^2 planes.
    # The NeRF MLP is 32 wide and rays get 24 + 24 samples: ray marching dominates the
    # step on a CPU.
    "tiny": dict(encoder=_SCRATCH_TINY, camera_embed_dim=64, width=128, depth=3,
                 num_heads=4, triplane_tokens=8, triplane_channels=16, num_coarse=24,
                 num_fine=24, nerf_hidden=32, mesh_resolution=128),
    "small": dict(encoder="dinov2_vits14_reg", camera_embed_dim=1024, width=512, depth=12,
                  num_heads=8, triplane_tokens=32, triplane_channels=32, num_coarse=48,
                  num_fine=48, mesh_resolution=256),
    "base": dict(encoder="dinov2_vitb14_reg", camera_embed_dim=1024, width=768, depth=12,
                 num_heads=12, triplane_tokens=32, triplane_channels=48, num_coarse=48,
                 num_fine=48, mesh_resolution=256),
    "large": dict(encoder="dinov2_vitb14_reg", camera_embed_dim=1024, width=1024, depth=16,
                  num_heads=16, triplane_tokens=32, triplane_channels=80, num_coarse=64,
                  num_fine=64, mesh_resolution=256),
    "paper": dict(encoder="dino_vitb16", camera_embed_dim=1024, width=1024, depth=16,
                  num_heads=16, triplane_tokens=32, triplane_channels=80, num_coarse=64,
                  num_fine=64, mesh_resolution=256),
}


def encoder_config(spec) -> ml_collections.ConfigDict:
  """The ``model.encoder`` section: a pretrained encoder's name or explicit settings.

  ``keep_registers=False`` drops the register tokens from the image tokens the decoder
  attends to (OpenLRM v1.1's DINOv2 wrapper keeps only cls + patches).
  """
  settings = dict(name=spec, **vit.dino_settings(spec)) if isinstance(spec, str) else spec
  return ml_collections.ConfigDict(dict(dict(keep_registers=True), **settings))


def model_config(variant: str) -> ml_collections.ConfigDict:
  """The ``config.model`` section for an LRM variant."""
  if variant not in VARIANTS:
    raise ValueError(f"unknown LRM variant {variant!r}; choose one of {sorted(VARIANTS)}.")
  v = dict(VARIANTS[variant])
  c = ml_collections.ConfigDict()
  c.variant = variant
  c.encoder = encoder_config(v.pop("encoder"))
  c.encoder_weights = ""  # local DINO weights for load_pretrained ("" = from scratch)
  c.mlp_ratio = 4.0
  c.nerf_hidden = 64  # OpenLRM's 4-layer, 64-wide ReLU decoder
  c.nerf_layers = 4
  c.nerf_activation = "relu"  # hidden activation ("softplus": smooth, see TriplaneDecoder)
  c.box_radius = 1.0
  c.ray_chunk = 8192  # rays per lax.map step per scene
  c.render_remat = variant != "tiny"  # recompute ray chunks in the backward pass
  c.canonicalize = True  # OpenLRM camera normalisation (see the module docstring)
  # OpenLRM's third plane is indexed (z, y) (the EG3D plane bug); converted OpenLRM
  # weights set this so their planes are transposed into our (y, z) convention.
  c.plane2_zy = False
  c.mesh_threshold = 10.0  # density iso-level of exported meshes (OpenLRM: 10)
  c.update(v)  # the variant's sizes (and any default it overrides)
  c.remat_policy = "none" if variant == "tiny" else "full"
  c.scan = True
  c.dtype = "float32"
  c.attention = "auto"  # layers.Attention.impl: "auto" (blockwise where it pays) or "plain"
  return c


# ----------------------------------------------------------------------------------------
# Camera canonicalisation.
# ----------------------------------------------------------------------------------------

# OpenLRM's canonical source camera rotation (OpenCV axes as columns): x -> +x, y -> -z,
# z (forward) -> +y. Equals cam.canonical_openlrm_source_c2w(d)[:3, :3].
_CANONICAL_R = np.asarray([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]], np.float32)


def canonical_source_c2w(distance: jax.Array) -> jax.Array:
  """``[B] -> [B, 4, 4]``: OpenLRM's canonical source camera at ``(0, -d, 0)``."""
  b = distance.shape[0]
  rot = jnp.broadcast_to(jnp.asarray(_CANONICAL_R, distance.dtype), (b, 3, 3))
  zero = jnp.zeros_like(distance)
  t = jnp.stack([zero, -distance, zero], -1)[..., None]  # [B, 3, 1]
  return cam.to_homogeneous(jnp.concatenate([rot, t], -1))


def world_to_canonical(source_c2w: jax.Array) -> jax.Array:
  """``[B, 4, 4]`` rigid ``M`` with ``M @ source_c2w = canonical_source_c2w(|t_source|)``.

  For sources looking at the origin (the object-centric setting) ``M`` is a rotation about
  the origin, so the object stays where the triplane box is.
  """
  dist = jnp.linalg.norm(source_c2w[:, :3, 3], axis=-1)
  return canonical_source_c2w(dist) @ cam.invert_rigid(source_c2w)


# ----------------------------------------------------------------------------------------
# Modules.
# ----------------------------------------------------------------------------------------


class CameraEmbedder(nn.Module):
  """OpenLRM's camera embedder: ``[B, 16] -> Linear -> SiLU -> Linear -> [B, Dc]``."""

  features: int

  @nn.compact
  def __call__(self, camera: jax.Array) -> jax.Array:
    h = nn.Dense(self.features, kernel_init=nn.with_logical_partitioning(
        layers.dense_init(), (None, "embed")), name="dense_0")(camera)
    return nn.Dense(self.features, kernel_init=nn.with_logical_partitioning(
        layers.dense_init(), ("embed", "mlp")), name="dense_1")(nn.silu(h))


class DecoderBlock(nn.Module):
  """``x + CrossAttn(ModLN(x), img)``, ``x + SelfAttn(ModLN(x))``, ``x + MLP(ModLN(x))``.

  Scan-compatible: ``(x [B, N, D], image_tokens [B, T, De], cond [B, Dc]) -> (x, None)``.
  """

  num_heads: int
  mlp_ratio: float = 4.0
  dtype: jnp.dtype = jnp.float32
  attention: str = "auto"  # layers.Attention.impl

  @nn.compact
  def __call__(self, x: jax.Array, image_tokens: jax.Array, cond: jax.Array):
    x = layers.constrain(x, ("batch", "tokens", "embed"))
    x = x + layers.Attention(self.num_heads, self.dtype, self.attention, name="cross_attn")(
        layers.ModLN(name="norm1")(x, cond), kv=image_tokens)
    x = x + layers.Attention(self.num_heads, self.dtype, self.attention, name="self_attn")(
        layers.ModLN(name="norm2")(x, cond))
    x = x + layers.Mlp(int(x.shape[-1] * self.mlp_ratio), self.dtype, name="mlp")(
        layers.ModLN(name="norm3")(x, cond))
    return x.astype(jnp.float32), None


class TriplaneTransformer(nn.Module):
  """``depth`` :class:`DecoderBlock` s (``nn.scan`` + ``nn.remat``), then a LayerNorm."""

  depth: int
  num_heads: int
  mlp_ratio: float = 4.0
  remat_policy: str = "none"
  scan: bool = True
  dtype: jnp.dtype = jnp.float32
  attention: str = "auto"

  @nn.compact
  def __call__(self, x, image_tokens, cond):
    x = layers.apply_blocks(DecoderBlock, (self.num_heads, self.mlp_ratio, self.dtype,
                                           self.attention), self.depth, x, image_tokens,
                            cond, remat_policy=self.remat_policy, scan=self.scan)
    return layers.LayerNorm(name="ln_final")(x)


class PlaneUpsample(nn.Module):
  """``ConvTranspose2d(D, C, kernel=2, stride=2)`` (PyTorch semantics) as one einsum:
  ``[B, P, h, w, D] -> [B, P, 2h, 2w, C]``; each token writes its own 2x2 texels."""

  features: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    d = x.shape[-1]
    kernel = self.param("kernel_dabc", nn.with_logical_partitioning(
        layers.dense_init(), ("embed", None, None, "channels")), (d, 2, 2, self.features))
    bias = self.param("bias", nn.with_logical_partitioning(
        nn.initializers.zeros, ("channels",)), (self.features,))
    y = jnp.einsum("bphwd,dijc->bphiwjc", x, kernel) + bias  # [B, P, h, 2, w, 2, C]
    b, p, h, _, w, _, c = y.shape
    return y.reshape(b, p, 2 * h, 2 * w, c)


@functools.lru_cache(maxsize=None)
def nerf_decoder(hidden: int, num_layers: int, activation: str = "relu") -> tp.TriplaneDecoder:
  """One decoder instance per shape, so its ``apply`` is a stable jit static argument."""
  return tp.TriplaneDecoder(hidden=hidden, num_layers=num_layers,
                            hidden_activation=activation, parent=None)


def _nerf_kwargs(c) -> dict:
  """:func:`nerf_decoder` arguments from ``config.model`` (configs saved before
  ``nerf_activation`` existed mean ReLU)."""
  return dict(hidden=c.nerf_hidden, num_layers=c.nerf_layers,
              activation=c.get("nerf_activation", "relu"))


class Model(family.FamilyModel):
  """LRM. ``reconstruct(inputs) -> {planes, world_to_canonical}``; ``render(rep, cameras)``."""

  def setup(self):
    c = self.config
    e = c.encoder
    dtype = jnp.dtype(c.dtype)
    attention = c.get("attention", "auto")  # absent from configs saved before it existed
    self.encoder = vit.DinoViT(
        patch=e.patch, width=e.width, depth=e.depth, num_heads=e.num_heads,
        mlp_dim=e.mlp_dim, num_registers=e.num_registers, layer_scale=e.layer_scale,
        epsilon=e.epsilon, pos_grid=e.pos_grid, pos_antialias=e.pos_antialias,
        pos_offset=e.get("pos_offset", 0.0),  # absent in configs saved before it existed
        remat_policy=c.remat_policy, scan=c.scan, dtype=dtype, attention=attention)
    self.camera_embedder = CameraEmbedder(c.camera_embed_dim)
    n = c.triplane_tokens
    self.triplane_tokens = self.param(
        "triplane_tokens", nn.with_logical_partitioning(
            nn.initializers.normal(c.width ** -0.5), ("tokens", "embed")),
        (3 * n * n, c.width))
    self.transformer = TriplaneTransformer(c.depth, c.num_heads, c.mlp_ratio, c.remat_policy,
                                           c.scan, dtype, attention)
    self.upsampler = PlaneUpsample(c.triplane_channels)
    kw = _nerf_kwargs(c)
    self.nerf = tp.TriplaneDecoder(hidden=kw["hidden"], num_layers=kw["num_layers"],
                                   hidden_activation=kw["activation"])

  # -- reconstruction ----------------------------------------------------------------------

  def source_camera(self, inputs: dict) -> tuple[jax.Array, jax.Array]:
    """``(camera vector [B, 16], world_to_canonical [B, 4, 4])`` of the first input view."""
    c2w = inputs["c2w"][:, 0].astype(jnp.float32)  # [B, 4, 4]
    intr = inputs["intrinsics"][:, 0].astype(jnp.float32)  # [B, 4]
    s = inputs["images"].shape[2]
    if self.config.canonicalize:
      m = world_to_canonical(c2w)
      c2w = m @ c2w
    else:
      m = jnp.broadcast_to(jnp.eye(4, dtype=jnp.float32), c2w.shape)
    return cam.openlrm_camera_vector(c2w, intr, s, s), m

  def reconstruct(self, inputs: dict, train: bool = False) -> dict:
    """One input view -> ``{planes [B, 3, H, W, C], world_to_canonical [B, 4, 4]}``."""
    del train
    c = self.config
    images = inputs["images"][:, 0]  # [B, S, S, 3]
    b = images.shape[0]
    image_tokens = self.encoder(vit.normalize_imagenet(images))  # [B, 1 + R + T, De]
    r = c.encoder.num_registers
    if r and not c.encoder.get("keep_registers", True):
      image_tokens = jnp.concatenate([image_tokens[:, :1], image_tokens[:, 1 + r:]], 1)
    cam_vec, m = self.source_camera(inputs)
    cond = self.camera_embedder(cam_vec)  # [B, Dc]
    x = jnp.broadcast_to(self.triplane_tokens[None], (b,) + self.triplane_tokens.shape)
    x = self.transformer(x, image_tokens, cond)  # [B, 3 n n, D]
    n = c.triplane_tokens
    planes = self.upsampler(x.reshape(b, 3, n, n, c.width))  # [B, 3, 2n, 2n, C]
    if c.plane2_zy:
      planes = planes.at[:, 2].set(planes[:, 2].swapaxes(1, 2))
    planes = layers.constrain(planes, ("batch", "planes", "height", "width", "channels"))
    return {"planes": planes.astype(jnp.float32), "world_to_canonical": m}

  # -- rendering ---------------------------------------------------------------------------

  def render_config(self) -> tp.RenderConfig:
    c = self.config
    return tp.RenderConfig(num_coarse=c.num_coarse, num_fine=c.num_fine,
                           box_radius=c.box_radius, chunk=c.ray_chunk, remat=c.render_remat)

  def decoder_variables(self) -> dict:
    """The NeRF decoder's variables (created here during ``init``)."""
    if self.is_initializing():
      self.nerf(jnp.zeros((1, 3 * self.config.triplane_channels), jnp.float32))
    return self.nerf.variables

  def render(self, representation: dict, cameras: cam.Cameras, background,
             train: bool = False) -> dict:
    """Renders the triplanes into cameras ``[B, V]`` (world frame): rgb, depth, alpha.

    Samples are jittered (``rngs={"sample": ...}``) only when ``train``; evaluation is
    deterministic.
    """
    c = self.config
    m = representation["world_to_canonical"]  # [B, 4, 4]
    c2w = jnp.einsum("bij,bvjk->bvik", m, cameras.c2w.astype(jnp.float32))
    cams = cam.Cameras(c2w, cameras.intrinsics.astype(jnp.float32), cameras.height,
                       cameras.width)
    key = self.make_rng("sample") if train else None
    decoder = nerf_decoder(**_nerf_kwargs(c))
    return tp.render_triplane(decoder.apply, self.decoder_variables(),
                              representation["planes"], cams, self.render_config(), key,
                              jnp.asarray(background, jnp.float32))


# ----------------------------------------------------------------------------------------
# Family interface: regularisers, export, description, pretrained weights.
# ----------------------------------------------------------------------------------------


def regularizers(representation, batch, config) -> dict:
  """``{"tv": (config.loss.tv, TV of the planes)}`` (OpenLRM: weight 5e-4)."""
  del batch
  weight = float(config.loss.get("tv", 0.0))
  if weight <= 0:
    return {}
  return {"tv": (weight, tp.total_variation(representation["planes"]))}


def mesh_field(model, params, representation, config) -> tp.MeshField:
  """The first scene's triplane NeRF for a mesh export (``model.mesh_resolution`` grid over
  the triplane box, iso-level ``model.mesh_threshold``), cut in the canonical frame and
  mapped back to the input cameras' world frame."""
  del model
  c = config.model
  decoder = nerf_decoder(**_nerf_kwargs(c))
  return tp.mesh_field(jnp.asarray(representation["planes"][0]), decoder.apply,
                       {"params": params["nerf"]}, resolution=c.mesh_resolution,
                       threshold=float(c.mesh_threshold), bound=c.box_radius,
                       world_to_field=np.asarray(representation["world_to_canonical"][0]))


def load_pretrained(params, config):
  """Replaces the encoder's params by ``config.model.encoder_weights`` (a local DINO/DINOv2
  checkpoint, converted by :mod:`lrm_jax.convert.dino`); unchanged when it is empty."""
  path = config.model.get("encoder_weights", "")
  if not path:
    return params
  if not os.path.isfile(path):
    raise FileNotFoundError(f"model.encoder_weights {path!r} not found (a local "
                            f".safetensors/.bin of {config.model.encoder.name}).")
  from lrm_jax.convert import dino
  enc = dino.load(path, config.model.encoder.num_heads, scan=config.model.scan)
  dino.check_against(enc, params["encoder"], "encoder")
  new = dict(params)
  new["encoder"] = jax.tree.map(lambda old, w: jnp.asarray(w, old.dtype), params["encoder"],
                                enc)
  return new


def unposed_inputs(path: str, config) -> dict:
  """One image without a camera (OpenLRM's preprocessing: alpha or an estimated mask,
  recentred, canonical source camera)."""
  from lrm_jax.data import single_image
  return single_image.load_input(path, config)


FAMILY = family.Family(name="lrm", model=Model, model_config=model_config,
                       variants=tuple(VARIANTS), regularizers=regularizers,
                       load_pretrained=load_pretrained, mesh_field=mesh_field,
                       unposed_inputs=unposed_inputs)
