"""Textured ``.obj`` meshes -> multi-view RGB, mask and depth: "render your own objects".

* :func:`load_obj` reads a Wavefront OBJ (+ its MTL and ``map_Kd`` textures): polygons are
  fan-triangulated, negative (relative) indices resolved, per-vertex colours
  (``v x y z r g b``) kept; a face's albedo comes from its material's texture, else the
  vertex colours, else the material's ``Kd``. Bad files fail with the path and the reason.
* :func:`normalize_mesh` turns the mesh's up axis into our z up and fits it into the object
  box ``[-1, 1]^3`` (and, optionally, a ball that every sampled camera sees whole).
* :func:`render_mesh` is an exact z-buffer rasteriser in numpy: triangles are processed in
  batches, each expanded over the pixel centres of its bounding box (vectorised), with
  screen-space edge functions, perspective-correct depth / UV / normal interpolation, a
  depth resolve by sort, bilinear texture sampling and the shading of
  :mod:`lrm_jax.data.shading` (the same as the synthetic renderer).
* :class:`MeshViews` is a grain random-access source of random views of one mesh.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
from PIL import Image

from lrm_jax import cameras
from lrm_jax.data import shading
from lrm_jax.data import synthetic

DEFAULT_COLOR = (0.7, 0.7, 0.7)
# Rotations taking each possible up axis of a file to our +z (all proper rotations).
UP_AXIS_ROTATIONS = {
    "z": np.eye(3),
    "-z": np.diag([1.0, -1.0, -1.0]),
    "y": np.asarray([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]]),
    "-y": np.asarray([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]]),
    "x": np.asarray([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]),
    "-x": np.asarray([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]]),
}
_NEAR = 1e-3  # triangles with a vertex closer than this to the camera plane are skipped
_EDGE_EPS = 1e-7  # barycentric slack so pixel centres on shared edges are never lost
_MAX_PAIRS = 1 << 20  # (triangle, pixel) candidates per batch: bounds memory


@dataclasses.dataclass(frozen=True, eq=False)
class Material:
  """An MTL material: diffuse colour ``Kd [3]`` and optional ``map_Kd`` texture."""

  name: str
  diffuse: np.ndarray  # [3] float32
  texture: np.ndarray | None = None  # [Ht, Wt, 3] float32 in [0, 1]


@dataclasses.dataclass(frozen=True, eq=False)
class Mesh:
  """A triangle mesh with UVs and materials.

  Attributes:
    vertices: ``[N, 3]`` float32.
    faces: ``[F, 3]`` int32 vertex indices.
    uvs: ``[T, 2]`` float32 texture coordinates (v up, OBJ convention), or None.
    face_uvs: ``[F, 3]`` int32 indices into ``uvs`` (-1 for a face without UVs), or None.
    vertex_colors: ``[N, 3]`` float32, or None.
    face_materials: ``[F]`` int32 indices into ``materials``.
    materials: at least one; index 0 is the default for faces before any ``usemtl``.
    path: the file it came from ("" if built in memory).
  """

  vertices: np.ndarray
  faces: np.ndarray
  uvs: np.ndarray | None = None
  face_uvs: np.ndarray | None = None
  vertex_colors: np.ndarray | None = None
  face_materials: np.ndarray | None = None
  materials: tuple[Material, ...] = (Material("default",
                                              np.asarray(DEFAULT_COLOR, np.float32)),)
  path: str = ""

  @property
  def texture(self) -> np.ndarray | None:
    """The first material texture (``[Ht, Wt, 3]``), or None."""
    return next((m.texture for m in self.materials if m.texture is not None), None)

  @property
  def material_ids(self) -> np.ndarray:
    """``[F]`` material index of every face."""
    if self.face_materials is None:
      return np.zeros(self.faces.shape[0], np.int32)
    return self.face_materials


# ----------------------------------------------------------------------------------------
# Loading.
# ----------------------------------------------------------------------------------------


def _floats(values: list[str], count: int, where: str) -> list[float]:
  try:
    out = [float(v) for v in values[:count]]
  except ValueError as e:
    raise ValueError(f"{where}: cannot parse numbers {values[:count]}.") from e
  if len(out) < count:
    raise ValueError(f"{where}: expected {count} numbers, got {len(values)}.")
  return out


def _load_texture(path: str, mtl_path: str) -> np.ndarray:
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{mtl_path}: texture file not found: {path}")
  try:
    with Image.open(path) as im:
      return np.asarray(im.convert("RGB"), np.float32) / 255.0  # [Ht, Wt, 3]
  except OSError as e:
    raise ValueError(f"{mtl_path}: cannot read texture {path}: {e}") from e


def load_mtl(path: str) -> dict[str, Material]:
  """Materials of an MTL file by name (``Kd`` and ``map_Kd``; other keys are ignored)."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"material library not found: {path}")
  folder = os.path.dirname(path)
  materials: dict[str, dict] = {}
  current = None
  with open(path, encoding="utf-8", errors="replace") as f:
    for lineno, line in enumerate(f, 1):
      parts = line.split("#", 1)[0].split()
      if not parts:
        continue
      where = f"{path}:{lineno}"
      if parts[0] == "newmtl":
        current = " ".join(parts[1:])
        materials[current] = {"diffuse": DEFAULT_COLOR, "texture": None}
      elif current is not None and parts[0] == "Kd":
        materials[current]["diffuse"] = _floats(parts[1:], 3, where)
      elif current is not None and parts[0] == "map_Kd" and len(parts) > 1:
        name = parts[-1].replace("\\", "/")  # the file name follows any options
        materials[current]["texture"] = _load_texture(os.path.join(folder, name), path)
  return {name: Material(name, np.asarray(m["diffuse"], np.float32), m["texture"])
          for name, m in materials.items()}


