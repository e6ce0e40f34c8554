"""grain pipeline: view sampling, crops with intrinsics, determinism, resumable iterator, TFDS."""

import time

import numpy as np
import pytest

from configs import grm
from lrm_jax import cameras as cam
from lrm_jax.data import pipeline, sources, tfds_builder, view_sampling
from lrm_jax.errors import ConfigError


class ToySource:
  """A deterministic in-memory source of 8-view scenes (picklable, module level)."""

  def __init__(self, n=6, v=8, size=16):
    self.n, self.v, self.size = n, v, size

  def __len__(self):
    return self.n

  def __repr__(self):
    return f"ToySource({self.n})"

  def __getitem__(self, idx):
    rng = np.random.default_rng(idx)
    s, v = self.size, self.v
    c2w = cam.orbit_cameras(np.linspace(0, 360, v, endpoint=False), np.full(v, 20.0), 2.2)
    k = np.tile(np.asarray([s, s, s / 2, s / 2], np.float32), (v, 1))
    return {"images": rng.random((v, s, s, 3), dtype=np.float32),
            "masks": (rng.random((v, s, s, 1)) > 0.5).astype(np.float32),
            "depths": rng.random((v, s, s, 1), dtype=np.float32),
            "c2w": c2w.astype(np.float32), "intrinsics": k, "scene_id": np.int64(idx)}


def toy_config(**data):
  c = grm.get_config("tiny")
  c.data.update(dict(num_input_views=2, num_target_views=3, input_size=8, target_size=16,
                     target_crop=10, batch_size=2, render_size=16))
  c.data.update(data)
  return c


def take(it, n):
  return [next(it) for _ in range(n)]


def assert_batches_equal(a, b):
  for x, y in zip(a, b):
    for leaf_x, leaf_y in zip(_leaves(x), _leaves(y)):
      np.testing.assert_array_equal(leaf_x, leaf_y)


def _leaves(tree):
  if isinstance(tree, dict):
    return [l for k in sorted(tree) for l in _leaves(tree[k])]
  return [tree]


def test_batch_shapes_and_intrinsics_follow_crop():
  src = ToySource()
  batch = next(pipeline.make_iterator(toy_config(), source=src))
  assert batch["inputs"]["images"].shape == (2, 2, 8, 8, 3)
  assert batch["inputs"]["c2w"].shape == (2, 2, 4, 4)
  assert batch["targets"]["images"].shape == (2, 3, 10, 10, 3)
  assert batch["targets"]["depths"].shape == (2, 3, 10, 10, 1)
  # Every target crop is an exact window of its full view, and its intrinsics are the
  # full-view intrinsics shifted by the window offset.
  for b in range(2):
    ex = src[int(batch["scene_id"][b])]
    for v in range(3):
      crop = batch["targets"]["images"][b, v]
      matches = [(vi, t, l) for vi in range(8) for t in range(7) for l in range(7)
                 if np.array_equal(ex["images"][vi, t:t + 10, l:l + 10], crop)]
      assert len(matches) == 1
      vi, t, l = matches[0]
      np.testing.assert_allclose(batch["targets"]["intrinsics"][b, v],
                                 ex["intrinsics"][vi] - [0, 0, l, t])
      np.testing.assert_array_equal(batch["targets"]["c2w"][b, v], ex["c2w"][vi])
  # Inputs are 16 -> 8 resizes: intrinsics halve.
  np.testing.assert_allclose(batch["inputs"]["intrinsics"][0, 0], [8, 8, 4, 4])


