"""Cameras: one convention, conversions at the edge, rays and Plücker coordinates.

Convention (docs/design.md §3), used everywhere in lrm_jax:
  * OpenCV camera frame: x right, y down, z forward.
  * ``c2w`` is ``[..., 4, 4]`` (camera-to-world, rigid).
  * ``intrinsics`` is ``[..., 4]`` = ``(fx, fy, cx, cy)`` in pixels of the image it belongs to.
  * Pixel (row i, column j) has its centre at ``(u, v) = (j + 0.5, i + 0.5)``; rays go
    through pixel centres.
  * Plücker rays are ``(o x d, d)`` with unit ``d``: 6 channels per pixel.
  * The world is z-up; objects live in ``[-1, 1]^3``.

Every function accepts numpy or jax arrays and returns the same kind, so the data pipeline
(numpy, in grain workers) and the models (jax, under jit) share one implementation.
"""

from __future__ import annotations

import math
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

Array = Any  # np.ndarray | jax.Array

# Right-multiplying a c2w by this flips the camera's y and z axes: OpenGL <-> OpenCV.
_GL_CV_FLIP = np.diag([1.0, -1.0, -1.0, 1.0]).astype(np.float32)


def _xp(*arrays):
  """numpy for numpy inputs, jax.numpy as soon as any input is a jax array or tracer."""
  return jnp if any(isinstance(a, jax.Array) for a in arrays) else np


@flax.struct.dataclass
class Cameras:
  """A batch of pinhole cameras (a pytree; image size is static).

  Attributes:
    c2w: ``[..., 4, 4]`` OpenCV camera-to-world.
    intrinsics: ``[..., 4]`` ``(fx, fy, cx, cy)`` in pixels.
    height, width: image size in pixels (static, not traced).
  """

  c2w: Array
  intrinsics: Array
  height: int = flax.struct.field(pytree_node=False)
  width: int = flax.struct.field(pytree_node=False)

  @property
  def batch_shape(self):
    return self.c2w.shape[:-2]

  @property
  def w2c(self):
    return invert_rigid(self.c2w)

  def rays(self):
    """Per-pixel ``(origins, directions)``, each ``[..., H, W, 3]``."""
    return get_rays(self.c2w, self.intrinsics, self.height, self.width)

  def plucker(self):
    """Per-pixel Plücker coordinates ``[..., H, W, 6]``."""
    return plucker_rays(self.c2w, self.intrinsics, self.height, self.width)

  def resize(self, new_height: int, new_width: int) -> "Cameras":
    return Cameras(self.c2w, resize_intrinsics(self.intrinsics, (self.height, self.width),
                                               (new_height, new_width)),
                   new_height, new_width)

  def crop(self, top: int, left: int, height: int, width: int) -> "Cameras":
    return Cameras(self.c2w, crop_intrinsics(self.intrinsics, top, left), height, width)

  def __getitem__(self, idx):
    return Cameras(self.c2w[idx], self.intrinsics[idx], self.height, self.width)


# ----------------------------------------------------------------------------------------
# Conventions.
# ----------------------------------------------------------------------------------------


def opengl_to_opencv(c2w: Array) -> Array:
  """Blender/OpenGL c2w (y up, looking along -z) -> OpenCV c2w. ``[..., 4, 4]``."""
  return c2w @ _GL_CV_FLIP.astype(c2w.dtype)


def opencv_to_opengl(c2w: Array) -> Array:
  """OpenCV c2w -> Blender/OpenGL c2w (the flip is its own inverse). ``[..., 4, 4]``."""
  return c2w @ _GL_CV_FLIP.astype(c2w.dtype)


def invert_rigid(T: Array) -> Array:
  """Inverse of a rigid ``[..., 4, 4]`` transform (w2c <-> c2w), without a general inverse."""
  xp = _xp(T)
  R = T[..., :3, :3]
  t = T[..., :3, 3:]
  Rt = xp.swapaxes(R, -1, -2)
  top = xp.concatenate([Rt, -Rt @ t], axis=-1)  # [..., 3, 4]
  bottom = xp.broadcast_to(xp.asarray([0.0, 0.0, 0.0, 1.0], T.dtype), top.shape[:-2] + (1, 4))
  return xp.concatenate([top, bottom], axis=-2)


