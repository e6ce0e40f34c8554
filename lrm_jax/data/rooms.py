"""Procedural rooms with exact RGB and depth: a scene-level synthetic source (Long-LRM).

Each scene is an axis-aligned room (floor at z = 0, z up) whose six faces carry a solid,
striped or checkered texture, holding 2-4 objects of :mod:`lrm_jax.data.synthetic`'s
primitives standing on the floor near the middle. The camera moves along a smooth path, an
arc of an ellipse around the room's centre at a gently varying height, looking at a point
that drifts across the middle of the room: consecutive frames overlap, as in a video
(DL3DV). Frames are rendered by exact ray casting at any size, square or ``H x W``
(analytic ray/box and ray/primitive intersections, the shading of
:mod:`lrm_jax.data.shading`), with depth (camera z) at every pixel, so masks are all ones.

Randomness is per index, as the object source's (``synthetic.scene_rng``).
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from lrm_jax import cameras
from lrm_jax.data import shading
from lrm_jax.data import synthetic


@dataclasses.dataclass(frozen=True, eq=False)
class Room:
  """A room ``[-hx, hx] x [-hy, hy] x [0, hz]`` and the objects in it.

  Attributes:
    half_extents: ``(hx, hy, hz)``: half width and depth, and the full height.
    patterns: ``[6]`` pattern of the faces ``-x, +x, -y, +y, floor, ceiling``
      (:data:`synthetic.PATTERNS` indices).
    colors: ``[6, 2, 3]`` the two colours of each face's pattern.
    frequencies: ``[6]`` pattern cells per unit length.
    objects: the primitives of all objects, as one :class:`synthetic.SyntheticObject`.
  """

  half_extents: np.ndarray
  patterns: np.ndarray
  colors: np.ndarray
  frequencies: np.ndarray
  objects: synthetic.SyntheticObject


def _merge_objects(objs: list[synthetic.SyntheticObject],
                   offsets: list[np.ndarray]) -> synthetic.SyntheticObject:
  """The primitives of ``objs``, each object moved by its offset, as one object."""
  cat = lambda name: np.concatenate([getattr(o, name) for o in objs])
  centers = np.concatenate([o.centers + off for o, off in zip(objs, offsets)])
  return dataclasses.replace(objs[0], kinds=cat("kinds"), rotations=cat("rotations"),
                             centers=centers, sizes=cat("sizes"), patterns=cat("patterns"),
                             colors=cat("colors"), frequencies=cat("frequencies"))


def sample_room(rng: np.random.Generator) -> Room:
  """A random room with 2-4 objects on its floor within the middle third."""
  hx, hy = rng.uniform(2.0, 3.5, size=2)
  hz = rng.uniform(2.4, 3.2)
  patterns = rng.integers(0, len(synthetic.PATTERNS), size=6)
  colors = rng.uniform(0.15, 0.95, size=(6, 2, 3))
  frequencies = rng.uniform(1.0, 3.0, size=6)
  objs, offsets = [], []
  for _ in range(int(rng.integers(2, 5))):
    obj = synthetic.sample_object(rng, max_radius=0.6)
    lowest = float(np.min(obj.centers[:, 2] - synthetic.primitive_radii(obj.kinds,
                                                                      obj.sizes)))
    xy = rng.uniform(-1.0, 1.0, size=2) * np.array([hx, hy]) / 3.0
    objs.append(obj)
    offsets.append(np.array([xy[0], xy[1], -lowest]))  # standing on the floor
  return Room(np.array([hx, hy, hz]), patterns, colors, frequencies,
              _merge_objects(objs, offsets))


def camera_path(rng: np.random.Generator, room: Room, num_frames: int, resolution,
                fov_deg=(50.0, 70.0)) -> tuple[np.ndarray, np.ndarray]:
  """A smooth path of ``num_frames`` cameras: ``c2w [F, 4, 4]`` (OpenCV), ``intrinsics
  [F, 4]`` for ``resolution`` (an int: a square, or ``(H, W)``) with one horizontal field
  of view, drawn from ``fov_deg``, for the whole path (square pixels, centred principal
  point)."""
  hx, hy, hz = room.half_extents
  start = rng.uniform(0.0, 2 * np.pi)
  arc = rng.uniform(0.5, 1.0) * np.pi
  s = np.linspace(0.0, 1.0, num_frames)
  angle = start + arc * s
  radius = rng.uniform(0.55, 0.75)
  eye = np.stack([radius * hx * np.cos(angle), radius * hy * np.sin(angle),
                  hz * (0.45 + 0.08 * np.sin(2 * np.pi * s + rng.uniform(0, 6.3)))], -1)
  drift = rng.uniform(-0.4, 0.4, size=(2, 2))
  target = np.stack([drift[0, 0] + drift[1, 0] * s, drift[0, 1] + drift[1, 1] * s,
                     np.full_like(s, 0.6)], -1)
  c2w = np.stack([cameras.look_at(e, t, np.array([0.0, 0.0, 1.0]))
                  for e, t in zip(eye, target)])
  fov = np.deg2rad(rng.uniform(*fov_deg))
  k = cameras.intrinsics_from_fov(fov, *cameras.image_hw(resolution))
  return c2w.astype(np.float32), np.broadcast_to(k, (num_frames, 4)).astype(np.float32)


@np.errstate(divide="ignore", invalid="ignore")
def _room_hits(room: Room, origins: np.ndarray, dirs: np.ndarray):
  """Where rays from inside the room leave it: ``t [N]`` and face ``[N]`` (0..5)."""
  hx, hy, hz = room.half_extents
  lo, hi = np.array([-hx, -hy, 0.0]), np.array([hx, hy, hz])
  t_axis = np.where(dirs > 0, (hi - origins) / dirs, (lo - origins) / dirs)  # [N, 3]
  t_axis = np.where(dirs == 0, np.inf, t_axis)
  axis = np.argmin(t_axis, axis=-1)
  t = t_axis[np.arange(len(t_axis)), axis]
  positive = dirs[np.arange(len(dirs)), axis] > 0
  return t, 2 * axis + positive.astype(np.int64)


def _shade_room(room: Room, face: np.ndarray, points: np.ndarray,
                dirs: np.ndarray) -> np.ndarray:
  """Shaded colours ``[M, 3]`` of hit points on the room's faces."""
  normals = np.zeros_like(points)
  axis = face // 2
  normals[np.arange(len(face)), axis] = np.where(face % 2 == 1, -1.0, 1.0)  # inward
  cell = np.floor(points * room.frequencies[face][:, None]).astype(np.int64)
  # Stripes run along the face (never along its normal): the in-face axis after `axis`.
  along = cell[np.arange(len(face)), (axis + 1) % 3]
  across = cell[np.arange(len(face)), (axis + 2) % 3]
  pattern = room.patterns[face]
  which = np.select([pattern == 1, pattern == 2], [along % 2, (along + across) % 2], 0)
  albedo = room.colors[face, which]
  return shading.shade(albedo, normals, dirs)


