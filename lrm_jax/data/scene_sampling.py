"""Scene-level view sampling (Long-LRM): inputs and targets from a window of consecutive
frames, in the world of the mean input camera.

Training draws a window of ``W`` consecutive frames (``W`` uniform in ``data.frame_window``,
at most the scene's frames), ``num_input`` input frames in it (kept in time order, reversed
half of the time) and ``num_target`` targets among the window's other frames. Evaluation
(``fixed_views``) takes the first ``W_max`` frames, inputs evenly spread over them and
targets evenly among the rest. Then, as Long-LRM: the scene is normalised by the input
cameras (:func:`cameras.normalize_scene`: the mean input pose becomes the identity, the
farthest input camera lands at distance 1), targets and depths follow.

Views are resized as :class:`view_sampling.ViewSampler` does: to the ``input_size`` /
``target_size`` squares, or to ``(H, W)`` for both with ``data.input_hw`` (Long-LRM's
paper: 544 x 960); a ``target_crop`` is a square window inside the target view.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from lrm_jax import cameras as cam
from lrm_jax.data import view_sampling


def evenly(n: int, count: int) -> np.ndarray:
  """``count`` distinct indices spread evenly over ``range(n)``."""
  return np.unique(np.round(np.linspace(0, n - 1, count)).astype(np.int64))


def normalize_views(inputs: dict, targets: dict) -> tuple[dict, dict]:
  """Both parts' ``c2w`` (and ``depths``) in the world normalised by the inputs' cameras."""
  _, transform, scale = cam.normalize_scene(inputs["c2w"])
  out = []
  for part in (inputs, targets):
    c2w = transform[None].astype(np.float64) @ np.asarray(part["c2w"], np.float64)
    c2w[:, :3, 3] *= scale
    out.append(dict(part, c2w=c2w.astype(np.float32),
                    depths=(part["depths"] * scale).astype(np.float32)))
  return out[0], out[1]


@dataclasses.dataclass(frozen=True)
class WindowSampler(view_sampling.ViewSampler):
  """:class:`view_sampling.ViewSampler` over a frame window, with scene normalisation."""

  window: tuple = (64, 128)
  normalize: bool = True
  # Evaluation on a protocol's views (dl3dv_eval.ProtocolScenes): the example's first
  # num_input views are the inputs, the next num_target the targets.
  ordered: bool = False

  def __call__(self, example: dict, rng: np.random.Generator) -> dict:
    v = example["images"].shape[0]
    need = self.num_input + self.num_target
    lo, hi = (int(w) for w in self.window)
    if need > v or need > hi:
      raise ValueError(f"example {int(example['scene_id'])}: {self.num_input} input + "
                       f"{self.num_target} target views do not fit its {v} frames within a "
                       f"window of at most {hi} (data.frame_window).")
    hi = min(hi, v)
    lo = min(max(lo, need), hi)
    if self.fixed_views and self.ordered:
      inputs = np.arange(self.num_input)
      targets = self.num_input + np.arange(self.num_target)
    elif self.fixed_views:
      inputs = evenly(hi, self.num_input)
      rest = np.setdiff1d(np.arange(hi), inputs)
      targets = rest[evenly(len(rest), self.num_target)]
    else:
      w = int(rng.integers(lo, hi + 1))
      start = int(rng.integers(0, v - w + 1))
      order = start + rng.permutation(w)[:need]
      inputs = np.sort(order[:self.num_input])
      if rng.random() < 0.5:
        inputs = inputs[::-1]
      targets = order[self.num_input:]
    self.check_sizes(example)  # square sizes, or data.input_hw of the views' aspect
    ins = self._views(example, inputs, self.input_size, 0, rng)
    tgs = self._views(example, targets, self.target_size, self.target_crop, rng)
    if self.normalize:
      ins, tgs = normalize_views(ins, tgs)
    return {"inputs": ins, "targets": tgs,
            "scene_id": np.asarray(example["scene_id"], np.int32)}
