"""Procedural objects with exact RGB, mask and depth: the embedded default dataset.

Each scene is one object made of 1-4 convex primitives (spheres, boxes, capped cylinders,
capsules) with a random rotation, position and size, and a solid, striped or checkered
colour evaluated at the hit point in the primitive's own frame. Objects are rendered by
exact ray casting: analytic ray/primitive intersections vectorised over all pixels and all
primitives of a kind, the nearest hit per pixel, analytic normals and the shading model of
:mod:`lrm_jax.data.shading`.

Geometry guarantees (by construction, see :func:`sample_object` and
:func:`max_object_radius`): every object lies inside a ball of radius
``max_radius <= 1`` around the origin, hence inside ``[-1, 1]^3``, and that ball projects
inside the central 90% of every image of every sampled camera, so no object touches the
image border.

Randomness is per index: ``np.random.default_rng(np.random.SeedSequence([seed, split_code,
idx]))`` with distinct split codes, so examples are reproducible in any order, in any
worker, and the train/val/test objects are different draws.
"""

from __future__ import annotations

import dataclasses
import math
import operator

import numpy as np

from lrm_jax import cameras
from lrm_jax.data import shading

KINDS = ("sphere", "box", "cylinder", "capsule")
SPHERE, BOX, CYLINDER, CAPSULE = range(4)
PATTERNS = ("solid", "stripes", "checker")
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
ELEVATION_DEG = (-20.0, 60.0)
ORBIT_ELEVATION_DEG = 20.0  # GRM / Instant3D's input ring
# Fraction of the half image that the object's bounding ball may cover (worst-case camera).
IMAGE_FILL = 0.9
_T_MIN = 1e-9  # nearest accepted ray parameter (cameras are outside every object)
_TINY = 1e-12


@dataclasses.dataclass(frozen=True, eq=False)
class SyntheticObject:
  """A union of ``P`` convex primitives.

  A primitive's local frame maps to the world by ``x_world = rotations @ x_local + centers``.
  ``sizes`` per kind: sphere ``(r, r, r)``; box half-extents ``(hx, hy, hz)``; cylinder and
  capsule ``(r, r, h)`` with the axis along local z and ``h`` the half-length of the
  straight part.

  Attributes:
    kinds: ``[P]`` int32 index into :data:`KINDS`.
    rotations: ``[P, 3, 3]`` float64 local-to-world rotations.
    centers: ``[P, 3]`` float64.
    sizes: ``[P, 3]`` float64.
    patterns: ``[P]`` int32 index into :data:`PATTERNS`.
    colors: ``[P, 2, 3]`` float64 the two pattern colours (solid uses the first).
    frequencies: ``[P]`` float64 pattern cells per unit length (local frame).
  """

  kinds: np.ndarray
  rotations: np.ndarray
  centers: np.ndarray
  sizes: np.ndarray
  patterns: np.ndarray
  colors: np.ndarray
  frequencies: np.ndarray

  @property
  def num_primitives(self) -> int:
    return int(self.kinds.shape[0])

  def bounding_radius(self) -> float:
    """Radius of a ball around the origin containing the whole object."""
    return float(np.max(np.linalg.norm(self.centers, axis=-1)
                        + primitive_radii(self.kinds, self.sizes)))


# ----------------------------------------------------------------------------------------
# Sampling objects and cameras.
# ----------------------------------------------------------------------------------------


def primitive_radii(kinds: np.ndarray, sizes: np.ndarray) -> np.ndarray:
  """``[P]`` radius of the smallest ball around each primitive's centre containing it."""
  r, h = sizes[:, 0], sizes[:, 2]
  return np.select([kinds == SPHERE, kinds == BOX, kinds == CYLINDER],
                   [r, np.linalg.norm(sizes, axis=-1), np.hypot(r, h)], r + h)


def max_object_radius(camera_distance: float, fov_deg: float,
                      fill: float = IMAGE_FILL) -> float:
  """Largest ball around the origin whose image covers at most ``fill`` of the half image.

  A ball of radius ``r`` seen from distance ``D`` is a cone of half-angle ``asin(r / D)``;
  it must stay within ``atan(fill * tan(fov / 2))``. Capped at 1 so objects stay in
  ``[-1, 1]^3``. Use the smallest distance and field of view the cameras can have.
  """
  half = math.atan(fill * math.tan(math.radians(fov_deg) / 2.0))
  return min(1.0, camera_distance * math.sin(half))


