"""Tests of OBJ loading, normalisation and the z-buffer rasteriser (lrm_jax.data.meshes)."""

import os
import pickle

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from scipy import spatial

from lrm_jax import cameras
from lrm_jax.data import meshes
from lrm_jax.data import synthetic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COW_DIR = os.path.join(REPO, "..", "shared", "data", "cow_mesh")
COW = os.path.join(COW_DIR, "cow.obj")
needs_cow = pytest.mark.skipif(not os.path.isdir(COW_DIR),
                               reason=f"shared cow mesh folder not found at {COW_DIR}")


@pytest.fixture(scope="module")
def cow():
  """The cow, z up, fitted in the ball that the default cameras see whole."""
  return meshes.normalize_mesh(meshes.load_obj(COW), "y",
                               max_radius=synthetic.max_object_radius(2.0, 45.0))


def _moller_trumbore(o, d, tri):
  """Nearest ray/triangle hit (independent of the rasteriser).

  Args:
    o, d: ``[R, 3]`` rays; tri: ``[F, 3, 3]`` triangles.
  Returns:
    ``t [R]`` (inf on a miss), ``face [R]`` and barycentrics ``[R, 3]``.
  """
  v0, e1, e2 = tri[:, 0], tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
  p = np.cross(d[:, None], e2[None])  # [R, F, 3]
  det = np.sum(e1[None] * p, -1)
  inv = 1.0 / np.where(np.abs(det) < 1e-15, np.nan, det)
  s = o[:, None] - v0[None]
  u = np.sum(s * p, -1) * inv
  q = np.cross(s, e1[None])
  v = np.sum(d[:, None] * q, -1) * inv
  t = np.sum(e2[None] * q, -1) * inv
  ok = (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0)
  t = np.where(ok, t, np.inf)
  face = np.argmin(t, 1)
  r = np.arange(o.shape[0])
  return t[r, face], face, np.stack([1 - u[r, face] - v[r, face], u[r, face], v[r, face]], -1)


def _bilinear(texture, uv):
  """Reference bilinear lookup at OBJ UVs in [0, 1] (v up), clamped at the edges."""
  th, tw = texture.shape[:2]
  coords = [(1.0 - uv[:, 1]) * th - 0.5, uv[:, 0] * tw - 0.5]
  return np.stack([ndimage.map_coordinates(texture[..., c].astype(np.float64), coords,
                                           order=1, mode="nearest") for c in range(3)], -1)


def _write(path, text):
  with open(path, "w") as f:
    f.write(text)
  return str(path)


def _camera(az, el, radius, fov_deg, size):
  c2w = cameras.orbit_cameras(np.asarray([az], float), np.asarray([el], float), radius)
  return c2w, cameras.intrinsics_from_fov(np.deg2rad(fov_deg), size, size)[None]


# ----------------------------------------------------------------------------------------
# The cow.
# ----------------------------------------------------------------------------------------


@needs_cow
def test_load_cow():
  mesh = meshes.load_obj(COW)
  assert mesh.vertices.shape == (2930, 3) and mesh.faces.shape == (5856, 3)
  assert mesh.uvs.shape[1] == 2 and mesh.face_uvs.shape == (5856, 3)
  assert mesh.face_uvs.min() >= 0 and mesh.face_uvs.max() < mesh.uvs.shape[0]
  assert mesh.texture.shape == (1024, 1024, 3) and mesh.texture.dtype == np.float32
  assert mesh.faces.min() >= 0 and mesh.faces.max() < mesh.vertices.shape[0]


@needs_cow
def test_normalize_cow():
  raw = meshes.load_obj(COW)
  boxed = meshes.normalize_mesh(raw, "y", extent=1.0, margin=0.05)
  np.testing.assert_allclose(np.abs(boxed.vertices).max(), 0.95, rtol=1e-5)
  lo, hi = boxed.vertices.min(0), boxed.vertices.max(0)
  np.testing.assert_allclose(lo + hi, 0.0, atol=1e-5)  # box centred
  # y up in the file -> z up here (and the file's z -> -y).
  assert np.corrcoef(raw.vertices[:, 1], boxed.vertices[:, 2])[0, 1] > 0.9999
  assert np.corrcoef(raw.vertices[:, 2], boxed.vertices[:, 1])[0, 1] < -0.9999
  fitted = meshes.normalize_mesh(raw, "y", max_radius=0.7)
  assert np.linalg.norm(fitted.vertices, axis=-1).max() <= 0.7 + 1e-6
  for axis, rot in meshes.UP_AXIS_ROTATIONS.items():
    e = np.zeros(3)
    e["xyz".index(axis[-1])] = -1.0 if axis.startswith("-") else 1.0
    np.testing.assert_allclose(rot @ e, [0.0, 0.0, 1.0])
    np.testing.assert_allclose(np.linalg.det(rot), 1.0)
  with pytest.raises(ValueError, match="up_axis"):
    meshes.normalize_mesh(raw, "w")


