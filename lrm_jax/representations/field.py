"""A density and colour field of one scene, as functions of points: what a mesh is cut from.

Triplane NeRFs (LRM) and image-conditioned fields (pixelNeRF) describe a scene this way;
:func:`lrm_jax.io.mesh.field_mesh` turns one into a coloured triangle mesh.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np


@dataclasses.dataclass(frozen=True)
class MeshField:
  """``density(points [M, 3], *args) -> [M]`` and ``color(points, *args) -> [M, 3]``.

  ``args`` are passed as traced arguments (planes, decoder variables), so they are not
  baked into compiled programs as constants. Points are in the field's own frame and
  sampled on a ``resolution^3`` grid over ``[-bound, bound]^3``; ``threshold`` is the
  density iso-level. ``world_to_field`` ``[4, 4]`` (rigid; identity when ``None``) maps the
  inputs' world frame to the field's, and the mesh is mapped back by its inverse.
  """

  density: Callable[..., Any]
  color: Callable[..., Any]
  args: tuple = ()
  bound: float = 1.0
  resolution: int = 256
  threshold: float = 10.0
  world_to_field: np.ndarray | None = None
