"""Posed images on disk: Blender/NeRF, Long-LRM (OpenCV) and OpenLRM layouts.

Three layouts are recognised in a scene folder:

* ``transforms.json`` (or ``transforms_{train,val,test}.json``, merged): Blender/NeRF. Camera
  poses are OpenGL c2w (``transform_matrix``); intrinsics from ``camera_angle_x`` (and
  optionally ``camera_angle_y``) or ``fl_x fl_y cx cy`` (top level or per frame, with ``w h``).
* ``opencv_cameras.json``: Long-LRM. ``frames[*]`` with ``w2c`` (OpenCV), ``fx fy cx cy``,
  ``w h`` and ``file_path``.
* ``rgba/NNN.png`` + ``pose/NNN.npy`` + ``intrinsics.npy``: OpenLRM. Poses are OpenCV c2w
  ``[3, 4]`` or ``[4, 4]``; ``intrinsics.npy`` is OpenLRM's ``[[fx, fy], [cx, cy], [w, h]]``
  (a 3x3 K or a ``(fx, fy, cx, cy)`` vector is accepted too).
* pixelNeRF's SRN, DVR/NMR and DTU layouts: :mod:`lrm_jax.data.pixelnerf_formats`.

Everything is converted to the library convention (OpenCV c2w, pixel intrinsics) here, at
the edge. Bad input raises :class:`DataError` naming the file and the problem.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import logging
import math
import os

import numpy as np
from PIL import Image

from lrm_jax import cameras as cam
from lrm_jax.errors import ConfigError, DataError
from lrm_jax.data import pixelnerf_formats
from lrm_jax.io import images as image_io

LAYOUTS = ("transforms.json", "opencv_cameras.json", "openlrm") + pixelnerf_formats.LAYOUTS
_IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".PNG", ".JPG", ".JPEG")


@dataclasses.dataclass
class SceneCameras:
  """Cameras of one scene as read from disk (native image size)."""

  root: str
  layout: str
  image_paths: list[str]  # [V] absolute paths ("" when the file was not found and not needed)
  c2w: np.ndarray  # [V, 4, 4] OpenCV
  intrinsics: np.ndarray  # [V, 4] pixels of the native image
  height: int
  width: int
  mask_paths: list[str] | None = None  # [V] mask images (DVR), else alpha or ones
  mask_from_white: bool = False  # mask = pixels that are not pure white (SRN)

  @property
  def names(self) -> list[str]:
    return [os.path.splitext(os.path.basename(p))[0] for p in self.image_paths]


def detect_layout(root: str) -> str:
  """The layout of a scene folder, or raise :class:`DataError` listing what was looked for."""
  if os.path.isfile(os.path.join(root, "opencv_cameras.json")):
    return "opencv_cameras.json"
  if os.path.isfile(os.path.join(root, "transforms.json")) or glob.glob(
      os.path.join(root, "transforms_*.json")):
    return "transforms.json"
  if os.path.isfile(os.path.join(root, "intrinsics.npy")) and os.path.isdir(
      os.path.join(root, "pose")):
    return "openlrm"
  layout = pixelnerf_formats.detect_layout(root)
  if layout:
    return layout
  raise DataError(f"{root}: no camera file found; expected transforms.json, "
                  "opencv_cameras.json, rgba/ + pose/ + intrinsics.npy (OpenLRM), "
                  "rgb/ + pose/ + intrinsics.txt (SRN) or cameras.npz (DVR/NMR, DTU).")


def is_scene_dir(root: str) -> bool:
  try:
    detect_layout(root)
    return True
  except DataError:
    return False


def find_scenes(root: str) -> list[str]:
  """``root`` itself if it is a scene, else its sub-folders that are scenes (sorted); a
  ``.txt`` file is Long-LRM's scene list (:func:`scene_list.read_scene_list`): its scene
  JSON paths."""
  if os.path.isfile(root) and root.endswith(".txt"):
    from lrm_jax.data import scene_list  # pylint: disable=g-import-not-at-top
    return scene_list.read_scene_list(root)
  if os.path.isfile(root) and root.endswith(".json"):  # one scene JSON of a scene list
    return [root]
  if not os.path.isdir(root):
    raise DataError(f"{root}: folder does not exist.")
  if is_scene_dir(root):
    return [root]
  scenes = sorted(os.path.join(root, d) for d in os.listdir(root)
                  if os.path.isdir(os.path.join(root, d)) and is_scene_dir(os.path.join(root, d)))
  if not scenes:
    raise DataError(f"{root}: neither a scene folder nor a folder of scene folders "
                    f"(none of the layouts {LAYOUTS} found).")
  return scenes


def _load_json(path: str) -> dict:
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise DataError(f"{path}: malformed JSON ({e}).") from e
  except OSError as e:
    raise DataError(f"{path}: cannot read ({e}).") from e


def _field(d: dict, key: str, path: str, where: str = ""):
  if key not in d:
    raise DataError(f"{path}: missing field {key!r}{where}.")
  return d[key]


def _matrix(value, shape, path: str, what: str) -> np.ndarray:
  try:
    m = np.asarray(value, np.float64)
  except (TypeError, ValueError) as e:
    raise DataError(f"{path}: {what} is not a numeric matrix ({e}).") from e
  if m.shape not in shape:
    raise DataError(f"{path}: {what} has shape {m.shape}, expected one of {shape}.")
  return m


def _resolve_image(root: str, file_path: str, manifest: str,
                   allow_outside: bool = False) -> str:
  """Finds the image a camera entry names (with or without extension).

  The path must stay inside the scene folder (no ``..`` out of it, no absolute path
  elsewhere, no symbolic link out of it) unless ``allow_outside``
  (``data.allow_outside_paths``): a camera file from elsewhere must not read any file.
  """
  path = file_path if os.path.isabs(file_path) else os.path.join(root, file_path)
  path = os.path.normpath(path)
  if not allow_outside:
    inside = os.path.realpath(root)
    real = os.path.realpath(path)
    if os.path.commonpath([inside, real]) != inside:
      raise DataError(f"{manifest}: image path {file_path!r} points outside the scene folder "
                      f"{root}; set data.allow_outside_paths=True if that is intended.")
  if os.path.isfile(path):
    return path
  for ext in _IMAGE_EXTS:
    if os.path.isfile(path + ext):
      return path + ext
  raise DataError(f"{manifest}: image {file_path!r} not found (looked for {path}).")


def _image_size(path: str) -> tuple[int, int]:
  try:
    with Image.open(path) as im:
      return im.height, im.width
  except OSError as e:
    raise DataError(f"{path}: cannot open image ({e}).") from e


def _check_poses(c2w: np.ndarray, names: list[str], manifest: str) -> None:
  for i, m in enumerate(c2w):
    cam.validate_c2w(m, f"{manifest} (camera {names[i]!r})")


def _read_blender(root: str, need_images: bool, allow_outside: bool = False) -> SceneCameras:
  files = [os.path.join(root, "transforms.json")]
  if not os.path.isfile(files[0]):
    files = sorted(glob.glob(os.path.join(root, "transforms_*.json")))
  c2ws, intr, paths, sizes = [], [], [], []
  for manifest in files:
    meta = _load_json(manifest)
    frames = _field(meta, "frames", manifest)
    if not isinstance(frames, list) or not frames:
      raise DataError(f"{manifest}: 'frames' must be a non-empty list.")
    for k, frame in enumerate(frames):
      where = f" in frame {k}"
      fp = _field(frame, "file_path", manifest, where)
      if need_images:
        path = _resolve_image(root, fp, manifest, allow_outside)
      else:
        try:
          path = _resolve_image(root, fp, manifest, allow_outside)
        except DataError:
          path = os.path.normpath(os.path.join(root, fp))
      pose = _matrix(_field(frame, "transform_matrix", manifest, where), [(4, 4), (3, 4)],
                     manifest, f"transform_matrix of frame {k}")
      if pose.shape == (3, 4):
        pose = cam.to_homogeneous(pose)
      c2ws.append(pose)
      get = lambda key, default=None, f=frame: f.get(key, meta.get(key, default))  # pylint: disable=cell-var-from-loop
      w, h = get("w"), get("h")
      if (w is None or h is None):
        if os.path.isfile(path):
          h, w = _image_size(path)
        else:
          raise DataError(f"{manifest}: frame {k} has no 'w'/'h' and its image {path} is "
                          "missing, so the image size is unknown.")
      w, h = int(w), int(h)
      if get("fl_x") is not None:
        fx = float(get("fl_x"))
        fy = float(get("fl_y", fx))
        cx = float(get("cx", w / 2.0))
        cy = float(get("cy", h / 2.0))
      elif get("camera_angle_x") is not None:
        fx = float(cam.fov_to_focal(float(get("camera_angle_x")), w))
        ay = get("camera_angle_y")
        fy = float(cam.fov_to_focal(float(ay), h)) if ay is not None else fx
        cx, cy = float(get("cx", w / 2.0)), float(get("cy", h / 2.0))
      else:
        raise DataError(f"{manifest}: no intrinsics: need 'camera_angle_x' or "
                        "'fl_x' (+ 'fl_y', 'cx', 'cy').")
      intr.append([fx, fy, cx, cy])
      paths.append(path)
      sizes.append((h, w))
  c2w = cam.opengl_to_opencv(np.stack(c2ws))
  names = [os.path.basename(p) for p in paths]
  _check_poses(c2w, names, files[0])
  return _finish(root, "transforms.json", paths, c2w, np.asarray(intr), sizes, files[0])


def _read_opencv(root: str, need_images: bool, allow_outside: bool = False,
                 manifest: str | None = None) -> SceneCameras:
  """Long-LRM's camera JSON: ``root/opencv_cameras.json`` or ``manifest`` (a scene JSON of
  a scene list, whose ``file_path``s are relative to ``root``, its folder)."""
  manifest = manifest or os.path.join(root, "opencv_cameras.json")
  meta = _load_json(manifest)
  frames = _field(meta, "frames", manifest) if isinstance(meta, dict) else meta
  if not isinstance(frames, list) or not frames:
    raise DataError(f"{manifest}: 'frames' must be a non-empty list.")
  w2cs, intr, paths, sizes = [], [], [], []
  for k, frame in enumerate(frames):
    where = f" in frame {k}"
    w2c = _matrix(_field(frame, "w2c", manifest, where), [(4, 4), (3, 4)], manifest,
                  f"w2c of frame {k}")
    if w2c.shape == (3, 4):
      w2c = cam.to_homogeneous(w2c)
    w2cs.append(w2c)
    fp = _field(frame, "file_path", manifest, where)
    path = (_resolve_image(root, fp, manifest, allow_outside) if need_images
            else os.path.normpath(os.path.join(root, fp)))
    intr.append([float(_field(frame, key, manifest, where)) for key in ("fx", "fy", "cx", "cy")])
    if "w" in frame and "h" in frame:
      sizes.append((int(frame["h"]), int(frame["w"])))
    elif os.path.isfile(path):
      sizes.append(_image_size(path))
    else:
      raise DataError(f"{manifest}: frame {k} has no 'w'/'h' and no readable image.")
    paths.append(path)
  w2c = np.stack(w2cs)
  names = [os.path.basename(p) for p in paths]
  if not np.all(np.isfinite(w2c)):
    bad = names[int(np.argmax(~np.isfinite(w2c).all(axis=(1, 2))))]
    raise DataError(f"{manifest}: camera {bad!r}: w2c contains non-finite values.")
  dets = np.linalg.det(w2c[:, :3, :3])
  if np.any(np.abs(dets) < 1e-6):
    bad = names[int(np.argmin(np.abs(dets)))]
    raise DataError(f"{manifest}: camera {bad!r}: w2c is not invertible.")
  c2w = cam.invert_rigid(w2c)
  _check_poses(c2w, names, manifest)
  return _finish(root, "opencv_cameras.json", paths, c2w, np.asarray(intr), sizes, manifest)


def _openlrm_intrinsics(path: str) -> tuple[np.ndarray, tuple[int, int] | None]:
  try:
    k = np.load(path)
  except (OSError, ValueError) as e:
    raise DataError(f"{path}: cannot read intrinsics ({e}).") from e
  k = np.asarray(k, np.float64)
  if k.shape == (3, 2):  # [[fx, fy], [cx, cy], [w, h]]
    return np.asarray([k[0, 0], k[0, 1], k[1, 0], k[1, 1]]), (int(k[2, 1]), int(k[2, 0]))
  if k.shape == (3, 3):
    return np.asarray([k[0, 0], k[1, 1], k[0, 2], k[1, 2]]), None
  if k.shape == (4,):
    return k, None
  raise DataError(f"{path}: intrinsics have shape {k.shape}; expected [3, 2] "
                  "([[fx, fy], [cx, cy], [w, h]]), [3, 3] K or [4] (fx, fy, cx, cy).")


def _read_openlrm(root: str, need_images: bool, allow_outside: bool = False) -> SceneCameras:
  k_path = os.path.join(root, "intrinsics.npy")
  k, size = _openlrm_intrinsics(k_path)
  pose_files = sorted(glob.glob(os.path.join(root, "pose", "*.npy")))
  rgba_files = sorted(f for f in glob.glob(os.path.join(root, "rgba", "*"))
                      if f.endswith(_IMAGE_EXTS))
  if not pose_files:
    raise DataError(f"{os.path.join(root, 'pose')}: no .npy poses found.")
  pose_names = [os.path.splitext(os.path.basename(p))[0] for p in pose_files]
  rgba_by_name = {os.path.splitext(os.path.basename(p))[0]: p for p in rgba_files}
  if need_images and len(rgba_files) != len(pose_files):
    raise DataError(f"{root}: {len(rgba_files)} images in rgba/ but {len(pose_files)} poses "
                    "in pose/; counts must match.")
  paths = []
  for name in pose_names:
    if name in rgba_by_name:
      paths.append(rgba_by_name[name])
    elif need_images:
      raise DataError(f"{root}: pose/{name}.npy has no matching image in rgba/.")
    else:
      paths.append(os.path.join(root, "rgba", name + ".png"))
  poses = []
  for p in pose_files:
    try:
      m = np.load(p)
    except (OSError, ValueError) as e:
      raise DataError(f"{p}: cannot read pose ({e}).") from e
    m = _matrix(m, [(4, 4), (3, 4)], p, "pose")
    poses.append(cam.to_homogeneous(m) if m.shape == (3, 4) else m)
  c2w = np.stack(poses)
  _check_poses(c2w, pose_names, os.path.join(root, "pose"))
  if size is None:
    if not os.path.isfile(paths[0]):
      raise DataError(f"{k_path}: image size unknown (no [w, h] row and no images).")
    size = _image_size(paths[0])
  intr = np.broadcast_to(k, (len(poses), 4))
  return _finish(root, "openlrm", paths, c2w, intr, [size] * len(poses), k_path)


def _finish(root, layout, paths, c2w, intr, sizes, manifest) -> SceneCameras:
  if len(set(sizes)) != 1:
    raise DataError(f"{manifest}: views have different image sizes {sorted(set(sizes))}; "
                    "one size per scene is supported.")
  if not np.all(np.isfinite(intr)) or np.any(np.asarray(intr)[:, :2] <= 0):
    raise DataError(f"{manifest}: intrinsics must be finite with positive focal lengths.")
  h, w = sizes[0]
  return SceneCameras(root, layout, list(paths), c2w.astype(np.float32),
                      np.asarray(intr, np.float32), h, w)


def read_scene_cameras(root: str, need_images: bool = True,
                       allow_outside: bool = False) -> SceneCameras:
  """Reads the cameras (and image paths) of one scene folder in any supported layout;
  image paths must stay inside ``root`` unless ``allow_outside``. ``root`` may also be a
  scene JSON file of Long-LRM's format (an entry of a scene list)."""
  if root.endswith(".json") and os.path.isfile(root):
    return _read_opencv(os.path.dirname(root), need_images, allow_outside, manifest=root)
  layout = detect_layout(root)
  if layout in pixelnerf_formats.LAYOUTS:
    reader = {"srn": pixelnerf_formats.read_srn, "dvr": pixelnerf_formats.read_dvr,
              "dtu": pixelnerf_formats.read_dtu}[layout]
    f = reader(root, need_images)
    c2w = f["c2w"].astype(np.float64)
    names = [os.path.basename(p) for p in f["paths"]]
    _check_poses(c2w, names, f["manifest"])
    scene = _finish(root, layout, f["paths"], c2w, f["intrinsics"], f["sizes"], f["manifest"])
    scene.mask_paths, scene.mask_from_white = f["mask_paths"], f["mask_from_white"]
    return scene
  reader = {"transforms.json": _read_blender, "opencv_cameras.json": _read_opencv,
            "openlrm": _read_openlrm}[layout]
  return reader(root, need_images, allow_outside)


