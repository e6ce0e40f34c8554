"""Write any multi-view source to an ArrayRecord TFDS dataset, for pod-scale reading.

  python -m lrm_jax.data.tfds_builder --config=configs/grm.py:tiny \
      --source=mesh:../shared/data/cow_mesh/cow.obj --name=cow --data_dir=/data/tfds \
      --num_train=1000 --num_eval=50

The config (``--config=FILE[:arg]``, with ``--config.key=value`` overrides) sets the
resolution and views per scene. Read it back with
``--config.data.source=tfds:lrm_multiview/cow:/data/tfds`` (:mod:`lrm_jax.data.tfds_source`).
Writing and reading need no TensorFlow: features are plain tensors (zlib), the file format
is ArrayRecord and reading goes through ``tfds.data_source`` (random access,
grain-friendly).
Examples are stored exactly (float32), so a round trip is bit-exact.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

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


def main(argv):
  del argv
  from absl import flags
  from lrm_jax import config_loading
  from lrm_jax.data import sources
  f = flags.FLAGS
  config = config_loading.config_from_command_line()
  spec = f.source or config.data.source
  out = {}
  for split, n, tfds_split in (("train", f.num_train, "train"),
                               ("eval", f.num_eval, "validation")):
    src = sources.make_source(spec, config.data, split=split, seed=config.seed)
    out[tfds_split] = sources.Subset(src, range(min(n, len(src)) if n else len(src)))
  path = build(out, f.name, f.data_dir)
  print(f"wrote {path}")


if __name__ == "__main__":
  from absl import flags
  from lrm_jax import cli, config_loading
  config_loading.define_config_flag()
  flags.declare_key_flag("config")
  flags.DEFINE_string("source", None, "source spec (default: the config's data.source)")
  flags.DEFINE_string("name", None, "dataset name: lrm_multiview/<name>")
  flags.DEFINE_string("data_dir", None, "where to write the dataset")
  flags.DEFINE_integer("num_train", 0, "train examples (0: all)")
  flags.DEFINE_integer("num_eval", 0, "validation examples (0: all)")
  flags.mark_flags_as_required(["name", "data_dir"])
  cli.run(main, flags_parser=config_loading.flags_parser)
