"""The one shading model of the data renderers (synthetic primitives and textured meshes).

Lambertian reflection of a fixed directional key light (world z-up, from above and to the
side) plus a headlight (a light at the camera) plus ambient light:

  rgb = albedo * (ambient + key * max(0, n . l) + headlight * max(0, -n . v))

with ``v`` the unit direction from the camera to the surface point. Shading is two-sided:
a normal that faces away from the camera is flipped first, so open meshes and
inconsistently wound faces shade like their visible side. With the default weights the
factor never exceeds 1, so colours stay in ``[0, 1]`` without clipping.
"""

from __future__ import annotations

import numpy as np

# Unit direction *towards* the key light (world frame, z up).
LIGHT_DIR = np.asarray([0.35, -0.45, 0.82], np.float64) / np.linalg.norm([0.35, -0.45, 0.82])
AMBIENT = 0.25
KEY = 0.45
HEADLIGHT = 0.30


def _unit(v: np.ndarray) -> np.ndarray:
  """Rows of ``v [..., 3]`` scaled to unit length (zero rows stay zero)."""
  n = np.linalg.norm(v, axis=-1, keepdims=True)
  return v / np.maximum(n, 1e-12)


def facing_normals(normals: np.ndarray, view_dirs: np.ndarray) -> np.ndarray:
  """Unit normals ``[..., 3]`` flipped where needed so they face the camera.

  Args:
    normals: ``[..., 3]`` surface normals (any length, any orientation).
    view_dirs: ``[..., 3]`` directions from the camera to the surface points.
  """
  n = _unit(normals)
  away = np.sum(n * view_dirs, axis=-1, keepdims=True) > 0.0  # [..., 1]
  return np.where(away, -n, n)


def shade(albedo: np.ndarray, normals: np.ndarray, view_dirs: np.ndarray,
          ambient: float = AMBIENT, key: float = KEY, headlight: float = HEADLIGHT,
          light_dir: np.ndarray = LIGHT_DIR) -> np.ndarray:
  """Lambertian + headlight + ambient shading.

  Args:
    albedo: ``[..., 3]`` surface colour in ``[0, 1]``.
    normals: ``[..., 3]`` surface normals (normalised and made camera-facing here).
    view_dirs: ``[..., 3]`` directions from the camera to the surface points (any length).
    ambient, key, headlight: weights of the three light terms.
    light_dir: ``[3]`` unit direction towards the key light.
  Returns:
    ``[..., 3]`` float32 shaded colour.
  """
  v = _unit(np.asarray(view_dirs, np.float64))
  n = facing_normals(np.asarray(normals, np.float64), v)
  lambert = np.maximum(n @ np.asarray(light_dir, np.float64), 0.0)  # [...]
  head = np.maximum(-np.sum(n * v, axis=-1), 0.0)  # [...]
  factor = ambient + key * lambert + headlight * head  # [...]
  return (np.asarray(albedo, np.float64) * factor[..., None]).astype(np.float32)


def composite(rgb: np.ndarray, mask: np.ndarray, background) -> np.ndarray:
  """``rgb * mask + background * (1 - mask)``.

  Args:
    rgb: ``[..., H, W, 3]`` foreground colour.
    mask: ``[..., H, W, 1]`` coverage in ``[0, 1]``.
    background: a colour ``[3]`` (or anything broadcasting against ``rgb``).
  Returns:
    ``[..., H, W, 3]`` float32.
  """
  bg = np.asarray(background, np.float32)
  return (rgb * mask + bg * (1.0 - mask)).astype(np.float32)
