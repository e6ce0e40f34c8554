"""Shared by the families that predict pixel-aligned 3D Gaussians (GRM, Long-LRM): the
splatting renderer as a model config sets it up, and the input-depth regulariser."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lrm_jax import cameras as cam
from lrm_jax import parallel
from lrm_jax.representations import gaussians as gs
from lrm_jax.render import splatting


def resolve_backend(name: str) -> str:
  """``auto``: the Pallas kernel on TPU/GPU, the tiled jnp rasteriser on CPU."""
  if name != "auto":
    return name
  return "tiled" if jax.default_backend() == "cpu" else "pallas"



def render_gaussians(c, gaussians: gs.Gaussians, cameras: cam.Cameras, background) -> dict:
  """Splats ``[B, N]`` Gaussians into cameras ``[B, V]``: rgb, depth, alpha, overflow; the
  renderer settings of a model config ``c`` (shared by the Gaussian families).

  Memory settings (absent from configs saved before they existed):
  ``intersections_per_gaussian`` sizes the static intersection buffer per camera
  (default 16 per Gaussian, :func:`binning.default_capacity`; overflow is reported),
  ``render_views_at_once`` renders that many target views at a time, one group after
  another, and ``render_remat`` recomputes each group in the backward pass.
  """
  backend = resolve_backend(c.backend)
  # Per device on its batch rows (a Pallas kernel on TPU cannot be auto-partitioned).
  options = {}
  if backend == "tiled":  # configs saved before tile_size/chunk_size existed lack them
    options = {"block_tiles": c.block_tiles, "tile_size": int(c.get("tile_size", 16)),
               "chunk_size": int(c.get("chunk_size", 32))}
  per_gaussian = int(c.get("intersections_per_gaussian", 0) or 0)
  if per_gaussian > 0:
    options["capacity"] = per_gaussian * gaussians.num
  options["views_at_once"] = int(c.get("render_views_at_once", 0) or 0) or None
  options["remat"] = bool(c.get("render_remat", False))
  options["host_sorts"] = bool(c.get("host_sorts", True))
  options["max_unrolled_cameras"] = int(c.get("max_unrolled_cameras", 16))
  return parallel.batch_map(
      lambda g, c, bg: splatting.rasterize(g, c, bg, backend=backend, **options),
      (gaussians, cameras),
      (jnp.zeros((3,), jnp.float32) if background is None else jnp.asarray(background),))

def pixel_depth_loss(gaussians: gs.Gaussians, inputs: dict) -> jax.Array:
  """Mean |camera z of each pixel's Gaussian - the input view's depth| where depth is known.

  ``gaussians``: pixel-aligned ``[B, V*H*W]`` (from ``Model.reconstruct``); ``inputs``:
  ``c2w [B, V, 4, 4]``, ``depths [B, V, H, W, 1]`` (0 = unknown) and ``masks``.
  """
  depths = inputs["depths"]
  b, v, h, w, _ = depths.shape
  means = gaussians.means.reshape(b, v, h * w, 3)
  c2w = inputs["c2w"]
  rel = means - c2w[:, :, None, :3, 3]  # [B, V, HW, 3]
  z = jnp.einsum("bvnk,bvk->bvn", rel, c2w[:, :, :3, 2])  # camera forward axis (OpenCV +z)
  target = depths.reshape(b, v, h * w)
  valid = ((target > 0) & (inputs["masks"].reshape(b, v, h * w) > 0.5)).astype(z.dtype)
  return jnp.sum(jnp.abs(z - target) * valid) / jnp.maximum(jnp.sum(valid), 1.0)


def regularizers(representation, batch, config) -> dict:
  """``{"input_depth": (weight, pixel_depth_loss)}`` when ``config.loss.input_depth > 0``.

  A training signal on the geometry, as MVS-supervised feed-forward models use: each
  pixel's Gaussian should sit at the input view's depth (known for the synthetic and mesh
  sources). The GRM paper trains without it; it makes CPU-sized runs learn geometry in
  hundreds rather than tens of thousands of steps.
  """
  weight = float(config.loss.get("input_depth", 0.0))
  if weight <= 0 or "depths" not in batch.get("inputs", {}):
    return {}
  return {"input_depth": (weight, pixel_depth_loss(representation, batch["inputs"]))}
