"""Read an ``lrm_multiview`` ArrayRecord dataset (written by
:mod:`lrm_jax.data.tfds_builder`) as a grain random-access source, without TensorFlow."""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

NAME = "lrm_multiview"


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