def _render_view(room: Room, c2w: np.ndarray, intrinsics: np.ndarray, height: int,
                 width: int) -> tuple[np.ndarray, np.ndarray]:
  """One frame: ``rgb [H, W, 3]`` and depth (camera z) ``[H, W]``."""
  origins, dirs = cameras.get_rays(np.asarray(c2w, np.float64),
                                   np.asarray(intrinsics, np.float64), height, width,
                                   normalize=False)  # camera z of dirs = 1: t is depth
  origins, dirs = origins.reshape(-1, 3), dirs.reshape(-1, 3)
  t_room, face = _room_hits(room, origins, dirs)
  t_obj, prim = synthetic._nearest_hits(room.objects, origins, dirs)  # pylint: disable=protected-access
  on_obj = t_obj < t_room
  rgb = np.zeros((origins.shape[0], 3), np.float32)
  i = np.nonzero(on_obj)[0]
  rgb[i] = synthetic._shade_hits(room.objects, prim[i],  # pylint: disable=protected-access
                                 origins[i] + t_obj[i, None] * dirs[i], dirs[i], True)
  j = np.nonzero(~on_obj)[0]
  rgb[j] = _shade_room(room, face[j], origins[j] + t_room[j, None] * dirs[j], dirs[j])
  depth = np.where(on_obj, t_obj, t_room).astype(np.float32)
  return rgb.reshape(height, width, 3), depth.reshape(height, width)


def render_frames(room: Room, c2w: np.ndarray, intrinsics: np.ndarray, height: int,
                  width: int, supersample: int = 1) -> tuple[np.ndarray, np.ndarray]:
  """``rgb [F, H, W, 3]`` and depth ``[F, H, W, 1]`` (camera z, box-filtered over ``s x s``
  rays per pixel) of ``room`` from cameras ``c2w [F, 4, 4]``, ``intrinsics [F, 4]``."""
  s = int(supersample)
  intr = cameras.resize_intrinsics(np.asarray(intrinsics, np.float64).reshape(-1, 4),
                                   (height, width), (height * s, width * s))
  views = [_render_view(room, c, k, height * s, width * s) for c, k in zip(c2w, intr)]
  box = lambda x: x.reshape(x.shape[0], height, s, width, s, x.shape[-1]).mean(axis=(2, 4))
  rgb = box(np.stack([v[0] for v in views]))
  depth = box(np.stack([v[1] for v in views])[..., None])
  return rgb.astype(np.float32), depth.astype(np.float32)


