"""Density fields -> coloured triangle meshes (marching cubes) -> ``.obj`` / ``.glb``.

The density grid samples ``[-bound, bound]^3`` at ``N`` evenly spaced points per axis
*including* both ends (``linspace(-bound, bound, N)``), indexed ``grid[ix, iy, iz]``, so
grid index ``i`` is the world coordinate ``-bound + 2 bound i / (N - 1)``. It is filled a
block of x-slabs at a time, each block evaluated in ``lax.map`` chunks of points, so only
the ``N^3`` float32 densities are ever held in full (227 MB at ``N = 384``).
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from lrm_jax.render import triplane as tp

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


def _triplane_density(points, planes, decoder_params, *, decoder_apply, aggregate):
  return decoder_apply(decoder_params, tp.sample_triplane(planes, points, aggregate))[0]


def _triplane_color(points, planes, decoder_params, *, decoder_apply, aggregate):
  return decoder_apply(decoder_params, tp.sample_triplane(planes, points, aggregate))[1]


def triplane_mesh(planes: Array, decoder_apply: tp.DecoderApply, decoder_params: Any,
                  resolution: int = 256, threshold: float = 10.0,
                  aggregate: str = "concat", chunk: int = 1 << 16
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Marching-cubes mesh of a triplane NeRF with decoder vertex colours.

  Args:
    planes: ``[3, H, W, C]``; decoder_apply, decoder_params: the NeRF decoder.
    resolution: grid samples per axis over ``[-1, 1]^3``.
    threshold: density iso-level (the decoder's activated sigma).
  Returns:
    ``vertices [V, 3]``, ``faces [F, 3]``, ``colors [V, 3]`` in [0, 1].
  """
  kw = dict(decoder_apply=decoder_apply, aggregate=aggregate)
  args = (jnp.asarray(planes), decoder_params)
  grid = extract_density_grid(functools.partial(_triplane_density, **kw), resolution,
                              chunk, args=args)
  vertices, faces = marching_cubes(grid, threshold)
  del grid
  colors = evaluate_points(functools.partial(_triplane_color, **kw), vertices, chunk, args)
  return vertices, faces, np.clip(colors, 0.0, 1.0)


def export_mesh(planes: Array, decoder_apply: tp.DecoderApply, decoder_params: Any,
                out_dir: str, resolution: int = 256, threshold: float = 10.0,
                aggregate: str = "concat", name: str = "mesh") -> dict[str, Any]:
  """Writes ``out_dir/{name}.obj`` and ``out_dir/{name}.glb`` for one triplane.

  Returns ``{"obj": path, "glb": path, "num_vertices": V, "num_faces": F}``.
  """
  vertices, faces, colors = triplane_mesh(planes, decoder_apply, decoder_params, resolution,
                                          threshold, aggregate)
  obj = write_obj(os.path.join(out_dir, f"{name}.obj"), vertices, faces, colors)
  glb = write_glb(os.path.join(out_dir, f"{name}.glb"), vertices, faces, colors)
  return {"obj": obj, "glb": glb, "num_vertices": int(len(vertices)),
          "num_faces": int(len(faces))}
