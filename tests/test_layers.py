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