@needs_cow
def test_opposite_silhouettes_are_mirror_images(cow):
  # Nearly orthographic cameras (far away, narrow field): the silhouette seen from the
  # back is the mirror image of the one seen from the front, up to the 1-pixel boundary.
  size, dist = 96, 100.0
  f = 0.9 * (size / 2) * dist / 0.7
  c2w = cameras.orbit_cameras(np.asarray([0.0, 180.0]), np.asarray([0.0, 0.0]), dist)
  k = np.tile(np.asarray([f, f, size / 2, size / 2], np.float32), (2, 1))
  _, mask, _ = meshes.render_mesh(cow, c2w, k, size, size)
  front, back = mask[0, ..., 0] > 0, mask[1, ..., 0] > 0
  mirrored = back[:, ::-1]
  boundary = ndimage.binary_dilation(front) & ~ndimage.binary_erosion(front)
  assert np.all((front ^ mirrored) <= boundary)
  assert (front & mirrored).sum() / (front | mirrored).sum() > 0.95
  assert front.sum() > 1000


@needs_cow
def test_silhouettes_match_projected_vertices(cow):
  size = 96
  c2w = cameras.orbit_cameras(np.asarray([0.0, 180.0, 90.0, 37.0]),
                              np.asarray([0.0, 0.0, 30.0, -15.0]), 2.0)
  k = np.tile(cameras.intrinsics_from_fov(np.deg2rad(45.0), size, size), (4, 1))
  _, mask, depth = meshes.render_mesh(cow, c2w, k, size, size)
  centres = cameras.pixel_centers(size, size).reshape(-1, 2)
  for v in range(4):
    m = mask[v, ..., 0] > 0
    uv, z = cameras.project_points(cow.vertices.astype(np.float64), c2w[v].astype(np.float64),
                                   k[v].astype(np.float64))
    assert np.all(z > 0)
    ij = np.floor(uv[:, ::-1]).astype(int)
    assert ij.min() >= 1 and ij.max() < size - 1  # the whole cow is in view
    dilated = ndimage.binary_dilation(m, structure=np.ones((3, 3), bool))
    assert np.all(dilated[ij[:, 0], ij[:, 1]])  # every vertex lands on the silhouette
    hull = spatial.Delaunay(uv)
    assert np.all(hull.find_simplex(centres[m.reshape(-1)]) >= 0)  # mask inside the hull
    assert depth[v][m].min() >= z.min() - 1e-5 and depth[v][m].max() <= z.max() + 1e-5


@needs_cow
def test_depth_faces_and_texture_match_ray_casting(cow):
  size = 64
  c2w, k = _camera(35.0, 20.0, 2.2, 50.0, size)
  rgb, mask, depth = meshes.render_mesh(cow, c2w, k, size, size, lit=False)
  face, _, _ = meshes.rasterize(cow.vertices, cow.faces, c2w[0], k[0], size, size)
  rng = np.random.default_rng(0)
  m = mask[0, ..., 0].reshape(-1) > 0
  rows, cols = np.nonzero(mask[0, ..., 0] > 0)
  box = np.zeros_like(m).reshape(size, size)
  box[rows.min():rows.max() + 1, cols.min():cols.max() + 1] = True
  pix = np.concatenate([rng.choice(np.flatnonzero(m), 150, replace=False),
                        rng.choice(np.flatnonzero(box.reshape(-1) & ~m), 50, replace=False)])
  o, d = cameras.get_rays(c2w[0].astype(np.float64), k[0].astype(np.float64), size, size,
                          normalize=False)  # camera z of d is 1: t is the depth
  t, mt_face, bary = _moller_trumbore(o.reshape(-1, 3)[pix], d.reshape(-1, 3)[pix],
                                      cow.vertices[cow.faces].astype(np.float64))
  hit = np.isfinite(t)
  np.testing.assert_array_equal(hit, m[pix])
  np.testing.assert_allclose(depth[0].reshape(-1)[pix][hit], t[hit], rtol=1e-5)
  interior = hit & (bary.min(-1) > 1e-3)
  assert interior.sum() > 100
  np.testing.assert_array_equal(face.reshape(-1)[pix][interior], mt_face[interior])
  # Unlit colour = the texture sampled at the perspective-correct UV of the hit.
  uv = np.einsum("rk,rkc->rc", bary, cow.uvs[cow.face_uvs[mt_face]])
  ok = interior & np.all((uv >= 0) & (uv <= 1), -1)
  np.testing.assert_allclose(rgb[0].reshape(-1, 3)[pix][ok], _bilinear(cow.texture, uv[ok]),
                             atol=1e-4)
  on = rgb[0][mask[0, ..., 0] > 0]
  assert on.std(0).min() > 0.05 and on.min() < 0.2 and on.max() > 0.8  # spots and white


