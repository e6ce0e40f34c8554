"""Speed of the data renderers on one CPU core: procedural objects and the textured cow.

  python bench/synthetic.py

Times (median / min / max over repeats): one 128x128 view of a procedural object (over
many different objects), one default synthetic example (12 views at 64x64), one 512x512
view, and 32 views of the cow mesh at 128x128. Prints a table and appends it to
bench/RESULTS.md.
"""

import os

# Single-threaded numpy: set before numpy is imported anywhere.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
  os.environ[_var] = "1"

import sys  # pylint: disable=g-import-not-at-top,wrong-import-position
import time  # pylint: disable=g-import-not-at-top,wrong-import-position

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from bench import common  # pylint: disable=g-import-not-at-top,wrong-import-position
from lrm_jax.data import meshes  # pylint: disable=g-import-not-at-top,wrong-import-position
from lrm_jax.data import synthetic  # pylint: disable=g-import-not-at-top,wrong-import-position

COW = os.path.join(REPO, "..", "shared", "data", "cow_mesh", "cow.obj")


def _times(fn, args_list, warmup: int = 1) -> list[float]:
  """Wall seconds of ``fn(*args)`` for every ``args`` in ``args_list`` (after a warmup)."""
  for args in args_list[:warmup]:
    fn(*args)
  out = []
  for args in args_list:
    t0 = time.perf_counter()
    fn(*args)
    out.append(time.perf_counter() - t0)
  return out


def _row(case: str, size: str, times: list[float]) -> list:
  ms = np.asarray(times) * 1e3
  return [case, size, len(ms), float(np.median(ms)), float(ms.min()), float(ms.max())]


def synthetic_rows() -> list[list]:
  """One view per object over 40 objects at 128, examples at 64, one view at 512."""
  src = synthetic.SyntheticObjects(num_scenes=40, views_per_scene=1, resolution=128)
  scenes = [src.scene(i) for i in range(len(src))]
  args = [(obj, c2w, k, 128, 128) for obj, c2w, k in scenes]
  rows = [_row("synthetic: 1 view", "128x128", _times(synthetic.render_views, args))]
  example = synthetic.SyntheticObjects(num_scenes=10, views_per_scene=12, resolution=64)
  rows.append(_row("synthetic: example (12 views)", "64x64",
                   _times(example.__getitem__, [(i,) for i in range(10)])))
  big = synthetic.SyntheticObjects(num_scenes=5, views_per_scene=1, resolution=512)
  rows.append(_row("synthetic: 1 view", "512x512",
                   _times(big.__getitem__, [(i,) for i in range(5)])))
  return rows


def cow_rows() -> list[list]:
  """Loading the cow, and 32 random views of it at 128x128."""
  if not os.path.isfile(COW):
    print(f"cow mesh not found at {COW}: skipping the mesh rows")
    return []
  rows = [_row("cow: load_obj + normalize", "-", _times(
      lambda: meshes.normalize_mesh(meshes.load_obj(COW), "y"), [()] * 3))]
  src = meshes.MeshViews(COW, num_scenes=5, views_per_scene=32, resolution=128)
  rows.append(_row("cow: 32 views", "128x128",
                   _times(src.__getitem__, [(i,) for i in range(5)])))
  return rows


def main():
  rows = synthetic_rows() + cow_rows()
  common.report("Data renderers (numpy, 1 thread)",
                ["case", "size", "runs", "median ms", "min ms", "max ms"], rows,
                notes="Target: one 128x128 synthetic view <= 50 ms; 32 cow views at "
                      "128x128 in a few seconds. Synthetic objects have 1-4 primitives; "
                      "times include shading and compositing.")


if __name__ == "__main__":
  main()
