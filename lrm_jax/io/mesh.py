"""Density fields -> coloured triangle meshes (marching cubes) -> ``.obj`` / ``.glb``.

The density grid samples ``[-bound, bound]^3`` at ``N`` evenly spaced points per axis
*including* both ends (``linspace(-bound, bound, N)``), indexed ``grid[ix, iy, iz]``, so
grid index ``i`` is the world coordinate ``-bound + 2 bound i / (N - 1)``. It is filled a
block of x-slabs at a time, each block evaluated in ``lax.map`` chunks of points, so only
the ``N^3`` float32 densities are ever held in full (227 MB at ``N = 384``).
"""

from __future__ import annotations

import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from lrm_jax.representations.field import MeshField

Array = Any  # np.ndarray | jax.Array
# point_fn(points [M, 3], *args) -> [M] densities or [M, 3] colours.
PointFn = Callable[..., jax.Array]


def map_points(fn: PointFn, points: jax.Array, chunk: int, *args) -> jax.Array:
  """``fn(points [M, 3], *args)`` evaluated ``chunk`` points at a time with ``lax.map``.

  ``M`` is padded to a multiple of ``chunk`` (repeating the last point); traceable.
  """
  m = points.shape[0]
  chunk = max(1, min(chunk, m))
  num = -(-m // chunk)
  pad = num * chunk - m
  if pad:
    points = jnp.concatenate([points, jnp.repeat(points[-1:], pad, 0)], 0)
  out = jax.lax.map(lambda p: fn(p, *args), points.reshape(num, chunk, 3))
  return out.reshape((num * chunk,) + out.shape[2:])[:m]


def grid_coordinates(resolution: int, bound: float = 1.0) -> np.ndarray:
  """The ``resolution`` sample coordinates ``[N]`` along each axis (both ends included)."""
  return np.linspace(-bound, bound, resolution, dtype=np.float32)


def extract_density_grid(density_fn: PointFn, resolution: int = 256, chunk: int = 1 << 16,
                         bound: float = 1.0, args: tuple = (),
                         points_per_call: int = 1 << 21) -> np.ndarray:
  """Densities on a ``resolution^3`` grid over ``[-bound, bound]^3``.

  Args:
    density_fn: ``(points [M, 3], *args) -> [M]`` (jax-traceable).
    resolution: samples per axis ``N``.
    chunk: points per ``lax.map`` step (bounds the decoder's activation memory).
    bound: half side of the box.
    args: passed to ``density_fn`` as traced arguments (e.g. planes and decoder params, so
      they are not baked into the compiled program as constants).
    points_per_call: points per jitted call (a block of whole x-slabs).
  Returns:
    ``grid [N, N, N]`` float32, indexed ``[ix, iy, iz]``.
  """
  n = int(resolution)
  axis = jnp.asarray(grid_coordinates(n, bound))
  slabs = max(1, min(n, points_per_call // (n * n)))

  @jax.jit
  def block(x_values, *args):  # [slabs] -> [slabs, N, N]
    pts = jnp.stack(jnp.meshgrid(x_values, axis, axis, indexing="ij"), -1)  # [s, N, N, 3]
    dens = map_points(density_fn, pts.reshape(-1, 3), chunk, *args)
    return dens.reshape(x_values.shape[0], n, n).astype(jnp.float32)

  grid = np.empty((n, n, n), np.float32)
  xs = np.asarray(axis)
  for start in range(0, n, slabs):
    stop = min(n, start + slabs)
    # Pad the last block to the same shape: one compilation.
    x_block = np.pad(xs[start:stop], (0, slabs - (stop - start)), mode="edge")
    grid[start:stop] = np.asarray(block(jnp.asarray(x_block), *args))[: stop - start]
  return grid


def marching_cubes(grid: np.ndarray, threshold: float, bound: float = 1.0
                   ) -> tuple[np.ndarray, np.ndarray]:
  """The ``threshold`` iso-surface of a density ``grid [N, N, N]`` (dense inside).

  Returns world-space ``vertices [V, 3]`` float32 and ``faces [F, 3]`` int32, wound
  counter-clockwise seen from outside (normals point out of the dense region). Raises
  ``ValueError`` when the grid never crosses ``threshold``.
  """
  from skimage import measure

  grid = np.asarray(grid, np.float32)
  lo, hi = float(grid.min()), float(grid.max())
  if not lo < threshold < hi:
    raise ValueError(f"threshold {threshold} is outside the density range [{lo:.4g}, "
                     f"{hi:.4g}]: no surface to extract; choose another threshold.")
  # skimage's default ('descent') winds faces inward for a field that is large inside;
  # 'ascent' gives outward normals (checked by the signed volume in the tests).
  verts, faces, _, _ = measure.marching_cubes(grid, level=threshold,
                                              gradient_direction="ascent")
  n = grid.shape[0]
  verts = -bound + verts * (2.0 * bound / (n - 1))  # index space -> world
  return verts.astype(np.float32), faces.astype(np.int32)


def evaluate_points(fn: PointFn, points: np.ndarray, chunk: int = 1 << 16,
                    args: tuple = ()) -> np.ndarray:
  """``fn`` at arbitrarily many ``points [M, 3]`` (e.g. mesh vertices), chunked."""
  if len(points) == 0:
    return np.zeros((0, 3), np.float32)
  run = jax.jit(lambda pts, *a: map_points(fn, pts, chunk, *a))
  return np.asarray(run(jnp.asarray(points, jnp.float32), *args))


def write_obj(path: str, vertices: np.ndarray, faces: np.ndarray,
              colors: np.ndarray | None = None) -> str:
  """Writes a Wavefront OBJ: ``v x y z [r g b]`` (colours in [0, 1]) and 1-based ``f``."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  vertices = np.asarray(vertices, np.float32)
  faces = np.asarray(faces, np.int64) + 1
  with open(path, "w") as f:
    f.write("# lrm_jax mesh (z up, object box [-1, 1]^3)\n")
    if colors is not None:
      colors = np.clip(np.asarray(colors, np.float32), 0.0, 1.0)
      np.savetxt(f, np.concatenate([vertices, colors], -1),
                 fmt="v %.6f %.6f %.6f %.4f %.4f %.4f")
    else:
      np.savetxt(f, vertices, fmt="v %.6f %.6f %.6f")
    np.savetxt(f, faces, fmt="f %d %d %d")
  return path


# glTF is y up: our z-up world rotates by -90 degrees about x, (x, y, z) -> (x, z, -y).
Z_UP_TO_Y_UP = np.asarray([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]], np.float32)


def write_glb(path: str, vertices: np.ndarray, faces: np.ndarray,
              colors: np.ndarray | None = None, y_up: bool = True) -> str:
  """Writes a binary glTF with vertex colours through trimesh.

  With ``y_up`` (default) the vertices are rotated from our z-up world into glTF's y-up
  frame, so viewers show the object upright.
  """
  import trimesh

  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  vertices = np.asarray(vertices, np.float32)
  if y_up:
    vertices = vertices @ Z_UP_TO_Y_UP.T
  vertex_colors = None
  if colors is not None:
    rgb = (np.clip(np.asarray(colors, np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    vertex_colors = np.concatenate([rgb, np.full_like(rgb[:, :1], 255)], -1)
  mesh = trimesh.Trimesh(vertices=vertices, faces=np.asarray(faces, np.int64),
                         vertex_colors=vertex_colors, process=False)
  mesh.export(path, file_type="glb")
  return path


def field_mesh(field: MeshField, chunk: int = 1 << 16
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
  """Marching-cubes mesh of a density field, with the field's colours at the vertices.

  If ``field.threshold`` is outside the grid's density range (an under-trained model), the
  midpoint of the range is used instead. Vertices are returned in the world frame.

  Returns:
    ``vertices [V, 3]``, ``faces [F, 3]``, ``colors [V, 3]`` in [0, 1], and the iso-level
    used.
  """
  grid = extract_density_grid(field.density, field.resolution, chunk, bound=field.bound,
                              args=field.args)
  lo, hi = float(grid.min()), float(grid.max())
  threshold = float(field.threshold)
  if not lo < threshold < hi:
    threshold = 0.5 * (lo + hi)
  vertices, faces = marching_cubes(grid, threshold, bound=field.bound)
  del grid
  colors = np.clip(evaluate_points(field.color, vertices, chunk, field.args), 0.0, 1.0)
  if field.world_to_field is not None:
    m = np.asarray(field.world_to_field, np.float64)  # [R | t]: p_world = R^T (p - t)
    vertices = ((vertices - m[:3, 3]) @ m[:3, :3]).astype(np.float32)
  return vertices, faces, colors, threshold


def export_field_mesh(field: MeshField, out_dir: str, name: str = "mesh") -> dict[str, Any]:
  """Writes ``out_dir/{name}.obj`` and ``out_dir/{name}.glb`` of :func:`field_mesh`.

  Returns ``{"mesh_obj", "mesh_glb", "mesh_vertices", "mesh_faces", "mesh_threshold"}``.
  """
  vertices, faces, colors, threshold = field_mesh(field)
  os.makedirs(out_dir, exist_ok=True)
  obj = write_obj(os.path.join(out_dir, f"{name}.obj"), vertices, faces, colors)
  glb = write_glb(os.path.join(out_dir, f"{name}.glb"), vertices, faces, colors)
  return {"mesh_obj": obj, "mesh_glb": glb, "mesh_vertices": int(len(vertices)),
          "mesh_faces": int(len(faces)), "mesh_threshold": threshold}
