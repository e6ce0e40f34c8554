"""Density grid -> marching cubes -> OBJ / GLB, on an analytic sphere and a triplane."""

import jax
import jax.numpy as jnp
import numpy as np
import trimesh

from lrm_jax.io import mesh as mesh_io
from lrm_jax.render import triplane as tp

RADIUS = 0.6
CENTER = np.asarray([0.1, -0.2, 0.05], np.float32)


def _sphere_density(points, center):
  """Density 10 at the centre falling linearly to 0 at 2 RADIUS: level 5 is the sphere."""
  r = jnp.linalg.norm(points - center, axis=-1)
  return 10.0 * (1.0 - r / (2.0 * RADIUS))


def test_sphere_density_gives_a_sphere_mesh(tmp_path):
  n = 48
  # Small chunks and blocks so the chunking and the padded last block are exercised.
  grid = mesh_io.extract_density_grid(_sphere_density, n, chunk=1000,
                                      args=(jnp.asarray(CENTER),), points_per_call=5 * n * n)
  assert grid.shape == (n, n, n) and grid.dtype == np.float32
  xs = mesh_io.grid_coordinates(n)
  i, j, k = 7, 30, 41  # grid[ix, iy, iz] is the density at (x[ix], y[iy], z[iz])
  np.testing.assert_allclose(
      grid[i, j, k], _sphere_density(jnp.asarray([xs[i], xs[j], xs[k]]), CENTER), rtol=1e-5)

  vertices, faces = mesh_io.marching_cubes(grid, threshold=5.0)
  spacing = 2.0 / (n - 1)
  radii = np.linalg.norm(vertices - CENTER, axis=-1)
  assert np.all(np.abs(radii - RADIUS) < spacing)
  volume = trimesh.Trimesh(vertices, faces, process=False).volume
  np.testing.assert_allclose(volume, 4.0 / 3.0 * np.pi * RADIUS**3, rtol=0.03)  # outward

  colors = mesh_io.evaluate_points(lambda p: jnp.abs(p), vertices, chunk=777)
  np.testing.assert_allclose(colors, np.abs(vertices), atol=1e-6)
  obj = mesh_io.write_obj(str(tmp_path / "s.obj"), vertices, faces, colors)
  glb = mesh_io.write_glb(str(tmp_path / "s.glb"), vertices, faces, colors)
  for path in (obj, glb):
    loaded = trimesh.load(path, force="mesh", process=False)
    assert len(loaded.vertices) == len(vertices)
    assert len(loaded.faces) == len(faces)
  loaded = trimesh.load(obj, force="mesh", process=False)
  np.testing.assert_allclose(loaded.vertices, vertices, atol=1e-5)
  np.testing.assert_allclose(loaded.visual.vertex_colors[:, :3] / 255.0, colors, atol=0.01)
  # GLB is y up: z-up world (x, y, z) is stored as (x, z, -y).
  glb_mesh = trimesh.load(glb, force="mesh", process=False)
  np.testing.assert_allclose(glb_mesh.vertices[:, 1], vertices[:, 2], atol=1e-5)
  np.testing.assert_allclose(glb_mesh.vertices[:, 2], -vertices[:, 1], atol=1e-5)


def test_marching_cubes_without_a_crossing_is_a_clear_error():
  grid = np.zeros((4, 4, 4), np.float32)
  try:
    mesh_io.marching_cubes(grid, 1.0)
  except ValueError as e:
    assert "threshold" in str(e)
  else:
    raise AssertionError("expected ValueError")


def test_export_mesh_of_a_triplane(tmp_path):
  # A decoder that reads density straight off the planes' sum and colours off x, y, z.
  def decoder_apply(params, features):
    del params
    return features[..., 0], jnp.clip(features[..., 1:4], 0.0, 1.0)

  coords = mesh_io.grid_coordinates(16)
  u, v = np.meshgrid(coords, coords, indexing="xy")  # [H(v), W(u)]
  planes = np.zeros((3, 16, 16, 4), np.float32)
  # Density 3 - (x^2 + y^2) - z^2-ish via the sum of plane features: a blob at the origin.
  planes[0, ..., 0] = 1.0 - (u**2 + v**2)  # xy
  planes[1, ..., 0] = 0.5 - v**2  # xz (v = z)
  planes[1, ..., 1] = 0.8  # red everywhere
  field = tp.mesh_field(jnp.asarray(planes), decoder_apply, {}, resolution=24,
                        threshold=1.0, aggregate="sum")
  out = mesh_io.export_field_mesh(field, str(tmp_path))
  assert out["mesh_vertices"] > 0 and out["mesh_threshold"] == 1.0
  loaded = trimesh.load(out["mesh_obj"], force="mesh", process=False)
  assert len(loaded.vertices) == out["mesh_vertices"]
  np.testing.assert_allclose(loaded.visual.vertex_colors[:, 0] / 255.0, 0.8, atol=0.01)
  assert trimesh.load(out["mesh_glb"], force="mesh", process=False).vertices.shape[0] == \
      out["mesh_vertices"]
  # With the real decoder the whole path runs (threshold picked inside the range).
  decoder = tp.TriplaneDecoder(hidden=16)
  params = decoder.init(jax.random.key(0), jnp.zeros((1, 12)))
  grid = mesh_io.extract_density_grid(
      lambda p, pl, pr: decoder.apply(pr, tp.sample_triplane(pl, p))[0], 16,
      args=(jnp.asarray(planes), params))
  v, f, c, level = mesh_io.field_mesh(tp.mesh_field(
      jnp.asarray(planes), decoder.apply, params, resolution=16,
      threshold=float(np.median(grid))))
  assert len(v) > 0 and c.shape == v.shape and np.all((c >= 0) & (c <= 1))
  assert level == float(np.median(grid))
  # A threshold outside the field's range (an untrained model) falls back to the midpoint.
  _, _, _, level = mesh_io.field_mesh(tp.mesh_field(
      jnp.asarray(planes), decoder.apply, params, resolution=16, threshold=1e9))
  np.testing.assert_allclose(level, 0.5 * (grid.min() + grid.max()), rtol=1e-6)
