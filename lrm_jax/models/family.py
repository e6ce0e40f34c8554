"""The family contract: the only way shared code (trainer, evaluation, reconstruct, aot,
inference) talks to a model family.

A family is one model file, ``lrm_jax/models/<name>.py``, and one config,
``configs/<name>.py``. The model file ends with ``FAMILY = family.Family(...)``; the config
sets ``config.model_name = "<name>"`` (or a dotted module path, for a family that lives
outside this package) and ``config.model = <model_config>(variant)``. Nothing else in the
library names a family. To add one (docs/design.md, "Adding a family"):

1. ``Model(config.model)``, a Flax module (:class:`FamilyModel`) with

   - ``reconstruct(inputs, train) -> representation``: the batch's ``inputs`` (the names
     and shapes of :meth:`Family.batch_spec`) to the family's 3D representation: a
     :class:`~lrm_jax.representations.gaussians.Gaussians` pytree, a triplane, or any pytree;
   - ``render(representation, cameras, background, train) -> dict``: images of it for
     cameras ``[B, V]``: ``rgb [B, V, H, W, 3]``, ``depth`` and ``alpha [B, V, H, W, 1]``,
     plus any extras (diagnostics such as the splatting buffer's ``overflow``): every extra
     is summed over the batch and logged as a train metric under its own name;
   - ``__call__(inputs, cameras, background, train) -> (rendered, representation)``: the
     train and eval path; :class:`FamilyModel` gives ``render(reconstruct(...))``.

2. ``model_config(variant) -> ConfigDict`` (the ``config.model`` section) and the variant
   table ``variants``.

3. Optional hooks, each with a default here:

   - ``regularizers(representation, batch, config) -> {name: (weight, value)}``: terms added
     to the image losses; the weights live in the family's own ``config.loss`` keys;
   - ``batch_spec(config) -> {"inputs": {...}, "targets": {...}, "scene_id": ...}`` of
     ``jax.ShapeDtypeStruct``: what the pipeline yields, what init traces with and what
     ``aot`` compiles for. Extra per-view fields (an expression code) are taken from the
     source's examples by the pipeline under the same name;
   - ``load_pretrained(params, config) -> params``: pretrained weights from a local file at
     a fresh start (default: unchanged);
   - ``mesh_field(model, params, representation, config) -> MeshField | None``
     (:class:`lrm_jax.representations.field.MeshField`): a density
     and colour field of the first scene, for a mesh export (default: none);
   - ``unposed_inputs(path, config) -> inputs``: inputs from images without cameras, for
     ``reconstruct`` (default: unsupported);
   - ``eval_metrics(model, params, batch, representation, background) -> {name: [B, Vt]}``:
     per-target-view metrics of the family beyond PSNR/SSIM/LPIPS, computed in the jitted
     evaluation and averaged (NaNs ignored) into the eval results under their names
     (default: none).

Export is keyed by representation type (:mod:`lrm_jax.io.export`): Gaussians -> ``.ply``,
a family with a ``mesh_field`` -> ``mesh.obj``/``mesh.glb``, anything else is only rendered
(views and a turntable).
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lrm_jax import cameras as cam
from lrm_jax.errors import ConfigError

class FamilyModel(nn.Module):
  """Base of a family's ``Model``, which defines ``reconstruct(inputs, train)`` and
  ``render(representation, cameras, background, train)``; ``__call__`` is
  ``render(reconstruct(inputs))``."""

  config: ml_collections.ConfigDict

  def __call__(self, inputs: dict, cameras: cam.Cameras, background, train: bool = False):
    """-> ``(rendered, representation)``: the train and eval path."""
    rep = self.reconstruct(inputs, train)
    return self.render(rep, cameras, background, train), rep


def view_spec(batch: int, views: int, size, extra: dict | None = None) -> dict:
  """ShapeDtypeStructs of ``views`` views per example of ``size`` (an int: a square, or
  ``(H, W)``): the fields every batch has (``data.pipeline.VIEW_FIELDS``) and ``extra`` ones.

  ``extra``: ``{name: (per-view shape, dtype)}`` added per view, e.g. ``{"expression":
  ((16,), jnp.float32)}`` -> ``[B, V, 16]``.
  """
  h, w = cam.image_hw(size)
  shapes = {"images": (h, w, 3), "masks": (h, w, 1), "depths": (h, w, 1),
            "c2w": (4, 4), "intrinsics": (4,)}
  out = {k: jax.ShapeDtypeStruct((batch, views) + s, jnp.float32) for k, s in shapes.items()}
  for name, (shape, dtype) in (extra or {}).items():
    out[name] = jax.ShapeDtypeStruct((batch, views) + tuple(shape), jnp.dtype(dtype))
  return out


def default_batch_spec(config, batch: int | None = None) -> dict:
  """The batch every family shares: ``inputs`` and ``targets`` views and ``scene_id``.

  Inputs are ``data.input_size`` squares, targets ``data.target_crop or
  data.target_size`` squares; with ``data.input_hw = (H, W)`` inputs and (uncropped)
  targets are ``H x W`` (:func:`lrm_jax.data.view_sampling.view_hw`). ``batch`` defaults to
  ``data.batch_size`` (global).
  """
  from lrm_jax.data import view_sampling  # pylint: disable=g-import-not-at-top
  d = config.data
  b = d.batch_size if batch is None else batch
  target = d.target_crop or view_sampling.view_hw(d, "targets")
  return {"inputs": view_spec(b, d.num_input_views, view_sampling.view_hw(d, "inputs")),
          "targets": view_spec(b, d.num_target_views, target),
          "scene_id": jax.ShapeDtypeStruct((b,), jnp.int32)}


def no_regularizers(representation, batch, config) -> dict:
  del representation, batch, config
  return {}


def unchanged_params(params, config):
  del config
  return params


def no_mesh_field(model, params, representation, config):
  del model, params, representation, config
  return None


@dataclasses.dataclass(frozen=True)
class Family:
  """What a model file exports as ``FAMILY``; see the module docstring for each field."""

  name: str
  model: type  # the Flax module class, built as model(config.model)
  model_config: Callable[[str], ml_collections.ConfigDict]
  variants: tuple
  regularizers: Callable = no_regularizers
  batch_spec: Callable = default_batch_spec
  load_pretrained: Callable = unchanged_params
  mesh_field: Callable = no_mesh_field
  unposed_inputs: Callable | None = None
  eval_metrics: Callable | None = None

  def build(self, config) -> nn.Module:
    """The family's Flax module for ``config.model``."""
    return self.model(config.model)

  def dummy_batch(self, config, batch: int = 1) -> dict:
    """A concrete batch of :meth:`batch_spec`'s structure for ``init``: inputs and targets
    on one orbit (20 degrees elevation, radius 2.3, 50 degree field of view), grey images,
    full masks, zeros elsewhere."""
    spec = self.batch_spec(config, batch)
    vi, vt = spec["inputs"]["images"].shape[1], spec["targets"]["images"].shape[1]
    c2w = cam.orbit_cameras(np.linspace(0, 360, vi + vt, endpoint=False),
                            np.full(vi + vt, 20.0), 2.3).astype(np.float32)
    return {"inputs": _dummy_views(spec["inputs"], c2w[:vi]),
            "targets": _dummy_views(spec["targets"], c2w[vi:]),
            **{k: np.zeros(v.shape, v.dtype) for k, v in spec.items()
               if k not in ("inputs", "targets")}}


