"""Write any multi-view source to an ArrayRecord TFDS dataset, for pod-scale reading.

  python -m lrm_jax.data.tfds_builder --config=configs/grm.py:tiny \
      --source=mesh:../shared/data/cow_mesh/cow.obj --name=cow --data_dir=/data/tfds \
      --num_train=1000 --num_eval=50

Read it back with ``--config.data.source=tfds:lrm_multiview/cow:/data/tfds``. Writing and
reading need no TensorFlow: features are plain tensors (zlib), the file format is
ArrayRecord and reading goes through ``tfds.data_source`` (random access, grain-friendly).
Examples are stored exactly (float32), so a round trip is bit-exact.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

NAME = "lrm_multiview"
_KEYS_F32 = {"images": 3, "masks": 1, "depths": 1}


class LrmMultiview(tfds.core.GeneratorBasedBuilder):
  """Multi-view examples (images, masks, depths, c2w, intrinsics) of any lrm_jax source.

  The builder config name is the dataset's name (``lrm_multiview/<name>``). Set
  ``builder.sources = {"train": src, "validation": src2}`` before ``download_and_prepare``.
  """

  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="default")]

  def __init__(self, *, name: str = "default", **kwargs):
    config = tfds.core.BuilderConfig(name=name)
    self.sources = {}
    super().__init__(config=config, **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    feats = {k: tfds.features.Tensor(shape=(None, None, None, c), dtype=np.float32,
                                     encoding=tfds.features.Encoding.ZLIB)
             for k, c in _KEYS_F32.items()}
    feats["c2w"] = tfds.features.Tensor(shape=(None, 4, 4), dtype=np.float32)
    feats["intrinsics"] = tfds.features.Tensor(shape=(None, 4), dtype=np.float32)
    feats["scene_id"] = tfds.features.Scalar(dtype=np.int64)
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(feats),
                                 description="lrm_jax multi-view examples")

  def _split_generators(self, dl_manager):
    del dl_manager
    if not self.sources:
      raise ValueError("LrmMultiview: set builder.sources = {split: source} before building.")
    return {split: self._generate_examples(src) for split, src in self.sources.items()}

  def _generate_examples(self, source):
    for i in range(len(source)):
      ex = source[i]
      yield i, {k: np.asarray(ex[k]) for k in (*_KEYS_F32, "c2w", "intrinsics", "scene_id")}


def build(sources: dict, name: str, data_dir: str) -> str:
  """Writes ``{split: source}`` as ``lrm_multiview/<name>`` under ``data_dir``; returns its dir."""
  builder = LrmMultiview(name=name, data_dir=data_dir, file_format="array_record")
  builder.sources = sources
  builder.download_and_prepare()
  return builder.data_dir


class TfdsScenes:
  """grain random-access source over a built ``lrm_multiview`` dataset (no TensorFlow)."""

  def __init__(self, name: str, split: str, data_dir: str | None = None):
    self.name, self.split, self.data_dir = name, split, data_dir
    self._ds = None

  def _source(self):
    if self._ds is None:
      full = name if "/" in (name := self.name) else f"{NAME}/{name}"
      try:
        self._ds = tfds.data_source(full, split=self.split, data_dir=self.data_dir,
                                    builder_kwargs={"file_format": "array_record"})
      except Exception as e:  # tfds raises several types for a missing dataset.
        raise FileNotFoundError(
            f"tfds dataset {full!r} split {self.split!r} not found under data_dir="
            f"{self.data_dir!r}: build it with `python -m lrm_jax.data.tfds_builder` ({e}).") from e
    return self._ds

  def __len__(self) -> int:
    return len(self._source())

  def __getitem__(self, idx: int) -> dict:
    ex = self._source()[idx]
    return {k: np.asarray(v) for k, v in ex.items()}

  def __repr__(self) -> str:
    return f"TfdsScenes(name={self.name!r}, split={self.split!r}, data_dir={self.data_dir!r})"

  def __getstate__(self):
    return {"name": self.name, "split": self.split, "data_dir": self.data_dir, "_ds": None}


def main(argv=None):
  import argparse
  from lrm_jax.data import sources
  from lrm_jax.config_loading import load_config
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--config", default="configs/grm.py:tiny",
                 help="config whose data section sets resolution and views per scene")
  p.add_argument("--source", default=None, help="source spec (default: the config's)")
  p.add_argument("--name", required=True, help="dataset name: lrm_multiview/<name>")
  p.add_argument("--data_dir", required=True, help="where to write the dataset")
  p.add_argument("--num_train", type=int, default=0, help="train examples (0: all)")
  p.add_argument("--num_eval", type=int, default=0, help="validation examples (0: all)")
  args = p.parse_args(argv)
  config = load_config(args.config)
  spec = args.source or config.data.source
  out = {}
  for split, n, tfds_split in (("train", args.num_train, "train"),
                               ("eval", args.num_eval, "validation")):
    src = sources.make_source(spec, config.data, split=split, seed=config.seed)
    out[tfds_split] = sources.Subset(src, range(min(n, len(src)) if n else len(src)))
  path = build(out, args.name, args.data_dir)
  print(f"wrote {path}")


if __name__ == "__main__":
  main()