@needs_cow
def test_mesh_views_source(cow):
  src = meshes.MeshViews(COW, num_scenes=6, views_per_scene=4, resolution=48)
  ex = src[2]
  assert ex["images"].shape == (4, 48, 48, 3) and ex["masks"].shape == (4, 48, 48, 1)
  assert ex["depths"].dtype == np.float32 and int(ex["scene_id"]) == 2
  np.testing.assert_array_equal(ex["depths"] > 0, ex["masks"] > 0)
  np.testing.assert_allclose(src.mesh.vertices, cow.vertices, atol=1e-6)
  clone = pickle.loads(pickle.dumps(src))
  assert len(pickle.dumps(src)) < 4096  # the mesh is not pickled
  for key, value in clone[2].items():
    np.testing.assert_array_equal(value, ex[key])
  for idx in range(len(src)):
    m = src[idx]["masks"][..., 0]
    assert m.sum(axis=(1, 2)).min() > 0
    assert m[:, 0].sum() + m[:, -1].sum() + m[:, :, 0].sum() + m[:, :, -1].sum() == 0
  val = meshes.MeshViews(COW, split="val", num_scenes=6, views_per_scene=4, resolution=48)
  assert not np.allclose(val.scene_cameras(2)[0], src.scene_cameras(2)[0])
  assert "MeshViews(path=" in repr(src) and len(src) == 6


# ----------------------------------------------------------------------------------------
# Small hand-written files.
# ----------------------------------------------------------------------------------------


def test_textured_quad_is_perspective_correct(tmp_path):
  tex = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
  Image.fromarray(tex).save(tmp_path / "tex.png")
  _write(tmp_path / "quad.mtl", "newmtl paper\nKd 1 1 1\nmap_Kd tex.png\n")
  obj = _write(tmp_path / "quad.obj", "mtllib quad.mtl\n"
               "v -0.5 -0.5 0\nv 0.5 -0.5 0\nv 0.5 0.5 0\nv -0.5 0.5 0\n"
               "vt 0 0\nvt 1 0\nvt 1 1\nvt 0 1\nusemtl paper\nf 1/1 2/2 3/3 4/4\n")
  mesh = meshes.load_obj(obj)
  assert mesh.faces.shape == (2, 3)
  size = 64
  c2w, k = _camera(-90.0, 35.0, 1.3, 60.0, size)  # oblique: affine UVs would be wrong
  rgb, mask, depth = meshes.render_mesh(mesh, c2w, k, size, size, background=(0, 0, 0),
                                        lit=False)
  o, d = cameras.get_rays(c2w[0].astype(np.float64), k[0].astype(np.float64), size, size,
                          normalize=False)
  o, d = o.reshape(-1, 3), d.reshape(-1, 3)
  t = -o[:, 2] / d[:, 2]  # the plane z = 0; camera z of d is 1, so t is the depth
  p = o + t[:, None] * d
  inside = np.all(np.abs(p[:, :2]) < 0.5 - 1e-3, -1)
  edge = np.all(np.abs(p[:, :2]) <= 0.5 + 1e-3, -1) & ~inside
  m = mask[0, ..., 0].reshape(-1) > 0
  np.testing.assert_array_equal(m[~edge], inside[~edge])
  np.testing.assert_allclose(depth[0].reshape(-1)[inside], t[inside], rtol=1e-5)
  expected = _bilinear(tex.astype(np.float32) / 255.0, p[inside, :2] + 0.5)
  np.testing.assert_allclose(rgb[0].reshape(-1, 3)[inside], expected, atol=1e-4)