def _dummy_views(spec: dict, c2w: np.ndarray) -> dict:
  b, v, s = spec["images"].shape[:3]
  k = cam.intrinsics_from_fov(np.deg2rad(50.0), s, s)
  out = {name: np.zeros(x.shape, x.dtype) for name, x in spec.items()}
  out.update(images=np.full(spec["images"].shape, 0.5, np.float32),
             masks=np.ones(spec["masks"].shape, np.float32),
             c2w=np.broadcast_to(c2w, (b, v, 4, 4)).copy(),
             intrinsics=np.broadcast_to(k, (b, v, 4)).copy())
  return out


def module_name(config) -> str:
  """``config.model_name`` as a module path: a bare name is ``lrm_jax.models.<name>``."""
  name = config.get("model_name", "")
  if not name:
    raise ConfigError("config.model_name is empty: a family config sets it to the model "
                      "file's name (e.g. 'grm').")
  return name if "." in name else f"lrm_jax.models.{name}"


def get(config) -> Family:
  """The :class:`Family` of ``config`` (``FAMILY`` of its model file)."""
  path = module_name(config)
  try:
    module = importlib.import_module(path)
  except ModuleNotFoundError as e:
    if e.name and path.startswith(e.name):
      raise ConfigError(f"config.model_name {config.model_name!r}: no module {path}.") from e
    raise
  fam = getattr(module, "FAMILY", None)
  if not isinstance(fam, Family):
    raise ConfigError(f"{path} defines no FAMILY = family.Family(...): it is not a model "
                      "family (see lrm_jax/models/family.py).")
  return fam
