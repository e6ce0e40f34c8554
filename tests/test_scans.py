"""Row-blocked prefix scans (lrm_jax/render/scans.py) against NumPy."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lrm_jax.render import scans

# Lengths around the row size and one that needs two levels of row totals.
LENGTHS = [1, 7, scans.ROW, scans.ROW + 1, 5 * scans.ROW - 3, scans.ROW * scans.ROW + 5]


@pytest.mark.parametrize("m", LENGTHS)
def test_integer_running_sum_and_max_equal_numpy(m):
  rng = np.random.default_rng(m)
  x = rng.integers(-1000, 1000, size=(2, m)).astype(np.int32)
  np.testing.assert_array_equal(jax.jit(scans.running_sum)(x), np.cumsum(x, axis=-1))
  np.testing.assert_array_equal(jax.jit(scans.running_max)(x), np.maximum.accumulate(x, -1))


def test_integer_scans_refuse_floats():
  with pytest.raises(TypeError, match="integers"):
    scans.running_sum(jnp.zeros(3))


def _segmented_reference(values, starts):
  """float64, element after element."""
  out = np.zeros(values.shape, np.float64)
  acc = np.zeros(values.shape[:-1])
  for i in range(values.shape[-1]):
    acc = values[..., i] + (0.0 if starts[i] else acc)
    out[..., i] = acc
  return out


@pytest.mark.parametrize("method", scans.SEGMENTED_METHODS)
@pytest.mark.parametrize("m,density", [(5, 0.3), (scans.ROW, 0.01), (3 * scans.ROW + 17, 0.002),
                                       (4 * scans.ROW, 0.0), (2500, 1.0)])
def test_segmented_cumsum_matches_a_sequential_float64_sum(m, density, method):
  rng = np.random.default_rng(m)
  values = rng.normal(size=(3, m)).astype(np.float32)
  starts = rng.random(m) < density
  # density 0.002 over 3089: some segments span whole rows; 0.0: one segment (no start).
  got = jax.jit(scans.segmented_cumsum, static_argnums=2)(values, starts, method)
  want = _segmented_reference(values.astype(np.float64), starts)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("method", scans.SEGMENTED_METHODS)
def test_segmented_cumsum_keeps_small_segments_exact_beside_large_totals(method):
  m = 3 * scans.ROW
  values = np.full(m, 1e8, np.float32)
  values[2000:2003] = [1.0, 2.0, 3.0]  # a segment of small values after huge ones
  starts = np.zeros(m, bool)
  starts[[0, 2000, 2003]] = True
  got = np.asarray(jax.jit(scans.segmented_cumsum, static_argnums=2)(values, starts, method))
  np.testing.assert_array_equal(got[2000:2003], [1.0, 3.0, 6.0])


def test_segmented_cumsum_checks_the_starts_shape_and_method():
  with pytest.raises(ValueError, match=r"starts must be \[4\]"):
    scans.segmented_cumsum(jnp.zeros(4), jnp.zeros(3, bool))
  with pytest.raises(ValueError, match="method"):
    scans.segmented_cumsum(jnp.zeros(4), jnp.zeros(4, bool), "fast")


def test_no_scan_in_the_program_is_longer_than_a_row():
  """What keeps the TPU compile small: every reduce-window (a cumsum / cummax) in the
  lowered program spans at most ROW elements, whatever the length."""
  m = 64 * scans.ROW * scans.ROW
  for fn, dtype in [(scans.running_sum, jnp.int32), (scans.running_max, jnp.int32)]:
    text = jax.jit(fn).lower(jax.ShapeDtypeStruct((m,), dtype)).as_text()
    windows = [max(int(n) for n in w.split(","))
               for w in re.findall(r"window_dimensions = array<i64: ([\d, ]+)>", text)]
    assert windows and max(windows) <= scans.ROW, windows
  seg = jax.jit(scans.segmented_cumsum, static_argnums=2).lower(
      jax.ShapeDtypeStruct((2, m), jnp.float32), jax.ShapeDtypeStruct((m,), jnp.bool_), "rows")
  assert "reduce_window" not in seg.as_text()