def w2c_to_c2w(w2c: Array) -> Array:
  return invert_rigid(w2c)


def c2w_to_w2c(c2w: Array) -> Array:
  return invert_rigid(c2w)


def to_homogeneous(pose_3x4: Array) -> Array:
  """``[..., 3, 4]`` -> ``[..., 4, 4]`` with a ``[0, 0, 0, 1]`` last row."""
  xp = _xp(pose_3x4)
  bottom = xp.broadcast_to(xp.asarray([0.0, 0.0, 0.0, 1.0], pose_3x4.dtype),
                           pose_3x4.shape[:-2] + (1, 4))
  return xp.concatenate([pose_3x4, bottom], axis=-2)


# ----------------------------------------------------------------------------------------
# Intrinsics.
# ----------------------------------------------------------------------------------------


def fov_to_focal(fov_rad: Array | float, size: int | float):
  """Focal length in pixels for a full field of view ``fov_rad`` across ``size`` pixels."""
  return 0.5 * size / np.tan(0.5 * np.asarray(fov_rad))


def focal_to_fov(focal: Array | float, size: int | float):
  return 2.0 * np.arctan(0.5 * size / np.asarray(focal))


def intrinsics_from_fov(fov_rad: float, height: int, width: int) -> np.ndarray:
  """Square-pixel intrinsics ``[4]`` with the principal point at the image centre.

  ``fov_rad`` is the horizontal field of view (as Blender's ``camera_angle_x``).
  """
  f = float(fov_to_focal(fov_rad, width))
  return np.asarray([f, f, width / 2.0, height / 2.0], np.float32)


def image_hw(size) -> tuple[int, int]:
  """An image size given as an int (a square) or ``(height, width)``, as ``(height,
  width)``; a ``ValueError`` names anything else."""
  if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
    hw = (int(size), int(size))
  else:
    try:
      hw = tuple(int(s) for s in size)
    except (TypeError, ValueError):
      hw = ()
    if len(hw) != 2 or any(float(a) != float(b) for a, b in zip(hw, size)):
      raise ValueError(f"image size {size!r}: expected an int or (height, width).")
  if min(hw) < 1:
    raise ValueError(f"image size {size!r} must be positive.")
  return hw


def normalize_intrinsics(intrinsics: Array, height: int, width: int) -> Array:
  """Pixel ``(fx, fy, cx, cy)`` -> fractions of the image size (OpenLRM's convention)."""
  xp = _xp(intrinsics)
  scale = xp.asarray([width, height, width, height], intrinsics.dtype)
  return intrinsics / scale


def denormalize_intrinsics(intrinsics: Array, height: int, width: int) -> Array:
  xp = _xp(intrinsics)
  scale = xp.asarray([width, height, width, height], intrinsics.dtype)
  return intrinsics * scale


def resize_intrinsics(intrinsics: Array, old_hw: tuple[int, int],
                      new_hw: tuple[int, int]) -> Array:
  """Intrinsics of the same camera after resizing the image from ``old_hw`` to ``new_hw``.

  With pixel centres at ``j + 0.5`` the continuous image plane scales exactly, so
  ``fx, cx`` scale by ``new_w / old_w`` and ``fy, cy`` by ``new_h / old_h``.
  """
  xp = _xp(intrinsics)
  sy = new_hw[0] / old_hw[0]
  sx = new_hw[1] / old_hw[1]
  return intrinsics * xp.asarray([sx, sy, sx, sy], intrinsics.dtype)