class SyntheticRooms:
  """Random-access source of video-like frames of procedural rooms (grain-compatible).

  Example: ``images [F, H, W, 3]``, ``masks`` (ones), ``depths [F, H, W, 1]``, ``c2w``,
  ``intrinsics``, ``scene_id``, ``has_depth`` = 1; ``F = views_per_scene`` frames in path
  order. ``resolution`` is an int (``H = W``) or ``(H, W)`` (``data.input_hw``); the field
  of view ``fov_deg`` is horizontal, so a square and a wider view of a scene share their
  focal length in pixels of the width, and a square's pixels do not depend on which form
  gives its size.
  """

  def __init__(self, split: str = "train", num_scenes: int = 1000, views_per_scene: int = 24,
               resolution: int | tuple = 64, seed: int = 0, supersample: int = 1,
               fov_deg=(50.0, 70.0)):
    synthetic.split_code(split)
    if num_scenes < 1 or views_per_scene < 1:
      raise ValueError("num_scenes and views_per_scene must be positive.")
    self.split = split
    self.num_scenes = int(num_scenes)
    self.views_per_scene = int(views_per_scene)
    try:
      self.height, self.width = cameras.image_hw(resolution)
    except ValueError as e:
      raise ValueError(f"SyntheticRooms resolution: {e}") from None
    # An int stays an int (the square sources' form); (H, W) a tuple.
    self.resolution = (int(resolution) if isinstance(resolution, (int, np.integer))
                       else (self.height, self.width))
    self.seed = int(seed)
    self.supersample = int(supersample)
    self.fov_deg = tuple(float(f) for f in fov_deg)

  def __len__(self) -> int:
    return self.num_scenes

  def scene(self, idx: int) -> tuple[Room, np.ndarray, np.ndarray]:
    """The room and its camera path (``c2w [F, 4, 4]``, ``intrinsics [F, 4]``)."""
    rng = synthetic.scene_rng(self.seed, self.split, synthetic.check_index(idx, len(self)))
    room = sample_room(rng)
    c2w, intrinsics = camera_path(rng, room, self.views_per_scene,
                                  (self.height, self.width), self.fov_deg)
    return room, c2w, intrinsics

  def __getitem__(self, idx) -> dict[str, np.ndarray]:
    idx = synthetic.check_index(idx, len(self))
    room, c2w, intrinsics = self.scene(idx)
    rgb, depth = render_frames(room, c2w, intrinsics, self.height, self.width,
                               self.supersample)
    return {"images": rgb, "masks": np.ones_like(depth), "depths": depth, "c2w": c2w,
            "intrinsics": intrinsics, "scene_id": np.int64(idx),
            "has_depth": np.float32(1.0)}

  def write_scene(self, idx: int, out_dir: str) -> str:
    """Writes scene ``idx`` as Long-LRM's scene JSON (``OUT/room_<idx>.json``) with its
    frames as PNGs (``OUT/room_<idx>/NNN.png``): a scene folder to try the folder source,
    scene lists and ``reconstruct`` on. Returns the JSON path."""
    from PIL import Image  # pylint: disable=g-import-not-at-top
    ex = self[idx]
    name = f"room_{int(idx)}"
    os.makedirs(os.path.join(out_dir, name), exist_ok=True)
    frames = []
    for i, (rgb, c2w, k) in enumerate(zip(ex["images"], ex["c2w"], ex["intrinsics"])):
      rel = os.path.join(name, f"{i:03d}.png")
      Image.fromarray(np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)).save(
          os.path.join(out_dir, rel))
      frames.append({"file_path": rel, "w2c": cameras.c2w_to_w2c(
          c2w.astype(np.float64)).tolist(), "h": self.height, "w": self.width,
                     "fx": float(k[0]), "fy": float(k[1]), "cx": float(k[2]),
                     "cy": float(k[3])})
    path = os.path.join(out_dir, name + ".json")
    with open(path, "w") as f:
      json.dump({"scene_name": name, "frames": frames}, f)
    return path

  def __repr__(self) -> str:
    return (f"SyntheticRooms(split={self.split!r}, num_scenes={self.num_scenes}, "
            f"views_per_scene={self.views_per_scene}, resolution={self.resolution}, "
            f"seed={self.seed}, supersample={self.supersample}, fov_deg={self.fov_deg})")
