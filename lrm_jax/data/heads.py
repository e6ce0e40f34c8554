"""Animatable synthetic heads: the embedded default data of Avat3r (``data.source = "heads"``).

A head is a procedural triangle mesh, a small FLAME-like model built in numpy:

  skull   a lat-long ellipsoid shell (face towards world +x, z up) with a tapered jaw, a
          mouth slit (the lower lip's vertices are separate from the upper lip's), lip,
          brow and skin colours per vertex, and a low-frequency skin texture;
  parts   a nose, two ears, two eyes (white, iris, pupil), two eyelids (spherical caps in
          a colour of their own), a dark mouth interior behind the lips, a hair cap.

Per-identity parameters (:class:`Identity`) set the shape (head radii, jaw taper, nose,
ears, eye spacing) and the colours. An expression code of :data:`EXPRESSION_DIMS` numbers
(:data:`EXPRESSIONS`) deforms the mesh: smooth Gaussian displacement bases around the mouth
corners, brows and cheeks, a jaw rotation about a hinge axis (opening the slit shows the
dark mouth interior) with a lateral jaw shift, and eyelids that rotate down over the eyes.

Views are rendered with the exact z-buffer of :mod:`lrm_jax.data.meshes` and its shading.
Per view the source gives RGB, mask, depth, a world-space position map (``positions``,
0 off the head), the ``expression`` code of the view, the ``target_expression`` (the code
of the example's target views, the same for every view) and ``landmarks`` ``[K, 3]``: the
pixel coordinates ``(u, v)`` of :data:`LANDMARKS` vertices and whether each is visible
(``1``: not occluded, by the z-buffer's depth).

Each example is one identity: its first ``num_input_views`` views are the inputs, each at
its own (random, mostly mild) expression, on a frontal yaw fan; the other views are targets
at one strong target expression (jaw, smile, blink, brows, ... far from the inputs'), from
random cameras in the frontal hemisphere (yaw +-60, pitch +-20 degrees). Splits are by
identity: identities are drawn from ``(seed, split, identity)`` with distinct split codes.
Randomness is per index (``SeedSequence``), as in :mod:`lrm_jax.data.synthetic`.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from lrm_jax import cameras
from lrm_jax.data import meshes
from lrm_jax.data import synthetic

EXPRESSIONS = ("jaw_open", "smile", "brows_up", "blink", "pucker", "cheek_puff",
               "brow_frown", "jaw_side")
EXPRESSION_DIMS = len(EXPRESSIONS)
JAW, SMILE, BROWS, BLINK, PUCKER, CHEEK, FROWN, JAW_SIDE = range(EXPRESSION_DIMS)
LANDMARKS = ("lip_corner_l", "lip_corner_r", "upper_lip", "lower_lip", "chin", "nose_tip",
             "brow_inner_l", "brow_inner_r", "brow_outer_l", "brow_outer_r", "pupil_l",
             "pupil_r", "lid_l", "lid_r", "cheek_l", "cheek_r")
NUM_LANDMARKS = len(LANDMARKS)
YAW_DEG = (-60.0, 60.0)
PITCH_DEG = (-20.0, 20.0)
CAMERA_RADIUS = (1.7, 2.0)
FOV_DEG = (42.0, 48.0)
MOUTH_INTERIOR = (0.10, 0.02, 0.03)
# Skull grid: rows from the top pole to the bottom, columns around (azimuth from +x).
_ROWS, _COLS = 36, 64
_THETA_MOUTH = math.radians(110.0)  # polar angle of the mouth line
_PHI_MOUTH = math.radians(38.0)  # half width of the mouth slit
_THETA_BROW = math.radians(72.0)
_THETA_EYE = math.radians(84.0)
_VISIBLE_TOL = 0.03  # landmark z within this of the z-buffer depth: visible


@dataclasses.dataclass(frozen=True)
class Identity:
  """Shape and colour parameters of one head (all float64 numpy)."""

  radii: np.ndarray  # [3] skull ellipsoid (front-back, left-right, up-down)
  jaw_taper: float  # narrowing of the lower head
  nose: np.ndarray  # [3] nose radii (length, width, height)
  ear: float  # ear size
  eye_phi: float  # azimuth of the eyes (radians)
  skin: np.ndarray  # [3]
  lips: np.ndarray  # [3]
  brows: np.ndarray  # [3]
  hair: np.ndarray  # [3]
  iris: np.ndarray  # [3]
  lid: np.ndarray  # [3] eyelid colour (distinct from the skin)
  hairline: float  # polar angle of the front hairline (radians)
  texture: np.ndarray  # [4, 4] skin texture: 4 waves (direction xyz, phase)


def sample_identity(rng: np.random.Generator) -> Identity:
  """A random head."""
  skin_tones = np.asarray([[0.93, 0.76, 0.64], [0.82, 0.62, 0.48], [0.62, 0.44, 0.32],
                           [0.45, 0.31, 0.22], [0.96, 0.83, 0.74]])
  skin = skin_tones[rng.integers(len(skin_tones))] * rng.uniform(0.92, 1.05, 3)
  hair_tones = np.asarray([[0.12, 0.08, 0.05], [0.35, 0.22, 0.10], [0.75, 0.6, 0.3],
                           [0.55, 0.15, 0.08], [0.6, 0.6, 0.6]])
  hair = hair_tones[rng.integers(len(hair_tones))] * rng.uniform(0.85, 1.15, 3)
  lid_tones = np.asarray([[0.30, 0.25, 0.70], [0.20, 0.55, 0.60], [0.55, 0.25, 0.60]])
  texture = np.concatenate([rng.normal(size=(4, 3)) * 6.0, rng.uniform(0, 2 * np.pi, (4, 1))],
                           axis=1)
  return Identity(
      radii=np.asarray([rng.uniform(0.42, 0.48), rng.uniform(0.36, 0.42),
                        rng.uniform(0.50, 0.56)]),
      jaw_taper=float(rng.uniform(0.1, 0.3)),
      nose=np.asarray([rng.uniform(0.07, 0.11), rng.uniform(0.04, 0.06),
                       rng.uniform(0.06, 0.09)]),
      ear=float(rng.uniform(0.8, 1.2)),
      eye_phi=float(np.radians(rng.uniform(26.0, 32.0))),
      skin=np.clip(skin, 0, 1),
      lips=np.clip(np.asarray([0.75, 0.2, 0.25]) * rng.uniform(0.8, 1.1, 3), 0, 1),
      brows=np.clip(hair * 0.6, 0, 1),
      hair=np.clip(hair, 0, 1),
      iris=rng.uniform(0.1, 0.6, 3),
      lid=lid_tones[rng.integers(len(lid_tones))] * rng.uniform(0.9, 1.1, 3),
      hairline=float(np.radians(rng.uniform(45.0, 58.0))),
      texture=texture)


def _sphere_grid(rows: int, cols: int):
  """Unit-sphere lat-long grid: directions ``[(rows+1) * cols, 3]``, polar angle, azimuth
  and faces ``[F, 3]`` (outward, counter-clockwise)."""
  theta = np.linspace(0.0, np.pi, rows + 1)
  phi = np.linspace(-np.pi, np.pi, cols, endpoint=False)
  th, ph = np.meshgrid(theta, phi, indexing="ij")  # [R+1, C]
  dirs = np.stack([np.sin(th) * np.cos(ph), np.sin(th) * np.sin(ph), np.cos(th)], -1)
  idx = np.arange((rows + 1) * cols).reshape(rows + 1, cols)
  a, b = idx[:-1], np.roll(idx[:-1], -1, axis=1)
  c, d = idx[1:], np.roll(idx[1:], -1, axis=1)
  faces = np.concatenate([np.stack([a, c, b], -1).reshape(-1, 3),
                          np.stack([b, c, d], -1).reshape(-1, 3)])
  return dirs.reshape(-1, 3), th.reshape(-1), ph.reshape(-1), faces, idx


def _ellipsoid(center, radii, rows: int = 8, cols: int = 12):
  """A closed ellipsoid mesh: vertices ``[N, 3]``, faces, unit directions."""
  dirs, _, _, faces, _ = _sphere_grid(rows, cols)
  return np.asarray(center) + dirs * np.asarray(radii), faces, dirs


def _bump(theta, phi, theta0, phi0, sigma):
  """A smooth bump ``[N]`` on the skull's (polar, azimuth) grid."""
  return np.exp(-((theta - theta0) ** 2 + (phi - phi0) ** 2) / (2.0 * sigma ** 2))