def crop_intrinsics(intrinsics: Array, top: Array | int, left: Array | int) -> Array:
  """Intrinsics after cropping a window whose top-left pixel is ``(top, left)``."""
  xp = _xp(intrinsics)
  zero = xp.zeros_like(intrinsics[..., 0])
  offset = xp.stack([zero, zero, zero + left, zero + top], axis=-1)
  return intrinsics - offset


def stride_intrinsics(intrinsics: Array, stride: int) -> Array:
  """Intrinsics of every ``stride``-th pixel (rows and columns 0, s, 2s, ...): pixel ``i`` of
  the strided image is pixel ``s i`` of the original, both read at their centres."""
  xp = _xp(intrinsics)
  s = float(stride)
  fx, fy, cx, cy = (intrinsics[..., i] for i in range(4))
  return xp.stack([fx / s, fy / s, (cx - 0.5) / s + 0.5, (cy - 0.5) / s + 0.5], axis=-1)


def intrinsics_matrix(intrinsics: Array) -> Array:
  """``[..., 4]`` -> ``[..., 3, 3]`` K."""
  xp = _xp(intrinsics)
  fx, fy, cx, cy = (intrinsics[..., i] for i in range(4))
  z = xp.zeros_like(fx)
  o = xp.ones_like(fx)
  return xp.stack([xp.stack([fx, z, cx], -1), xp.stack([z, fy, cy], -1),
                   xp.stack([z, z, o], -1)], -2)


# ----------------------------------------------------------------------------------------
# OpenLRM's 16-d camera vector.
# ----------------------------------------------------------------------------------------


def openlrm_camera_vector(c2w: Array, intrinsics: Array, height: int, width: int) -> Array:
  """``[..., 16]``: the flattened 3x4 OpenCV c2w followed by normalised ``fx, fy, cx, cy``."""
  xp = _xp(c2w, intrinsics)
  pose = c2w[..., :3, :4].reshape(c2w.shape[:-2] + (12,))
  return xp.concatenate([pose, normalize_intrinsics(intrinsics, height, width)], axis=-1)


def from_openlrm_camera_vector(vec: Array, height: int, width: int) -> tuple[Array, Array]:
  """Inverse of :func:`openlrm_camera_vector`: ``(c2w [..., 4, 4], intrinsics [..., 4])``."""
  pose = vec[..., :12].reshape(vec.shape[:-1] + (3, 4))
  return to_homogeneous(pose), denormalize_intrinsics(vec[..., 12:16], height, width)


# ----------------------------------------------------------------------------------------
# Rays, projection, Plücker coordinates.
# ----------------------------------------------------------------------------------------


def pixel_centers(height: int, width: int, xp=np) -> Array:
  """``[H, W, 2]`` pixel-centre coordinates ``(u, v) = (j + 0.5, i + 0.5)``."""
  v, u = xp.meshgrid(xp.arange(height, dtype=xp.float32) + 0.5,
                     xp.arange(width, dtype=xp.float32) + 0.5, indexing="ij")
  return xp.stack([u, v], axis=-1)


def camera_directions(intrinsics: Array, uv: Array) -> Array:
  """Camera-frame directions (z = 1) of image points.

  Args:
    intrinsics: ``[..., 4]``.
    uv: ``[..., P, 2]`` or anything broadcasting against ``intrinsics[..., None, :]``.
  Returns:
    ``[..., P, 3]`` un-normalised directions ``((u - cx) / fx, (v - cy) / fy, 1)``.
  """
  xp = _xp(intrinsics, uv)
  k = intrinsics[..., None, :]
  x = (uv[..., 0] - k[..., 2]) / k[..., 0]
  y = (uv[..., 1] - k[..., 3]) / k[..., 1]
  return xp.stack([x, y, xp.ones_like(x)], axis=-1)


