"""Shared layers: the attention core against a float64 numpy reference and jax.nn."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lrm_jax.models import layers


def _numpy_attention(q, k, v):
  """softmax(q k^T / sqrt(H)) v in float64, one (batch, head) at a time."""
  q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
  b, t, n, h = q.shape
  out = np.zeros((b, t, n, h))
  for i in range(b):
    for j in range(n):
      s = q[i, :, j] @ k[i, :, j].T / np.sqrt(h)  # [T, S]
      p = np.exp(s - s.max(-1, keepdims=True))
      out[i, :, j] = (p / p.sum(-1, keepdims=True)) @ v[i, :, j]
  return out


@pytest.mark.parametrize("b,t,s,n,h", [(2, 7, 7, 3, 8), (3, 5, 11, 1, 4), (1, 16, 6, 4, 16)])
def test_attention_matches_a_float64_reference_and_jax_nn(b, t, s, n, h):
  kq, kk, kv = jax.random.split(jax.random.key(b * 100 + t), 3)
  q = 3.0 * jax.random.normal(kq, (b, t, n, h))  # large scores: the max shift matters
  k = 3.0 * jax.random.normal(kk, (b, s, n, h))
  v = jax.random.normal(kv, (b, s, n, h))
  out = layers.scaled_dot_product_attention(q, k, v)
  assert out.shape == (b, t, n, h)
  np.testing.assert_allclose(out, _numpy_attention(q, k, v), atol=2e-5, rtol=1e-5)
  np.testing.assert_allclose(out, jax.nn.dot_product_attention(q, k, v), atol=2e-5)


def test_attention_gradients_match_jax_nn_and_finite_differences():
  kq, kk, kv, kc = jax.random.split(jax.random.key(0), 4)
  q, k, v = (jax.random.normal(x, (2, 6, 2, 8)) for x in (kq, kk, kv))
  cot = jax.random.normal(kc, (2, 6, 2, 8))
  ours = jax.grad(lambda *a: jnp.sum(layers.scaled_dot_product_attention(*a) * cot),
                  argnums=(0, 1, 2))(q, k, v)
  ref = jax.grad(lambda *a: jnp.sum(jax.nn.dot_product_attention(*a) * cot),
                 argnums=(0, 1, 2))(q, k, v)
  for a, r in zip(ours, ref):
    np.testing.assert_allclose(a, r, atol=3e-5)
  # Central differences in float64 numpy along a random direction of q.
  d = np.asarray(jax.random.normal(jax.random.key(1), q.shape), np.float64)
  f = lambda qq: np.sum(_numpy_attention(qq, k, v) * np.asarray(cot, np.float64))
  eps = 1e-4
  fd = (f(np.asarray(q, np.float64) + eps * d) - f(np.asarray(q, np.float64) - eps * d)) / (2 * eps)
  assert abs(float(np.sum(np.asarray(ours[0]) * d)) - fd) < 1e-3 * max(1.0, abs(fd))


def test_attention_in_bfloat16_keeps_float32_scores():
  kq, kk, kv = jax.random.split(jax.random.key(3), 3)
  q, k, v = (3.0 * jax.random.normal(x, (2, 9, 2, 16)) for x in (kq, kk, kv))
  low = [x.astype(jnp.bfloat16) for x in (q, k, v)]
  out = layers.scaled_dot_product_attention(*low)
  assert out.dtype == jnp.bfloat16
  # Rounding q and k to bfloat16 moves large scores a lot: judge against jax.nn's own
  # bfloat16 result, which has the same rounding of the inputs and float32 scores inside.
  ref = _numpy_attention(*low)
  err = float(np.max(np.abs(np.asarray(out, np.float32) - ref)))
  err_jax = float(np.max(np.abs(np.asarray(jax.nn.dot_product_attention(*low), np.float32) -
                                ref)))
  assert err <= 1.5 * err_jax + 1e-2, (err, err_jax)


def _custom_vjp_calls(fn, *args) -> int:
  return str(jax.make_jaxpr(fn)(*args)).count("custom_vjp_call")


@pytest.mark.parametrize("extra, s", [(0, 1024), (0, 300), (2, 300)])
def test_long_attention_runs_blockwise_and_matches_references(extra, s):
  t = layers.FLASH_MIN_TOKENS + extra  # + 2: not whole blocks (views' tokens + 2 globals)
  kq, kk, kv, kc = jax.random.split(jax.random.key(s + extra), 4)
  q = 2.0 * jax.random.normal(kq, (1, t, 2, 8))
  k = 2.0 * jax.random.normal(kk, (1, s, 2, 8))
  v = jax.random.normal(kv, (1, s, 2, 8))
  cot = jax.random.normal(kc, q.shape)
  attend = layers.scaled_dot_product_attention
  assert _custom_vjp_calls(attend, q, k, v) == 1  # the blockwise path was taken
  out = attend(q, k, v)
  np.testing.assert_allclose(out, _numpy_attention(q, k, v), atol=2e-5, rtol=1e-5)
  ours = jax.grad(lambda *a: jnp.sum(attend(*a) * cot), argnums=(0, 1, 2))(q, k, v)
  ref = jax.grad(lambda *a: jnp.sum(jax.nn.dot_product_attention(*a) * cot),
                 argnums=(0, 1, 2))(q, k, v)
  for a, r in zip(ours, ref):
    np.testing.assert_allclose(a, r, atol=5e-5, rtol=1e-4)
  # Central differences in float64 numpy along a random direction of k.
  d = np.asarray(jax.random.normal(jax.random.key(7), k.shape), np.float64)
  f = lambda kk_: np.sum(_numpy_attention(q, kk_, v) * np.asarray(cot, np.float64))
  eps, k64 = 1e-4, np.asarray(k, np.float64)
  fd = (f(k64 + eps * d) - f(k64 - eps * d)) / (2 * eps)
  assert abs(float(np.sum(np.asarray(ours[1]) * d)) - fd) < 1e-3 * max(1.0, abs(fd))
  # bfloat16 inputs take the same path and give bfloat16 out.
  low_in = [x.astype(jnp.bfloat16) for x in (q, k, v)]
  low = attend(*low_in)
  assert low.dtype == jnp.bfloat16
  ref_low = _numpy_attention(*low_in)
  err = float(np.max(np.abs(np.asarray(low, np.float32) - ref_low)))
  err_jax = float(np.max(np.abs(np.asarray(jax.nn.dot_product_attention(*low_in), np.float32)
                                - ref_low)))
  assert err <= 1.5 * err_jax + 1e-2, (err, err_jax)


def test_short_attention_runs_as_one_block_in_float32_and_plainly_in_bfloat16():
  attend = layers.scaled_dot_product_attention
  q = jnp.ones((1, layers.FLASH_MIN_TOKENS - layers.FLASH_BLOCK, 1, 4))
  jaxpr = str(jax.make_jaxpr(attend)(q, q, q))
  assert jaxpr.count("custom_vjp_call") == 1 and "length=1" in jaxpr  # one query block
  low = q.astype(jnp.bfloat16)
  assert _custom_vjp_calls(attend, low, low, low) == 0


def test_plain_attention_switch_matches_the_blockwise_path():
  kq, kk, kv, kc = jax.random.split(jax.random.key(9), 4)
  q, k, v = (2.0 * jax.random.normal(x, (2, 40, 3, 8)) for x in (kq, kk, kv))
  cot = jax.random.normal(kc, q.shape)
  loss = lambda *a: jnp.sum(layers.scaled_dot_product_attention(*a) * cot)
  flash = jax.value_and_grad(loss, argnums=(0, 1, 2))(q, k, v)
  plain_attend = lambda *a: layers.scaled_dot_product_attention(*a, impl="plain")
  assert _custom_vjp_calls(plain_attend, q, k, v) == 0
  plain = jax.value_and_grad(lambda *a: jnp.sum(plain_attend(*a) * cot),
                             argnums=(0, 1, 2))(q, k, v)
  with pytest.raises(ValueError, match="impl"):
    layers.scaled_dot_product_attention(q, k, v, impl="fast")
  for a, b in zip(jax.tree.leaves(flash), jax.tree.leaves(plain)):
    np.testing.assert_allclose(a, b, atol=3e-5, rtol=1e-5)


def _bf16(x):
  return np.asarray(jnp.asarray(x).astype(jnp.bfloat16).astype(jnp.float32), np.float64)


def test_dense_einsum_bfloat16_is_mixed_precision_forward_and_backward():
  kx, kw, kc = jax.random.split(jax.random.key(4), 3)
  x = jax.random.normal(kx, (2, 5, 256))
  w = jax.random.normal(kw, (256, 4, 64)) * 0.05  # [K, N heads, H]: N * H = 256
  cot = jax.random.normal(kc, (2, 5, 4, 64))
  spec = "btd,dnh->btnh"
  fn = lambda x, w: jnp.sum(layers.dense_einsum(spec, x, w, jnp.bfloat16) * cot)
  y = layers.dense_einsum(spec, x, w, jnp.bfloat16)
  assert y.dtype == jnp.float32 and y.shape == (2, 5, 4, 64)
  # float32 accumulation of bfloat16-rounded operands: float64 reference of those operands.
  ref = np.einsum(spec, _bf16(x), _bf16(w))
  np.testing.assert_allclose(y, ref, atol=1e-4, rtol=1e-4)
  gx, gw = jax.grad(fn, argnums=(0, 1))(x, w)
  assert gx.dtype == gw.dtype == jnp.float32
  c = _bf16(cot)
  np.testing.assert_allclose(gx, np.einsum("btnh,dnh->btd", c, _bf16(w)), atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(gw, np.einsum("btd,btnh->dnh", _bf16(x), c), atol=1e-3, rtol=1e-4)
  # Every product of forward and backward takes bfloat16 operands (the fast form).
  jaxpr = jax.make_jaxpr(jax.grad(fn, argnums=(0, 1)))(x, w)
  dots = []
  def walk(jx):
    for eqn in jx.eqns:
      if eqn.primitive.name == "dot_general":
        dots.append([v.aval.dtype for v in eqn.invars])
      for sub in jax.core.jaxprs_in_params(eqn.params):
        walk(sub)
  walk(jaxpr.jaxpr)
  assert len(dots) == 3 and all(d == [jnp.bfloat16, jnp.bfloat16] for d in dots), dots


def test_dense_einsum_float32_and_narrow_products_are_plain_einsums():
  x = jax.random.normal(jax.random.key(5), (3, 256))
  w = jax.random.normal(jax.random.key(6), (256, 32))  # a 32-wide side: memory-bound
  np.testing.assert_array_equal(layers.dense_einsum("td,dm->tm", x, w, jnp.float32),
                                jnp.einsum("td,dm->tm", x, w))
  np.testing.assert_array_equal(layers.dense_einsum("td,dm->tm", x, w, jnp.bfloat16),
                                jnp.einsum("td,dm->tm", x, w))
  with pytest.raises(ValueError, match="trailing dims"):
    layers.dense_einsum("dt,dm->tm", x.T, jnp.ones((256, 128)), jnp.bfloat16)


def test_window_block_in_groups_is_the_same_block():
  x = jax.random.normal(jax.random.key(8), (2, 2, 16, 16, 8))  # 2 scenes
  block = layers.WindowBlock(num_heads=2, window=4, group_min_tokens=10**9)
  loss = lambda p, x: jnp.sum(jnp.sin(block.apply(p, x)))
  params = block.init(jax.random.key(9), x)
  whole = block.apply(params, x)
  g_whole = jax.grad(loss, argnums=(0, 1))(params, x)
  # 512 tokens per scene in 32-token windows: groups of 4 windows, a scan over 4 groups.
  block = layers.WindowBlock(num_heads=2, window=4, group_min_tokens=512, group_tokens=128)
  assert "scan" in str(jax.make_jaxpr(lambda p, x: block.apply(p, x))(params, x))
  grouped_params = block.init(jax.random.key(9), x)  # same tree, same initial values
  assert jax.tree.structure(grouped_params) == jax.tree.structure(params)
  for a, b in zip(jax.tree.leaves(grouped_params), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_allclose(block.apply(params, x), whole, atol=1e-5)
  g_grouped = jax.grad(loss, argnums=(0, 1))(params, x)
  for a, b in zip(jax.tree.leaves(g_grouped), jax.tree.leaves(g_whole)):
    np.testing.assert_allclose(a, b, atol=2e-4, rtol=1e-4)


def test_gelu_is_exact_gelu_against_float64_and_jax_nn():
  """``layers.gelu`` (the erf form) is GELU: float64 ``x Phi(x)`` and ``nn.gelu``'s exact
  form, values and gradients."""
  from math import erf, sqrt  # pylint: disable=g-import-not-at-top
  x = np.concatenate([np.linspace(-8, 8, 401), np.random.RandomState(0).randn(200) * 3])
  x = x.astype(np.float32)
  ref = np.array([v * 0.5 * (1 + erf(v / sqrt(2))) for v in x.astype(np.float64)])
  # Absolute error: 1 + erf rounds near -1 (|x| * 6e-8); erfc kept the tail's relative one.
  np.testing.assert_allclose(np.asarray(layers.gelu(jnp.asarray(x))), ref, atol=6e-7,
                             rtol=1e-6)
  ours = jax.vmap(jax.grad(layers.gelu))(jnp.asarray(x))
  theirs = jax.vmap(jax.grad(lambda v: jax.nn.gelu(v, approximate=False)))(jnp.asarray(x))
  np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), atol=1e-6)


@pytest.mark.parametrize("t,impl", [(40, "auto"), (40, "plain"), (layers.FLASH_MIN_TOKENS + 2,
                                                                   "auto")])
def test_attention_ignores_keys_past_num_keys(t, impl):
  """Padding keys (``num_keys``): the same outputs and gradients as without them, on the
  one-block, plain and blockwise paths; nothing flows back into the padding."""
  kq, kk, kv, kc = jax.random.split(jax.random.key(t), 4)
  q, k, v = (2.0 * jax.random.normal(x, (1, t, 2, 8)) for x in (kq, kk, kv))
  cot = jax.random.normal(kc, q.shape)
  real = t - 7
  attend = lambda n: lambda q_, k_, v_: jnp.sum(
      layers.scaled_dot_product_attention(q_, k_, v_, impl, n) * cot)
  want = jax.value_and_grad(attend(0), argnums=(0, 1, 2))(q, k[:, :real], v[:, :real])
  got = jax.value_and_grad(attend(real), argnums=(0, 1, 2))(q, k, v)
  np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
  np.testing.assert_allclose(got[1][0], want[1][0], atol=3e-5, rtol=1e-5)
  for g, w in zip(got[1][1:], want[1][1:]):
    np.testing.assert_allclose(g[:, :real], w, atol=3e-5, rtol=1e-5)
    np.testing.assert_array_equal(g[:, real:], 0.0)