def _face_corner(token: str, num_v: int, num_vt: int, where: str) -> tuple[int, int]:
  """``v``, ``v/vt``, ``v//vn`` or ``v/vt/vn`` -> 0-based ``(v, vt)`` (vt -1 if absent)."""
  fields = token.split("/")
  try:
    v = int(fields[0])
    vt = int(fields[1]) if len(fields) > 1 and fields[1] else 0
  except ValueError as e:
    raise ValueError(f"{where}: cannot parse face corner {token!r}.") from e
  v = v - 1 if v > 0 else num_v + v  # OBJ is 1-based; negative indices count back
  if not 0 <= v < num_v:
    raise ValueError(f"{where}: vertex index {fields[0]} out of range "
                     f"({num_v} vertices defined so far).")
  if vt == 0:
    return v, -1
  vt = vt - 1 if vt > 0 else num_vt + vt
  if not 0 <= vt < num_vt:
    raise ValueError(f"{where}: texture coordinate index {fields[1]} out of range "
                     f"({num_vt} defined so far).")
  return v, vt


class _ObjBuilder:
  """Accumulates the records of an OBJ file while it is read line by line."""

  def __init__(self, path: str):
    self.path = path
    self.vertices, self.colors, self.uvs = [], [], []
    self.faces, self.face_uvs, self.face_materials = [], [], []
    self.library: dict[str, Material] = {}
    self.materials = [Material("default", np.asarray(DEFAULT_COLOR, np.float32))]
    self.material_index = {"default": 0}
    self.current = 0

  def vertex(self, parts: list[str], where: str) -> None:
    self.vertices.append(_floats(parts, 3, where))
    if len(parts) >= 6:
      self.colors.append(_floats(parts[3:], 3, where))

  def face(self, parts: list[str], where: str) -> None:
    if len(parts) < 3:
      raise ValueError(f"{where}: a face needs at least 3 vertices, got {len(parts)}.")
    corners = [_face_corner(t, len(self.vertices), len(self.uvs), where) for t in parts]
    v = [c[0] for c in corners]
    vt = [c[1] for c in corners]
    if min(vt) < 0:
      vt = [-1] * len(vt)  # UVs only where every corner has one
    for k in range(1, len(corners) - 1):  # fan triangulation
      self.faces.append((v[0], v[k], v[k + 1]))
      self.face_uvs.append((vt[0], vt[k], vt[k + 1]))
      self.face_materials.append(self.current)

  def mtllib(self, line: str) -> None:
    name = line.split(None, 1)[1].strip().replace("\\", "/")
    self.library.update(load_mtl(os.path.join(os.path.dirname(self.path), name)))

  def usemtl(self, name: str, where: str) -> None:
    if name not in self.material_index:
      if name not in self.library:
        raise ValueError(f"{where}: material {name!r} is not defined in any mtllib.")
      self.material_index[name] = len(self.materials)
      self.materials.append(self.library[name])
    self.current = self.material_index[name]

  def build(self) -> Mesh:
    if not self.faces:
      raise ValueError(f"{self.path}: no faces (is it a point cloud or an empty file?).")
    vertices = np.asarray(self.vertices, np.float32)
    if not np.all(np.isfinite(vertices)):
      raise ValueError(f"{self.path}: vertices contain non-finite values.")
    colors = None
    if self.colors and len(self.colors) == len(self.vertices):
      colors = np.clip(np.asarray(self.colors, np.float32), 0.0, 1.0)
    face_uvs = np.asarray(self.face_uvs, np.int32)
    has_uvs = bool(self.uvs) and bool(np.any(face_uvs >= 0))
    return Mesh(vertices=vertices, faces=np.asarray(self.faces, np.int32),
                uvs=np.asarray(self.uvs, np.float32) if has_uvs else None,
                face_uvs=face_uvs if has_uvs else None, vertex_colors=colors,
                face_materials=np.asarray(self.face_materials, np.int32),
                materials=tuple(self.materials), path=self.path)


