"""The scene layouts pixelNeRF's data come in: SRN, DVR/NMR and DTU (``rs_dtu_4``).

Read by the folder source (:mod:`lrm_jax.data.folder`, which dispatches here), and written
by the ``write_*`` functions (tests, conversions). Everything is converted to the library's
convention (OpenCV c2w, pixel intrinsics with pixel centres at +0.5) here, at the edge.

* ``srn``: ``rgb/*.png``, ``pose/*.txt`` (a 4x4 (or 3x4) OpenCV c2w, 16 or 12 numbers),
  ``intrinsics.txt`` (first line ``f cx cy 0``, last line ``H W``; intrinsics are rescaled
  when the images have another size). The mask is "not pure white" (SRN renders on white).
* ``dvr`` (DVR / NMR): ``image/*.png``, ``mask/*.png`` (optional), ``cameras.npz`` with
  ``world_mat_i`` (OpenCV w2c, 3x4 or 4x4; ``world_mat_inv_i`` is used when present) and
  ``camera_mat_i`` (intrinsics for an image spanning ``[-1, 1]``: ``f * W / 2``, principal
  point ``(p + 1) * W / 2``).
* ``dtu``: ``image/*.png`` (or ``*.png`` in the scene folder), ``cameras.npz`` with
  ``world_mat_i`` = ``K [R | t]`` (a 3x4 or 4x4 projection, decomposed here) and optional
  ``scale_mat_i`` (IDR's normalisation: ``x_world = S x_normalised``; cameras are moved into
  the normalised frame). No masks (ones).

View ``i`` of a ``cameras.npz`` is the ``i``-th image in sorted order. Bad input raises
:class:`DataError` naming the file and the key.
"""

from __future__ import annotations

import glob
import os

import numpy as np
from PIL import Image

from lrm_jax import cameras as cam
from lrm_jax.errors import DataError

LAYOUTS = ("srn", "dvr", "dtu")
_EXTS = (".png", ".jpg", ".jpeg", ".PNG", ".JPG", ".JPEG")


def _images(folder: str) -> list[str]:
  return sorted(f for f in glob.glob(os.path.join(folder, "*")) if f.endswith(_EXTS))


def _size(path: str) -> tuple[int, int]:
  try:
    with Image.open(path) as im:
      return im.height, im.width
  except OSError as e:
    raise DataError(f"{path}: cannot open image ({e}).") from e


def detect_layout(root: str) -> str | None:
  """``"srn"``, ``"dvr"``, ``"dtu"`` or None for a scene folder."""
  if (os.path.isfile(os.path.join(root, "intrinsics.txt"))
      and os.path.isdir(os.path.join(root, "pose"))):
    return "srn"
  npz = os.path.join(root, "cameras.npz")
  if not os.path.isfile(npz):
    return None
  try:
    with np.load(npz) as cams:
      keys = set(cams.files)
  except (OSError, ValueError) as e:
    raise DataError(f"{npz}: cannot read ({e}).") from e
  return "dvr" if any(k.startswith("camera_mat_") for k in keys) else "dtu"


# ---- SRN -------------------------------------------------------------------------------


def _numbers(path: str, what: str) -> list[list[float]]:
  try:
    with open(path) as f:
      return [[float(x) for x in line.split()] for line in f if line.strip()]
  except OSError as e:
    raise DataError(f"{path}: cannot read {what} ({e}).") from e
  except ValueError as e:
    raise DataError(f"{path}: {what} is not whitespace-separated numbers ({e}).") from e


def read_srn(root: str, need_images: bool = True) -> dict:
  """An SRN scene folder -> the fields of :class:`lrm_jax.data.folder.SceneCameras`."""
  k_path = os.path.join(root, "intrinsics.txt")
  lines = _numbers(k_path, "intrinsics")
  if len(lines) < 2 or len(lines[0]) < 3 or len(lines[-1]) != 2:
    raise DataError(f"{k_path}: expected a first line 'f cx cy 0' and a last line 'H W'.")
  f, cx, cy = lines[0][:3]
  h0, w0 = int(lines[-1][0]), int(lines[-1][1])
  pose_files = sorted(glob.glob(os.path.join(root, "pose", "*.txt")))
  if not pose_files:
    raise DataError(f"{os.path.join(root, 'pose')}: no .txt poses found.")
  by_name = {os.path.splitext(os.path.basename(p))[0]: p
             for p in _images(os.path.join(root, "rgb"))}
  paths, c2w = [], []
  for p in pose_files:
    name = os.path.splitext(os.path.basename(p))[0]
    if name not in by_name and need_images:
      raise DataError(f"{p}: no matching image rgb/{name}.png.")
    paths.append(by_name.get(name, os.path.join(root, "rgb", name + ".png")))
    values = [x for line in _numbers(p, "pose") for x in line]
    if len(values) not in (12, 16):
      raise DataError(f"{p}: a pose has 16 (4x4) or 12 (3x4) numbers, found {len(values)}.")
    m = np.asarray(values, np.float64).reshape(-1, 4)
    c2w.append(cam.to_homogeneous(m) if m.shape == (3, 4) else m)
  h, w = _size(paths[0]) if os.path.isfile(paths[0]) else (h0, w0)
  sx, sy = w / w0, h / h0  # intrinsics.txt may be for another resolution
  intr = np.tile([f * sx, f * sy, cx * sx, cy * sy], (len(paths), 1))
  return dict(paths=paths, c2w=np.stack(c2w), intrinsics=intr, sizes=[(h, w)] * len(paths),
              manifest=k_path, mask_paths=None, mask_from_white=True)


