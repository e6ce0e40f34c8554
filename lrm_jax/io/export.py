"""A family's reconstruction -> files other tools open, chosen by representation type.

- :class:`~lrm_jax.representations.gaussians.Gaussians` -> ``gaussians.ply`` (the standard
  3DGS layout);
- a :class:`~lrm_jax.representations.field.MeshField` (triplanes, image-conditioned fields)
  -> ``mesh.obj`` + ``mesh.glb`` by marching cubes;
- anything else is only rendered: ``reconstruct`` writes its views and turntable.
"""

from __future__ import annotations

import os

import jax
import numpy as np

from lrm_jax.io import mesh as mesh_io
from lrm_jax.io import ply
from lrm_jax.representations import gaussians as gs
from lrm_jax.representations.field import MeshField

# Gaussians more transparent than this (mostly background pixels) are not written; they
# change no rendered pixel by more than their opacity.
MIN_EXPORT_OPACITY = 0.005


def first_scene(tree):
  """The first scene of a batched pytree, as numpy arrays."""
  return jax.tree.map(lambda x: np.asarray(jax.device_get(x))[0], tree)


def export_gaussians(gaussians: gs.Gaussians, out_dir: str,
                     min_opacity: float = MIN_EXPORT_OPACITY) -> dict:
  """Writes the first scene of ``gaussians [B, N]`` as ``out_dir/gaussians.ply``."""
  kept = gs.prune_by_threshold(first_scene(gaussians), min_opacity)
  path = ply.save_ply(os.path.join(out_dir, "gaussians.ply"), kept)
  return {"gaussians": path, "num_gaussians": int(kept.num)}


def export(representation, out_dir: str, mesh_field: MeshField | None = None) -> dict:
  """Writes what the representation's type allows; returns ``{what: path or figure}``."""
  os.makedirs(out_dir, exist_ok=True)
  paths = {}
  if isinstance(representation, gs.Gaussians):
    paths.update(export_gaussians(representation, out_dir))
  if mesh_field is not None:
    paths.update(mesh_io.export_field_mesh(mesh_field, out_dir))
  return paths
