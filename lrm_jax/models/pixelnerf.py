"""pixelNeRF (Yu et al. CVPR 2021): 1..N posed images -> an image-conditioned NeRF.

  images [B, Vi, S, S, 3] -> ResNet encoder (models/resnet.py)  -> latents [B, Vi, S/2, S/2, C]
  latents -> each MLP's per-block feature maps (Linear, applied per pixel) -> [B, Vi, h, w, 3 H]
  a world point x, ray direction d, for every input view v:
      uv_v = project(x, camera_v) (cameras.py)  -> features f_v = bilinear(maps_v, uv_v)
      x_v, d_v = x, d in view v's camera frame  -> PE(x_v) (6 freqs, base 1.5) ++ d_v
  ResnetFC: Linear(42 -> H), 5 residual blocks; blocks 0-2 add f_v's part; after block 3's
  input the per-view activations are averaged over views (weighted: dropped views have
  weight 0); -> Linear -> sigmoid rgb, relu density.
  Coarse and fine ResnetFCs share the encoder; rays are rendered by the one volume renderer
  (render/raymarch.py): stratified coarse samples, then importance and depth-guided samples
  at which the fine network is evaluated together with the coarse ones.

Exactness note: the image feature enters each block through a Linear map, and bilinear
sampling is linear with weights summing to one, so the Linear maps are applied to the
feature maps once per pixel (in ``reconstruct``) and the results sampled per point: the
same numbers as sampling 512 features per point and projecting each, for far fewer FLOPs
(points outnumber pixels by 10-100x).

Differences from the reference code (sxyu/pixel-nerf), all deliberate:
  * cameras are OpenCV with pixel centres at +0.5 (cameras.py); the reference's OpenGL
    camera and corner-aligned pixels are converted at the edge (data readers);
  * BatchNorm is frozen into an affine map (converted weights fold their running stats);
    the reference keeps BatchNorm in train mode;
  * rays are clipped to the object box ``[-r, r]^3`` instead of per-dataset near/far
    planes (our sources normalise objects into the box).

Training: the shared trainer renders the target views (random crops: ``data.target_crop``)
and adds the coarse pass's MSE through :func:`regularizers` (``loss.coarse_mse``). With
``model.min_train_views < data.num_input_views`` each scene of a train step uses a random
number of its input views (pixelNeRF SRN: 1 or 2); at inference any number of views works.
"""

from __future__ import annotations

import functools
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from lrm_jax import cameras as cam
from lrm_jax.models import family
from lrm_jax.models import resnet
from lrm_jax.render import raymarch
from lrm_jax.representations.field import MeshField

# variant -> sizes. paper: pixelNeRF's SRN/DTU settings (REFERENCES.md).
VARIANTS = {
    # CPU-trainable: a 3-stage ResNet with one block per stage (16+16+32+48 = 112 channels)
    # at 64^2 without the first pool (32^2 latents), 64-wide MLPs, 16 + 8 + 8 samples.
    "tiny": dict(stem=16, blocks=(1, 1, 1), widths=(16, 32, 48), use_first_pool=False,
                 hidden=64, num_coarse=16, num_fine=8, num_depth=8, mesh_resolution=96,
                 density_activation="softplus"),
    "paper": dict(stem=64, blocks=resnet.RESNET34_BLOCKS[:3], widths=resnet.RESNET34_WIDTHS[:3],
                  use_first_pool=True, hidden=512, num_coarse=64, num_fine=16, num_depth=16,
                  mesh_resolution=256),
}


def model_config(variant: str) -> ml_collections.ConfigDict:
  """The ``config.model`` section for a pixelNeRF variant."""
  if variant not in VARIANTS:
    raise ValueError(f"unknown pixelNeRF variant {variant!r}; choose one of "
                     f"{sorted(VARIANTS)}.")
  v = dict(VARIANTS[variant])
  c = ml_collections.ConfigDict()
  c.variant = variant
  c.encoder_weights = ""  # local torchvision resnet34 weights ("" = from scratch)
  c.num_blocks = 5  # ResnetFC residual blocks
  c.num_latent_blocks = 3  # blocks 0..2 add the image feature
  c.combine_layer = 3  # per-view activations are averaged before this block
  c.num_freqs = 6  # positional encoding: 1.5 * 2^k, k < 6, input included
  c.freq_base = 1.5
  c.depth_std = 0.01
  c.min_train_views = 1  # train steps use 1..num_input_views views per scene
  c.density_activation = "relu"  # pixelNeRF; see activate()
  c.density_shift = 0.0  # added to the raw density (pixelNeRF: 0)
  c.box_radius = 1.0
  c.ray_chunk = 4096  # rays per lax.map step per scene
  c.render_remat = variant != "tiny"
  c.mesh_threshold = 10.0  # density iso-level of exported meshes
  c.dtype = "float32"
  c.update(v)
  c.blocks, c.widths = tuple(c.blocks), tuple(c.widths)
  return c


