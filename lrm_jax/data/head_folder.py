"""Multi-view head captures on disk with per-frame expression codes (Avat3r's real data).

Layout (one folder per subject; a subject is an identity; OpenCV cameras, pixels)::

  DIR/<subject>/cameras.json     {"width": W, "height": H,
                                  "cameras": {"<cam>": {"c2w": [[4x4]],
                                                        "intrinsics": [fx, fy, cx, cy]}}}
  DIR/<subject>/<frame>/expression.json      [E numbers], e.g. FLAME expression parameters
  DIR/<subject>/<frame>/<cam>.png            RGBA (alpha = mask) or RGB (mask = 1)
  DIR/<subject>/<frame>/<cam>_position.npy   optional [H, W, 3] world positions
  DIR/<subject>/<frame>/<cam>_depth.npy      optional [H, W] camera z (0 = unknown)

Without a position map the loader unprojects the depth map; with neither it fails naming the
file it looked for. Views must be square at ``data.render_size`` (Avat3r's per-pixel fields
are not resized). An example of subject ``s``: ``num_input_views`` views at different
frames (random cameras), then targets at one other frame (the remaining cameras). Landmarks
are not part of the format: they are zeros (not visible), so AKD is not computed.
:func:`write_example` writes one synthetic-heads example in this layout.
"""

from __future__ import annotations

import json
import os

import numpy as np

from lrm_jax.data import heads
from lrm_jax.data import synthetic
from lrm_jax.io import images as image_io


def write_example(example: dict, root: str, subject: str = "subject_000") -> str:
  """Writes a :class:`heads.SyntheticHeads` example: view ``i`` as camera ``cam{i:02d}``
  of the frame of its expression (one frame per distinct code). Returns the subject dir."""
  sub = os.path.join(root, subject)
  os.makedirs(sub, exist_ok=True)
  n, h, w = example["images"].shape[:3]
  cams = {f"cam{i:02d}": {"c2w": example["c2w"][i].tolist(),
                          "intrinsics": example["intrinsics"][i].tolist()} for i in range(n)}
  with open(os.path.join(sub, "cameras.json"), "w") as f:
    json.dump({"width": w, "height": h, "cameras": cams}, f)
  codes = [tuple(c) for c in example["expression"]]
  frames = sorted(set(codes), key=codes.index)
  for i in range(n):
    frame = os.path.join(sub, f"frame_{frames.index(codes[i]):03d}")
    os.makedirs(frame, exist_ok=True)
    with open(os.path.join(frame, "expression.json"), "w") as f:
      json.dump([float(x) for x in example["expression"][i]], f)
    rgba = np.concatenate([example["images"][i], example["masks"][i]], -1)
    image_io.save_png(os.path.join(frame, f"cam{i:02d}.png"), rgba)
    np.save(os.path.join(frame, f"cam{i:02d}_depth.npy"), example["depths"][i, ..., 0])
  return sub


