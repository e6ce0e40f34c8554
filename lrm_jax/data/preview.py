"""Contact sheet of one training batch, for a person to look at.

  python -m lrm_jax.data.preview --config=configs/grm.py:tiny --out=preview.png

Rows are examples. Each row shows the input views, then the target views, their masks and
their depths (near = bright). Any ``--config.data.*`` override works, e.g.
``--config.data.source=mesh:../shared/data/cow_mesh/cow.obj``.
"""

from __future__ import annotations

import numpy as np
from absl import flags

from lrm_jax import cli, config_loading
from lrm_jax.data import pipeline
from lrm_jax.io import images as image_io


def _define_flags():
  """Command-line flags (defined only when run as a command, so the module imports anywhere)."""
  config_loading.define_config_flag()
  flags.declare_key_flag("config")
  flags.DEFINE_string("out", "preview.png", "where to write the PNG contact sheet")
  flags.DEFINE_enum("split", "train", ["train", "eval"], "which split to show")


def contact_sheet(batch: dict) -> np.ndarray:
  """``[H', W', 3]`` image: per example, inputs | targets | target masks | target depths."""
  rows = []
  for b in range(batch["inputs"]["images"].shape[0]):
    t = batch["targets"]
    row = list(batch["inputs"]["images"][b])
    row += list(t["images"][b])
    row += list(t["masks"][b])
    row += [image_io.depth_to_image(d, m) for d, m in zip(t["depths"][b], t["masks"][b])]
    rows.append(row)
  return image_io.grid(rows)


def main(argv):
  del argv
  config = config_loading.config_from_command_line()
  batch = next(pipeline.make_iterator(config, flags.FLAGS.split))
  sheet = contact_sheet(batch)
  path = image_io.save_png(flags.FLAGS.out, sheet)
  vi = batch["inputs"]["images"].shape
  vt = batch["targets"]["images"].shape
  print(f"wrote {path}: {vi[0]} examples x ({vi[1]} inputs {vi[2]}x{vi[3]} | "
        f"{vt[1]} targets {vt[2]}x{vt[3]} | masks | depths) from source "
        f"{config.data.source!r}")


if __name__ == "__main__":
  _define_flags()
  cli.run(main, flags_parser=config_loading.flags_parser)