# ----------------------------------------------------------------------------------------
# Building blocks.
# ----------------------------------------------------------------------------------------


def positional_encoding(x: jax.Array, num_freqs: int = 6, base: float = 1.5) -> jax.Array:
  """pixelNeRF's encoding ``[..., D] -> [..., D (1 + 2 F)]``: ``x``, then per frequency
  ``f_k = base * 2^k`` the block ``sin(f_k x)`` (D values), ``cos(f_k x)`` (D values)."""
  freqs = base * 2.0 ** jnp.arange(num_freqs, dtype=x.dtype)  # [F]
  phase = x[..., None, :] * freqs[:, None]  # [..., F, D]
  enc = jnp.stack([jnp.sin(phase), jnp.cos(phase)], -2)  # [..., F, 2, D]
  return jnp.concatenate([x, enc.reshape(x.shape[:-1] + (-1,))], -1)


def sample_features(maps: jax.Array, uv: jax.Array) -> jax.Array:
  """Bilinear features of ``maps [V, h, w, C]`` at pixel coordinates ``uv [V, N, 2]``.

  ``uv`` is in the maps' own pixels with the convention of ``cameras.py``: pixel (row i,
  column j) has its centre at ``(j + 0.5, i + 0.5)``, where it reads exactly that pixel's
  feature. Points outside clamp to the border pixels. Returns ``[V, N, C]``.
  """
  v, h, w, c = maps.shape
  x = jnp.clip(uv[..., 0] - 0.5, 0.0, w - 1.0)  # [V, N] continuous column
  y = jnp.clip(uv[..., 1] - 0.5, 0.0, h - 1.0)
  x0f, y0f = jnp.floor(x), jnp.floor(y)
  fx, fy = (x - x0f)[..., None], (y - y0f)[..., None]  # [V, N, 1]
  x0, y0 = x0f.astype(jnp.int32), y0f.astype(jnp.int32)
  x1, y1 = jnp.minimum(x0 + 1, w - 1), jnp.minimum(y0 + 1, h - 1)
  flat = maps.reshape(v, h * w, c)
  gather = jax.vmap(lambda f, i: f[i])  # [V, hw, C], [V, N] -> [V, N, C]
  tap = lambda yy, xx: gather(flat, yy * w + xx)
  return ((1 - fy) * ((1 - fx) * tap(y0, x0) + fx * tap(y0, x1))
          + fy * ((1 - fx) * tap(y1, x0) + fx * tap(y1, x1)))


def _dense(features, name, kernel_init=None, axes=("embed", "mlp")):
  init = kernel_init or nn.initializers.variance_scaling(2.0, "fan_in", "normal")
  return nn.Dense(features, name=name,
                  kernel_init=nn.with_logical_partitioning(init, axes),
                  bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (axes[1],)))