def write_srn(root: str, images: np.ndarray, c2w: np.ndarray, intrinsics: np.ndarray) -> None:
  """Writes one scene in the SRN layout (``images [V, H, W, 3]`` in [0, 1], OpenCV ``c2w
  [V, 4, 4]``, one ``intrinsics (f, f, cx, cy)``: SRN has a single focal length)."""
  os.makedirs(os.path.join(root, "rgb"), exist_ok=True)
  os.makedirs(os.path.join(root, "pose"), exist_ok=True)
  h, w = images.shape[1:3]
  f, _, cx, cy = np.asarray(intrinsics, np.float64).reshape(-1, 4)[0]
  with open(os.path.join(root, "intrinsics.txt"), "w") as fh:
    fh.write(f"{float(f)!r} {float(cx)!r} {float(cy)!r} 0.\n0. 0. 0.\n1.\n{h} {w}\n")
  for i, (im, m) in enumerate(zip(images, c2w)):
    _save(os.path.join(root, "rgb", f"{i:06d}.png"), im)
    with open(os.path.join(root, "pose", f"{i:06d}.txt"), "w") as fh:
      fh.write(" ".join(repr(float(x)) for x in np.asarray(m, np.float64).reshape(-1)) + "\n")


# ---- DVR / NMR and DTU (cameras.npz) ---------------------------------------------------


def _npz(root: str) -> tuple[str, dict]:
  path = os.path.join(root, "cameras.npz")
  try:
    with np.load(path) as f:
      return path, {k: np.asarray(f[k], np.float64) for k in f.files}
  except (OSError, ValueError) as e:
    raise DataError(f"{path}: cannot read ({e}).") from e


def _key(cams: dict, key: str, path: str, shapes) -> np.ndarray:
  if key not in cams:
    raise DataError(f"{path}: missing {key!r} (one per image, in sorted image order).")
  m = cams[key]
  if m.shape not in shapes:
    raise DataError(f"{path}: {key!r} has shape {m.shape}, expected one of {list(shapes)}.")
  if not np.all(np.isfinite(m)):
    raise DataError(f"{path}: {key!r} has non-finite values.")
  return m


def _image_list(root: str, path: str) -> list[str]:
  folder = os.path.join(root, "image")
  files = _images(folder) if os.path.isdir(folder) else _images(root)
  if not files:
    raise DataError(f"{path}: no images in {folder} (or {root}).")
  return files


def read_dvr(root: str, need_images: bool = True) -> dict:
  """A DVR/NMR scene folder -> the fields of :class:`lrm_jax.data.folder.SceneCameras`."""
  del need_images  # the views are the images: they must exist
  path, cams = _npz(root)
  paths = _image_list(root, path)
  h, w = _size(paths[0])
  c2w, intr = [], []
  for i in range(len(paths)):
    if f"world_mat_inv_{i}" in cams:
      m = _key(cams, f"world_mat_inv_{i}", path, [(4, 4), (3, 4)])
      pose = cam.to_homogeneous(m) if m.shape == (3, 4) else m
    else:
      m = _key(cams, f"world_mat_{i}", path, [(4, 4), (3, 4)])
      w2c = cam.to_homogeneous(m) if m.shape == (3, 4) else m
      if abs(np.linalg.det(w2c[:3, :3])) < 1e-9:
        raise DataError(f"{path}: 'world_mat_{i}' is not invertible.")
      pose = np.linalg.inv(w2c)
    k = _key(cams, f"camera_mat_{i}", path, [(4, 4), (3, 3), (3, 4)])
    fx, fy = k[0, 0] * w / 2.0, k[1, 1] * h / 2.0
    if fx <= 0 or fy <= 0:
      raise DataError(f"{path}: 'camera_mat_{i}' has non-positive focal lengths "
                      f"({k[0, 0]}, {k[1, 1]}).")
    intr.append([fx, fy, (k[0, 2] + 1.0) * w / 2.0, (k[1, 2] + 1.0) * h / 2.0])
    c2w.append(pose)
  masks = None
  mask_dir = os.path.join(root, "mask")
  if os.path.isdir(mask_dir):
    masks = _images(mask_dir)
    if len(masks) != len(paths):
      raise DataError(f"{mask_dir}: {len(masks)} masks for {len(paths)} images in "
                      f"{os.path.dirname(paths[0])}; counts must match.")
  return dict(paths=paths, c2w=np.stack(c2w), intrinsics=np.asarray(intr),
              sizes=[_size(p) for p in paths], manifest=path, mask_paths=masks,
              mask_from_white=False)


