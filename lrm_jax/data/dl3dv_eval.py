"""The DL3DV-140 evaluation protocol of Long-LRM: every 8th frame is a target; the inputs
are the k-means frame lists of ``dl3dv_fold_8_kmeans_input_idx.json`` (16 or 32 per scene).

The index file is read from the path the config names (``data.eval_index``); it is never
copied into the repository. Frames are counted in the scene JSON's order (file-name order,
as :mod:`lrm_jax.data.dl3dv` writes them).
"""

from __future__ import annotations

import json

import numpy as np

from lrm_jax.errors import DataError

TARGET_EVERY = 8


def load_input_index(path: str) -> dict[str, dict[int, list[int]]]:
  """``{scene_name: {num_inputs: [frame indices]}}`` from the k-means index file."""
  try:
    with open(path) as f:
      entries = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise DataError(f"{path}: cannot read the DL3DV input index ({e}).") from e
  out = {}
  for k, entry in enumerate(entries):
    if "scene_name" not in entry:
      raise DataError(f"{path}: entry {k} has no 'scene_name'.")
    lists = {}
    for key, value in entry.items():
      if key.startswith("fold_8_kmeans_") and key.endswith("_input"):
        lists[int(key[len("fold_8_kmeans_"):-len("_input")])] = [int(i) for i in value]
    out[entry["scene_name"]] = lists
  return out


def protocol_views(num_frames: int, inputs) -> tuple[np.ndarray, np.ndarray]:
  """``(inputs, targets)`` frame indices of a scene: the given inputs and every 8th frame
  (frames 0, 8, 16, ...) that is not an input."""
  inputs = np.asarray(inputs, np.int64)
  if inputs.size == 0 or inputs.min() < 0 or inputs.max() >= num_frames:
    raise DataError(f"input frames {inputs.tolist()} are outside the scene's {num_frames} "
                    "frames.")
  targets = np.setdiff1d(np.arange(0, num_frames, TARGET_EVERY), inputs)
  return inputs, targets


class ProtocolScenes:
  """A source's examples with the protocol's views: the inputs first, then the targets
  (at most ``max_targets`` of them, evenly spread; 0: all), for the pipeline's fixed
  views. Scenes are matched by name: the source's ``scene_names[i]``."""

  def __init__(self, source, scene_names: list[str], index_path: str, num_inputs: int = 32,
               max_targets: int = 0):
    self.source = source
    self.scene_names = list(scene_names)
    self.index = load_input_index(index_path)
    self.num_inputs = int(num_inputs)
    self.max_targets = int(max_targets)
    missing = [n for n in self.scene_names if n not in self.index]
    if missing:
      raise DataError(f"{index_path}: no input frames for scenes {missing[:3]} "
                      f"({len(missing)} in all).")

  def __len__(self) -> int:
    return len(self.source)

  def views(self, idx: int, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    lists = self.index[self.scene_names[idx]]
    if self.num_inputs not in lists:
      raise DataError(f"scene {self.scene_names[idx]}: no {self.num_inputs}-view input list "
                      f"(has {sorted(lists)}).")
    inputs, targets = protocol_views(num_frames, lists[self.num_inputs])
    if self.max_targets and len(targets) > self.max_targets:
      pick = np.round(np.linspace(0, len(targets) - 1, self.max_targets)).astype(np.int64)
      targets = targets[pick]
    return inputs, targets

  def __getitem__(self, idx: int) -> dict:
    ex = self.source[idx]
    inputs, targets = self.views(idx, ex["images"].shape[0])
    order = np.concatenate([inputs, targets])
    return {k: (v[order] if isinstance(v, np.ndarray) and v.ndim and
                v.shape[0] == ex["images"].shape[0] else v) for k, v in ex.items()}

  def __repr__(self) -> str:
    return (f"ProtocolScenes({self.source!r}, inputs={self.num_inputs}, "
            f"max_targets={self.max_targets})")