class ResnetFC(nn.Module):
  """pixelNeRF's MLP; see the module docstring.

  ``project_latent(features [..., C]) -> [..., L H]``: the Linear maps of the image feature
  of blocks ``0..L-1`` (``lin_z_i``), applied per pixel. ``__call__(x [V, N, Din],
  latent [V, N, L H], view_weights [V]) -> [N, 4]`` raw outputs (density, rgb).
  ``fc_1`` of every block starts at zero (each block starts as the identity).
  """

  hidden: int = 512
  num_blocks: int = 5
  num_latent_blocks: int = 3
  combine_layer: int = 3

  def setup(self):
    hd = self.hidden
    self.lin_in = _dense(hd, "lin_in", axes=(None, "mlp"))
    self.lin_z = [_dense(hd, f"lin_z_{i}", axes=("channels", "mlp"))
                  for i in range(self.num_latent_blocks)]
    self.fc_0 = [_dense(hd, f"block_{i}_fc_0", axes=("mlp", "embed"))
                 for i in range(self.num_blocks)]
    self.fc_1 = [_dense(hd, f"block_{i}_fc_1", nn.initializers.zeros, axes=("embed", "mlp"))
                 for i in range(self.num_blocks)]
    self.lin_out = _dense(4, "lin_out", axes=("mlp", None))

  def project_latent(self, features: jax.Array) -> jax.Array:
    return jnp.concatenate([lin(features) for lin in self.lin_z], -1)

  def __call__(self, x: jax.Array, latent: jax.Array, view_weights: jax.Array) -> jax.Array:
    wsum = jnp.maximum(view_weights.sum(), 1e-6)
    mean = lambda h: jnp.einsum("v,vnh->nh", view_weights, h) / wsum  # [V, N, H] -> [N, H]
    h = self.lin_in(x)  # [V, N, H]
    for i in range(self.num_blocks):
      if i == self.combine_layer:  # mean over the views that are used
        h = mean(h)
      if i < self.num_latent_blocks:
        h = h + latent[..., i * self.hidden:(i + 1) * self.hidden]
      h = h + self.fc_1[i](nn.relu(self.fc_0[i](nn.relu(h))))
    if self.combine_layer >= self.num_blocks:
      h = mean(h)
    return self.lin_out(nn.relu(h))  # [N, 4]


def make_mlp(c, **kw) -> ResnetFC:
  """The ResnetFC of ``config.model`` (``parent=None``: an unbound module to ``apply``)."""
  return ResnetFC(c.hidden, c.num_blocks, c.num_latent_blocks, c.combine_layer, **kw)


def activate(raw: jax.Array, density: str = "relu",
             shift: float = 0.0) -> tuple[jax.Array, jax.Array]:
  """``[..., 4]`` raw MLP output -> ``(sigma [...], rgb [..., 3] sigmoid)``.

  ``density``: ``"relu"`` (pixelNeRF) or ``"softplus"`` (never dead: a field whose raw
  densities all fall below 0 early in a short run still gets gradients), of the raw
  density plus ``shift`` (< 0: the field starts nearly empty, as EG3D's -1).
  """
  if density == "relu":
    sigma = nn.relu(raw[..., 0] + shift)
  elif density == "softplus":
    sigma = nn.softplus(raw[..., 0] + shift)
  else:
    raise ValueError(f"model.density_activation must be relu or softplus, got {density!r}.")
  return sigma, nn.sigmoid(raw[..., 1:])


def view_field(mlp: ResnetFC, params, scene: dict, lo: int, hi: int, config) -> callable:
  """The field of one scene through one MLP (``scene``: one scene of the representation
  plus its ``view_weights [Vi]``; ``latent[..., lo:hi]`` is this MLP's part)."""
  maps = scene["latent"][..., lo:hi]  # [Vi, h, w, L H]
  c2w, intr = scene["c2w"], scene["intrinsics"]  # [Vi, 4, 4], [Vi, 4] (latent pixels)

  def field(points, directions):  # [R, S, 3], [R, 3] -> sigma [R, S], rgb [R, S, 3]
    r, s, _ = points.shape
    pts = points.reshape(1, r * s, 3)
    uv, _ = cam.project_points(pts, c2w, intr)  # [Vi, N, 2]
    xyz = cam.world_to_camera(pts, c2w)  # [Vi, N, 3]
    d = jnp.einsum("vji,rj->vri", c2w[:, :3, :3], directions)  # [Vi, R, 3] view frame
    d = jnp.broadcast_to(d[:, :, None], (d.shape[0], r, s, 3)).reshape(-1, r * s, 3)
    x = jnp.concatenate([positional_encoding(xyz, config.num_freqs, config.freq_base), d], -1)
    raw = mlp.apply({"params": params}, x, sample_features(maps, uv), scene["view_weights"])
    sigma, rgb = activate(raw.reshape(r, s, 4), config.density_activation,
                          config.get("density_shift", 0.0))
    return sigma, rgb

  return field