def load_image(path: str, background=(1.0, 1.0, 1.0)) -> tuple[np.ndarray, np.ndarray]:
  """Reads an image as float32 ``rgb [H, W, 3]`` composited on ``background`` and
  ``mask [H, W, 1]`` (alpha, or ones for images without alpha).

  Every PIL mode a capture may hold (:func:`lrm_jax.io.images.read_image`); bad files
  raise :class:`DataError` naming them.
  """
  rgb, alpha = image_io.read_image(path)
  if alpha is not None:
    rgb = rgb * alpha + np.asarray(background, np.float32) * (1.0 - alpha)
    return rgb.astype(np.float32), alpha
  return rgb.astype(np.float32), np.ones(rgb.shape[:2] + (1,), np.float32)


def check_visible(path: str, mask: np.ndarray, on_transparent: str = "warn") -> None:
  """A view whose alpha is zero everywhere shows nothing: a warning naming the file
  (``"warn"``, once per file) or a :class:`DataError` (``"error"``)."""
  if np.any(mask > 0):
    return
  message = (f"{path}: alpha is zero everywhere; the view is plain background "
             "(data.transparent_views=error makes this an error).")
  if on_transparent == "error":
    raise DataError(message)
  if path not in _WARNED:
    _WARNED.add(path)
    logging.warning(message)
    print(f"warning: {message}")