def load_obj(path: str) -> Mesh:
  """Reads a Wavefront OBJ with its materials and textures.

  Raises:
    FileNotFoundError: the OBJ, an ``mtllib`` or a ``map_Kd`` texture is missing.
    ValueError: no faces, an index out of range, an unknown material or unparseable
      numbers (the message names the file and line).
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"mesh file not found: {path}")
  builder = _ObjBuilder(path)
  with open(path, encoding="utf-8", errors="replace") as f:
    for lineno, line in enumerate(f, 1):
      parts = line.split("#", 1)[0].split()
      if not parts:
        continue
      where = f"{path}:{lineno}"
      key = parts[0]
      if key == "v":
        builder.vertex(parts[1:], where)
      elif key == "vt":
        builder.uvs.append(_floats(parts[1:], 2, where))
      elif key == "f":
        builder.face(parts[1:], where)
      elif key == "mtllib":
        builder.mtllib(line.split("#", 1)[0])
      elif key == "usemtl":
        builder.usemtl(" ".join(parts[1:]), where)
  return builder.build()


# ----------------------------------------------------------------------------------------
# Normalisation.
# ----------------------------------------------------------------------------------------


def normalize_mesh(mesh: Mesh, up_axis: str = "y", extent: float = 1.0,
                   margin: float = 0.05, max_radius: float | None = None) -> Mesh:
  """Rotates ``up_axis`` to +z and fits the mesh into the object box.

  Args:
    mesh: the mesh.
    up_axis: the file's up axis, one of ``x, y, z, -x, -y, -z``.
    extent, margin: the bounding-box centre goes to the origin and the longest half side
      to ``extent - margin`` (:func:`lrm_jax.cameras.object_normalization`).
    max_radius: if given, the mesh is further shrunk so that every vertex lies within this
      distance of the origin (e.g. :func:`lrm_jax.data.synthetic.max_object_radius`, so
      sampled cameras always see the whole object).
  Returns:
    A new mesh with normalised vertices.
  """
  if up_axis not in UP_AXIS_ROTATIONS:
    raise ValueError(f"up_axis must be one of {sorted(UP_AXIS_ROTATIONS)}, got {up_axis!r}.")
  v = mesh.vertices.astype(np.float64) @ UP_AXIS_ROTATIONS[up_axis].T  # [N, 3]
  center, scale = cameras.object_normalization(v, extent, margin)
  v = (v - center) * scale
  if max_radius is not None:
    radius = float(np.max(np.linalg.norm(v, axis=-1)))
    v *= min(1.0, max_radius / radius)
  return dataclasses.replace(mesh, vertices=v.astype(np.float32))


# ----------------------------------------------------------------------------------------
# Rasterisation.
# ----------------------------------------------------------------------------------------


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
  """Area-weighted unit vertex normals ``[N, 3]`` (counter-clockwise faces point out)."""
  tri = vertices[faces].astype(np.float64)  # [F, 3, 3]
  face_n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # [F, 3], |.| = 2 area
  ids = faces.reshape(-1)
  normals = np.stack([np.bincount(ids, np.repeat(face_n[:, k], 3), vertices.shape[0])
                      for k in range(3)], -1)
  return normals / np.maximum(np.linalg.norm(normals, axis=-1, keepdims=True), 1e-12)


def _pixel_boxes(screen: np.ndarray, height: int, width: int):
  """Pixel-index bounding boxes of screen triangles ``[F, 3, 2]``: i0, j0, rows, cols."""
  lo, hi = screen.min(1), screen.max(1)  # [F, 2] (u, v)
  j0 = np.maximum(np.ceil(lo[:, 0] - 0.5), 0).astype(np.int64)
  j1 = np.minimum(np.floor(hi[:, 0] - 0.5), width - 1).astype(np.int64)
  i0 = np.maximum(np.ceil(lo[:, 1] - 0.5), 0).astype(np.int64)
  i1 = np.minimum(np.floor(hi[:, 1] - 0.5), height - 1).astype(np.int64)
  return i0, j0, np.maximum(i1 - i0 + 1, 0), np.maximum(j1 - j0 + 1, 0)


def _batches(counts: np.ndarray, max_pairs: int) -> list[np.ndarray]:
  """Splits triangle indices into consecutive batches of about ``max_pairs`` pixels each."""
  batch_of = np.cumsum(counts) // max_pairs
  bounds = np.flatnonzero(np.diff(batch_of)) + 1
  return np.split(np.arange(counts.shape[0]), bounds)


def _fragments(screen, inv_z, i0, j0, cols, counts, tris, width):
  """Every (triangle, covered pixel centre) pair of the triangles ``tris``.

  Returns the triangle ``[M]``, flat pixel index ``[M]``, depth ``[M]`` and
  perspective-correct barycentrics ``[M, 3]`` of the covered pairs.
  """
  n = counts[tris]
  tri = np.repeat(tris, n)  # [M]
  offset = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)  # index in the box
  i = i0[tri] + offset // cols[tri]
  j = j0[tri] + offset % cols[tri]
  p = np.stack([j + 0.5, i + 0.5], -1)  # [M, 2] pixel centres (u, v)
  a, b, c = screen[tri, 0], screen[tri, 1], screen[tri, 2]  # [M, 2] each

  def edge(p0, p1):  # twice the signed area of (p0, p1, p)
    return (p1[:, 0] - p0[:, 0]) * (p[:, 1] - p0[:, 1]) - (p1[:, 1] - p0[:, 1]) * (
        p[:, 0] - p0[:, 0])

  w = np.stack([edge(b, c), edge(c, a), edge(a, b)], -1)  # [M, 3]
  w /= w.sum(-1, keepdims=True)  # screen-space barycentrics (sum = 2 area)
  inside = np.all(w >= -_EDGE_EPS, axis=-1)
  w, tri, i, j = w[inside], tri[inside], i[inside], j[inside]
  persp = w * inv_z[tri]  # [M, 3]: barycentric / z
  inv_depth = persp.sum(-1)
  return tri, i * width + j, 1.0 / inv_depth, persp / inv_depth[:, None]


def _resolve(pixels: np.ndarray, depth: np.ndarray) -> np.ndarray:
  """Indices of the nearest fragment of every covered pixel."""
  order = np.lexsort((depth, pixels))
  sorted_pixels = pixels[order]
  first = np.ones(order.shape[0], bool)
  first[1:] = sorted_pixels[1:] != sorted_pixels[:-1]
  return order[first]


def rasterize(vertices: np.ndarray, faces: np.ndarray, c2w: np.ndarray,
              intrinsics: np.ndarray, height: int, width: int):
  """Exact z-buffer visibility of one view (pixel centres, no anti-aliasing).

  Args:
    vertices: ``[N, 3]`` world; faces: ``[F, 3]``; c2w: ``[4, 4]``; intrinsics: ``[4]``.
  Returns:
    ``face [H, W]`` int64 (-1 on background), ``depth [H, W]`` float64 (z along the camera
    axis, 0 on background) and perspective-correct barycentrics ``[H, W, 3]``.
  """
  cam = cameras.world_to_camera(np.asarray(vertices, np.float64),
                                np.asarray(c2w, np.float64))  # [N, 3]
  fx, fy, cx, cy = np.asarray(intrinsics, np.float64)
  z = cam[:, 2]
  uv = np.stack([fx * cam[:, 0] / np.where(z > _NEAR, z, 1.0) + cx,
                 fy * cam[:, 1] / np.where(z > _NEAR, z, 1.0) + cy], -1)  # [N, 2]
  screen = uv[faces]  # [F, 3, 2]
  inv_z = 1.0 / np.where(z > _NEAR, z, 1.0)[faces]  # [F, 3]
  e1, e2 = screen[:, 1] - screen[:, 0], screen[:, 2] - screen[:, 0]
  area = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
  valid = np.all(z[faces] > _NEAR, axis=-1) & (np.abs(area) > 1e-12)
  i0, j0, rows, cols = _pixel_boxes(screen, height, width)
  counts = np.where(valid, rows * cols, 0)
  zbuf = np.full(height * width, np.inf)
  fbuf = np.full(height * width, -1, np.int64)
  bbuf = np.zeros((height * width, 3))
  for tris in _batches(counts, _MAX_PAIRS):
    tris = tris[counts[tris] > 0]
    if tris.size == 0:
      continue
    tri, pix, depth, bary = _fragments(screen, inv_z, i0, j0, cols, counts, tris, width)
    win = _resolve(pix, depth)
    tri, pix, depth, bary = tri[win], pix[win], depth[win], bary[win]
    closer = depth < zbuf[pix]
    pix = pix[closer]
    zbuf[pix], fbuf[pix], bbuf[pix] = depth[closer], tri[closer], bary[closer]
  depth = np.where(fbuf >= 0, zbuf, 0.0)
  return (fbuf.reshape(height, width), depth.reshape(height, width),
          bbuf.reshape(height, width, 3))


def sample_texture(texture: np.ndarray, uv: np.ndarray) -> np.ndarray:
  """Bilinear texture lookup ``[M, 3]`` at OBJ UVs ``[M, 2]`` (v up; repeat outside [0, 1],
  clamp to edge within)."""
  uv = np.where((uv < 0.0) | (uv > 1.0), uv - np.floor(uv), uv)
  th, tw = texture.shape[:2]
  x = uv[:, 0] * tw - 0.5
  y = (1.0 - uv[:, 1]) * th - 0.5
  x0, y0 = np.floor(x), np.floor(y)
  ax, ay = (x - x0)[:, None], (y - y0)[:, None]
  x0i, x1i = np.clip(x0, 0, tw - 1).astype(np.int64), np.clip(x0 + 1, 0, tw - 1).astype(np.int64)
  y0i, y1i = np.clip(y0, 0, th - 1).astype(np.int64), np.clip(y0 + 1, 0, th - 1).astype(np.int64)
  top = texture[y0i, x0i] * (1 - ax) + texture[y0i, x1i] * ax
  bottom = texture[y1i, x0i] * (1 - ax) + texture[y1i, x1i] * ax
  return top * (1 - ay) + bottom * ay


def _albedo(mesh: Mesh, face: np.ndarray, bary: np.ndarray) -> np.ndarray:
  """Surface colour ``[M, 3]`` at points given by face ``[M]`` and barycentrics ``[M, 3]``."""
  material = mesh.material_ids[face]  # [M]
  if mesh.vertex_colors is not None:
    albedo = np.einsum("mk,mkc->mc", bary, mesh.vertex_colors[mesh.faces[face]])
  else:
    albedo = np.stack([m.diffuse for m in mesh.materials])[material].astype(np.float64)
  for k, m in enumerate(mesh.materials):
    if m.texture is None or mesh.face_uvs is None:
      continue
    sel = np.nonzero((material == k) & (mesh.face_uvs[face, 0] >= 0))[0]
    uv = np.einsum("mk,mkc->mc", bary[sel], mesh.uvs[mesh.face_uvs[face[sel]]])
    albedo[sel] = sample_texture(m.texture, uv)
  return albedo


def _render_mesh_view(mesh, normals, c2w, intrinsics, height, width, lit):
  """One view: foreground colour ``[H, W, 3]`` (0 off the mesh) and depth ``[H, W]``."""
  face, depth, bary = rasterize(mesh.vertices, mesh.faces, c2w, intrinsics, height, width)
  hit = np.nonzero(face.reshape(-1) >= 0)[0]
  f, b = face.reshape(-1)[hit], bary.reshape(-1, 3)[hit]  # [M], [M, 3]
  rgb = np.zeros((height * width, 3), np.float32)
  albedo = _albedo(mesh, f, b)
  if lit:
    _, dirs = cameras.get_rays(np.asarray(c2w, np.float64), np.asarray(intrinsics, np.float64),
                               height, width)
    if normals is None:  # flat shading
      tri = mesh.vertices[mesh.faces[f]].astype(np.float64)
      n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    else:
      n = np.einsum("mk,mkc->mc", b, normals[mesh.faces[f]])
    albedo = shading.shade(albedo, n, dirs.reshape(-1, 3)[hit])
  rgb[hit] = albedo
  return rgb.reshape(height, width, 3), depth


def render_mesh(mesh: Mesh, c2w: np.ndarray, intrinsics: np.ndarray, height: int,
                width: int, background=(1.0, 1.0, 1.0), lit: bool = True,
                smooth: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Renders a mesh with an exact z-buffer.

  Args:
    mesh: the mesh (world coordinates).
    c2w: ``[V, 4, 4]`` OpenCV camera-to-world; intrinsics: ``[V, 4]`` pixels of ``H x W``.
    height, width: image size.
    background: RGB in ``[0, 1]`` composited behind the mesh.
    lit: shade (default) or return the unlit albedo.
    smooth: interpolated vertex normals (default) or flat face normals.
  Returns:
    ``rgb [V, H, W, 3]`` (composited), ``mask [V, H, W, 1]``, ``depth [V, H, W, 1]``
    (z along the camera axis, 0 on background), all float32.
  """
  c2w = np.asarray(c2w).reshape(-1, 4, 4)
  intrinsics = np.asarray(intrinsics).reshape(-1, 4)
  normals = vertex_normals(mesh.vertices, mesh.faces) if (lit and smooth) else None
  views = [_render_mesh_view(mesh, normals, c2w[v], intrinsics[v], height, width, lit)
           for v in range(c2w.shape[0])]
  fg = np.stack([rgb for rgb, _ in views])  # [V, H, W, 3]
  depth = np.stack([d for _, d in views])[..., None].astype(np.float32)  # [V, H, W, 1]
  mask = (depth > 0).astype(np.float32)
  return shading.composite(fg, mask, background), mask, depth