def test_polygons_negative_indices_and_vertex_colors(tmp_path):
  obj = _write(tmp_path / "quad.obj", "o quad\n"
               "v -0.5 -0.5 0 1 0 0\nv 0.5 -0.5 0 0 1 0\nv 0.5 0.5 0 0 0 1\n"
               "v -0.5 0.5 0 1 1 1\nv 0 0 0.5 0 0 0\n"
               "f -5 -4 -3 -2\nf 1// 2// 5//\n")
  mesh = meshes.load_obj(obj)
  np.testing.assert_array_equal(mesh.faces, [[0, 1, 2], [0, 2, 3], [0, 1, 4]])
  assert mesh.uvs is None and mesh.vertex_colors.shape == (5, 3)
  c2w, k = _camera(0.0, 89.0, 2.0, 50.0, 32)
  rgb, mask, _ = meshes.render_mesh(mesh, c2w, k, 32, 32, lit=False)
  on = rgb[0][mask[0, ..., 0] > 0]
  assert on.shape[0] > 50 and on.min() >= 0.0 and on.max() <= 1.0 and on.std(0).min() > 0.1


def test_constant_colour_from_kd(tmp_path):
  _write(tmp_path / "m.mtl", "newmtl red  # a comment\nKd 0.9 0.1 0.1  # red\n")
  obj = _write(tmp_path / "tri.obj", "mtllib m.mtl\nusemtl red\n"
               "v -0.5 -0.5 0\nv 0.5 -0.5 0\nv 0 0.5 0\nf 1 2 3\n")
  mesh = meshes.load_obj(obj)
  c2w, k = _camera(0.0, 89.0, 2.0, 50.0, 32)
  rgb, mask, _ = meshes.render_mesh(mesh, c2w, k, 32, 32, lit=False)
  on = rgb[0][mask[0, ..., 0] > 0]
  assert on.shape[0] > 50
  np.testing.assert_allclose(on, np.broadcast_to([0.9, 0.1, 0.1], on.shape), atol=1e-6)


@pytest.mark.parametrize("text,error,match", [
    ("v 0 0 0\nv 1 0 0\n", ValueError, "no faces"),
    ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 4\n", ValueError, r"bad\.obj:4: vertex index 4"),
    ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 0 1 2\n", ValueError, "out of range"),
    ("v 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0 0\nf 1/2 2/1 3/1\n", ValueError, "texture coordinate"),
    ("v 0 zero 0\n", ValueError, r"bad\.obj:1: cannot parse"),
    ("v 0 0 0\nv 1 0 0\nf 1 2\n", ValueError, "at least 3"),
    ("mtllib nowhere.mtl\n", FileNotFoundError, "nowhere.mtl"),
    ("usemtl ghost\n", ValueError, "ghost"),
])
def test_bad_files_name_the_file(tmp_path, text, error, match):
  with pytest.raises(error, match=match):
    meshes.load_obj(_write(tmp_path / "bad.obj", text))


def test_missing_files(tmp_path):
  with pytest.raises(FileNotFoundError, match="missing.obj"):
    meshes.load_obj(str(tmp_path / "missing.obj"))
  with pytest.raises(FileNotFoundError, match="missing.obj"):
    meshes.MeshViews(str(tmp_path / "missing.obj"))
  _write(tmp_path / "m.mtl", "newmtl a\nmap_Kd -s 1 1 1 textures/gone.png\n")
  obj = _write(tmp_path / "t.obj", "mtllib m.mtl\nv 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
  with pytest.raises(FileNotFoundError, match=r"gone\.png"):
    meshes.load_obj(obj)


def test_max_object_radius_keeps_the_ball_in_view():
  r = synthetic.max_object_radius(2.0, 45.0)
  assert 0.6 < r < 0.75
  half = np.arcsin(r / 2.0)
  assert np.tan(half) <= 0.9 * np.tan(np.deg2rad(22.5)) + 1e-9
  assert synthetic.max_object_radius(5.0, 60.0) == 1.0