def _random_rotations(rng: np.random.Generator, n: int) -> np.ndarray:
  """``[n, 3, 3]`` uniformly random rotations (from normalised Gaussian quaternions)."""
  q = rng.normal(size=(n, 4))
  w, x, y, z = (q / np.linalg.norm(q, axis=-1, keepdims=True)).T
  return np.stack([
      np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
      np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
      np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
  ], axis=-2)


def _random_sizes(rng: np.random.Generator, kinds: np.ndarray) -> np.ndarray:
  """``[P, 3]`` sizes for each kind (all kinds drawn, so rng use does not depend on kinds)."""
  n = kinds.shape[0]
  sphere = np.repeat(rng.uniform(0.25, 0.5, (n, 1)), 3, axis=1)
  box = rng.uniform(0.12, 0.45, (n, 3))
  cyl_r, cyl_h = rng.uniform(0.12, 0.35, n), rng.uniform(0.15, 0.5, n)
  cap_r, cap_h = rng.uniform(0.1, 0.3, n), rng.uniform(0.1, 0.4, n)
  cylinder = np.stack([cyl_r, cyl_r, cyl_h], -1)
  capsule = np.stack([cap_r, cap_r, cap_h], -1)
  k = kinds[:, None]
  return np.select([k == SPHERE, k == BOX, k == CYLINDER], [sphere, box, cylinder], capsule)


def sample_object(rng: np.random.Generator, max_radius: float = 0.7) -> SyntheticObject:
  """A random object of 1-4 primitives inside the ball of radius ``max_radius`` (<= 1).

  The primitives are placed in a ball of radius 0.45, the object is centred (the box
  around the primitives' bounding balls goes to the origin), then scaled about the origin
  so its bounding radius is uniform in ``[0.8, 1] * max_radius``.
  """
  if not 0.0 < max_radius <= 1.0:
    raise ValueError(f"max_radius must be in (0, 1], got {max_radius}.")
  n = int(rng.integers(1, 5))
  kinds = rng.integers(0, len(KINDS), n).astype(np.int32)
  sizes = _random_sizes(rng, kinds)
  rotations = _random_rotations(rng, n)
  direction = rng.normal(size=(n, 3))
  direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
  centers = direction * (0.45 * rng.uniform(size=(n, 1)) ** (1.0 / 3.0))
  patterns = rng.integers(0, len(PATTERNS), n).astype(np.int32)
  colors = rng.uniform(0.05, 0.95, (n, 2, 3))
  radii = primitive_radii(kinds, sizes)  # [P]
  frequencies = rng.uniform(1.5, 4.0, n) / radii  # 3-8 pattern cells across a primitive
  # Centre the box around the primitives' bounding balls, then fit the ball max_radius.
  centers -= 0.5 * (np.min(centers - radii[:, None], 0) + np.max(centers + radii[:, None], 0))
  bound = float(np.max(np.linalg.norm(centers, axis=-1) + radii))
  scale = max_radius * rng.uniform(0.8, 1.0) / bound
  return SyntheticObject(kinds=kinds, rotations=rotations, centers=centers * scale,
                         sizes=sizes * scale, patterns=patterns, colors=colors,
                         frequencies=frequencies / scale)


def sample_cameras(rng: np.random.Generator, num_views: int, resolution: int,
                   camera_radius=(2.0, 2.6), fov_deg=(45.0, 60.0),
                   elevation_deg=ELEVATION_DEG, orbit_views: int = 0,
                   orbit_elevation_deg: float = ORBIT_ELEVATION_DEG
                   ) -> tuple[np.ndarray, np.ndarray]:
  """Cameras on a sphere around the origin, looking at it (world z up).

  Distance, horizontal field of view, azimuth (``[0, 360)``) and elevation are uniform per
  view. With ``orbit_views = k > 0`` the first ``k`` views are instead the structured input
  ring of GRM / Instant3D: azimuths evenly spaced from a random start, elevation
  ``orbit_elevation_deg``, the middle distance and field of view. Returns
  ``c2w [V, 4, 4]`` and square-image ``intrinsics [V, 4]`` (float32).
  """
  if not 0 <= orbit_views <= num_views:
    raise ValueError(f"orbit_views={orbit_views} must be in [0, views_per_scene={num_views}].")
  radius = rng.uniform(camera_radius[0], camera_radius[1], num_views)
  fov = np.deg2rad(rng.uniform(fov_deg[0], fov_deg[1], num_views))
  azimuth = rng.uniform(0.0, 360.0, num_views)
  elevation = rng.uniform(elevation_deg[0], elevation_deg[1], num_views)
  if orbit_views:
    k = orbit_views
    radius[:k] = 0.5 * (camera_radius[0] + camera_radius[1])
    fov[:k] = np.deg2rad(0.5 * (fov_deg[0] + fov_deg[1]))
    azimuth[:k] = (azimuth[0] + np.arange(k) * 360.0 / k) % 360.0
    elevation[:k] = orbit_elevation_deg
  c2w = cameras.orbit_cameras(azimuth, elevation, radius).astype(np.float32)
  focal = cameras.fov_to_focal(fov, resolution)
  half = np.full(num_views, resolution / 2.0)
  intrinsics = np.stack([focal, focal, half, half], -1).astype(np.float32)
  return c2w, intrinsics