def _builder(mlp: ResnetFC, split: int, config, shared, scene):
  """:data:`raymarch.FieldBuilder`: coarse and fine fields of one scene."""
  coarse_params, fine_params = shared
  total = scene["latent"].shape[-1]
  return (view_field(mlp, coarse_params, scene, 0, split, config),
          view_field(mlp, fine_params, scene, split, total, config))


# ----------------------------------------------------------------------------------------
# The model.
# ----------------------------------------------------------------------------------------


class Model(family.FamilyModel):
  """pixelNeRF. ``reconstruct(inputs) -> {latent, c2w, intrinsics}`` (per input view);
  ``render(rep, cameras)`` volume-renders the conditioned field."""

  def setup(self):
    c = self.config
    self.encoder = resnet.SpatialEncoder(c.stem, tuple(c.blocks), tuple(c.widths),
                                         c.use_first_pool, jnp.dtype(c.dtype))
    self.coarse = make_mlp(c)
    self.fine = make_mlp(c)

  def reconstruct(self, inputs: dict, train: bool = False) -> dict:
    """Input views -> ``latent [B, Vi, h, w, 2 L H]`` (the coarse then the fine MLP's
    per-block feature maps), ``c2w [B, Vi, 4, 4]``, ``intrinsics [B, Vi, 4]`` in latent
    pixels."""
    del train
    images = inputs["images"].astype(jnp.float32)  # [B, Vi, S, S, 3]
    b, v, s = images.shape[:3]
    feats = self.encoder(images.reshape((b * v,) + images.shape[2:]))  # [BVi, h, w, C]
    h, w = feats.shape[1:3]
    latent = jnp.concatenate([self.coarse.project_latent(feats),
                              self.fine.project_latent(feats)], -1)
    intr = cam.resize_intrinsics(inputs["intrinsics"].astype(jnp.float32), (s, s), (h, w))
    return {"latent": latent.reshape((b, v) + latent.shape[1:]),
            "c2w": inputs["c2w"].astype(jnp.float32), "intrinsics": intr}

  def render_config(self, train: bool) -> raymarch.RenderConfig:
    c = self.config
    return raymarch.RenderConfig(num_coarse=c.num_coarse, num_fine=c.num_fine,
                                 num_depth=c.num_depth, depth_std=c.depth_std,
                                 box_radius=c.box_radius, chunk=c.ray_chunk,
                                 remat=c.render_remat, resample_padding=1e-5,
                                 return_coarse=train)

  def mlp_params(self):
    """The coarse and fine MLPs' params (created here during ``init``)."""
    if self.is_initializing():
      x = jnp.zeros((1, 1, 3 * (1 + 2 * self.config.num_freqs) + 3), jnp.float32)
      z = jnp.zeros((1, 1, self.config.num_latent_blocks * self.config.hidden), jnp.float32)
      self.coarse(x, z, jnp.ones((1,)))
      self.fine(x, z, jnp.ones((1,)))
    return self.coarse.variables["params"], self.fine.variables["params"]

  def view_weights(self, batch: int, views: int, train: bool) -> jax.Array:
    """``[B, Vi]``: 1 for the input views a scene uses, 0 for the others. Training draws
    ``k`` in ``[min_train_views, Vi]`` per scene and uses the first ``k`` (the inputs are
    in random order already); otherwise every view is used."""
    lo = min(int(self.config.min_train_views), views)
    if not train or lo >= views:
      return jnp.ones((batch, views), jnp.float32)
    k = jax.random.randint(self.make_rng("sample"), (batch, 1), lo, views + 1)
    return (jnp.arange(views)[None] < k).astype(jnp.float32)

  def render(self, representation: dict, cameras: cam.Cameras, background,
             train: bool = False) -> dict:
    """Renders cameras ``[B, V]``: rgb, depth, alpha (with ``train`` also the coarse
    pass's ``*_coarse``). Samples are jittered only when ``train``."""
    c = self.config
    rep = representation
    b, vi = rep["c2w"].shape[:2]
    scenes = dict(latent=rep["latent"], c2w=rep["c2w"], intrinsics=rep["intrinsics"],
                  view_weights=self.view_weights(b, vi, train))
    origins, directions = cameras.rays()  # [B, V, H, W, 3]
    key = self.make_rng("sample") if train else None
    split = c.num_latent_blocks * c.hidden
    builder = functools.partial(_builder, make_mlp(c, parent=None), split, c)
    return raymarch.render_chunked(builder, self.mlp_params(), scenes, origins, directions,
                                   self.render_config(train), key,
                                   jnp.asarray(background, jnp.float32))

  def __call__(self, inputs: dict, cameras: cam.Cameras, background, train: bool = False):
    """``(rendered, representation)``; the coarse images go with the representation (for
    the coarse loss in :func:`regularizers`), not into the rendered dict's extras."""
    rep = self.reconstruct(inputs, train)
    out = self.render(rep, cameras, background, train)
    coarse = {k: out.pop(k) for k in list(out) if k.endswith("_coarse")}
    return out, dict(rep, **coarse)


