"""Building blocks shared by every family: attention, MLP, transformer stacks, ModLN,
windowed attention and PixelShuffle.

Parameters carry logical axis names (``embed``, ``mlp``, ``heads``, ``kv``); activations are
constrained with logical names (``batch``, ``tokens``, ``embed``). Only configs map logical
names to mesh axes. Stacks use ``nn.scan`` over ``nn.remat``-ed blocks so compile time and
memory do not grow with depth.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

# Remat policies by name (config: model.remat_policy).
REMAT_POLICIES: dict[str, Callable | None] = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


def dense_init(scale: float = 1.0):
  return nn.initializers.variance_scaling(scale, "fan_in", "truncated_normal")


def constrain(x: jax.Array, names: tuple[str | None, ...]) -> jax.Array:
  """Logical sharding constraint (a no-op outside ``parallel.use_mesh``); dimensions the
  rules cannot split evenly on the mesh stay replicated."""
  from lrm_jax import parallel  # pylint: disable=g-import-not-at-top
  return parallel.constrain(x, names)


def dense_einsum(spec: str, x: jax.Array, kernel: jax.Array, dtype: Dtype) -> jax.Array:
  """A layer's ``einsum(spec, x, kernel)``: ``x [..., *K] . kernel [*K, *N] -> [..., *N]``.

  ``float32``: :func:`matmul` in float32. A lower ``dtype`` (bfloat16): mixed precision, the
  operands in ``dtype`` with float32 accumulation and a float32 result, in the backward
  pass too (:func:`_product`): the form bfloat16 matrix units (TPU MXU, GPU tensor cores,
  Intel AMX) run at full speed (figures: bench/RESULTS.md); XLA:CPU's plain bfloat16 einsum
  (bfloat16 result) is slower than float32. Products with a side under
  :data:`MIN_LOW_PRECISION_SIDE` are memory-bound (the GRM upsampler's 32-256 channels at
  full resolution): casting costs more than it saves, so they stay in float32.

  ``spec`` must contract the trailing dims of ``x`` with the leading dims of ``kernel``
  (every dense layer here does).
  """
  lhs, rest = spec.replace(" ", "").split(",")
  rhs, out = rest.split("->")
  k = len(set(lhs) & set(rhs))
  if lhs[len(lhs) - k:] != rhs[:k] or out != lhs[:len(lhs) - k] + rhs[k:]:
    raise ValueError(f"dense_einsum: {spec!r} must contract x's trailing dims with the "
                     "kernel's leading dims.")
  lead, kdims, ndims = x.shape[:x.ndim - k], kernel.shape[:k], kernel.shape[k:]
  size_k, size_n = math.prod(kdims), math.prod(ndims)
  y = matmul(x.reshape(-1, size_k), kernel.reshape(size_k, size_n), dtype)
  return y.reshape(lead + ndims)


# Products whose contracted or output side is smaller stay in float32 (see dense_einsum).
MIN_LOW_PRECISION_SIDE = 128


def matmul(x: jax.Array, w: jax.Array, dtype: Dtype = jnp.float32) -> jax.Array:
  """A dense layer's product ``x [M, K] @ w [K, N] -> [M, N]`` (float32 result).

  ``dtype`` below float32: mixed precision (:func:`dense_einsum`). Either way the weight
  gradient is formed from a materialised ``x^T`` (:func:`_product`). Autodiff's
  ``dW = x^T g`` contracts the token axis of both operands, and XLA:CPU's layout assignment
  then turns it into a dot that contracts the first axis of one operand and the last of the
  other, with that operand's producer (a GELU, a LayerNorm's backward) fused into a
  transposing copy: for the tall, thin products of an upsampler at full resolution (32k
  tokens x 32-128 channels) that form ran ~10x slower than the same product with ``x^T``
  materialised (bench/RESULTS.md, AVX2 CPUs). The same form on every platform, not a
  ``lax.platform_dependent`` choice: that lowers to an HLO conditional, the SPMD
  partitioner puts the weight gradient's all-reduce inside it, and XLA:CPU then ran such
  collectives out of order across devices (a rendezvous deadlock on 8 host devices).
  """
  dtype = jnp.dtype(dtype)
  if min(x.shape[-1], w.shape[-1]) < MIN_LOW_PRECISION_SIDE:
    dtype = jnp.dtype(jnp.float32)
  x, w = x.astype(jnp.float32), w.astype(jnp.float32)  # the backward returns float32
  return _product(dtype, x, w)


def dense_dot_general(lhs, rhs, dimension_numbers, precision=None,
                      preferred_element_type=None):
  """``nn.Dense(dot_general=dense_dot_general)``: the layer's product through
  :func:`matmul` (float32), the same parameters and result as ``lax.dot_general``."""
  (lc, rc), (lb, rb) = dimension_numbers
  if tuple(lc) != (lhs.ndim - 1,) or tuple(rc) != (0,) or lb or rb or rhs.ndim != 2:
    return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                               preferred_element_type=preferred_element_type)
  y = matmul(lhs.reshape(-1, lhs.shape[-1]), rhs)
  return y.reshape(lhs.shape[:-1] + rhs.shape[-1:]).astype(
      preferred_element_type or jnp.result_type(lhs, rhs))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _product(dtype, x, w):
  """``x [M, K] @ w [K, N]``: operands in ``dtype``, float32 accumulation and result; the
  backward products are formed the same way (autodiff would mix float32 cotangents with
  ``dtype`` operands), the weight gradient from a materialised ``x^T``."""
  return jnp.dot(x.astype(dtype), w.astype(dtype), preferred_element_type=jnp.float32)


def _product_fwd(dtype, x, w):
  xl, wl = x.astype(dtype), w.astype(dtype)
  return jnp.dot(xl, wl, preferred_element_type=jnp.float32), (xl, wl)


def _product_bwd(dtype, res, g):
  xl, wl = res
  gl = g.astype(dtype)
  dx = jnp.einsum("mn,kn->mk", gl, wl, preferred_element_type=jnp.float32)  # [M, K]
  dw = jnp.dot(_materialised_transpose(xl), gl, preferred_element_type=jnp.float32)
  return dx, dw


_product.defvjp(_product_fwd, _product_bwd)


def _materialised_transpose(x: jax.Array) -> jax.Array:
  """``x [..., M, K] -> [..., K, M]`` as a real copy.

  XLA folds a plain transpose into the dot that consumes it, and XLA:CPU runs a dot that
  contracts its left operand's first (non-batch) dim on a slow path (several times slower
  for bfloat16 with AMX and for float32 batched attention products). A transpose through a
  split of ``M`` is not folded.
  """
  *lead, m, k = x.shape
  split = next((d for d in (64, 32, 16, 8, 4, 2) if m % d == 0 and m > d), 1)
  n = len(lead)
  x = x.reshape(*lead, m // split, split, k)
  x = jnp.transpose(x, tuple(range(n)) + (n + 2, n, n + 1))
  return x.reshape(*lead, k, m)


def gelu(x: jax.Array) -> jax.Array:
  """Exact (erf) GELU, ``x * Phi(x)``, written as ``x (1 + erf(x / sqrt 2)) / 2``.

  The same function as ``nn.gelu(x, approximate=False)``, which XLA:CPU evaluates through
  ``erfc`` at several times the cost (bench/RESULTS.md). Its rounding error is absolute, at most ``|x| * 6e-8`` (``1 + erf`` near -1), where
  ``erfc`` kept the far negative tail's relative precision.
  """
  return 0.5 * x * (1.0 + jax.lax.erf(x * (1.0 / math.sqrt(2.0))))


class Mlp(nn.Module):
  """Two-layer GELU MLP: ``[..., D] -> [..., hidden] -> [..., D]``."""

  hidden: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    d = x.shape[-1]
    w1 = self.param("w1_dm", nn.with_logical_partitioning(dense_init(), ("embed", "mlp")),
                    (d, self.hidden))
    b1 = self.param("b1_m", nn.with_logical_partitioning(nn.initializers.zeros, ("mlp",)),
                    (self.hidden,))
    w2 = self.param("w2_md", nn.with_logical_partitioning(dense_init(), ("mlp", "embed")),
                    (self.hidden, d))
    b2 = self.param("b2_d", nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
                    (d,))
    h = dense_einsum("...d,dm->...m", x, w1, self.dtype) + b1
    h = gelu(h)
    return dense_einsum("...m,md->...d", h, w2, self.dtype) + b2


class Attention(nn.Module):
  """Multi-head attention ``[B, Tq, D] x [B, Tk, D] -> [B, Tq, D]`` (self when kv is None).

  ``impl``: ``"auto"`` or ``"plain"`` (see :func:`scaled_dot_product_attention`).
  ``num_keys``: keys from this one on are padding and ignored (0: none are).
  """

  num_heads: int
  dtype: Dtype = jnp.float32
  impl: str = "auto"
  num_keys: int = 0

  @nn.compact
  def __call__(self, x: jax.Array, kv: jax.Array | None = None) -> jax.Array:
    kv = x if kv is None else kv
    d, dk = x.shape[-1], kv.shape[-1]
    if d % self.num_heads:
      raise ValueError(f"width {d} is not divisible by num_heads={self.num_heads}.")
    hd = d // self.num_heads
    p = lambda name, shape, axes, init=dense_init(): self.param(
        name, nn.with_logical_partitioning(init, axes), shape)
    q_w = p("q_dnh", (d, self.num_heads, hd), ("embed", "heads", "kv"))
    k_w = p("k_dnh", (dk, self.num_heads, hd), ("embed", "heads", "kv"))
    v_w = p("v_dnh", (dk, self.num_heads, hd), ("embed", "heads", "kv"))
    o_w = p("o_nhd", (self.num_heads, hd, d), ("heads", "kv", "embed"))
    bias = lambda name, shape, axes: self.param(
        name, nn.with_logical_partitioning(nn.initializers.zeros, axes), shape)
    q_b, k_b, v_b = (bias(n, (self.num_heads, hd), ("heads", "kv")) for n in ("q_b", "k_b", "v_b"))
    o_b = bias("o_b", (d,), ("embed",))
    dt = self.dtype
    q = dense_einsum("btd,dnh->btnh", x, q_w, dt) + q_b
    k = dense_einsum("bsd,dnh->bsnh", kv, k_w, dt) + k_b
    v = dense_einsum("bsd,dnh->bsnh", kv, v_w, dt) + v_b
    q = constrain(q, ("batch", "tokens", "heads", "kv"))
    out = scaled_dot_product_attention(q.astype(dt), k.astype(dt), v.astype(dt),
                                       self.impl, self.num_keys)  # [B, T, N, H]
    return dense_einsum("btnh,nhd->btd", out, o_w, dt) + o_b


ATTENTION_IMPLS = ("auto", "plain")


def scaled_dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array,
                                 impl: str = "auto", num_keys: int = 0) -> jax.Array:
  """Softmax attention: ``q [B, T, N, H]``, ``k, v [B, S, N, H]`` -> ``[B, T, N, H]``.

  What ``jax.nn.dot_product_attention`` computes (to ~1e-5; scores and softmax in float32
  for bfloat16 inputs, as it does), written so that XLA:CPU runs it well: batch and heads
  merged into one batch dimension of plain batched products, and the exponentials
  normalised after the ``weights @ v`` product (one pass less over the ``[B * N, T, S]``
  scores).

  ``impl="auto"``: float32 inputs and long sequences (``T >= FLASH_MIN_TOKENS``, also
  bfloat16: XLA:CPU's bfloat16 batched products are slower) go through
  :func:`_flash_attention` in float32: blocks of ``FLASH_BLOCK`` queries for long
  sequences (the last block padded), so the whole score matrix never exists, and one block for short ones, for its
  cheaper backward. ``impl="plain"`` computes every case the plain way (the scores whole,
  no recomputation in the backward): ``bench/train_step.py`` counts FLOPs that way
  (``model.attention=plain``). Figures: bench/RESULTS.md.

  ``num_keys`` > 0: only the first ``num_keys`` keys are attended to (the rest are padding
  that aligns the sequence, e.g. Long-LRM's on TPU).
  """
  if impl not in ATTENTION_IMPLS:
    raise ValueError(f"attention impl must be one of {ATTENTION_IMPLS}, got {impl!r}.")
  b, t, n, h = q.shape
  # [B, T, N, H] -> [B * N, T, H]: one batch dimension for the products.
  flat = lambda x: jnp.swapaxes(x, 1, 2).reshape(b * n, x.shape[1], h)
  q = q * (h ** -0.5)
  long = t >= FLASH_MIN_TOKENS
  if impl == "auto" and (long or q.dtype == jnp.float32):
    f32 = lambda x: flat(x).astype(jnp.float32)
    block = FLASH_BLOCK if long else t
    # Queries padded to whole blocks (e.g. 32 views' tokens + 2 global tokens): the padded
    # rows' outputs are dropped, so they add nothing to the keys' and values' gradients.
    qf = jnp.pad(f32(q), ((0, 0), (0, -t % block), (0, 0)))
    out = _flash_attention(qf, f32(k), f32(v), block, num_keys)[:, :t].astype(v.dtype)
  else:
    scores = jnp.einsum("xth,xsh->xts", flat(q), flat(k), preferred_element_type=jnp.float32)
    scores = _mask_keys(scores, num_keys, axis=2)
    scores = scores - jax.lax.stop_gradient(jnp.max(scores, axis=-1, keepdims=True))
    weights = jnp.exp(scores)  # [B * N, T, S], unnormalised, float32
    out = jnp.einsum("xts,xsh->xth", weights.astype(v.dtype), flat(v),
                     preferred_element_type=jnp.float32)
    out = (out / jnp.sum(weights, -1, keepdims=True)).astype(v.dtype)
  return jnp.swapaxes(out.reshape(b, n, t, h), 1, 2)


# Attention over at least this many queries runs blockwise (_flash_attention), in
# blocks of FLASH_BLOCK queries (the block size measured best on a 2-core CPU among 64,
# 128 and 256: bench/RESULTS.md).
FLASH_MIN_TOKENS = 1024
FLASH_BLOCK = 128


def _query_blocks(x: jax.Array, block: int) -> jax.Array:
  """``[X, T, ...] -> [T / block, X, block, ...]``."""
  return jnp.moveaxis(x.reshape((x.shape[0], -1, block) + x.shape[2:]), 1, 0)


def _merge_query_blocks(x: jax.Array) -> jax.Array:
  """Inverse of :func:`_query_blocks`."""
  x = jnp.moveaxis(x, 0, 1)
  return x.reshape((x.shape[0], -1) + x.shape[3:])


def _mask_keys(scores: jax.Array, num_keys: int, axis: int) -> jax.Array:
  """``scores`` with the keys (along ``axis``) from ``num_keys`` on set to -inf."""
  if num_keys <= 0 or num_keys >= scores.shape[axis]:
    return scores
  key = jax.lax.broadcasted_iota(jnp.int32, scores.shape, axis)
  return jnp.where(key < num_keys, scores, -jnp.inf)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _flash_attention(q: jax.Array, k: jax.Array, v: jax.Array, block: int,
                     num_keys: int = 0) -> jax.Array:
  """``softmax(q k^T) v`` for ``q [X, T, H]`` (already scaled), ``k, v [X, S, H]``, one block
  of queries at a time (FlashAttention's algorithm, exact): the forward keeps only the
  output and each query's log-sum-exp, and the backward recomputes each block's weights,
  so the ``[X, T, S]`` scores never exist at once and each block's stay in cache. Keys from
  ``num_keys`` on are ignored (0: none)."""
  return _flash_forward(q, k, v, block, num_keys)[0]


def _flash_forward(q, k, v, block, num_keys):
  def one_block(qb):  # [X, Q, H]
    s = _mask_keys(jnp.einsum("xqh,xsh->xqs", qb, k), num_keys, axis=2)
    m = jnp.max(s, -1, keepdims=True)
    p = jnp.exp(s - m)
    total = jnp.sum(p, -1, keepdims=True)
    return jnp.einsum("xqs,xsh->xqh", p, v) / total, (m + jnp.log(total))[..., 0]
  out, lse = jax.lax.map(one_block, _query_blocks(q, block))
  out, lse = _merge_query_blocks(out), _merge_query_blocks(lse)  # [X, T, H], [X, T]
  return out, (q, k, v, out, lse)


def _flash_backward(block, num_keys, res, d_out):
  q, k, v, out, lse = res
  delta = jnp.sum(d_out * out, -1)  # [X, T]: rowsum(dP * P) of the softmax backward

  def one_block(carry, xs):
    dk, dv = carry
    qb, dob, lseb, deltab = xs
    # Each block's weights are formed transposed, [X, S, Q], so that dv and dk are plain
    # products rather than ones contracting the query axis of [X, Q, S] (XLA:CPU runs
    # those at ~40% speed); dq takes one materialised transpose back.
    st = _mask_keys(jnp.einsum("xsh,xqh->xsq", k, qb), num_keys, axis=1)
    pt = jnp.exp(st - lseb[:, None, :])  # [X, S, Q]
    dv = dv + jnp.einsum("xsq,xqh->xsh", pt, dob)
    dst = pt * (jnp.einsum("xsh,xqh->xsq", v, dob) - deltab[:, None, :])
    dk = dk + jnp.einsum("xsq,xqh->xsh", dst, qb)
    return (dk, dv), jnp.einsum("xqs,xsh->xqh", _materialised_transpose(dst), k)

  xs = tuple(_query_blocks(x, block) for x in (q, d_out, lse, delta))
  (dk, dv), dq = jax.lax.scan(one_block, (jnp.zeros_like(k), jnp.zeros_like(v)), xs)
  return _merge_query_blocks(dq), dk, dv


_flash_attention.defvjp(_flash_forward, _flash_backward)


class LayerNorm(nn.Module):
  """LayerNorm with logically-partitioned scale/bias (optionally without affine params)."""

  use_affine: bool = True
  epsilon: float = 1e-6

  @nn.compact
  def __call__(self, x):
    # On rows [prod(leading dims), D]: flax shapes scale and bias [1, ..., 1, D] for the
    # input's rank, and the gradient of a [1, 1, D] parameter over a [1, T, D] input (one
    # sequence per device) is a reduction over the middle axis alone, which XLA:CPU's
    # YNNPACK reduction runs far slower than the same sum over the rows of [T, D].
    y = nn.LayerNorm(epsilon=self.epsilon, use_bias=self.use_affine, use_scale=self.use_affine,
                     scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
                     bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)))(
                         x.reshape(-1, x.shape[-1]))
    return y.reshape(x.shape)


class TransformerBlock(nn.Module):
  """Pre-LN block: ``x + Attn(LN(x))``, then ``x + MLP(LN(x))``. Scan-compatible."""

  num_heads: int
  mlp_ratio: float = 4.0
  dtype: Dtype = jnp.float32
  attention: str = "auto"  # Attention.impl
  valid_tokens: int = 0  # tokens from this one on are padding (0: none are)

  @nn.compact
  def __call__(self, x: jax.Array, _=None):
    x = constrain(x, ("batch", "tokens", "embed"))
    x = x + Attention(self.num_heads, self.dtype, self.attention, self.valid_tokens,
                      name="attn")(
        LayerNorm(name="ln1")(x))
    x = x + Mlp(int(x.shape[-1] * self.mlp_ratio), self.dtype, name="mlp")(
        LayerNorm(name="ln2")(x))
    return x.astype(jnp.float32) if self.dtype != jnp.float32 else x, None


class Transformer(nn.Module):
  """``depth`` TransformerBlocks, scanned (``nn.scan``) and rematerialised (``nn.remat``)."""

  depth: int
  num_heads: int
  mlp_ratio: float = 4.0
  remat_policy: str = "none"
  scan: bool = True
  dtype: Dtype = jnp.float32
  attention: str = "auto"  # Attention.impl

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = apply_blocks(TransformerBlock, (self.num_heads, self.mlp_ratio, self.dtype,
                                        self.attention), self.depth, x,
                     remat_policy=self.remat_policy, scan=self.scan)
    return LayerNorm(name="ln_final")(x)


def apply_blocks(block: type[nn.Module], args: tuple, depth: int, x: jax.Array, *context,
                 remat_policy: str = "none", scan: bool = True) -> jax.Array:
  """``depth`` blocks ``block(*args)`` applied in turn: ``x, _ = block(x, *context)``.

  Call from a compact method. Rematerialised with ``remat_policy`` (a name of
  :data:`REMAT_POLICIES`), and stacked with ``nn.scan`` when ``scan`` (parameters
  ``blocks/...`` with a leading ``layers`` axis; ``context`` is broadcast to every layer),
  else unrolled (``block_{i}/...``), so compile time and memory need not grow with depth.
  """
  if remat_policy != "none":
    block = nn.remat(block, policy=REMAT_POLICIES[remat_policy], prevent_cse=not scan)
  if not context:
    context = (None,)
  if scan:
    stack = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True},
                    in_axes=(nn.broadcast,) * len(context), length=depth,
                    metadata_params={nn.PARTITION_NAME: "layers"})
    x, _ = stack(*args, name="blocks")(x, *context)
  else:
    for i in range(depth):
      x, _ = block(*args, name=f"block_{i}")(x, *context)
  return x


class ModLN(nn.Module):
  """LRM's modulated LayerNorm: ``LN(x) (1 + scale) + shift``, (shift, scale) from a
  SiLU -> Linear of the condition."""

  @nn.compact
  def __call__(self, x: jax.Array, cond: jax.Array) -> jax.Array:
    d = x.shape[-1]
    mod = nn.Dense(2 * d, kernel_init=nn.with_logical_partitioning(
        nn.initializers.zeros, ("embed", "mlp")), name="mod")(nn.silu(cond))
    shift, scale = jnp.split(mod, 2, axis=-1)
    y = LayerNorm(use_affine=False)(x)
    return y * (1 + scale[:, None, :]) + shift[:, None, :]


def pixel_shuffle(x: jax.Array, factor: int) -> jax.Array:
  """``[..., H, W, C * f * f] -> [..., H * f, W * f, C]`` (PyTorch's PixelShuffle order)."""
  return einops.rearrange(x, "... h w (c fh fw) -> ... (h fh) (w fw) c", fh=factor, fw=factor)


def window_partition(x: jax.Array, window: int) -> jax.Array:
  """``[B, V, H, W, C] -> [B * nH * nW, V * window * window, C]``: the same spatial window of
  every view forms one attention group, so windows mix information across views."""
  return einops.rearrange(x, "b v (nh wh) (nw ww) c -> (b nh nw) (v wh ww) c",
                          wh=window, ww=window)


def window_merge(x: jax.Array, window: int, batch: int, views: int, height: int,
                 width: int) -> jax.Array:
  return einops.rearrange(x, "(b nh nw) (v wh ww) c -> b v (nh wh) (nw ww) c", b=batch,
                          v=views, nh=height // window, nw=width // window, wh=window, ww=window)


class _WindowGroupBlock(TransformerBlock):
  """:class:`TransformerBlock` as an ``nn.scan`` body over groups of windows
  ``[B, windows, T, C]`` (same parameter names, so the parameter tree does not depend on
  the grouping)."""

  @nn.compact
  def __call__(self, carry, windows):  # pylint: disable=arguments-renamed
    b, g, t, c = windows.shape
    out = TransformerBlock.__call__(self, windows.reshape(b * g, t, c))[0]
    return carry, out.reshape(b, g, t, c)


class WindowBlock(nn.Module):
  """A transformer block over multi-view spatial windows of ``[B, V, H, W, C]``.

  At full resolution (``>= group_min_tokens`` tokens per scene) each scene's windows are
  processed a group of about ``group_tokens`` tokens at a time (``nn.scan``), each group
  recomputed in the backward pass (``nn.remat``), so a group's activations stay in cache
  instead of streaming ``[tokens, 4 C]`` MLP activations through memory (the group size
  measured best on a 2-core CPU: bench/RESULTS.md). Same function and parameters; only the
  order of the parameter-gradient sums changes.
  """

  num_heads: int
  window: int
  mlp_ratio: float = 4.0
  dtype: Dtype = jnp.float32
  attention: str = "auto"  # Attention.impl
  group_min_tokens: int = 65536
  group_tokens: int = 4096

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b, v, h, w, _ = x.shape
    win = min(self.window, h, w)
    tokens = window_partition(x, win)  # [B * windows, T, C]
    per_window, channels = tokens.shape[1:]
    per_scene = tokens.shape[0] // b  # windows of one scene
    per_group = max(1, self.group_tokens // per_window)
    args = (self.num_heads, self.mlp_ratio, self.dtype, self.attention)
    if per_scene * per_window < self.group_min_tokens or per_scene % per_group:
      tokens, _ = TransformerBlock(*args, name="block")(tokens)
    else:
      # Groups of each scene's windows, scanned along axis 1: the batch axis (sharded over
      # the mesh) stays whole in every step.
      groups = tokens.reshape(b, per_scene // per_group, per_group, per_window, channels)
      scan = nn.scan(nn.remat(_WindowGroupBlock, prevent_cse=False),
                     variable_broadcast="params", split_rngs={"params": False},
                     in_axes=1, out_axes=1)
      _, groups = scan(*args, name="block")(None, groups)
      tokens = groups.reshape(b * per_scene, per_window, channels)
    return window_merge(tokens, win, b, v, h, w)