# ----------------------------------------------------------------------------------------
# Ray / primitive intersections in the primitives' local frames. Every function takes
# o, d [K, N, 3] (float64) and sizes [K, 3] and returns the entry parameter t [K, N]
# (inf where the ray misses). Cameras are outside every primitive, so the entry point is
# the visible one.
# ----------------------------------------------------------------------------------------


def _safe(x: np.ndarray) -> np.ndarray:
  """``x`` with near-zero entries replaced by a tiny positive number (for divisions)."""
  return np.where(np.abs(x) < _TINY, _TINY, x)


def _entry_or_inf(t: np.ndarray, hit: np.ndarray) -> np.ndarray:
  return np.where(hit & (t > _T_MIN), t, np.inf)


def _sphere_entry(o: np.ndarray, d: np.ndarray, r: np.ndarray) -> np.ndarray:
  """Entry parameter ``[K, N]`` of rays into spheres of radii ``r [K]`` at the origin."""
  a = np.einsum("kni,kni->kn", d, d)
  b = np.einsum("kni,kni->kn", o, d)
  c = np.einsum("kni,kni->kn", o, o) - (r * r)[:, None]
  disc = b * b - a * c
  t = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
  return _entry_or_inf(t, disc >= 0.0)


def _slab(o: np.ndarray, d: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Entry and exit parameters of rays through slabs ``|x| <= h`` (elementwise)."""
  inv = 1.0 / _safe(d)
  t1 = (-h - o) * inv
  t2 = (h - o) * inv
  return np.minimum(t1, t2), np.maximum(t1, t2)


def _infinite_cylinder(o: np.ndarray, d: np.ndarray,
                       r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Entry and exit ``[K, N]`` of rays through ``x^2 + y^2 <= r^2`` (empty: in > out)."""
  a = d[..., 0] ** 2 + d[..., 1] ** 2
  b = o[..., 0] * d[..., 0] + o[..., 1] * d[..., 1]
  c = o[..., 0] ** 2 + o[..., 1] ** 2 - (r * r)[:, None]
  disc = b * b - a * c
  parallel = a < _TINY
  s = np.sqrt(np.maximum(disc, 0.0))
  a_safe = np.where(parallel, 1.0, a)
  t_in = np.where(parallel, np.where(c <= 0.0, -np.inf, np.inf), (-b - s) / a_safe)
  t_out = np.where(parallel, np.where(c <= 0.0, np.inf, -np.inf), (-b + s) / a_safe)
  miss = ~parallel & (disc < 0.0)
  return np.where(miss, np.inf, t_in), np.where(miss, -np.inf, t_out)


def _box_entry(o: np.ndarray, d: np.ndarray, sizes: np.ndarray) -> np.ndarray:
  t_lo, t_hi = _slab(o, d, sizes[:, None, :])
  t_in, t_out = t_lo.max(-1), t_hi.min(-1)
  return _entry_or_inf(t_in, t_in <= t_out)


def _cylinder_entry(o: np.ndarray, d: np.ndarray, sizes: np.ndarray) -> np.ndarray:
  tr_in, tr_out = _infinite_cylinder(o, d, sizes[:, 0])
  tz_in, tz_out = _slab(o[..., 2], d[..., 2], sizes[:, 2:3])
  t_in, t_out = np.maximum(tr_in, tz_in), np.minimum(tr_out, tz_out)
  return _entry_or_inf(t_in, t_in <= t_out)


def _capsule_entry(o: np.ndarray, d: np.ndarray, sizes: np.ndarray) -> np.ndarray:
  r, h = sizes[:, 0], sizes[:, 2:3]
  tr_in, _ = _infinite_cylinder(o, d, r)
  z_side = o[..., 2] + tr_in * d[..., 2]
  best = np.where(np.isfinite(tr_in) & (np.abs(z_side) <= h), tr_in, np.inf)
  for sign in (1.0, -1.0):
    cap = np.zeros_like(sizes)
    cap[:, 2] = sign * sizes[:, 2]
    t = _sphere_entry(o - cap[:, None, :], d, r)
    on_cap = sign * (o[..., 2] + t * d[..., 2]) >= h
    best = np.minimum(best, np.where(on_cap, t, np.inf))
  return _entry_or_inf(best, np.isfinite(best))


_ENTRY = {SPHERE: lambda o, d, s: _sphere_entry(o, d, s[:, 0]), BOX: _box_entry,
          CYLINDER: _cylinder_entry, CAPSULE: _capsule_entry}


# ----------------------------------------------------------------------------------------
# Normals and patterns at hit points (local frame), vectorised over hits.
# ----------------------------------------------------------------------------------------


def _local_normals(kinds: np.ndarray, sizes: np.ndarray, p: np.ndarray) -> np.ndarray:
  """Outward (unnormalised) normals ``[M, 3]`` at surface points ``p [M, 3]``."""
  h = np.maximum(sizes, _TINY)
  # Box: the face whose slab the point is closest to leaving.
  axis = np.argmax(np.abs(p) / h, axis=-1)
  box = np.zeros_like(p)
  box[np.arange(p.shape[0]), axis] = np.sign(p[np.arange(p.shape[0]), axis])
  # Cylinder: cap or side, whichever the point is relatively closer to.
  radial = np.hypot(p[:, 0], p[:, 1]) / h[:, 0]
  on_cap = (np.abs(p[:, 2]) / h[:, 2] >= radial)[:, None]
  cap_n = np.stack([np.zeros_like(p[:, 0]), np.zeros_like(p[:, 0]), np.sign(p[:, 2])], -1)
  cylinder = np.where(on_cap, cap_n, p * np.asarray([1.0, 1.0, 0.0]))
  # Capsule: away from the closest point on the axis segment.
  axis_point = np.clip(p[:, 2], -sizes[:, 2], sizes[:, 2])
  capsule = p - np.stack([np.zeros_like(axis_point), np.zeros_like(axis_point), axis_point], -1)
  k = kinds[:, None]
  return np.select([k == SPHERE, k == BOX, k == CYLINDER], [p, box, cylinder], capsule)


def _albedo(patterns: np.ndarray, colors: np.ndarray, frequencies: np.ndarray,
            p: np.ndarray) -> np.ndarray:
  """Pattern colour ``[M, 3]`` at local points ``p [M, 3]``."""
  cell = np.floor(p * frequencies[:, None]).astype(np.int64)  # [M, 3]
  stripes = cell[:, 2] % 2
  checker = cell.sum(-1) % 2
  which = np.select([patterns == 1, patterns == 2], [stripes, checker], 0)  # [M]
  return colors[np.arange(p.shape[0]), which]


# ----------------------------------------------------------------------------------------
# Rendering.
# ----------------------------------------------------------------------------------------


@np.errstate(divide="ignore", invalid="ignore", over="ignore")
def _nearest_hits(obj: SyntheticObject, origins: np.ndarray,
                  dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Nearest hit over all primitives: ``t [N]`` (inf on a miss) and primitive ``[N]``."""
  t_all = np.full((obj.num_primitives, origins.shape[0]), np.inf)  # [P, N]
  for kind, entry in _ENTRY.items():
    idx = np.nonzero(obj.kinds == kind)[0]
    if idx.size == 0:
      continue
    rot = obj.rotations[idx]  # [K, 3, 3]
    o = np.matmul(origins[None] - obj.centers[idx][:, None, :], rot)  # [K, N, 3]
    d = np.matmul(dirs[None], rot)  # [K, N, 3]
    t_all[idx] = entry(o, d, obj.sizes[idx])
  prim = np.argmin(t_all, axis=0)  # [N]
  return t_all[prim, np.arange(origins.shape[0])], prim


def _hits_ball(origins: np.ndarray, dirs: np.ndarray, radius: float) -> np.ndarray:
  """Indices of the rays ``[N, 3]`` that meet the ball of ``radius`` around the origin."""
  b = np.einsum("ni,ni->n", origins, dirs)
  a = np.einsum("ni,ni->n", dirs, dirs)
  c = np.einsum("ni,ni->n", origins, origins) - radius * radius
  return np.nonzero(b * b - a * c >= 0.0)[0]


def _shade_hits(obj: SyntheticObject, prim: np.ndarray, points: np.ndarray,
                dirs: np.ndarray, lit: bool) -> np.ndarray:
  """Shaded colours ``[M, 3]`` of world hit points ``points [M, 3]`` on primitives ``prim``."""
  rot = obj.rotations[prim]  # [M, 3, 3]
  local = np.einsum("mj,mji->mi", points - obj.centers[prim], rot)  # [M, 3]
  albedo = _albedo(obj.patterns[prim], obj.colors[prim], obj.frequencies[prim], local)
  if not lit:
    return albedo.astype(np.float32)
  normals = np.einsum("mij,mj->mi", rot, _local_normals(obj.kinds[prim], obj.sizes[prim],
                                                        local))
  return shading.shade(albedo, normals, dirs)


def _render_view(obj: SyntheticObject, c2w: np.ndarray, intrinsics: np.ndarray,
                 height: int, width: int, lit: bool) -> tuple[np.ndarray, np.ndarray]:
  """One view: foreground colour ``[H, W, 3]`` (0 off the object) and depth ``[H, W]``."""
  origins, dirs = cameras.get_rays(np.asarray(c2w, np.float64),
                                   np.asarray(intrinsics, np.float64), height, width,
                                   normalize=False)  # camera z of dirs = 1: t is depth
  origins, dirs = origins.reshape(-1, 3), dirs.reshape(-1, 3)  # [N, 3]
  t = np.full(origins.shape[0], np.inf)
  prim = np.zeros(origins.shape[0], np.int64)
  near = _hits_ball(origins, dirs, obj.bounding_radius() * 1.001 + 1e-6)  # cheap cull
  t[near], prim[near] = _nearest_hits(obj, origins[near], dirs[near])
  hit = np.nonzero(np.isfinite(t))[0]
  rgb = np.zeros((origins.shape[0], 3), np.float32)
  rgb[hit] = _shade_hits(obj, prim[hit], origins[hit] + t[hit, None] * dirs[hit],
                         dirs[hit], lit)
  depth = np.where(np.isfinite(t), t, 0.0).astype(np.float32)
  return rgb.reshape(height, width, 3), depth.reshape(height, width)


def render_views(obj: SyntheticObject, c2w: np.ndarray, intrinsics: np.ndarray,
                 height: int, width: int, background=(1.0, 1.0, 1.0),
                 lit: bool = True, supersample: int = 1
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Renders ``obj`` from the given cameras by exact ray casting.

  Args:
    obj: the object.
    c2w: ``[V, 4, 4]`` OpenCV camera-to-world; intrinsics: ``[V, 4]`` pixels of ``H x W``.
    height, width: image size.
    background: RGB in ``[0, 1]`` composited behind the object.
    lit: shade (default) or return the unlit albedo.
    supersample: ``s`` casts ``s x s`` rays per pixel and box-filters them (anti-aliased
      edges, as a camera or a path tracer gives); 1 casts one ray through each centre.
  Returns:
    ``rgb [V, H, W, 3]`` (composited), ``mask [V, H, W, 1]`` (coverage: the fraction of a
    pixel's rays that hit), ``depth [V, H, W, 1]`` (z along the camera axis, averaged over
    the hits; 0 on background), all float32.
  """
  s = int(supersample)
  if s < 1:
    raise ValueError(f"supersample must be >= 1, got {supersample}.")
  c2w = np.asarray(c2w).reshape(-1, 4, 4)
  intrinsics = cameras.resize_intrinsics(np.asarray(intrinsics, np.float64).reshape(-1, 4),
                                         (height, width), (height * s, width * s))
  views = [_render_view(obj, c2w[v], intrinsics[v], height * s, width * s, lit)
           for v in range(c2w.shape[0])]  # one view at a time bounds memory
  fg = np.stack([rgb for rgb, _ in views])  # [V, sH, sW, 3], 0 off the object
  depth = np.stack([d for _, d in views])[..., None]  # [V, sH, sW, 1]
  hit = (depth > 0).astype(np.float32)
  box = lambda x: x.reshape(x.shape[0], height, s, width, s, x.shape[-1]).mean(axis=(2, 4))
  mask = box(hit)  # [V, H, W, 1]
  depth = np.where(mask > 0, box(depth) / np.maximum(mask, 1e-12), 0.0).astype(np.float32)
  # fg is premultiplied by coverage after the box filter: composite with the coverage.
  rgb = (box(fg) + np.asarray(background, np.float32) * (1.0 - mask)).astype(np.float32)
  return rgb, mask.astype(np.float32), depth


# ----------------------------------------------------------------------------------------
# The grain source.
# ----------------------------------------------------------------------------------------


def split_code(split: str) -> int:
  if split not in SPLIT_CODES:
    raise ValueError(f"split must be one of {sorted(SPLIT_CODES)}, got {split!r}.")
  return SPLIT_CODES[split]


def scene_rng(seed: int, split: str, idx: int) -> np.random.Generator:
  """The generator of everything random about scene ``idx`` of ``split``."""
  return np.random.default_rng(np.random.SeedSequence([seed, split_code(split), idx]))


def check_index(idx, length: int) -> int:
  """``idx`` as a non-negative int below ``length`` (negative counts from the end)."""
  idx = operator.index(idx)
  if idx < 0:
    idx += length
  if not 0 <= idx < length:
    raise IndexError(f"index {idx} out of range for {length} scenes.")
  return idx


class SyntheticObjects:
  """Random-access source of multi-view renders of procedural objects (grain-compatible).

  Example format: see :mod:`lrm_jax.data`; also ``has_depth`` = 1 (float32 scalar).
  """

  def __init__(self, split: str = "train", num_scenes: int = 1000,
               views_per_scene: int = 12, resolution: int = 64,
               background=(1.0, 1.0, 1.0), camera_radius=(2.0, 2.6),
               fov_deg=(45.0, 60.0), seed: int = 0, elevation_deg=ELEVATION_DEG,
               orbit_views: int = 0, supersample: int = 1):
    split_code(split)
    if num_scenes < 1 or views_per_scene < 1 or resolution < 1:
      raise ValueError("num_scenes, views_per_scene and resolution must be positive.")
    self.split = split
    self.num_scenes = int(num_scenes)
    self.views_per_scene = int(views_per_scene)
    self.resolution = int(resolution)
    self.background = tuple(float(c) for c in background)
    self.camera_radius = tuple(float(r) for r in camera_radius)
    self.fov_deg = tuple(float(f) for f in fov_deg)
    self.seed = int(seed)
    self.elevation_deg = tuple(float(e) for e in elevation_deg)
    self.orbit_views = int(orbit_views)
    self.supersample = int(supersample)
    self.max_radius = max_object_radius(min(self.camera_radius), min(self.fov_deg))

  def __len__(self) -> int:
    return self.num_scenes

  def scene(self, idx: int) -> tuple[SyntheticObject, np.ndarray, np.ndarray]:
    """The object and cameras (``c2w [V, 4, 4]``, ``intrinsics [V, 4]``) of scene ``idx``."""
    rng = scene_rng(self.seed, self.split, check_index(idx, len(self)))
    obj = sample_object(rng, self.max_radius)
    c2w, intrinsics = sample_cameras(rng, self.views_per_scene, self.resolution,
                                     self.camera_radius, self.fov_deg, self.elevation_deg,
                                     self.orbit_views)
    return obj, c2w, intrinsics

  def __getitem__(self, idx) -> dict[str, np.ndarray]:
    idx = check_index(idx, len(self))
    obj, c2w, intrinsics = self.scene(idx)
    rgb, mask, depth = render_views(obj, c2w, intrinsics, self.resolution, self.resolution,
                                    self.background, supersample=self.supersample)
    return {"images": rgb, "masks": mask, "depths": depth, "c2w": c2w,
            "intrinsics": intrinsics, "scene_id": np.int64(idx),
            "has_depth": np.float32(1.0)}

  def __repr__(self) -> str:
    return (f"SyntheticObjects(split={self.split!r}, num_scenes={self.num_scenes}, "
            f"views_per_scene={self.views_per_scene}, resolution={self.resolution}, "
            f"background={self.background}, camera_radius={self.camera_radius}, "
            f"fov_deg={self.fov_deg}, seed={self.seed}, elevation_deg={self.elevation_deg})")