def get_rays(c2w: Array, intrinsics: Array, height: int, width: int,
             normalize: bool = True) -> tuple[Array, Array]:
  """Rays through every pixel centre.

  Args:
    c2w: ``[..., 4, 4]``; intrinsics: ``[..., 4]`` (pixels of an ``height x width`` image).
    normalize: unit directions (default). With ``False`` the direction has camera z = 1,
      so ``o + t d`` sits at depth ``t`` along the optical axis.
  Returns:
    ``origins, directions``: each ``[..., H, W, 3]`` in world space.
  """
  xp = _xp(c2w, intrinsics)
  uv = pixel_centers(height, width, xp).reshape(-1, 2)  # [HW, 2]
  d_cam = camera_directions(intrinsics, uv)  # [..., HW, 3]
  R = c2w[..., :3, :3]
  d = xp.einsum("...ij,...pj->...pi", R, d_cam.astype(c2w.dtype))
  if normalize:
    d = d / xp.linalg.norm(d, axis=-1, keepdims=True)
  o = xp.broadcast_to(c2w[..., None, :3, 3], d.shape)
  shape = c2w.shape[:-2] + (height, width, 3)
  return o.reshape(shape), d.reshape(shape)


def plucker(origins: Array, directions: Array) -> Array:
  """Plücker coordinates ``(o x d, d)`` ``[..., 6]`` of rays (``d`` is normalised here)."""
  xp = _xp(origins, directions)
  d = directions / xp.linalg.norm(directions, axis=-1, keepdims=True)
  return xp.concatenate([xp.cross(origins, d), d], axis=-1)


def plucker_rays(c2w: Array, intrinsics: Array, height: int, width: int) -> Array:
  """Per-pixel Plücker coordinates ``[..., H, W, 6]``."""
  return plucker(*get_rays(c2w, intrinsics, height, width))


def world_to_camera(points: Array, c2w: Array) -> Array:
  """World points ``[..., N, 3]`` -> camera-frame points ``[..., N, 3]``."""
  xp = _xp(points, c2w)
  R = c2w[..., :3, :3]
  t = c2w[..., None, :3, 3]
  return xp.einsum("...ji,...nj->...ni", R, points - t)


def project_points(points: Array, c2w: Array, intrinsics: Array) -> tuple[Array, Array]:
  """Project world points.

  Args:
    points: ``[..., N, 3]``; c2w: ``[..., 4, 4]``; intrinsics: ``[..., 4]``.
  Returns:
    ``uv [..., N, 2]`` in pixel coordinates (pixel centres at ``+0.5``) and
    ``depth [..., N]`` (z along the optical axis).
  """
  xp = _xp(points, c2w, intrinsics)
  p = world_to_camera(points, c2w)
  z = p[..., 2]
  k = intrinsics[..., None, :]
  safe_z = xp.where(xp.abs(z) < 1e-12, 1e-12, z)
  u = k[..., 0] * p[..., 0] / safe_z + k[..., 2]
  v = k[..., 1] * p[..., 1] / safe_z + k[..., 3]
  return xp.stack([u, v], axis=-1), z


# ----------------------------------------------------------------------------------------
# Camera paths.
# ----------------------------------------------------------------------------------------

WORLD_UP = np.asarray([0.0, 0.0, 1.0], np.float32)


def look_at(eye: Array, target: Array | None = None, up: Array | None = None) -> Array:
  """OpenCV c2w ``[..., 4, 4]`` for cameras at ``eye [..., 3]`` looking at ``target``.

  ``up`` is the world up (z by default); the camera's y axis points down, away from it.
  """
  xp = _xp(eye)
  eye = xp.asarray(eye, xp.float32)
  target = xp.zeros_like(eye) if target is None else xp.broadcast_to(
      xp.asarray(target, eye.dtype), eye.shape)
  up = xp.broadcast_to(xp.asarray(WORLD_UP if up is None else up, eye.dtype), eye.shape)
  z = target - eye
  z = z / xp.linalg.norm(z, axis=-1, keepdims=True)
  x = xp.cross(z, up)
  # Looking straight along +-up: pick any perpendicular right vector.
  degenerate = xp.linalg.norm(x, axis=-1, keepdims=True) < 1e-6
  alt = xp.cross(z, xp.broadcast_to(xp.asarray([0.0, 1.0, 0.0], eye.dtype), eye.shape))
  x = xp.where(degenerate, alt, x)
  x = x / xp.linalg.norm(x, axis=-1, keepdims=True)
  y = xp.cross(z, x)
  R = xp.stack([x, y, z], axis=-1)  # columns are the camera axes in world space
  top = xp.concatenate([R, eye[..., :, None]], axis=-1)
  return to_homogeneous(top)


