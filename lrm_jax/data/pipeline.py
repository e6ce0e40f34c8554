"""The grain input pipeline: view sampling, resize, crops, batching, per-process sharding.

  source -> shuffle(seed) -> repeat -> sample views (random_map) -> batch(per-process
         batch) -> this process's batches -> iterator (checkpointable) [-> worker processes]

Every random choice comes from grain's per-element generator seeded from ``config.seed``,
so the stream is a pure function of the config; ``iterator.get_state()`` /
``set_state()`` (or orbax's ``grain.checkpoint`` args) resume it exactly.

A batch is a dict of numpy arrays (per process)::

  inputs:  images [B, Vi, H, W, 3], masks [B, Vi, H, W, 1], depths [B, Vi, H, W, 1],
           c2w [B, Vi, 4, 4], intrinsics [B, Vi, 4]
  targets: images [B, Vt, Ht, Wt, 3], masks, depths [B, Vt, Ht, Wt, 1], c2w, intrinsics
  scene_id [B]

Depths are camera z, 0 where unknown (off the object, or a source without depth); models
may use input depths only as a training signal (e.g. GRM's ``loss.input_depth``).

with ``H = W = data.input_size`` and ``Ht = Wt = data.target_crop or data.target_size``;
with ``data.input_hw = (H, W)`` (Long-LRM) inputs and targets are ``H x W`` (targets
``target_crop`` squares if it is set): :func:`view_sampling.view_hw`.
"""

from __future__ import annotations

import grain
import jax
import numpy as np

from lrm_jax import cameras as cam
from lrm_jax.data import sources
from lrm_jax.data import view_sampling
from lrm_jax.data.view_sampling import ViewSampler


VIEW_FIELDS = ("images", "masks", "depths", "c2w", "intrinsics")


def extra_view_fields(spec: dict | None) -> tuple:
  """The per-view fields of a batch spec beyond :data:`VIEW_FIELDS`."""
  if spec is None:
    return ()
  names = set(spec["inputs"]) | set(spec["targets"])
  return tuple(sorted(names - set(VIEW_FIELDS)))


def sampler_from_config(data_config, fixed_views: bool = False,
                        extra_fields: tuple = ()) -> ViewSampler:
  """The view sampler of ``data``; evaluation (``fixed_views``) takes
  ``data.eval_input_views`` inputs when it is set (a model trained with N views scored on
  fewer or more), and scores whole ``target_size`` views: ``data.target_crop`` crops only
  training targets (scored crops would be mostly background, and a different part of each
  view per run)."""
  d = data_config
  num_input = d.num_input_views
  if fixed_views and d.get("eval_input_views", 0) > 0:
    num_input = d.eval_input_views
  crop = 0 if fixed_views else d.target_crop
  hw = view_sampling.configured_hw(d)  # (H, W) for inputs and targets, or None: squares
  args = (num_input, d.num_target_views, hw or d.input_size, hw or d.target_size,
          crop, fixed_views, bool(d.get("orbit_inputs", False)), tuple(extra_fields))
  if d.get("frame_window"):  # scene-level: a frame window, normalised by the inputs
    from lrm_jax.data import scene_sampling  # pylint: disable=g-import-not-at-top
    return scene_sampling.WindowSampler(*args, window=tuple(d.frame_window),
                                        normalize=bool(d.get("normalize_scene", True)),
                                        ordered=bool(d.get("eval_index", "")))
  return ViewSampler(*args, d.get("eval_protocol", ""),
                     tuple(d.get("eval_protocol_inputs", ())),
                     bool(d.get("target_crop_in_mask", False)),
                     int(d.get("target_crop_stride", 1)))