def test_strided_crops_are_every_kth_pixel_with_the_same_rays():
  """``data.target_crop_stride = 3``: a 5 x 5 crop is pixels ``(t + 3 i, l + 3 j)`` of a
  16^2 view, and its cameras' rays are the full view's rays at exactly those pixels."""
  src = ToySource()
  batch = next(pipeline.make_iterator(toy_config(target_crop=5, target_crop_stride=3),
                                      source=src))
  assert batch["targets"]["images"].shape == (2, 3, 5, 5, 3)
  for b in range(2):
    ex = src[int(batch["scene_id"][b])]
    for v in range(3):
      crop = batch["targets"]["images"][b, v]
      matches = [(vi, t, l) for vi in range(8) for t in range(4) for l in range(4)
                 if np.array_equal(ex["images"][vi, t:t + 13:3, l:l + 13:3], crop)]
      assert len(matches) == 1
      vi, t, l = matches[0]
      np.testing.assert_array_equal(batch["targets"]["depths"][b, v],
                                    ex["depths"][vi, t:t + 13:3, l:l + 13:3])
      full = cam.get_rays(ex["c2w"][vi], ex["intrinsics"][vi], 16, 16)
      ours = cam.get_rays(batch["targets"]["c2w"][b, v], batch["targets"]["intrinsics"][b, v],
                          5, 5)
      for want, got in zip(full, ours):
        np.testing.assert_allclose(got, want[t:t + 13:3, l:l + 13:3], atol=1e-5)
  with pytest.raises(ConfigError, match="target_crop_stride=4"):
    next(pipeline.make_iterator(toy_config(target_crop=5, target_crop_stride=4), source=src))
  with pytest.raises(ConfigError, match="target_crop_stride must be >= 1, got 0"):
    next(pipeline.make_iterator(toy_config(target_crop=5, target_crop_stride=0), source=src))
  # Refused where the sampler is made, before any example is read.
  with pytest.raises(ConfigError, match="does not fit in 16x16"):
    view_sampling.ViewSampler(1, 1, 16, 16, target_crop=7, crop_stride=3)


def test_views_are_distinct_per_example():
  batch = next(pipeline.make_iterator(toy_config(target_crop=0), source=ToySource()))
  c2w = np.concatenate([batch["inputs"]["c2w"], batch["targets"]["c2w"]], axis=1)
  for b in range(2):
    pos = c2w[b, :, :3, 3]
    assert len({tuple(np.round(p, 4)) for p in pos}) == 5


def test_orbit_inputs_take_the_first_views_and_draw_targets_from_the_rest():
  src = ToySource()
  batch = next(pipeline.make_iterator(toy_config(target_crop=0, orbit_inputs=True),
                                      source=src))
  assert batch["inputs"]["depths"].shape == (2, 2, 8, 8, 1)
  for b in range(2):
    ex = src[int(batch["scene_id"][b])]
    np.testing.assert_array_equal(batch["inputs"]["c2w"][b], ex["c2w"][:2])
    for v in range(3):  # each target is one of views 2..7
      hits = [i for i in range(8) if np.array_equal(ex["c2w"][i], batch["targets"]["c2w"][b, v])]
      assert len(hits) == 1 and hits[0] >= 2


def test_stream_is_deterministic_and_seeded():
  a = take(pipeline.make_iterator(toy_config(), source=ToySource()), 4)
  b = take(pipeline.make_iterator(toy_config(), source=ToySource()), 4)
  assert_batches_equal(a, b)
  c = toy_config()
  c.seed = 1
  other = take(pipeline.make_iterator(c, source=ToySource()), 4)
  assert not all(np.array_equal(x["scene_id"], y["scene_id"]) and
                 np.array_equal(x["targets"]["images"], y["targets"]["images"])
                 for x, y in zip(a, other))


def test_restoring_iterator_state_gives_identical_stream():
  it = pipeline.make_iterator(toy_config(), source=ToySource())
  take(it, 3)
  state = it.get_state()
  expected = take(it, 4)  # crosses an epoch boundary (6 scenes, batch 2)
  it2 = pipeline.make_iterator(toy_config(), source=ToySource())
  it2.set_state(state)
  assert_batches_equal(take(it2, 4), expected)


class CountingSource(ToySource):
  """ToySource that counts the examples read (threads share the instance)."""

  def __init__(self, **kw):
    super().__init__(**kw)
    self.reads = 0

  def __getitem__(self, idx):
    self.reads += 1
    return super().__getitem__(idx)