# ----------------------------------------------------------------------------------------
# The grain source.
# ----------------------------------------------------------------------------------------


class MeshViews:
  """Random-access source: each index is a random set of views of one ``.obj`` mesh.

  Cameras are sampled as in :class:`lrm_jax.data.synthetic.SyntheticObjects` (seeded per
  ``(seed, split, index)``); the mesh is normalised to z up, fitted into ``[-1, 1]^3`` and
  into the ball every sampled camera sees whole. The mesh is loaded lazily and cached per
  process (not pickled).
  """

  def __init__(self, path: str, split: str = "train", num_scenes: int = 100,
               views_per_scene: int = 12, resolution: int = 64,
               background=(1.0, 1.0, 1.0), camera_radius=(2.0, 2.6),
               fov_deg=(45.0, 60.0), seed: int = 0, up_axis: str = "y",
               elevation_deg=synthetic.ELEVATION_DEG, orbit_views: int = 0):
    synthetic.split_code(split)
    if not os.path.isfile(path):
      raise FileNotFoundError(f"mesh file not found: {path}")
    if up_axis not in UP_AXIS_ROTATIONS:
      raise ValueError(f"up_axis must be one of {sorted(UP_AXIS_ROTATIONS)}, got {up_axis!r}.")
    self.path = os.path.abspath(path)
    self.split = split
    self.num_scenes = int(num_scenes)
    self.views_per_scene = int(views_per_scene)
    self.resolution = int(resolution)
    self.background = tuple(float(c) for c in background)
    self.camera_radius = tuple(float(r) for r in camera_radius)
    self.fov_deg = tuple(float(f) for f in fov_deg)
    self.seed = int(seed)
    self.up_axis = up_axis
    self.elevation_deg = tuple(float(e) for e in elevation_deg)
    self.orbit_views = int(orbit_views)
    self.max_radius = synthetic.max_object_radius(min(self.camera_radius), min(self.fov_deg))
    self._mesh = None

  @property
  def mesh(self) -> Mesh:
    """The normalised mesh (loaded on first use)."""
    if self._mesh is None:
      self._mesh = normalize_mesh(load_obj(self.path), self.up_axis,
                                  max_radius=self.max_radius)
    return self._mesh

  def __getstate__(self):
    state = self.__dict__.copy()
    state["_mesh"] = None
    return state

  def __len__(self) -> int:
    return self.num_scenes

  def scene_cameras(self, idx: int) -> tuple[np.ndarray, np.ndarray]:
    """``c2w [V, 4, 4]`` and ``intrinsics [V, 4]`` of example ``idx``."""
    rng = synthetic.scene_rng(self.seed, self.split, synthetic.check_index(idx, len(self)))
    return synthetic.sample_cameras(rng, self.views_per_scene, self.resolution,
                                    self.camera_radius, self.fov_deg, self.elevation_deg,
                                    self.orbit_views)

  def __getitem__(self, idx) -> dict[str, np.ndarray]:
    idx = synthetic.check_index(idx, len(self))
    c2w, intrinsics = self.scene_cameras(idx)
    rgb, mask, depth = render_mesh(self.mesh, c2w, intrinsics, self.resolution,
                                   self.resolution, self.background)
    return {"images": rgb, "masks": mask, "depths": depth, "c2w": c2w,
            "intrinsics": intrinsics, "scene_id": np.int64(idx),
            "has_depth": np.float32(1.0)}

  def __repr__(self) -> str:
    return (f"MeshViews(path={self.path!r}, split={self.split!r}, "
            f"num_scenes={self.num_scenes}, views_per_scene={self.views_per_scene}, "
            f"resolution={self.resolution}, background={self.background}, "
            f"camera_radius={self.camera_radius}, fov_deg={self.fov_deg}, seed={self.seed}, "
            f"up_axis={self.up_axis!r}, elevation_deg={self.elevation_deg})")