def check_batch(batch: dict, spec: dict) -> None:
  """Raises ``DataError`` naming the field if a per-process ``batch`` does not have the
  names, per-example shapes and dtypes of the (global) batch ``spec``."""
  from lrm_jax.errors import DataError
  flat_b = dict(jax.tree_util.tree_flatten_with_path(batch)[0])
  flat_s = dict(jax.tree_util.tree_flatten_with_path(spec)[0])
  name = jax.tree_util.keystr
  missing = sorted(name(k) for k in set(flat_s) - set(flat_b))
  extra = sorted(name(k) for k in set(flat_b) - set(flat_s))
  if missing or extra:
    raise DataError(f"the data pipeline's batch does not match the model's batch_spec: "
                    f"missing {missing}, unexpected {extra}.")
  for key, want in flat_s.items():
    got = np.asarray(flat_b[key])
    if got.shape[1:] != tuple(want.shape[1:]) or got.dtype != want.dtype:
      raise DataError(f"batch field {name(key)}: the pipeline gives {got.dtype}"
                      f"{list(got.shape)}, the model's batch_spec wants {want.dtype}"
                      f"{list(want.shape)} (first axis: examples).")


def per_process_batch_size(global_batch: int) -> int:
  n = jax.process_count()
  if global_batch % n:
    raise ValueError(f"data.batch_size={global_batch} is not divisible by the "
                     f"{n} processes.")
  return global_batch // n


def make_dataset(config, split: str = "train", source=None,
                 spec: dict | None = None) -> grain.MapDataset:
  """The (infinite for train) per-process MapDataset of batches for ``config``; ``spec``
  (the family's batch spec) adds its extra per-view fields."""
  d = config.data
  if source is None:
    source = sources.make_source(d.source, d, split=split, seed=config.seed)
  train = split == "train"
  ds = grain.MapDataset.source(source)
  if train and d.shuffle:
    ds = ds.shuffle(seed=config.seed)
  if train:
    ds = ds.repeat(None)
  sampler = sampler_from_config(d, fixed_views=not train, extra_fields=extra_view_fields(spec))
  bs = per_process_batch_size(d.batch_size)
  pi, pc = jax.process_index(), jax.process_count()
  if train:
    # Each process reads (and samples views of) only its own rows. Seeding by the global
    # index and slicing after batching makes process p's batch k rows [p*bs, (p+1)*bs) of
    # global batch k: the global batch does not depend on the number of processes.
    ds = ds.random_map(sampler, seed=config.seed + 1).batch(bs, drop_remainder=True)
    return ds[pi::pc]
  # Evaluation: a disjoint slice per process, so every process gets as many batches.
  ds = ds[pi::pc].random_map(sampler, seed=config.seed + 1)
  return ds.batch(bs, drop_remainder=False)


def make_iterator(config, split: str = "train", source=None, spec: dict | None = None):
  """A checkpointable iterator of per-process batches (worker processes if configured).

  ``data.prefetch`` batches are prepared ahead by as many background threads (0: each batch
  is made when it is asked for). grain's default (16 threads, 500 elements) would keep
  hundreds of batches in memory and compete with an XLA:CPU step for the cores. The
  batches do not depend on it: each is a pure function of its index.
  """
  prefetch = int(config.data.get("prefetch", 2))
  if prefetch < 0:
    raise ValueError(f"data.prefetch must be >= 0, got {prefetch}.")
  read = grain.ReadOptions(num_threads=prefetch, prefetch_buffer_size=prefetch)
  ds = make_dataset(config, split, source, spec).to_iter_dataset(read)
  if config.data.num_workers > 0:
    from absl import flags
    if not flags.FLAGS.is_parsed():  # grain workers read absl flags (scripts, notebooks)
      flags.FLAGS.mark_as_parsed()
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=config.data.num_workers))
  return iter(ds)


def batch_cameras(views: dict) -> cam.Cameras:
  """``Cameras [B, V]`` of the ``inputs`` or ``targets`` part of a batch (``H x W`` from
  its images ``[B, V, H, W, 3]``)."""
  height, width = views["images"].shape[-3:-1]
  return cam.Cameras(views["c2w"], views["intrinsics"], height, width)