def test_prefetch_bounds_read_ahead_and_never_changes_the_stream():
  """data.prefetch batches are read ahead (not grain's default 500), and the batches, and
  iterator states, are the same for any prefetch depth."""
  source = CountingSource(n=64)
  it = pipeline.make_iterator(toy_config(prefetch=2), source=source)
  first = take(it, 1)
  time.sleep(0.5)  # let the background threads fill their buffer
  assert source.reads <= 2 * (1 + 2) + 2, source.reads  # batch 2: 1 taken + 2 ahead (+1 racing)
  reference = first + take(it, 3)
  for prefetch in (0, 1, 4):
    assert_batches_equal(take(pipeline.make_iterator(toy_config(prefetch=prefetch),
                                                     source=ToySource(n=64)), 4), reference)
  a = pipeline.make_iterator(toy_config(prefetch=0), source=ToySource(n=64))
  take(a, 2)
  b = pipeline.make_iterator(toy_config(prefetch=3), source=ToySource(n=64))
  b.set_state(a.get_state())
  assert_batches_equal(take(b, 2), reference[2:])
  with pytest.raises(ValueError, match="data.prefetch"):
    pipeline.make_iterator(toy_config(prefetch=-1), source=ToySource())


def test_eval_split_uses_fixed_views_and_is_finite():
  c = toy_config()
  batches = list(pipeline.make_iterator(c, split="eval", source=ToySource(n=4)))
  assert len(batches) == 2
  again = list(pipeline.make_iterator(c, split="eval", source=ToySource(n=4)))
  assert_batches_equal(batches, again)


def test_eval_scores_whole_target_views_not_training_crops():
  c = toy_config()  # target_crop=10 of target_size=16
  train = next(pipeline.make_iterator(c, source=ToySource(n=4)))
  assert train["targets"]["images"].shape[2:4] == (10, 10)
  ev = next(iter(pipeline.make_iterator(c, split="eval", source=ToySource(n=4))))
  assert ev["targets"]["images"].shape[2:4] == (16, 16)
  # The whole view, resized: the eval target is the source view at 16^2 (no crop offset).
  np.testing.assert_array_equal(ev["targets"]["intrinsics"][0, 0],
                                np.asarray([16, 16, 8, 8], np.float32))


def test_too_few_views_is_a_clear_error():
  c = toy_config(num_input_views=6, num_target_views=6)
  with pytest.raises(ValueError, match="has 8 views but 6 input \\+ 6 target"):
    next(pipeline.make_iterator(c, source=ToySource()))


def test_tfds_round_trip_is_bit_exact(tmp_path):
  src = ToySource(n=4)
  tfds_builder.build({"train": src, "validation": sources.Subset(src, [0])}, "toy",
                     str(tmp_path))
  back = sources.make_source(f"tfds:toy:{tmp_path}", toy_config().data, split="train")
  assert len(back) == 4
  got = {int(back[i]["scene_id"]): back[i] for i in range(4)}
  for i in range(4):
    ref = src[i]
    for key in ("images", "masks", "depths", "c2w", "intrinsics", "scene_id"):
      np.testing.assert_array_equal(got[i][key], ref[key])
      assert got[i][key].dtype == np.asarray(ref[key]).dtype
  # It feeds the grain pipeline as any source does.
  batch = next(pipeline.make_iterator(toy_config(), source=back))
  assert batch["targets"]["images"].shape == (2, 3, 10, 10, 3)
  import sys
  assert "tensorflow" not in sys.modules


def test_missing_tfds_dataset_is_a_clear_error(tmp_path):
  src = sources.make_source(f"tfds:nothing:{tmp_path}", toy_config().data)
  with pytest.raises(FileNotFoundError, match="lrm_multiview/nothing"):
    len(src)


def test_unknown_source_spec():
  with pytest.raises(ValueError, match="unknown data source 'bogus'"):
    sources.make_source("bogus", toy_config().data)
  with pytest.raises(FileNotFoundError, match="nope.obj does not exist"):
    sources.make_source("mesh:nope.obj", toy_config().data)
