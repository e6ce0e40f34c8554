"""Per-example view sampling: which views of a scene are inputs and targets, resized and
cropped (a grain random transform; the pipeline applies it, ``data/scene_sampling.py``
extends it to frame windows)."""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image

from lrm_jax import cameras as cam
from lrm_jax.data import pixelnerf_formats


def resize_image(image: np.ndarray, size: int, resample=Image.BILINEAR) -> np.ndarray:
  """Resizes a float32 ``[H, W, C]`` image to ``[size, size, C]`` (per channel, in float)."""
  if image.shape[0] == size and image.shape[1] == size:
    return image
  if size < image.shape[0]:
    resample = Image.BOX  # area averaging: no aliasing when shrinking
  chans = [np.asarray(Image.fromarray(np.ascontiguousarray(image[..., c]), mode="F").resize(
      (size, size), resample), np.float32) for c in range(image.shape[-1])]
  return np.stack(chans, axis=-1)


def resize_depth(depth: np.ndarray, size: int) -> np.ndarray:
  """Nearest-neighbour resize of ``[H, W, 1]`` depth (never blends surface and background)."""
  if depth.shape[0] == size:
    return depth
  return np.asarray(Image.fromarray(np.ascontiguousarray(depth[..., 0]), mode="F").resize(
      (size, size), Image.NEAREST), np.float32)[..., None]


@dataclasses.dataclass(frozen=True)
class ViewSampler:
  """A grain random transform: picks input/target views, resizes and crops (picklable).

  Input views are resized to ``input_size``; target views to ``target_size`` and then
  randomly cropped to ``target_crop`` (0: no crop). Intrinsics follow every resize and crop.
  With ``fixed_views`` the first ``num_input`` views are inputs and the next ``num_target``
  are targets (for evaluation). With ``fixed_inputs`` the first ``num_input`` views are the
  inputs (a structured input ring, ``data.orbit_inputs``) and targets are drawn from the rest.
  """

  num_input: int
  num_target: int
  input_size: int
  target_size: int
  target_crop: int = 0
  fixed_views: bool = False
  fixed_inputs: bool = False
  extra_fields: tuple = ()  # per-view fields of the examples taken as they are
  # With fixed_views: an evaluation protocol ("srn", "dtu": data/pixelnerf_formats.py) picks
  # the inputs (protocol_inputs, or the protocol's own) and makes every other view a target.
  protocol: str = ""
  protocol_inputs: tuple = ()
  # Training crops centred inside the bounding box of the target's mask (pixelNeRF draws
  # its rays inside the object's box early in training); plain random crops without a mask.
  crop_in_mask: bool = False

  def __call__(self, example: dict, rng: np.random.Generator) -> dict:
    v = example["images"].shape[0]
    need = self.num_input + self.num_target
    if need > v and not (self.fixed_views and self.protocol):
      raise ValueError(f"example {int(example['scene_id'])} has {v} views but "
                       f"{self.num_input} input + {self.num_target} target views were asked "
                       "for (data.num_input_views + data.num_target_views).")
    if self.fixed_views and self.protocol:
      in_idx, tg_idx = pixelnerf_formats.protocol_views(self.protocol, v, self.num_input,
                                                        self.protocol_inputs)
      order = np.concatenate([in_idx, tg_idx])
    elif self.fixed_views:
      order = np.arange(need)
    elif self.fixed_inputs:
      order = np.concatenate([np.arange(self.num_input), self.num_input + rng.permutation(
          v - self.num_input)[:self.num_target]])
    else:
      order = rng.permutation(v)[:need]
    in_idx, tg_idx = order[:self.num_input], order[self.num_input:]
    h, w = example["images"].shape[1:3]
    if h != w:
      raise ValueError(f"example {int(example['scene_id'])}: views are {w}x{h}; the pipeline "
                       "needs square views (folder sources centre-crop when render_size is set).")
    inputs = self._views(example, in_idx, self.input_size, 0, rng)
    targets = self._views(example, tg_idx, self.target_size, self.target_crop, rng)
    return {"inputs": inputs, "targets": targets,
            "scene_id": np.asarray(example["scene_id"], np.int32)}

  def _views(self, ex, idx, size, crop, rng):
    h = ex["images"].shape[1]
    images = np.stack([resize_image(ex["images"][i], size) for i in idx])
    masks = np.stack([resize_image(ex["masks"][i], size) for i in idx])
    intr = cam.resize_intrinsics(ex["intrinsics"][idx], (h, h), (size, size))
    out = {"images": images, "masks": masks, "c2w": ex["c2w"][idx].astype(np.float32),
           "depths": np.stack([resize_depth(ex["depths"][i], size) for i in idx])}
    if crop and crop < size:
      tops = rng.integers(0, size - crop + 1, size=len(idx))
      lefts = rng.integers(0, size - crop + 1, size=len(idx))
      if self.crop_in_mask and not self.fixed_views:
        for j, m in enumerate(out["masks"]):
          rows, cols = np.nonzero(m[..., 0] > 0.5)
          if rows.size:  # a centre inside the box, the window kept inside the image
            cy = rng.integers(rows.min(), rows.max() + 1)
            cx = rng.integers(cols.min(), cols.max() + 1)
            tops[j] = np.clip(cy - crop // 2, 0, size - crop)
            lefts[j] = np.clip(cx - crop // 2, 0, size - crop)
      for key in ("images", "masks", "depths"):
        out[key] = np.stack([a[t:t + crop, l:l + crop]
                             for a, t, l in zip(out[key], tops, lefts)])
      intr = cam.crop_intrinsics(intr, tops.astype(np.float32), lefts.astype(np.float32))
    out["intrinsics"] = intr.astype(np.float32)
    for name in self.extra_fields:
      if name not in ex:
        raise ValueError(f"example {int(ex['scene_id'])} has no per-view field {name!r}, "
                         f"which the model's batch_spec asks for (it has {sorted(ex)}).")
      out[name] = np.asarray(ex[name])[idx]
    return out


# Per-view fields every batch has; a batch spec's other per-view fields are taken from the
# source's examples as they are (the family's extras, e.g. an expression code per view).
