"""Mamba2 (Dao & Gu 2024) in jnp: the SSD scan, chunked, and the (bidirectional) block.

  u [B, L, D] -> in_proj -> z [d_inner] | xBC [d_inner + 2 G N] | dt [H]
  xBC -> causal depthwise conv1d (kernel d_conv, bias) -> SiLU -> x [H, P] | B [G, N] | C [G, N]
  dt = softplus(dt + dt_bias); A = -exp(A_log)             (one scalar per head)
  y = SSD(x, dt, A, B, C) + D x                             (head h reads group h // (H / G))
  y = RMSNorm_per_group(y * SiLU(z)) * w -> out_proj -> [B, L, D]

Bidirectional as Long-LRM (arthurhero/Long-LRM, REFERENCES.md): one in_proj and one out_proj
shared; the backward direction reads the in_proj output flipped along the sequence, has its
own conv1d, dt_bias, A_log, D and norm weight, and its output is flipped back; the two
directions' (normed) outputs are summed before out_proj.

The scan (:func:`ssd`) is the chunked SSD algorithm (state-spaces/mamba ``ssd_minimal``)
with the segment sum as a masked cumulative sum, all decays in float32, and the sequence
padded to a multiple of the chunk with ``dt = 0`` and ``x = 0`` (no decay, no input), which
leaves every real position's output unchanged. :func:`ssd_reference` is the sequential
recurrence it is tested against.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from lrm_jax.models import layers


# ----------------------------------------------------------------------------------------
# The scan.
# ----------------------------------------------------------------------------------------


def inclusive_cumsum(x: jax.Array, axis: int) -> jax.Array:
  """``jnp.cumsum(x, axis)`` as a product with a triangular matrix of ones (full float32
  precision).

  On TPU ``jnp.cumsum`` lowers to a reduce-window that the compiler unrolls: in the paper
  Long-LRM step the SSD's cumulative sums over 256-token chunks became fusions of ~600k
  instructions each, growing with the number of chunks (README "Long-LRM"). A ``[T, T]``
  product is a plain matmul at ``T`` multiply-adds per output (``T`` is a chunk or the
  number of chunks here).
  """
  axis = axis % x.ndim
  t = x.shape[axis]
  upper = jnp.triu(jnp.ones((t, t), x.dtype))  # upper[k, i] = 1 for k <= i
  out = jnp.einsum("...k,ki->...i", jnp.moveaxis(x, axis, -1), upper,
                   precision=jax.lax.Precision.HIGHEST)
  return jnp.moveaxis(out, -1, axis)


def segsum(a: jax.Array) -> jax.Array:
  """``a [..., T] -> [..., T, T]``: ``out[i, j] = a[j+1] + ... + a[i]`` for ``j <= i`` (0 on
  the diagonal), ``-inf`` above it.

  A masked cumulative sum: no difference of two running sums (which cancels badly when
  the sums are large), and ``-inf`` is set before any ``exp`` so ``exp(segsum)`` is exactly
  0 above the diagonal with zero (not NaN) gradients. The sum is :func:`inclusive_cumsum`
  (a triangular product, ``T^3`` multiply-adds per ``[T, T]``).
  """
  t = a.shape[-1]
  x = jnp.broadcast_to(a[..., :, None], a.shape + (t,))  # [..., T(i), T(j)]: a[i]
  strictly_lower = jnp.tril(jnp.ones((t, t), bool), -1)  # i > j
  x = jnp.where(strictly_lower, x, 0.0)
  s = inclusive_cumsum(x, axis=-2)  # s[i, j] = sum_{j < k <= i} a[k]
  return jnp.where(jnp.tril(jnp.ones((t, t), bool)), s, -jnp.inf)


def ssd(x: jax.Array, dt: jax.Array, a: jax.Array, b: jax.Array, c: jax.Array,
        chunk_size: int) -> jax.Array:
  """The Mamba2 scan by chunks (without the ``D x`` skip).

  Per head ``h`` (group ``g = h // (H / G)``), state ``S [P, N]`` from 0:
  ``S_t = exp(dt_t A_h) S_{t-1} + dt_t x_t B_t^T``, ``y_t = S_t C_t``.

  Args:
    x: ``[Bt, L, H, P]`` inputs.
    dt: ``[Bt, L, H]`` step sizes (after softplus), >= 0.
    a: ``[H]`` decay rates (``-exp(A_log)``, negative).
    b, c: ``[Bt, L, G, N]`` input and output projections; ``H % G == 0``.
    chunk_size: Q; ``L`` need not be a multiple of it.
  Returns:
    ``[Bt, L, H, P]`` float32.
  """
  bt, length, h, p = x.shape
  g, n = b.shape[-2:]
  if h % g:
    raise ValueError(f"ssd: {h} heads are not divisible by {g} groups.")
  if dt.shape != (bt, length, h) or a.shape != (h,) or c.shape != b.shape \
      or b.shape[:2] != (bt, length):
    raise ValueError(f"ssd: shapes x {x.shape}, dt {dt.shape}, A {a.shape}, B {b.shape}, "
                     f"C {c.shape} do not agree (x [B, L, H, P], dt [B, L, H], A [H], "
                     "B and C [B, L, G, N]).")
  r = h // g
  q = chunk_size
  nc = -(-length // q)
  pad = nc * q - length
  # Decays and sums in float32 at least (float64 inputs stay float64: the gradient tests).
  ftype = jnp.promote_types(x.dtype, jnp.float32)
  f32 = lambda v: v.astype(ftype)
  x, dt, b, c = f32(x), f32(dt), f32(b), f32(c)
  if pad:  # dt = 0, x = 0: no decay and no input at the padded steps
    padding = lambda v: jnp.pad(v, [(0, 0), (0, pad)] + [(0, 0)] * (v.ndim - 2))
    x, dt, b, c = padding(x), padding(dt), padding(b), padding(c)
  x = x.reshape(bt, nc, q, g, r, p)
  dt = dt.reshape(bt, nc, q, g, r)
  b = b.reshape(bt, nc, q, g, n)
  c = c.reshape(bt, nc, q, g, n)
  xdt = x * dt[..., None]  # [Bt, C, Q, G, R, P]
  decay = jnp.transpose(dt * f32(a).reshape(g, r), (0, 3, 4, 1, 2))  # [Bt, G, R, C, Q]
  a_cum = inclusive_cumsum(decay, axis=-1)  # [Bt, G, R, C, Q]
  # Within a chunk the segment sums are differences of the running sum (Q^2, not the Q^3
  # of segsum's masked sum; rounding relative to one chunk's sums), -inf above the diagonal.
  causal = jnp.tril(jnp.ones((q, q), bool))
  seg = jnp.where(causal, a_cum[..., :, None] - a_cum[..., None, :], -jnp.inf)  # [.., Q, Q]
  # 1. Within each chunk: y_l = sum_{s <= l} (C_l . B_s) exp(c_l - c_s) X_s.
  y_diag = jnp.einsum("bclgn,bcsgn,bgrcls,bcsgrp->bclgrp", c, b, jnp.exp(seg), xdt)
  # 2. Each chunk's final state: sum_s exp(c_end - c_s) X_s B_s^T (the last row of seg).
  states = jnp.einsum("bcsgn,bgrcs,bcsgrp->bcgrpn", b, jnp.exp(seg[..., -1, :]), xdt)
  # 3. States carried across chunks by exp(segsum) of the chunks' total decays.
  states = jnp.concatenate([jnp.zeros_like(states[:, :1]), states], axis=1)  # [Bt, C+1, ...]
  chunk_decay = jnp.pad(a_cum[..., -1], [(0, 0)] * 3 + [(1, 0)])  # [Bt, G, R, C+1]
  carried = jnp.einsum("bgrzc,bcgrpn->bzgrpn", jnp.exp(segsum(chunk_decay)), states)
  entering = carried[:, :-1]  # [Bt, C, G, R, P, N]: the state entering each chunk
  # 4. The entering state's contribution: exp(c_l) C_l . S.
  y_off = jnp.einsum("bclgn,bcgrpn,bgrcl->bclgrp", c, entering, jnp.exp(a_cum))
  y = (y_diag + y_off).reshape(bt, nc * q, h, p)
  return y[:, :length]


def ssd_reference(x: jax.Array, dt: jax.Array, a: jax.Array, b: jax.Array,
                  c: jax.Array) -> jax.Array:
  """:func:`ssd` as the sequential recurrence (``lax.scan`` over time): the definition."""
  bt, length, h, p = x.shape
  g = b.shape[-2]
  ftype = jnp.promote_types(x.dtype, jnp.float32)
  rep = lambda v: jnp.repeat(v, h // g, axis=-2)  # [Bt, L, G, N] -> [Bt, L, H, N]
  bh, ch = rep(b.astype(ftype)), rep(c.astype(ftype))

  def step(state, inputs):  # state [Bt, H, P, N]
    xt, dtt, bt_, ct = inputs
    state = (jnp.exp(dtt * a)[..., None, None] * state
             + (dtt[..., None] * xt)[..., None] * bt_[:, :, None, :])
    return state, jnp.einsum("bhpn,bhn->bhp", state, ct)

  time_major = lambda v: jnp.moveaxis(v.astype(ftype), 1, 0)
  init = jnp.zeros((bt, h, p, bh.shape[-1]), ftype)
  _, y = jax.lax.scan(step, init, (time_major(x), time_major(dt), time_major(bh),
                                   time_major(ch)))
  return jnp.moveaxis(y, 0, 1)


# ----------------------------------------------------------------------------------------
# The block.
# ----------------------------------------------------------------------------------------


def causal_conv1d(x: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
  """Depthwise causal conv: ``x [Bt, L, C]``, ``kernel [K, C]``, ``bias [C]`` -> ``[Bt, L, C]``;
  ``out_t = bias + sum_j kernel[j] x_{t - K + 1 + j}`` (zeros before the start)."""
  k = kernel.shape[0]
  length = x.shape[1]
  xp = jnp.pad(x, [(0, 0), (k - 1, 0), (0, 0)])
  out = sum(xp[:, j:j + length] * kernel[j] for j in range(k))
  return out + bias


def gated_rms_norm(y: jax.Array, z: jax.Array, weight: jax.Array, groups: int,
                   eps: float = 1e-5) -> jax.Array:
  """``RMSNorm(y * SiLU(z)) * weight`` with the RMS over each of ``groups`` channel groups:
  ``[..., C]`` -> ``[..., C]`` float32."""
  y = y.astype(jnp.float32) * jax.nn.silu(z.astype(jnp.float32))
  shape = y.shape
  y = y.reshape(shape[:-1] + (groups, shape[-1] // groups))
  y = y * jax.lax.rsqrt(jnp.mean(y * y, axis=-1, keepdims=True) + eps)
  return y.reshape(shape) * weight


def dt_bias_init(dt_min: float, dt_max: float, dt_floor: float):
  """``softplus^-1(dt)`` with ``dt`` log-uniform in ``[dt_min, dt_max]``, floored."""
  def init(key, shape, dtype=jnp.float32):
    u = jax.random.uniform(key, shape, jnp.float32)
    dt = jnp.exp(u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    dt = jnp.maximum(dt, dt_floor)
    return (dt + jnp.log(-jnp.expm1(-dt))).astype(dtype)
  return init


def a_log_init(low: float, high: float):
  """``ln U(low, high)``: ``A = -exp(A_log)`` in ``[-high, -low]``."""
  def init(key, shape, dtype=jnp.float32):
    return jnp.log(jax.random.uniform(key, shape, jnp.float32, low, high)).astype(dtype)
  return init


def conv_init(fan_in: int):
  """PyTorch's Conv1d default: ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``."""
  bound = 1.0 / math.sqrt(fan_in)
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype,
                                                                    -bound, bound)