# ----------------------------------------------------------------------------------------
# Family interface.
# ----------------------------------------------------------------------------------------


def regularizers(representation, batch, config) -> dict:
  """``{"mse_coarse": (loss.coarse_mse, MSE of the coarse pass)}`` in training."""
  weight = float(config.loss.get("coarse_mse", 0.0))
  if weight <= 0 or "rgb_coarse" not in representation:
    return {}
  err = representation["rgb_coarse"] - batch["targets"]["images"]
  return {"mse_coarse": (weight, jnp.mean(jnp.square(err)))}


def _mesh_values(points, latent, c2w, intr, params, mlp, config):
  """``(sigma [M], rgb [M, 3])`` of the fine field at ``points [M, 3]``, looking from the
  mean input camera towards each point (the MLP is view dependent)."""
  scene = dict(latent=latent, c2w=c2w, intrinsics=intr,
               view_weights=jnp.ones(c2w.shape[:1], jnp.float32))
  split = config.num_latent_blocks * config.hidden
  field = view_field(mlp, params, scene, split, latent.shape[-1], config)
  dirs = points - c2w[:, :3, 3].mean(0)
  dirs = dirs / jnp.maximum(jnp.linalg.norm(dirs, axis=-1, keepdims=True), 1e-8)
  sigma, rgb = field(points[:, None], dirs)
  return sigma[:, 0], rgb[:, 0]


def _mesh_density(points, *args, mlp, config):
  return _mesh_values(points, *args, mlp, config)[0]


def _mesh_color(points, *args, mlp, config):
  return _mesh_values(points, *args, mlp, config)[1]


def mesh_field(model, params, representation, config) -> MeshField:
  """The first scene's fine field, conditioned on its input views, for a mesh export
  (``model.mesh_resolution`` grid over the box, iso-level ``model.mesh_threshold``)."""
  del model
  c = config.model
  kw = dict(mlp=make_mlp(c, parent=None), config=c)
  args = (jnp.asarray(representation["latent"][0]), jnp.asarray(representation["c2w"][0]),
          jnp.asarray(representation["intrinsics"][0]), params["fine"])
  return MeshField(functools.partial(_mesh_density, **kw), functools.partial(_mesh_color, **kw),
                   args=args, bound=c.box_radius, resolution=c.mesh_resolution,
                   threshold=float(c.mesh_threshold))


def load_pretrained(params, config):
  """Replaces the encoder's params by ``config.model.encoder_weights`` (a local torchvision
  ``resnet34`` state dict, :mod:`lrm_jax.convert.resnet`); unchanged when it is empty."""
  path = config.model.get("encoder_weights", "")
  if not path:
    return params
  if not os.path.isfile(path):
    raise FileNotFoundError(f"model.encoder_weights {path!r} not found (a local .pth/"
                            ".safetensors of torchvision's resnet34).")
  from lrm_jax.convert import dino, resnet as resnet_convert
  enc = resnet_convert.load(path, num_stages=len(config.model.blocks))
  dino.check_against(enc, params["encoder"], "encoder")
  new = dict(params)
  new["encoder"] = jax.tree.map(lambda old, w: jnp.asarray(w, old.dtype), params["encoder"],
                                enc)
  return new


FAMILY = family.Family(name="pixelnerf", model=Model, model_config=model_config,
                       variants=tuple(VARIANTS), regularizers=regularizers,
                       load_pretrained=load_pretrained, mesh_field=mesh_field)