def spherical_to_cartesian(radius, azimuth_rad, elevation_rad, xp=np):
  """z-up spherical coordinates (azimuth from +x towards +y, elevation from the xy plane)."""
  radius, azimuth_rad, elevation_rad = xp.broadcast_arrays(
      xp.asarray(radius, xp.float32), xp.asarray(azimuth_rad, xp.float32),
      xp.asarray(elevation_rad, xp.float32))
  c = xp.cos(elevation_rad)
  return xp.stack([radius * c * xp.cos(azimuth_rad), radius * c * xp.sin(azimuth_rad),
                   radius * xp.sin(elevation_rad)], axis=-1)


def orbit_cameras(azimuths_deg, elevations_deg, radius: float | Array = 2.0,
                  target=None) -> np.ndarray:
  """c2w ``[N, 4, 4]`` for cameras on a sphere around ``target`` looking at it."""
  eye = spherical_to_cartesian(radius, np.deg2rad(azimuths_deg), np.deg2rad(elevations_deg))
  if target is not None:
    eye = eye + np.asarray(target, np.float32)
  return look_at(eye.astype(np.float32), target)


def turntable_cameras(num_frames: int, elevation_deg: float = 20.0,
                      radius: float = 2.4, start_azimuth_deg: float = 0.0) -> np.ndarray:
  """A full turn around the z axis at a fixed elevation: c2w ``[num_frames, 4, 4]``."""
  az = start_azimuth_deg + np.arange(num_frames) * 360.0 / num_frames
  return orbit_cameras(az, np.full_like(az, elevation_deg), radius)


def fibonacci_sphere(n: int) -> np.ndarray:
  """``n`` near-uniform unit directions ``[n, 3]`` (a Fibonacci lattice)."""
  i = np.arange(n, dtype=np.float64) + 0.5
  z = 1.0 - 2.0 * i / n
  phi = math.pi * (3.0 - math.sqrt(5.0)) * i
  r = np.sqrt(np.maximum(0.0, 1.0 - z * z))
  return np.stack([r * np.cos(phi), r * np.sin(phi), z], -1).astype(np.float32)


# ----------------------------------------------------------------------------------------
# Normalisation of objects and scenes.
# ----------------------------------------------------------------------------------------


def object_normalization(points: np.ndarray, extent: float = 1.0,
                         margin: float = 0.0) -> tuple[np.ndarray, float]:
  """Centre and scale that put ``points [N, 3]`` inside ``[-extent, extent]^3``.

  Returns ``(center [3], scale)``; normalised points are ``(p - center) * scale``. The
  bounding-box centre goes to the origin and the longest half-side to ``extent - margin``.
  """
  points = np.asarray(points, np.float64)
  lo, hi = points.min(0), points.max(0)
  center = 0.5 * (lo + hi)
  half = float(np.max(hi - lo)) * 0.5
  if not np.isfinite(half) or half <= 0:
    raise ValueError(f"cannot normalise a degenerate point set (extent {half}).")
  return center.astype(np.float32), (extent - margin) / half


def apply_similarity_to_c2w(c2w: Array, center: Array, scale: float) -> Array:
  """c2w of the same cameras after the world is mapped by ``p -> (p - center) * scale``."""
  xp = _xp(c2w)
  t = (c2w[..., :3, 3] - xp.asarray(center, c2w.dtype)) * scale
  return xp.concatenate([xp.concatenate([c2w[..., :3, :3], t[..., None]], -1),
                         c2w[..., 3:, :]], -2)