class Direction(nn.Module):
  """One scan direction's own parameters and computation: conv1d, dt_bias, A_log, D and the
  gated norm. ``zxbcdt [Bt, L, 2 d_inner + 2 G N + H]`` (in_proj output) -> ``[Bt, L,
  d_inner]`` float32.

  ``valid [L]`` bool (optional): False marks padding tokens. Their conv inputs are zero and
  their step ``dt`` is 0, so the state passes them unchanged and unadded to (decay
  ``exp(0 A) = 1``): the other tokens' outputs are those of the sequence without them."""

  d_inner: int
  d_state: int
  d_conv: int
  head_dim: int
  ngroups: int
  chunk_size: int
  dt_min: float = 0.001
  dt_max: float = 0.1
  dt_floor: float = 1e-4
  a_init_range: tuple = (1.0, 16.0)

  @nn.compact
  def __call__(self, zxbcdt: jax.Array, valid: jax.Array | None = None) -> jax.Array:
    di, n, g = self.d_inner, self.d_state, self.ngroups
    h = di // self.head_dim
    conv_dim = di + 2 * g * n
    p = lambda name, init, shape, axes: self.param(
        name, nn.with_logical_partitioning(init, axes), shape)
    conv_w = p("conv_kernel", conv_init(self.d_conv), (self.d_conv, conv_dim), (None, "mlp"))
    conv_b = p("conv_bias", conv_init(self.d_conv), (conv_dim,), ("mlp",))
    dt_bias = p("dt_bias", dt_bias_init(self.dt_min, self.dt_max, self.dt_floor), (h,),
                ("heads",))
    a_log = p("A_log", a_log_init(*self.a_init_range), (h,), ("heads",))
    d_skip = p("D", nn.initializers.ones, (h,), ("heads",))
    norm_w = p("norm", nn.initializers.ones, (di,), ("mlp",))

    zxbcdt = zxbcdt.astype(jnp.float32)
    z, xbc, dt = jnp.split(zxbcdt, [di, di + conv_dim], axis=-1)
    if valid is not None:
      xbc = jnp.where(valid[:, None], xbc, 0.0)
    xbc = jax.nn.silu(causal_conv1d(xbc, conv_w, conv_b))
    x, b, c = jnp.split(xbc, [di, di + g * n], axis=-1)
    bt, length = x.shape[:2]
    x = x.reshape(bt, length, h, self.head_dim)  # [Bt, L, H, P]
    b = b.reshape(bt, length, g, n)
    c = c.reshape(bt, length, g, n)
    dt = jax.nn.softplus(dt + dt_bias)  # [Bt, L, H]
    if valid is not None:
      dt = jnp.where(valid[:, None], dt, 0.0)
    a = -jnp.exp(a_log)
    y = ssd(x, dt, a, b, c, self.chunk_size) + d_skip[:, None] * x
    return gated_rms_norm(y.reshape(bt, length, di), z, norm_w, g)