_WARNED: set[str] = set()


def crop_window(height: int, width: int, size) -> tuple[int, int, int, int]:
  """The centred window ``(top, left, crop_h, crop_w)`` of a ``height x width`` view with
  the aspect ratio of ``size`` (an int: a square, or ``(H, W)``), as large as fits.

  1920x1080 to ``(544, 960)``: the centre 1906x1080 (which resizes to 960x544, as scaling
  to cover, 967x544, and cropping the centre 960x544 does up to a native pixel).
  """
  out_h, out_w = cam.image_hw(size)
  crop_h = min(height, int(round(width * out_h / out_w)))
  crop_w = min(width, int(round(height * out_w / out_h)))
  return (height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w


def resize_view(rgb: np.ndarray, mask: np.ndarray, intrinsics: np.ndarray,
                size) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Resizes a view to exactly ``size`` (an int: a square, or ``(H, W)``) without
  stretching: the centred window of that aspect ratio (:func:`crop_window`), resized to
  ``size``; the mask likewise, and the intrinsics follow (``cameras.crop_intrinsics``,
  ``cameras.resize_intrinsics``). ``rgb [h, w, 3]``, ``mask [h, w, 1]`` -> ``[H, W, .]``."""
  out_h, out_w = cam.image_hw(size)
  top, left, crop_h, crop_w = crop_window(rgb.shape[0], rgb.shape[1], (out_h, out_w))
  rgb = rgb[top:top + crop_h, left:left + crop_w]
  mask = mask[top:top + crop_h, left:left + crop_w]
  k = cam.crop_intrinsics(np.asarray(intrinsics, np.float32), top, left)
  if (crop_h, crop_w) != (out_h, out_w):
    up = out_h > crop_h or out_w > crop_w
    rgb = np.asarray(Image.fromarray((rgb * 255 + 0.5).astype(np.uint8)).resize(
        (out_w, out_h), Image.BICUBIC if up else Image.LANCZOS), np.float32) / 255.0
    mask = np.asarray(Image.fromarray(mask[..., 0]).resize(
        (out_w, out_h), Image.BILINEAR), np.float32)[..., None]
    k = cam.resize_intrinsics(k, (crop_h, crop_w), (out_h, out_w))
  return rgb, mask, k


class FolderScenes:
  """grain random-access source over scene folders (one example per scene).

  Args:
    root: a scene folder or a folder of scene folders, in any layout of this module.
    resolution: views are resized to this by :func:`resize_view` (None: native size): an
      int (the centre square, resized) or ``(H, W)`` (the centre window of that aspect
      ratio, resized to exactly ``H x W``: ``data.input_hw``).
    background: RGBA images are composited onto this colour; alpha becomes the mask.
    normalize: ``"none"``, ``"object"`` (cameras rescaled so the mean camera distance to the
      origin is ``object_radius``) or ``"scene"`` (Long-LRM: average pose, max translation).
    transparent_views: an all-transparent view is a warning (``"warn"``) or an error.
    allow_outside_paths: let camera files name images outside the scene folder.
  """

  def __init__(self, root: str, resolution: int | tuple | None = None, background=(1.0, 1.0, 1.0),
               normalize: str = "none", object_radius: float = 2.0, scenes=None,
               transparent_views: str = "warn", allow_outside_paths: bool = False):
    if transparent_views not in ("warn", "error"):
      raise ConfigError(f"data.transparent_views must be 'warn' or 'error', got "
                        f"{transparent_views!r}.")
    self.transparent_views = transparent_views
    self.allow_outside_paths = allow_outside_paths
    self.root = root
    self.resolution = resolution
    self.background = tuple(float(b) for b in background)
    self.normalize = normalize
    self.object_radius = object_radius
    self.scenes = list(scenes) if scenes is not None else find_scenes(root)

  def __len__(self) -> int:
    return len(self.scenes)

  def __repr__(self) -> str:
    return (f"FolderScenes(root={self.root!r}, scenes={len(self.scenes)}, "
            f"resolution={self.resolution}, normalize={self.normalize!r})")

  def subset(self, indices) -> "FolderScenes":
    return FolderScenes(self.root, self.resolution, self.background, self.normalize,
                        self.object_radius, [self.scenes[i] for i in indices],
                        self.transparent_views, self.allow_outside_paths)

  def __getitem__(self, idx: int) -> dict:
    scene = read_scene_cameras(self.scenes[idx], allow_outside=self.allow_outside_paths)
    images, masks, intr = [], [], []
    for i, (path, k) in enumerate(zip(scene.image_paths, scene.intrinsics)):
      rgb, mask = load_image(path, self.background)
      if scene.mask_paths:
        mask = pixelnerf_formats.read_mask(scene.mask_paths[i], rgb.shape[:2])
      elif scene.mask_from_white:
        mask = pixelnerf_formats.white_mask(rgb)
      check_visible(path, mask, self.transparent_views)
      if rgb.shape[:2] != (scene.height, scene.width):
        raise DataError(f"{path}: image is {rgb.shape[1]}x{rgb.shape[0]} but its camera "
                        f"file says {scene.width}x{scene.height}.")
      if self.resolution:
        rgb, mask, k = resize_view(rgb, mask, k, self.resolution)
      images.append(rgb)
      masks.append(mask)
      intr.append(k)
    c2w = scene.c2w
    if self.normalize == "scene":
      c2w = cam.normalize_scene(c2w)[0]
    elif self.normalize == "object":
      dist = float(np.mean(np.linalg.norm(c2w[:, :3, 3], axis=-1)))
      c2w = cam.apply_similarity_to_c2w(c2w, np.zeros(3, np.float32),
                                        self.object_radius / max(dist, 1e-8))
    images = np.stack(images).astype(np.float32)
    return {
        "images": images,
        "masks": np.stack(masks).astype(np.float32),
        "depths": np.zeros(images.shape[:-1] + (1,), np.float32),
        "c2w": np.asarray(c2w, np.float32),
        "intrinsics": np.stack(intr).astype(np.float32),
        "scene_id": np.int64(idx),
        "has_depth": np.float32(0.0),
    }


def scene_fov_deg(scene: SceneCameras) -> float:
  """Horizontal field of view of the first camera, in degrees (for logging)."""
  return math.degrees(float(cam.focal_to_fov(scene.intrinsics[0, 0], scene.width)))