def average_pose(c2w: np.ndarray) -> np.ndarray:
  """Mean camera pose ``[4, 4]`` of ``c2w [N, 4, 4]`` (mean centre, re-orthonormalised axes).

  The mean forward (z) and down (y) axes are averaged and made orthonormal, as LLFF and
  Long-LRM do.
  """
  c2w = np.asarray(c2w, np.float64)
  center = c2w[:, :3, 3].mean(0)
  z = c2w[:, :3, 2].mean(0)
  z /= np.linalg.norm(z)
  y_avg = c2w[:, :3, 1].mean(0)
  x = np.cross(y_avg, z)
  x /= np.linalg.norm(x)
  y = np.cross(z, x)
  out = np.eye(4)
  out[:3, :3] = np.stack([x, y, z], -1)
  out[:3, 3] = center
  return out


def normalize_scene(c2w: np.ndarray, scale_to: float = 1.0) -> tuple[np.ndarray, np.ndarray, float]:
  """Long-LRM scene normalisation.

  The average pose becomes the identity and the largest camera distance from it becomes
  ``scale_to``. Returns ``(new_c2w [N, 4, 4], transform [4, 4], scale)`` where
  ``new_c2w = diag(s, s, s, 1) @ transform @ c2w`` (rotation part kept orthonormal).
  """
  c2w = np.asarray(c2w, np.float64)
  transform = np.linalg.inv(average_pose(c2w))
  out = transform[None] @ c2w
  max_t = float(np.max(np.linalg.norm(out[:, :3, 3], axis=-1)))
  scale = scale_to / max_t if max_t > 0 else 1.0
  out[:, :3, 3] *= scale
  return out.astype(np.float32), transform.astype(np.float32), scale


def interpolate_path(c2w: np.ndarray, num: int) -> np.ndarray:
  """A smooth camera path ``[num, 4, 4]`` through the poses ``c2w [N, 4, 4]`` in their
  order (a fly-through): centres and forward/down axes interpolated linearly between
  consecutive poses, axes re-orthonormalised as :func:`average_pose` does."""
  c2w = np.asarray(c2w, np.float64)
  s = np.linspace(0.0, len(c2w) - 1, num)
  lo = np.minimum(np.floor(s).astype(int), len(c2w) - 2) if len(c2w) > 1 else np.zeros(num, int)
  hi = np.minimum(lo + 1, len(c2w) - 1)
  t = (s - lo)[:, None]
  mix = lambda col: (1 - t) * c2w[lo, :3, col] + t * c2w[hi, :3, col]
  z = mix(2)
  z /= np.linalg.norm(z, axis=-1, keepdims=True)
  x = np.cross(mix(1), z)
  x /= np.linalg.norm(x, axis=-1, keepdims=True)
  y = np.cross(z, x)
  out = np.tile(np.eye(4), (num, 1, 1))
  out[:, :3, :3] = np.stack([x, y, z], -1)
  out[:, :3, 3] = mix(3)
  return out.astype(np.float32)


def validate_c2w(c2w: np.ndarray, where: str) -> None:
  """Raise a clear ``ValueError`` naming ``where`` if poses are non-finite or not rigid."""
  c2w = np.asarray(c2w, np.float64)
  if c2w.shape[-2:] != (4, 4):
    raise ValueError(f"{where}: camera pose must be 4x4, got shape {c2w.shape}.")
  if not np.all(np.isfinite(c2w)):
    raise ValueError(f"{where}: camera pose contains non-finite values (NaN or inf).")
  R = c2w[..., :3, :3]
  det = np.linalg.det(R)
  if np.any(np.abs(det) < 1e-6):
    raise ValueError(f"{where}: camera pose is not invertible (rotation determinant {det}).")


def canonical_openlrm_source_c2w(distance: float = 2.0) -> np.ndarray:
  """OpenLRM's canonical source camera: at ``(0, -d, 0)`` looking along +y, z up. ``[4, 4]``."""
  return look_at(np.asarray([0.0, -distance, 0.0], np.float32))