def decompose_projection(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """``K [R | t]`` (``[3, 4]``) -> ``(K [3, 3] with K[2, 2] = 1 and a positive diagonal,
  OpenCV c2w [4, 4])`` (what ``cv2.decomposeProjectionMatrix`` gives, as a c2w)."""
  m = p[:, :3]
  if np.linalg.det(m) < 0:  # -P is the same projection; make R a rotation
    p, m = -p, -m
  # RQ decomposition of m = K R through QR of the row-reversed transpose.
  flip = np.eye(3)[::-1]
  q, r = np.linalg.qr((flip @ m).T)
  k = flip @ r.T @ flip
  rot = flip @ q.T
  signs = np.diag(np.sign(np.diag(k)))  # make K's diagonal positive (signs @ signs = I)
  k, rot = k @ signs, signs @ rot
  centre = -np.linalg.solve(m, p[:, 3])
  c2w = np.eye(4)
  c2w[:3, :3], c2w[:3, 3] = rot.T, centre
  return k / k[2, 2], c2w


def read_dtu(root: str, need_images: bool = True) -> dict:
  """A DTU scene folder (pixelNeRF's ``rs_dtu_4``) -> the fields of
  :class:`lrm_jax.data.folder.SceneCameras`."""
  del need_images
  path, cams = _npz(root)
  paths = _image_list(root, path)
  c2w, intr = [], []
  for i in range(len(paths)):
    proj = _key(cams, f"world_mat_{i}", path, [(4, 4), (3, 4)])[:3]
    if abs(np.linalg.det(proj[:, :3])) < 1e-12:
      raise DataError(f"{path}: 'world_mat_{i}' is not a camera projection (singular).")
    k, pose = decompose_projection(proj)
    if f"scale_mat_{i}" in cams:
      s = _key(cams, f"scale_mat_{i}", path, [(4, 4)])
      scale = np.diag(s[:3, :3])
      if np.any(scale <= 0) or np.ptp(scale) > 1e-6 * scale.max():
        raise DataError(f"{path}: 'scale_mat_{i}' must be an isotropic positive scale and a "
                        f"translation, got diagonal {scale}.")
      pose[:3, 3] = (pose[:3, 3] - s[:3, 3]) / scale[0]
    c2w.append(pose)
    intr.append([k[0, 0], k[1, 1], k[0, 2], k[1, 2]])
  return dict(paths=paths, c2w=np.stack(c2w), intrinsics=np.asarray(intr),
              sizes=[_size(p) for p in paths], manifest=path, mask_paths=None,
              mask_from_white=False)


def write_dvr(root: str, images: np.ndarray, c2w: np.ndarray, intrinsics: np.ndarray,
              masks: np.ndarray | None = None) -> None:
  """Writes one scene in the DVR/NMR layout (``image/``, ``mask/``, ``cameras.npz``)."""
  os.makedirs(os.path.join(root, "image"), exist_ok=True)
  h, w = images.shape[1:3]
  cams = {}
  for i, (im, m, k) in enumerate(zip(images, c2w, intrinsics)):
    _save(os.path.join(root, "image", f"{i:04d}.png"), im)
    if masks is not None:
      os.makedirs(os.path.join(root, "mask"), exist_ok=True)
      _save(os.path.join(root, "mask", f"{i:04d}.png"), masks[i][..., 0])
    cams[f"world_mat_{i}"] = np.linalg.inv(np.asarray(m, np.float64))
    cm = np.eye(4)
    cm[0, 0], cm[1, 1] = k[0] * 2.0 / w, k[1] * 2.0 / h
    cm[0, 2], cm[1, 2] = k[2] * 2.0 / w - 1.0, k[3] * 2.0 / h - 1.0
    cams[f"camera_mat_{i}"] = cm
  np.savez(os.path.join(root, "cameras.npz"), **cams)


def write_dtu(root: str, images: np.ndarray, c2w: np.ndarray, intrinsics: np.ndarray,
              scale: float = 1.0, offset=(0.0, 0.0, 0.0)) -> None:
  """Writes one scene in the DTU layout: ``image/*.png`` and ``cameras.npz`` with
  ``world_mat_i = K [R | t]`` of the cameras in a world where ``x_world = scale x + offset``
  (``scale_mat_i`` records that normalisation; ``c2w`` are in the normalised frame)."""
  os.makedirs(os.path.join(root, "image"), exist_ok=True)
  s = np.eye(4)
  s[:3, :3] *= scale
  s[:3, 3] = offset
  cams = {}
  for i, (im, m, k) in enumerate(zip(images, c2w, intrinsics)):
    _save(os.path.join(root, "image", f"{i:06d}.png"), im)
    world = s @ np.asarray(m, np.float64)  # camera in the unnormalised world
    world[:3, :3] /= scale  # keep the rotation a rotation
    kmat = np.asarray([[k[0], 0, k[2]], [0, k[1], k[3]], [0, 0, 1]], np.float64)
    proj = np.eye(4)
    proj[:3] = kmat @ np.linalg.inv(world)[:3]
    cams[f"world_mat_{i}"] = proj
    cams[f"scale_mat_{i}"] = s
  np.savez(os.path.join(root, "cameras.npz"), **cams)


def _save(path: str, image: np.ndarray) -> None:
  Image.fromarray((np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)).save(path)


def white_mask(rgb: np.ndarray) -> np.ndarray:
  """``[H, W, 1]``: 1 where a pixel is not pure white (SRN renders on white)."""
  return np.any(rgb < 1.0 - 1e-6, axis=-1, keepdims=True).astype(np.float32)


def read_mask(path: str, size: tuple[int, int]) -> np.ndarray:
  """A mask image -> ``[H, W, 1]`` in [0, 1] (any channel count: the first is used)."""
  try:
    with Image.open(path) as im:
      m = np.asarray(im, np.float32)
  except OSError as e:
    raise DataError(f"{path}: cannot open mask ({e}).") from e
  m = m[..., 0] if m.ndim == 3 else m
  if m.shape != tuple(size):
    raise DataError(f"{path}: mask is {m.shape[1]}x{m.shape[0]}, its image "
                    f"{size[1]}x{size[0]}.")
  return (m / (255.0 if m.max() > 1 else 1.0))[..., None]


# ---- evaluation protocols --------------------------------------------------------------

# pixelNeRF's DTU protocol: input views in the order they are added (3, 6 or 9 views) and
# the views never scored (they see too little of the object).
DTU_INPUTS = (25, 22, 28, 40, 44, 48, 0, 8, 13)
DTU_EXCLUDED = tuple(range(3, 8)) + tuple(range(16, 22)) + tuple(range(36, 40))
# SRN: the input view (one view), then the second (two views).
SRN_INPUTS = (64, 104)
PROTOCOLS = ("", "srn", "dtu")


def protocol_views(protocol: str, num_views: int, num_inputs: int,
                   inputs: tuple = ()) -> tuple[np.ndarray, np.ndarray]:
  """``(input indices, target indices)`` of a scene with ``num_views`` views.

  ``"srn"``: inputs ``inputs`` (default the first ``num_inputs`` of 64, 104), every other
  view a target. ``"dtu"``: inputs the first ``num_inputs`` of :data:`DTU_INPUTS` (or
  ``inputs``), targets every view that is neither an input nor in :data:`DTU_EXCLUDED`.
  """
  if protocol not in ("srn", "dtu"):
    raise ValueError(f"unknown evaluation protocol {protocol!r}; choose one of "
                     f"{PROTOCOLS[1:]} (or '' for the first views).")
  table = SRN_INPUTS if protocol == "srn" else DTU_INPUTS
  chosen = tuple(inputs) or table[:num_inputs]
  if len(chosen) != num_inputs:
    raise ValueError(f"{protocol} protocol: {num_inputs} input views asked for, the "
                     f"protocol lists {len(chosen)} ({chosen}).")
  if max(chosen) >= num_views:
    raise ValueError(f"{protocol} protocol: input view {max(chosen)} asked for, but the "
                     f"scene has {num_views} views.")
  skip = set(chosen) | (set(DTU_EXCLUDED) if protocol == "dtu" else set())
  targets = [i for i in range(num_views) if i not in skip]
  return np.asarray(chosen, np.int64), np.asarray(targets, np.int64)