def _rot_y(a):
  c, s = math.cos(a), math.sin(a)
  return np.asarray([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


@dataclasses.dataclass(frozen=True)
class HeadMesh:
  """A posed head: ``vertices [N, 3]``, ``faces [F, 3]``, ``colors [N, 3]``, and the vertex
  index of each landmark ``[K]``."""

  vertices: np.ndarray
  faces: np.ndarray
  colors: np.ndarray
  landmarks: np.ndarray

  def mesh(self) -> meshes.Mesh:
    return meshes.Mesh(vertices=self.vertices.astype(np.float32),
                       faces=self.faces.astype(np.int32),
                       vertex_colors=self.colors.astype(np.float32))


def _skull(ident: Identity, code: np.ndarray):
  """The skull shell with the mouth slit: vertices, faces, colours, named vertex ids."""
  dirs, th, ph, faces, idx = _sphere_grid(_ROWS, _COLS)
  # The slit: row of the mouth line, columns inside the slit get a lower copy.
  row_m = int(round(_THETA_MOUTH / np.pi * _ROWS))
  slit_cols = np.nonzero(np.abs(ph[idx[row_m]]) < _PHI_MOUTH)[0]
  upper = idx[row_m, slit_cols]
  lower = np.arange(dirs.shape[0], dirs.shape[0] + slit_cols.size)
  remap = np.arange(dirs.shape[0])
  remap[upper] = lower
  below = np.all(th[faces] >= th[idx[row_m, 0]] - 1e-9, axis=1)  # faces under the line
  faces = np.where(below[:, None], remap[faces], faces)
  dirs = np.concatenate([dirs, dirs[upper]])
  th = np.concatenate([th, th[upper]])
  ph = np.concatenate([ph, ph[upper]])
  is_lower = np.zeros(dirs.shape[0], bool)
  is_lower[lower] = True

  # Identity shape: an ellipsoid with the lower head tapered.
  v = dirs * ident.radii
  taper = 1.0 - ident.jaw_taper * np.clip(-dirs[:, 2], 0, 1) ** 2
  v[:, :2] *= taper[:, None]

  # Expression: displacement bases (world units) on the (polar, azimuth) grid.
  e = code
  front = np.clip(np.cos(ph), 0.0, 1.0)
  disp = np.zeros_like(v)
  for side in (-1.0, 1.0):
    corner = _bump(th, ph, _THETA_MOUTH, side * _PHI_MOUTH * 0.85, 0.12)
    disp += e[SMILE] * corner[:, None] * np.asarray([-0.04, side * 0.06, 0.11])
    disp += e[PUCKER] * corner[:, None] * np.asarray([0.02, -side * 0.06, 0.0])
    brow = _bump(th, ph, _THETA_BROW, side * 0.35, 0.12)
    disp += e[BROWS] * brow[:, None] * np.asarray([0.0, 0.0, 0.08])
    inner = _bump(th, ph, _THETA_BROW + 0.05, side * 0.14, 0.08)
    disp += e[FROWN] * inner[:, None] * np.asarray([0.03, -side * 0.02, -0.06])
    cheek = _bump(th, ph, _THETA_MOUTH - 0.3, side * 0.75, 0.2)
    disp += e[CHEEK] * cheek[:, None] * dirs * 0.08
  lips = _bump(th, ph, _THETA_MOUTH, 0.0, 0.15)
  disp += e[PUCKER] * lips[:, None] * np.asarray([0.10, 0.0, 0.0])
  v = v + disp

  # Jaw: vertices under the mouth line (and the lower lip) rotate about a hinge axis
  # (left-right, near the ears), weighted to the front of the face.
  jaw_w = np.where((th > _THETA_MOUTH + 1e-6) | is_lower,
                   np.clip(np.cos(np.clip(ph / (1.7 * _PHI_MOUTH), -1, 1) * np.pi / 2), 0, 1)
                   ** 2, 0.0)
  hinge = np.asarray([-0.05, 0.0, -0.02])
  rot = _rot_y(np.radians(30.0) * e[JAW])
  opened = (v - hinge) @ rot.T + hinge + np.asarray([0.0, 0.06 * e[JAW_SIDE], 0.0])
  v = v + jaw_w[:, None] * (opened - v)

  # Colours: skin with a texture, lips, brows.
  wave = np.sin(dirs @ ident.texture[:, :3].T + ident.texture[:, 3]).mean(-1)  # [N]
  colors = ident.skin[None] * (1.0 + 0.12 * wave[:, None])
  lip_band = (np.abs(th - _THETA_MOUTH) < 0.07) & (np.abs(ph) < _PHI_MOUTH * 1.05)
  colors[lip_band] = ident.lips
  brow_band = (np.abs(th - _THETA_BROW) < 0.06) & (np.abs(np.abs(ph) - 0.33) < 0.2)
  colors[brow_band] = ident.brows
  hair = th < ident.hairline + (np.pi * 0.45) * (1.0 - front) ** 2
  colors[hair] = ident.hair * (1.0 + 0.15 * np.sin(ph[hair] * 14.0))[:, None]

  def nearest(theta, phi, lower_copy=False):
    pool = np.nonzero(is_lower == lower_copy)[0]
    return int(pool[np.argmin((th[pool] - theta) ** 2 + (ph[pool] - phi) ** 2)])

  named = {
      "lip_corner_l": nearest(_THETA_MOUTH, _PHI_MOUTH * 0.8),
      "lip_corner_r": nearest(_THETA_MOUTH, -_PHI_MOUTH * 0.8),
      "upper_lip": nearest(_THETA_MOUTH, 0.0),
      "lower_lip": nearest(_THETA_MOUTH, 0.0, lower_copy=True),
      "chin": nearest(math.radians(135.0), 0.0),
      "brow_inner_l": nearest(_THETA_BROW, 0.15), "brow_inner_r": nearest(_THETA_BROW, -0.15),
      "brow_outer_l": nearest(_THETA_BROW, 0.5), "brow_outer_r": nearest(_THETA_BROW, -0.5),
      "cheek_l": nearest(_THETA_MOUTH - 0.3, 0.75), "cheek_r": nearest(_THETA_MOUTH - 0.3, -0.75),
  }
  return v, faces, np.clip(colors, 0, 1), named


def _surface_point(ident: Identity, theta: float, phi: float) -> np.ndarray:
  d = np.asarray([math.sin(theta) * math.cos(phi), math.sin(theta) * math.sin(phi),
                  math.cos(theta)])
  return d * ident.radii


def build_head(ident: Identity, code) -> HeadMesh:
  """The head of ``ident`` at expression ``code`` ``[EXPRESSION_DIMS]``."""
  code = np.asarray(code, np.float64)
  if code.shape != (EXPRESSION_DIMS,):
    raise ValueError(f"an expression code has {EXPRESSION_DIMS} numbers "
                     f"({', '.join(EXPRESSIONS)}), got shape {code.shape}.")
  parts = []  # (vertices, faces, colours)
  named = {}

  def add(vertices, faces, colors):
    base = sum(p[0].shape[0] for p in parts)
    parts.append((vertices, faces + base, np.broadcast_to(colors, vertices.shape).copy()))
    return base

  v, f, c, skull_named = _skull(ident, code)
  add(v, f, c)
  named.update(skull_named)
  # Nose: an ellipsoid on the face, pointing forward.
  tip_base = _surface_point(ident, math.radians(96.0), 0.0)
  nv, nf, nd = _ellipsoid(tip_base + np.asarray([0.3 * ident.nose[0], 0, 0]), ident.nose)
  base = add(nv, nf, np.clip(ident.skin * np.asarray([1.0, 0.9, 0.9]), 0, 1))
  named["nose_tip"] = base + int(np.argmax(nd[:, 0]))
  # Ears.
  for side in (-1.0, 1.0):
    p = _surface_point(ident, math.radians(88.0), side * math.pi / 2)
    ev, ef, _ = _ellipsoid(p + np.asarray([0.0, side * 0.01, 0.0]),
                           np.asarray([0.06, 0.025, 0.10]) * ident.ear)
    add(ev, ef, np.clip(ident.skin * 0.92, 0, 1))
  # Eyes (white, iris, pupil) and eyelids (caps that rotate down over the eye).
  r_eye = 0.065
  blink = math.radians(-25.0 + 115.0 * np.clip(code[BLINK], 0.0, 1.0))
  for side, suffix in ((1.0, "l"), (-1.0, "r")):
    center = _surface_point(ident, _THETA_EYE, side * ident.eye_phi) * 0.93
    ev, ef, ed = _ellipsoid(center, (r_eye,) * 3, 10, 14)
    look = ed @ np.asarray([1.0, 0.0, 0.0])
    col = np.where(look[:, None] > 0.93, 0.05,
                   np.where(look[:, None] > 0.75, ident.iris, 0.95))
    base = add(ev, ef, col)
    named[f"pupil_{suffix}"] = base + int(np.argmax(look))
    # A hemisphere cap of radius 1.15 r_eye around the axis (sin b, 0, cos b).
    lv, lf, ld = _ellipsoid(np.zeros(3), (1.15 * r_eye,) * 3, 8, 12)
    keep = ld[:, 2] >= -1e-9
    new = -np.ones(lv.shape[0], np.int64)
    new[keep] = np.arange(keep.sum())
    lf = new[lf[np.all(keep[lf], axis=1)]]
    # Rotate the cap from +z to its axis (about y), then to the eye.
    lv = lv[keep] @ _rot_y(blink).T + center
    base = add(lv, lf, ident.lid)
    named[f"lid_{suffix}"] = base + int(np.argmax(ld[keep][:, 2]))
  # The mouth interior: a dark ellipsoid behind the lips, moving half with the jaw.
  mouth = _surface_point(ident, _THETA_MOUTH, 0.0)
  center = mouth + np.asarray([-0.15, 0.0, -0.05 * code[JAW]])
  add(*_ellipsoid(center, np.asarray([0.12, 0.16, 0.06 + 0.06 * code[JAW]]))[:2],
      np.asarray(MOUTH_INTERIOR))
  # Hair cap: a shell just outside the skull over the top and back.
  hv, hth, hph, hf, _ = _sphere_grid(12, 32)
  front = np.clip(np.cos(hph), 0.0, 1.0)
  limit = ident.hairline - 0.08 + (np.pi * 0.45) * (1.0 - front) ** 2
  scaled = hth / np.pi * limit  # rows span [0, limit(phi)]
  hd = np.stack([np.sin(scaled) * np.cos(hph), np.sin(scaled) * np.sin(hph), np.cos(scaled)], -1)
  hv = hd * ident.radii * 1.05
  add(hv, hf, ident.hair * 0.85)

  vertices = np.concatenate([p[0] for p in parts])
  faces = np.concatenate([p[1] for p in parts])
  colors = np.concatenate([p[2] for p in parts])
  landmarks = np.asarray([named[n] for n in LANDMARKS], np.int64)
  return HeadMesh(vertices, faces, colors, landmarks)


# ----------------------------------------------------------------------------------------
# Expressions and cameras.
# ----------------------------------------------------------------------------------------


def neutral() -> np.ndarray:
  return np.zeros(EXPRESSION_DIMS, np.float32)


def sample_input_expression(rng: np.random.Generator) -> np.ndarray:
  """A mild random expression: each dimension is on with probability 0.3, at up to 0.4."""
  on = rng.uniform(size=EXPRESSION_DIMS) < 0.3
  code = np.where(on, rng.uniform(0.0, 0.4, EXPRESSION_DIMS), 0.0)
  code[JAW_SIDE] *= rng.choice([-1.0, 1.0])
  return code.astype(np.float32)


def sample_target_expression(rng: np.random.Generator) -> np.ndarray:
  """A strong expression, far from the inputs': each dimension is on with probability
  0.5 (the jaw 0.7) at 0.5-1 (the lateral jaw shift at up to +-0.6)."""
  prob = np.full(EXPRESSION_DIMS, 0.5)
  prob[JAW] = 0.7
  on = rng.uniform(size=EXPRESSION_DIMS) < prob
  code = np.where(on, rng.uniform(0.5, 1.0, EXPRESSION_DIMS), 0.0)
  code[JAW_SIDE] = code[JAW_SIDE] * 0.6 * rng.choice([-1.0, 1.0])
  return code.astype(np.float32)


def sample_cameras(rng: np.random.Generator, num_views: int, num_inputs: int, resolution: int,
                   camera_radius=CAMERA_RADIUS, fov_deg=FOV_DEG):
  """Cameras in the frontal hemisphere looking at the head (yaw about world z from the
  face direction +x, pitch above the horizon): the first ``num_inputs`` on a stratified
  yaw fan, the others uniform in yaw and pitch. ``c2w [V, 4, 4]``, ``intrinsics [V, 4]``."""
  yaw = rng.uniform(YAW_DEG[0], YAW_DEG[1], num_views)
  if num_inputs:
    strata = (np.arange(num_inputs) + rng.uniform(0.2, 0.8, num_inputs)) / num_inputs
    yaw[:num_inputs] = YAW_DEG[0] + (YAW_DEG[1] - YAW_DEG[0]) * strata
  pitch = rng.uniform(PITCH_DEG[0], PITCH_DEG[1], num_views)
  radius = rng.uniform(camera_radius[0], camera_radius[1], num_views)
  fov = np.deg2rad(rng.uniform(fov_deg[0], fov_deg[1], num_views))
  c2w = cameras.orbit_cameras(yaw, pitch, radius).astype(np.float32)
  focal = cameras.fov_to_focal(fov, resolution)
  half = np.full(num_views, resolution / 2.0)
  return c2w, np.stack([focal, focal, half, half], -1).astype(np.float32)


# ----------------------------------------------------------------------------------------
# Rendering.
# ----------------------------------------------------------------------------------------


def position_map(depth: np.ndarray, c2w: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
  """World positions ``[V, H, W, 3]`` of z-depth maps ``[V, H, W, 1]`` (0 where depth is 0)."""
  v, h, w, _ = depth.shape
  origins, dirs = cameras.get_rays(np.asarray(c2w, np.float64),
                                   np.asarray(intrinsics, np.float64), h, w, normalize=False)
  pts = origins + depth.astype(np.float64) * dirs  # camera z of dirs is 1
  return np.where(depth > 0, pts, 0.0).astype(np.float32)


def project_landmarks(head: HeadMesh, c2w: np.ndarray, intrinsics: np.ndarray,
                      depth: np.ndarray) -> np.ndarray:
  """``[V, K, 3]``: pixel ``(u, v)`` of every landmark vertex and its visibility (1 where
  the z-buffer's depth at its pixel is within :data:`_VISIBLE_TOL` of its own)."""
  pts = head.vertices[head.landmarks].astype(np.float64)  # [K, 3]
  uv, z = cameras.project_points(pts[None], np.asarray(c2w, np.float64),
                                 np.asarray(intrinsics, np.float64))  # [V, K, 2], [V, K]
  h, w = depth.shape[1:3]
  col = np.clip(np.floor(uv[..., 0]).astype(np.int64), 0, w - 1)
  row = np.clip(np.floor(uv[..., 1]).astype(np.int64), 0, h - 1)
  inside = (uv[..., 0] >= 0) & (uv[..., 0] < w) & (uv[..., 1] >= 0) & (uv[..., 1] < h)
  d = depth[np.arange(depth.shape[0])[:, None], row, col, 0]
  vis = inside & (d > 0) & (np.abs(d - z) < _VISIBLE_TOL)
  return np.concatenate([uv, vis[..., None]], -1).astype(np.float32)


def render_head(head: HeadMesh, c2w, intrinsics, resolution: int, background=(1.0, 1.0, 1.0)):
  """``rgb, mask, depth, positions, landmarks`` of ``head`` in the given views (exact
  z-buffer, :func:`lrm_jax.data.meshes.render_mesh`)."""
  rgb, mask, depth = meshes.render_mesh(head.mesh(), c2w, intrinsics, resolution, resolution,
                                        background)
  return (rgb, mask, depth, position_map(depth, c2w, intrinsics),
          project_landmarks(head, c2w, intrinsics, depth))


# ----------------------------------------------------------------------------------------
# The grain source.
# ----------------------------------------------------------------------------------------


class SyntheticHeads:
  """Random-access source of animatable synthetic heads (grain-compatible).

  Example ``idx`` shows identity ``idx % num_identities`` of its split: ``views_per_scene``
  views, the first ``num_input_views`` inputs at their own expressions, the rest targets at
  one target expression. Fields: the common ones (:mod:`lrm_jax.data`) plus ``positions
  [V, H, W, 3]``, ``expression [V, E]``, ``target_expression [V, E]``, ``landmarks
  [V, K, 3]`` (float32).
  """

  def __init__(self, split: str = "train", num_scenes: int = 1000, views_per_scene: int = 8,
               num_input_views: int = 4, resolution: int = 32, background=(1.0, 1.0, 1.0),
               seed: int = 0, num_identities: int = 0):
    synthetic.split_code(split)
    if num_scenes < 1 or resolution < 1:
      raise ValueError("num_scenes and resolution must be positive.")
    if not 0 < num_input_views < views_per_scene:
      raise ValueError(f"heads: views_per_scene={views_per_scene} must exceed "
                       f"num_input_views={num_input_views} (the rest are targets).")
    self.split = split
    self.num_scenes = int(num_scenes)
    self.views_per_scene = int(views_per_scene)
    self.num_input_views = int(num_input_views)
    self.resolution = int(resolution)
    self.background = tuple(float(c) for c in background)
    self.seed = int(seed)
    self.num_identities = int(num_identities) or self.num_scenes

  def __len__(self) -> int:
    return self.num_scenes

  def identity(self, idx: int) -> Identity:
    """The head of example ``idx`` (the same for every example of its identity)."""
    ident = synthetic.check_index(idx, len(self)) % self.num_identities
    rng = np.random.default_rng(np.random.SeedSequence(
        [self.seed, synthetic.split_code(self.split), 0, ident]))
    return sample_identity(rng)

  def expressions(self, idx: int):
    """``(codes [V, E], target [E], rng)`` of example ``idx``: the rng then draws cameras."""
    rng = np.random.default_rng(np.random.SeedSequence(
        [self.seed, synthetic.split_code(self.split), 1, synthetic.check_index(idx, len(self))]))
    target = sample_target_expression(rng)
    inputs = [sample_input_expression(rng) for _ in range(self.num_input_views)]
    codes = np.stack(inputs + [target] * (self.views_per_scene - self.num_input_views))
    return codes, target, rng

  def __getitem__(self, idx) -> dict[str, np.ndarray]:
    idx = synthetic.check_index(idx, len(self))
    ident = self.identity(idx)
    codes, target, rng = self.expressions(idx)
    c2w, intr = sample_cameras(rng, self.views_per_scene, self.num_input_views,
                               self.resolution)
    out = {k: [] for k in ("images", "masks", "depths", "positions", "landmarks")}
    n_in = self.num_input_views
    groups = [[i] for i in range(n_in)] + [list(range(n_in, self.views_per_scene))]
    for views in groups:  # one mesh per expression
      head = build_head(ident, codes[views[0]])
      for k, x in zip(out, render_head(head, c2w[views], intr[views], self.resolution,
                                       self.background)):
        out[k].append(x)
    ex = {k: np.concatenate(x) for k, x in out.items()}
    ex.update(c2w=c2w, intrinsics=intr, expression=codes,
              target_expression=np.broadcast_to(target, codes.shape).copy(),
              scene_id=np.int64(idx), has_depth=np.float32(1.0))
    return ex

  def __repr__(self) -> str:
    return (f"SyntheticHeads(split={self.split!r}, num_scenes={self.num_scenes}, "
            f"views_per_scene={self.views_per_scene}, num_input_views={self.num_input_views}, "
            f"resolution={self.resolution}, seed={self.seed}, "
            f"num_identities={self.num_identities})")
