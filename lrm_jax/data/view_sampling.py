"""Per-example view sampling: which views of a scene are inputs and targets, resized and
cropped (a grain random transform; the pipeline applies it, ``data/scene_sampling.py``
extends it to frame windows).

View sizes are an int (a square) or ``(height, width)``: ``data.input_hw`` (:func:`view_hw`)
makes inputs and targets ``H x W`` instead of the ``data.input_size`` / ``data.target_size``
squares.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image

from lrm_jax import cameras as cam
from lrm_jax.data import pixelnerf_formats
from lrm_jax.errors import ConfigError

# How far a view's aspect ratio may be from the size it is resized to (relative): a resize
# within it stretches slightly, as Long-LRM's 960x540 -> 960x544 (0.7%); beyond it a
# source must crop (the folder source does: folder.resize_view).
ASPECT_TOLERANCE = 0.01


def configured_hw(data_config) -> tuple[int, int] | None:
  """``data.input_hw`` as ``(H, W)``, or None when it is unset or ``()`` (square views)."""
  value = data_config.get("input_hw", ()) or ()
  if not len(value):
    return None
  try:
    return cam.image_hw(tuple(value))
  except (TypeError, ValueError):
    raise ConfigError(f"data.input_hw must be () or (height, width) with positive integer "
                      f"sizes, got {value!r}.") from None


def view_hw(data_config, part: str = "inputs") -> tuple[int, int]:
  """``(H, W)`` of the ``inputs`` or ``targets`` views before any crop: ``data.input_hw``
  for both when it is set, else the ``data.input_size`` / ``data.target_size`` square."""
  if part not in ("inputs", "targets"):
    raise ValueError(f"part must be 'inputs' or 'targets', got {part!r}.")
  hw = configured_hw(data_config)
  if hw:
    return hw
  return cam.image_hw(data_config.input_size if part == "inputs" else data_config.target_size)


def resize_image(image: np.ndarray, size, resample=Image.BILINEAR) -> np.ndarray:
  """Resizes a float32 ``[H, W, C]`` image to ``size`` (an int: a square, or ``(H', W')``),
  per channel, in float."""
  h, w = cam.image_hw(size)
  if image.shape[:2] == (h, w):
    return image
  if h < image.shape[0] or w < image.shape[1]:
    resample = Image.BOX  # area averaging: no aliasing when shrinking
  chans = [np.asarray(Image.fromarray(np.ascontiguousarray(image[..., c]), mode="F").resize(
      (w, h), resample), np.float32) for c in range(image.shape[-1])]
  return np.stack(chans, axis=-1)


def resize_depth(depth: np.ndarray, size) -> np.ndarray:
  """Nearest-neighbour resize of ``[H, W, 1]`` depth to ``size`` (an int or ``(H', W')``);
  never blends surface and background."""
  h, w = cam.image_hw(size)
  if depth.shape[:2] == (h, w):
    return depth
  return np.asarray(Image.fromarray(np.ascontiguousarray(depth[..., 0]), mode="F").resize(
      (w, h), Image.NEAREST), np.float32)[..., None]


def check_aspect(example: dict, size, what: str) -> None:
  """Raises ``ValueError`` if the example's views cannot be resized to ``size`` without
  stretching them by more than :data:`ASPECT_TOLERANCE`."""
  h, w = example["images"].shape[1:3]
  want_h, want_w = cam.image_hw(size)
  if abs((h / w) / (want_h / want_w) - 1.0) <= ASPECT_TOLERANCE:
    return
  raise ValueError(
      f"example {int(example['scene_id'])}: views are {w}x{h} (width x height) but {what} "
      f"are {want_w}x{want_h}: the aspect ratios differ. Square sizes need square views "
      "(folder sources centre-crop to data.render_size); data.input_hw needs a source that "
      "gives views of that aspect (rooms, folder).")


@dataclasses.dataclass(frozen=True)
class ViewSampler:
  """A grain random transform: picks input/target views, resizes and crops (picklable).

  Input views are resized to ``input_size``; target views to ``target_size`` and then
  randomly cropped to ``target_crop`` x ``target_crop`` (0: no crop), a square window
  anywhere inside the view. Sizes are an int (a square) or ``(H, W)``; a view is only
  resized to a size of its own aspect ratio (:func:`check_aspect`). Intrinsics follow every
  resize and crop.
  With ``fixed_views`` the first ``num_input`` views are inputs and the next ``num_target``
  are targets (for evaluation). With ``fixed_inputs`` the first ``num_input`` views are the
  inputs (a structured input ring, ``data.orbit_inputs``) and targets are drawn from the rest.
  """

  num_input: int
  num_target: int
  input_size: int | tuple  # an int (a square) or (H, W)
  target_size: int | tuple
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
  # Crops of every crop_stride-th row and column: target_crop x target_crop rays spread
  # over (target_crop - 1) * crop_stride + 1 pixels (1: a contiguous window).
  crop_stride: int = 1

  def __post_init__(self):
    """Refuses a crop stride below 1 and a crop that does not fit the target size here,
    before any example is read (not later inside the data pipeline's workers)."""
    if int(self.crop_stride) < 1:
      raise ConfigError(f"data.target_crop_stride must be >= 1, got {self.crop_stride}.")
    self._crop_span(self.target_crop, *cam.image_hw(self.target_size))

  def _crop_span(self, crop: int, h: int, w: int) -> int:
    """Pixels a ``crop`` covers along each axis of an ``h x w`` view at ``crop_stride``, or
    0 when the view is not cropped (no crop, or a contiguous one as large as the view).
    Raises ConfigError naming the field when the crop does not fit."""
    stride = int(self.crop_stride)
    span = (crop - 1) * stride + 1 if crop else 0
    if not crop or (stride == 1 and span >= max(h, w)):
      return 0
    if span > min(h, w):
      strided = f" (at data.target_crop_stride={stride}: {span} pixels)" if stride > 1 else ""
      raise ConfigError(f"data.target_crop={crop}{strided} does not fit in {w}x{h} "
                        "(width x height) target views (data.target_size / input_hw).")
    return span

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
    self.check_sizes(example)
    inputs = self._views(example, in_idx, self.input_size, 0, rng)
    targets = self._views(example, tg_idx, self.target_size, self.target_crop, rng)
    return {"inputs": inputs, "targets": targets,
            "scene_id": np.asarray(example["scene_id"], np.int32)}

  def check_sizes(self, example: dict) -> None:
    """The example's views have the aspect ratio of the input and target sizes."""
    check_aspect(example, self.input_size, "the input views (data.input_size / input_hw)")
    check_aspect(example, self.target_size, "the target views (data.target_size / input_hw)")

  def _views(self, ex, idx, size, crop, rng):
    """Views ``idx`` of ``ex`` resized to ``size`` (``[V, H, W, C]``), then cropped to random
    ``crop x crop`` windows when ``crop`` is set and smaller than the view."""
    src_hw = ex["images"].shape[1:3]
    h, w = cam.image_hw(size)
    images = np.stack([resize_image(ex["images"][i], (h, w)) for i in idx])
    masks = np.stack([resize_image(ex["masks"][i], (h, w)) for i in idx])
    intr = cam.resize_intrinsics(ex["intrinsics"][idx], src_hw, (h, w))
    out = {"images": images, "masks": masks, "c2w": ex["c2w"][idx].astype(np.float32),
           "depths": np.stack([resize_depth(ex["depths"][i], (h, w)) for i in idx])}
    stride = int(self.crop_stride)
    span = self._crop_span(crop, h, w)  # pixels a crop covers along each axis (0: none)
    if span:
      tops = rng.integers(0, h - span + 1, size=len(idx))
      lefts = rng.integers(0, w - span + 1, size=len(idx))
      if self.crop_in_mask and not self.fixed_views:
        for j, m in enumerate(out["masks"]):
          rows, cols = np.nonzero(m[..., 0] > 0.5)
          if rows.size:  # a centre inside the box, the window kept inside the image
            cy = rng.integers(rows.min(), rows.max() + 1)
            cx = rng.integers(cols.min(), cols.max() + 1)
            tops[j] = np.clip(cy - span // 2, 0, h - span)
            lefts[j] = np.clip(cx - span // 2, 0, w - span)
      for key in ("images", "masks", "depths"):
        out[key] = np.stack([a[t:t + span:stride, l:l + span:stride]
                             for a, t, l in zip(out[key], tops, lefts)])
      intr = cam.crop_intrinsics(intr, tops.astype(np.float32), lefts.astype(np.float32))
      if stride > 1:
        intr = cam.stride_intrinsics(intr, stride)
    out["intrinsics"] = intr.astype(np.float32)
    for name in self.extra_fields:
      if name not in ex:
        raise ValueError(f"example {int(ex['scene_id'])} has no per-view field {name!r}, "
                         f"which the model's batch_spec asks for (it has {sorted(ex)}).")
      out[name] = np.asarray(ex[name])[idx]
    return out


# Per-view fields every batch has; a batch spec's other per-view fields are taken from the
# source's examples as they are (the family's extras, e.g. an expression code per view).
