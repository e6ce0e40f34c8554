"""Writers for the three posed-image folder layouts, used by tests (and as examples)."""

import json
import os

import numpy as np
from PIL import Image

from lrm_jax import cameras as cam


def scene_cameras(n=4, h=24, w=32, seed=0):
  rng = np.random.default_rng(seed)
  az = rng.uniform(0, 360, n)
  el = rng.uniform(-10, 40, n)
  c2w = cam.orbit_cameras(az, el, 2.2).astype(np.float32)
  f = 0.9 * w
  k = np.tile(np.asarray([f, f, w / 2, h / 2], np.float32), (n, 1))
  return c2w, k


def write_images(folder, names, h, w, seed=0, alpha=True):
  os.makedirs(folder, exist_ok=True)
  rng = np.random.default_rng(seed)
  paths = []
  for name in names:
    arr = rng.integers(0, 256, size=(h, w, 4 if alpha else 3), dtype=np.uint8)
    if alpha:
      arr[..., 3] = 0
      arr[h // 4:3 * h // 4, w // 4:3 * w // 4, 3] = 255
    path = os.path.join(folder, name + ".png")
    Image.fromarray(arr).save(path)
    paths.append(path)
  return paths


def write_blender(root, c2w, k, h, w, use_fov=True):
  names = [f"r_{i}" for i in range(len(c2w))]
  write_images(os.path.join(root, "train"), names, h, w)
  gl = cam.opencv_to_opengl(c2w)
  meta = {"frames": [{"file_path": f"./train/{n}", "transform_matrix": gl[i].tolist()}
                     for i, n in enumerate(names)]}
  if use_fov:
    meta["camera_angle_x"] = float(cam.focal_to_fov(k[0, 0], w))
  else:
    meta.update(fl_x=float(k[0, 0]), fl_y=float(k[0, 1]), cx=float(k[0, 2]), cy=float(k[0, 3]),
                w=w, h=h)
  with open(os.path.join(root, "transforms.json"), "w") as f:
    json.dump(meta, f)
  return root


def write_opencv(root, c2w, k, h, w):
  names = [f"frame_{i:05d}" for i in range(len(c2w))]
  write_images(os.path.join(root, "images"), names, h, w)
  w2c = cam.invert_rigid(c2w.astype(np.float64))
  frames = [{"file_path": f"images/{n}.png", "w2c": w2c[i].tolist(), "fx": float(k[i, 0]),
             "fy": float(k[i, 1]), "cx": float(k[i, 2]), "cy": float(k[i, 3]), "w": w, "h": h}
            for i, n in enumerate(names)]
  with open(os.path.join(root, "opencv_cameras.json"), "w") as f:
    json.dump({"frames": frames}, f)
  return root


def write_openlrm(root, c2w, k, h, w):
  names = [f"{i:03d}" for i in range(len(c2w))]
  write_images(os.path.join(root, "rgba"), names, h, w)
  os.makedirs(os.path.join(root, "pose"), exist_ok=True)
  for i, n in enumerate(names):
    np.save(os.path.join(root, "pose", n + ".npy"), c2w[i, :3, :4])
  np.save(os.path.join(root, "intrinsics.npy"),
          np.asarray([[k[0, 0], k[0, 1]], [k[0, 2], k[0, 3]], [w, h]], np.float32))
  return root
