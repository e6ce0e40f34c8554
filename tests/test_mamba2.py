"""Mamba2: the chunked SSD scan vs the sequential recurrence (float64 numpy), its gradients
vs finite differences, the bidirectional block vs an explicit per-step loop over both
directions, and finite gradients at extreme decays."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from lrm_jax.models import mamba2

# Jitted: op-by-op dispatch of the chunked scan is several times slower than compiling it.
ssd = jax.jit(mamba2.ssd, static_argnums=5)
ssd_reference = jax.jit(mamba2.ssd_reference)


def numpy_recurrence(x, dt, a, b, c):
  """float64 ``S_t = exp(dt_t A) S_{t-1} + dt_t x_t B_t^T``, ``y_t = S_t C_t`` per head."""
  x, dt, a, b, c = (np.asarray(v, np.float64) for v in (x, dt, a, b, c))
  bt, length, h, p = x.shape
  g, n = b.shape[-2:]
  y = np.zeros_like(x)
  for i in range(bt):
    for head in range(h):
      grp = head // (h // g)
      s = np.zeros((p, n))
      for t in range(length):
        s = np.exp(dt[i, t, head] * a[head]) * s + dt[i, t, head] * np.outer(
            x[i, t, head], b[i, t, grp])
        y[i, t, head] = s @ c[i, t, grp]
  return y


def random_inputs(key, bt=2, length=13, h=4, p=3, g=1, n=5, dtype=jnp.float32):
  k = jax.random.split(key, 5)
  x = jax.random.normal(k[0], (bt, length, h, p), dtype)
  dt = jax.nn.softplus(jax.random.normal(k[1], (bt, length, h), dtype) - 1.0)
  a = -jnp.exp(jax.random.uniform(k[2], (h,), dtype, -1.0, 1.5))
  b = jax.random.normal(k[3], (bt, length, g, n), dtype)
  c = jax.random.normal(k[4], (bt, length, g, n), dtype)
  return x, dt, a, b, c


def test_segsum_is_masked_sum_with_zero_grads_above_diagonal():
  a = jnp.asarray([0.5, -1.0, 2.0, -3.0])
  s = np.asarray(mamba2.segsum(a))
  for i in range(4):
    for j in range(4):
      want = np.sum(np.asarray(a)[j + 1:i + 1]) if j <= i else -np.inf
      assert s[i, j] == pytest.approx(want)
  g = jax.grad(lambda v: jnp.sum(jnp.exp(mamba2.segsum(v))))(a)
  assert np.all(np.isfinite(np.asarray(g)))


@pytest.mark.parametrize("chunk,length,groups", [(1, 7, 1), (4, 13, 1), (8, 13, 2),
                                                 (16, 13, 4), (5, 20, 2)])
def test_chunked_ssd_matches_sequential_float64(chunk, length, groups):
  x, dt, a, b, c = random_inputs(jax.random.key(chunk + length), length=length, g=groups)
  want = numpy_recurrence(x, dt, a, b, c)
  got = np.asarray(ssd(x, dt, a, b, c, chunk))
  np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4)
  ref = np.asarray(ssd_reference(x, dt, a, b, c))
  np.testing.assert_allclose(ref, want, rtol=2e-4, atol=2e-4)


def test_padding_to_chunk_does_not_change_result():
  x, dt, a, b, c = random_inputs(jax.random.key(3), length=12)
  exact = ssd(x, dt, a, b, c, 4)  # 12 = 3 chunks, no padding
  for chunk in (5, 64):  # padded to 15 and 64
    np.testing.assert_allclose(ssd(x, dt, a, b, c, chunk), exact, rtol=1e-5,
                               atol=1e-5)


def test_ssd_gradients_match_finite_differences():
  with jax.enable_x64(True):
    x, dt, a, b, c = random_inputs(jax.random.key(1), bt=1, length=7, h=2, p=2, g=2, n=3,
                                   dtype=jnp.float64)
    f = jax.jit(lambda x, dt, a, b, c: mamba2.ssd(x, dt, a, b, c, 3))
    check_grads(f, (x, dt, a, b, c), order=1, modes=("rev",), atol=1e-6, rtol=1e-6)


def _silu(v):
  return v / (1.0 + np.exp(-v))


def _softplus(v):
  return np.log1p(np.exp(v))


def numpy_bidirectional_block(params, u, *, d_state, head_dim, ngroups):
  """The whole bidirectional Mamba2 block as explicit float64 loops: the forward direction
  over t = 0..L-1, the backward one over t = L-1..0, each with its own parameters."""
  u = np.asarray(u, np.float64)
  w_in = np.asarray(params["in_proj"], np.float64)
  w_out = np.asarray(params["out_proj"], np.float64)
  bt, length, _ = u.shape
  di = w_out.shape[0]
  h, n, g = di // head_dim, d_state, ngroups
  zxbcdt = u @ w_in
  total = np.zeros((bt, length, di))
  for name, order in (("forward", range(length)), ("backward", range(length - 1, -1, -1))):
    pr = {k: np.asarray(v, np.float64) for k, v in params[name].items()}
    k = pr["conv_kernel"].shape[0]
    a = -np.exp(pr["A_log"])
    for i in range(bt):
      state = np.zeros((h, head_dim, n))
      history = []  # conv inputs in this direction's order
      for t in order:
        z, xbc, dt = np.split(zxbcdt[i, t], [di, di + di + 2 * g * n])
        history.append(xbc)
        window = ([np.zeros_like(xbc)] * k + history)[-k:]
        conv = _silu(pr["conv_bias"] + sum(pr["conv_kernel"][j] * window[j]
                                           for j in range(k)))
        x, bb, cc = np.split(conv, [di, di + g * n])
        x = x.reshape(h, head_dim)
        bb, cc = bb.reshape(g, n), cc.reshape(g, n)
        dt = _softplus(dt + pr["dt_bias"])
        y = np.zeros((h, head_dim))
        for head in range(h):
          grp = head // (h // g)
          state[head] = (np.exp(dt[head] * a[head]) * state[head]
                         + dt[head] * np.outer(x[head], bb[grp]))
          y[head] = state[head] @ cc[grp] + pr["D"][head] * x[head]
        y = y.reshape(di) * _silu(z)
        yg = y.reshape(g, di // g)
        yg = yg / np.sqrt(np.mean(yg * yg, axis=-1, keepdims=True) + 1e-5)
        total[i, t] += yg.reshape(di) * pr["norm"]
  return total @ w_out


@pytest.fixture(scope="module")
def block():
  m = mamba2.Mamba2(d_state=4, d_conv=4, expand=2, head_dim=4, ngroups=2, chunk_size=4)
  u = jax.random.normal(jax.random.key(0), (2, 11, 8))
  params = jax.jit(m.init)(jax.random.key(1), u)["params"]
  # Random (not initial) per-direction parameters, so a mix-up of directions would show.
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(2), len(leaves))
  params = jax.tree.unflatten(tree, [l + 0.3 * jax.random.normal(k, l.shape)
                                     for l, k in zip(leaves, keys)])
  return m, nn_unbox(params), u


def nn_unbox(params):
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  return nn.meta.unbox(params)


def test_bidirectional_block_matches_explicit_loops(block):
  m, params, u = block
  got = np.asarray(jax.jit(m.apply)({"params": params}, u))
  want = numpy_bidirectional_block(params, u, d_state=4, head_dim=4, ngroups=2)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_init_ranges():
  m = mamba2.Mamba2(d_state=4, head_dim=4, expand=2)
  params = nn_unbox(jax.jit(m.init)(jax.random.key(0), jnp.zeros((1, 5, 64)))["params"])
  for name in ("forward", "backward"):
    dt = jax.nn.softplus(params[name]["dt_bias"])
    assert float(dt.min()) >= 1e-4 - 1e-7 and float(dt.max()) <= 0.1 + 1e-6
    a = np.exp(np.asarray(params[name]["A_log"]))
    assert a.min() >= 1.0 and a.max() <= 16.0
    np.testing.assert_array_equal(params[name]["D"], 1.0)
  assert not np.allclose(params["forward"]["dt_bias"], params["backward"]["dt_bias"])


_GRADS = {}


def _block_grad(m):
  """One jitted gradient function per module (compiled once for the three cases)."""
  if m not in _GRADS:
    loss = lambda p, u: jnp.sum(m.apply({"params": p}, u) ** 2)
    _GRADS[m] = jax.jit(jax.grad(loss, argnums=(0, 1)))
  return _GRADS[m]


@pytest.mark.parametrize("dt_bias,a_log", [(60.0, np.log(16.0)), (0.0, -40.0),
                                           (60.0, -40.0)])
def test_no_nan_gradients_at_extreme_decays(block, dt_bias, a_log):
  m, params, u = block
  params = jax.tree.map(lambda v: v, params)
  for name in ("forward", "backward"):
    params[name] = dict(params[name], dt_bias=jnp.full_like(params[name]["dt_bias"], dt_bias),
                        A_log=jnp.full_like(params[name]["A_log"], a_log))
  gp, gu = _block_grad(m)(params, u * 5.0)
  for leaf in jax.tree.leaves((gp, gu)):
    assert np.all(np.isfinite(np.asarray(leaf)))


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_inclusive_cumsum_matches_numpy_in_float32(axis):
  x = np.random.default_rng(0).normal(size=(5, 256, 7)).astype(np.float32) * 100.0
  got = np.asarray(jax.jit(mamba2.inclusive_cumsum, static_argnums=1)(x, axis))
  np.testing.assert_allclose(got, np.cumsum(x.astype(np.float64), axis=axis),
                             rtol=1e-5, atol=2e-3)


def test_padding_tokens_change_no_other_token_in_either_direction(block):
  """Tokens appended as padding (``valid_tokens``) are invisible to the real ones: the
  reverse scan meets them first, so only the masking keeps its state (and conv) clean."""
  m, params, u = block
  padded_u = jnp.concatenate([u, 3.0 * jnp.ones((2, 6, 8))], axis=1)  # 11 real + 6 padding
  padded = m.clone(valid_tokens=u.shape[1])
  want = jax.jit(m.apply)({"params": params}, u)
  got = jax.jit(padded.apply)({"params": params}, padded_u)
  np.testing.assert_allclose(got[:, :u.shape[1]], want, rtol=1e-5, atol=1e-5)
  # Without the mask the padding leaks into the real tokens (so the test can fail).
  leaky = jax.jit(m.apply)({"params": params}, padded_u)[:, :u.shape[1]]
  assert float(jnp.max(jnp.abs(leaky - want))) > 1e-2
  # Gradients of a loss on the real tokens: equal, and none reaches the padding's inputs.
  loss = lambda mod: lambda p, x: jnp.sum(mod.apply({"params": p}, x)[:, :u.shape[1]] ** 2)
  gp_want, _ = jax.jit(jax.grad(loss(m), argnums=(0, 1)))(params, u)
  gp_got, gu_got = jax.jit(jax.grad(loss(padded), argnums=(0, 1)))(params, padded_u)
  for a, b in zip(jax.tree.leaves(gp_got), jax.tree.leaves(gp_want)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
  np.testing.assert_array_equal(gu_got[:, u.shape[1]:], 0.0)