class Mamba2(nn.Module):
  """The Mamba2 mixer ``[Bt, L, D] -> [Bt, L, D]``, bidirectional as Long-LRM when
  ``bidirectional`` (shared in/out projections, per-direction scan parameters, outputs
  summed). No bias on the projections; the conv has one. Tokens from ``valid_tokens`` on
  are padding (0: none are), which changes no other token's output (:class:`Direction`)."""

  d_state: int = 256
  d_conv: int = 4
  expand: int = 2
  head_dim: int = 64
  ngroups: int = 1
  chunk_size: int = 256
  bidirectional: bool = True
  dtype: layers.Dtype = jnp.float32
  valid_tokens: int = 0
  dt_min: float = 0.001
  dt_max: float = 0.1
  dt_floor: float = 1e-4
  a_init_range: tuple = (1.0, 16.0)

  @nn.compact
  def __call__(self, u: jax.Array) -> jax.Array:
    d = u.shape[-1]
    di = self.expand * d
    if di % self.head_dim:
      raise ValueError(f"Mamba2: d_inner {di} (expand {self.expand} x width {d}) is not "
                       f"divisible by head_dim {self.head_dim}.")
    h = di // self.head_dim
    if h % self.ngroups:
      raise ValueError(f"Mamba2: {h} heads are not divisible by ngroups {self.ngroups}.")
    d_in_proj = 2 * di + 2 * self.ngroups * self.d_state + h
    w_in = self.param("in_proj", nn.with_logical_partitioning(
        layers.dense_init(), ("embed", "mlp")), (d, d_in_proj))
    w_out = self.param("out_proj", nn.with_logical_partitioning(
        layers.dense_init(), ("mlp", "embed")), (di, d))
    zxbcdt = layers.dense_einsum("bld,de->ble", u, w_in, self.dtype)  # [Bt, L, E]
    kw = dict(d_inner=di, d_state=self.d_state, d_conv=self.d_conv, head_dim=self.head_dim,
              ngroups=self.ngroups, chunk_size=self.chunk_size, dt_min=self.dt_min,
              dt_max=self.dt_max, dt_floor=self.dt_floor, a_init_range=self.a_init_range)
    length = u.shape[1]
    valid = None
    if 0 < self.valid_tokens < length:
      valid = jnp.arange(length) < self.valid_tokens  # [L]
    y = Direction(**kw, name="forward")(zxbcdt, valid)  # [Bt, L, d_inner]
    if self.bidirectional:
      flip = lambda a: None if a is None else jnp.flip(a, axis=0)
      y = y + jnp.flip(Direction(**kw, name="backward")(jnp.flip(zxbcdt, axis=1), flip(valid)),
                       axis=1)
    return layers.dense_einsum("ble,ed->bld", y, w_out, self.dtype)


class MambaBlock(nn.Module):
  """Long-LRM's Mamba block, ``x + Mamba2(RMSNorm(x))``; scan-compatible
  ``(x [Bt, L, D], _) -> (x, None)``; tokens from ``valid_tokens`` on are padding (0: none
  are)."""

  d_state: int = 256
  d_conv: int = 4
  expand: int = 2
  head_dim: int = 64
  ngroups: int = 1
  chunk_size: int = 256
  bidirectional: bool = True
  dtype: layers.Dtype = jnp.float32
  valid_tokens: int = 0

  @nn.compact
  def __call__(self, x: jax.Array, _=None):
    x = layers.constrain(x, ("batch", "tokens", "embed"))
    h = nn.RMSNorm(epsilon=1e-5, name="norm",
                   scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)))(x)
    x = x + Mamba2(self.d_state, self.d_conv, self.expand, self.head_dim, self.ngroups,
                   self.chunk_size, self.bidirectional, self.dtype, self.valid_tokens,
                   name="mixer")(h)
    return x.astype(jnp.float32), None