class HeadFolder:
  """Random-access source over the subjects of a head-capture folder (grain-compatible)."""

  def __init__(self, root: str, subjects: list[str], resolution: int, views_per_scene: int,
               num_input_views: int, seed: int = 0, split: str = "train"):
    self.root, self.subjects = root, list(subjects)
    self.resolution, self.seed, self.split = int(resolution), int(seed), split
    self.views_per_scene, self.num_input_views = int(views_per_scene), int(num_input_views)

  def __len__(self) -> int:
    return len(self.subjects)

  def _read_view(self, sub: str, frame: str, cam: str, c2w, k):
    base = os.path.join(sub, frame, cam)
    if not os.path.isfile(base + ".png"):
      raise FileNotFoundError(f"head folder: missing image {base}.png")
    rgb, alpha = image_io.read_image(base + ".png")
    if rgb.shape[0] != self.resolution or rgb.shape[1] != self.resolution:
      raise ValueError(f"head folder: {base}.png is {rgb.shape[1]}x{rgb.shape[0]}; Avat3r "
                       f"needs square views at data.render_size={self.resolution}.")
    mask = np.ones(rgb.shape[:2] + (1,), np.float32) if alpha is None else alpha.reshape(
        rgb.shape[:2] + (1,)).astype(np.float32)
    depth = np.zeros_like(mask)
    if os.path.isfile(base + "_depth.npy"):
      depth = np.load(base + "_depth.npy").astype(np.float32).reshape(mask.shape)
    if os.path.isfile(base + "_position.npy"):
      pos = np.load(base + "_position.npy").astype(np.float32)
    elif np.any(depth > 0):
      pos = heads.position_map(depth[None], c2w[None], k[None])[0]
    else:
      raise FileNotFoundError(
          f"head folder: view {base}.png has neither a position map ({cam}_position.npy) "
          f"nor a depth map ({cam}_depth.npy) to derive one from, in {os.path.join(sub, frame)}.")
    return rgb.astype(np.float32), mask, depth, pos

  def __getitem__(self, idx) -> dict:
    idx = synthetic.check_index(idx, len(self))
    sub = os.path.join(self.root, self.subjects[idx])
    path = os.path.join(sub, "cameras.json")
    if not os.path.isfile(path):
      raise FileNotFoundError(f"head folder: {path} does not exist.")
    with open(path) as f:
      meta = json.load(f)
    names = sorted(meta["cameras"])
    frames = sorted(d for d in os.listdir(sub) if os.path.isdir(os.path.join(sub, d)))
    if not frames:
      raise FileNotFoundError(f"head folder: {sub} has no frame folders.")
    views = []  # (frame, cam) of every existing image
    for fr in frames:
      views += [(fr, c) for c in names if os.path.isfile(os.path.join(sub, fr, c + ".png"))]
    rng = np.random.default_rng(np.random.SeedSequence(
        [self.seed, synthetic.split_code(self.split), idx]))
    by_frame = {fr: [c for f2, c in views if f2 == fr] for fr in frames}
    target = max(frames, key=lambda fr: (len(by_frame[fr]), rng.uniform()))
    n_t = self.views_per_scene - self.num_input_views
    if len(by_frame[target]) < n_t:
      raise ValueError(f"head folder: {sub} has no frame with {n_t} target views.")
    others = [v for v in views if v[0] != target] or views
    order = rng.permutation(len(others))
    chosen, used = [], set()
    for i in order:  # inputs at different frames first
      if others[i][0] not in used:
        chosen.append(others[i]); used.add(others[i][0])
    chosen += [others[i] for i in order if others[i] not in chosen]
    chosen = chosen[:self.num_input_views]
    if len(chosen) < self.num_input_views:
      raise ValueError(f"head folder: {sub} has too few views for {self.num_input_views} inputs.")
    tgt_cams = [c for c in by_frame[target] if (target, c) not in chosen] or by_frame[target]
    chosen += [(target, c) for c in list(rng.permutation(tgt_cams))[:n_t]]

    def code(fr):
      p = os.path.join(sub, fr, "expression.json")
      if not os.path.isfile(p):
        raise FileNotFoundError(f"head folder: missing expression code {p}")
      with open(p) as f:
        return np.asarray(json.load(f), np.float32)

    out = {k: [] for k in ("images", "masks", "depths", "positions", "c2w", "intrinsics",
                           "expression")}
    for fr, c in chosen:
      c2w = np.asarray(meta["cameras"][c]["c2w"], np.float32)
      k = np.asarray(meta["cameras"][c]["intrinsics"], np.float32)
      for key, x in zip(("images", "masks", "depths", "positions"),
                        self._read_view(sub, fr, c, c2w, k)):
        out[key].append(x)
      out["c2w"].append(c2w); out["intrinsics"].append(k); out["expression"].append(code(fr))
    ex = {k: np.stack(v) for k, v in out.items()}
    ex["target_expression"] = np.broadcast_to(code(target), ex["expression"].shape).copy()
    ex["landmarks"] = np.zeros((len(chosen), heads.NUM_LANDMARKS, 3), np.float32)
    ex["scene_id"] = np.int64(idx)
    ex["has_depth"] = np.float32(np.any(ex["depths"] > 0))
    return ex


def source_for_split(root: str, d, split: str, seed: int) -> HeadFolder:
  """The subjects of ``root`` for ``split``: the last ``data.eval_fraction`` of them held
  out (all of them when there is one)."""
  if not os.path.isdir(root):
    raise FileNotFoundError(f"head folder: {root} is not a folder.")
  subs = sorted(s for s in os.listdir(root) if os.path.isfile(os.path.join(root, s, "cameras.json")))
  if not subs:
    raise FileNotFoundError(f"head folder: no <subject>/cameras.json under {root}.")
  n_eval = max(1, int(round(len(subs) * d.eval_fraction))) if len(subs) > 1 else 0
  subs = subs[:len(subs) - n_eval] if split == "train" else (subs[len(subs) - n_eval:] or subs)
  return HeadFolder(root, subs, d.render_size, d.views_per_scene, d.num_input_views, seed,
                    "val" if split == "eval" else split)
