"""Multi-head self-attention (Vaswani et al., 2017) with a FlashAttention-style backward.

Parameters in ``torch.nn.MultiheadAttention``'s layout: ``w_in`` (3D, D) stacks the
query, key and value projections (rows 0:D, D:2D, 2D:3D), ``b_in`` (3D,), ``w_out``
(D, D), ``b_out`` (D,). For x of shape (B, T, D), H heads of size d = D / H:

    [Q K V] = x w_in^T + b_in,  each split into H heads (B, H, T, d)
    S = Q K^T / sqrt(d)          (B, H, T, T);  causal: S_ij = -inf for j > i
    ell_i = log sum_j exp(S_ij)  (the row's log-sum-exp)
    P = exp(S - ell),  O = P V   (B, H, T, d),  heads merged back to (B, T, D)
    y = O w_out^T + b_out.

Backward, given dy (B, T, D). The output projection is a Dense layer:
dw_out = dy^T O, db_out = sum dy, dO = dy w_out. Per head, with P recomputed from
Q, K and the stored ell (so no T x T array outlives the forward):

    dV = P^T dO,   dP = dO V^T,
    dS = P * (dP - Delta),   Delta_i = sum_j P_ij dP_ij = rowsum(dO_i * O_i),
    dQ = dS K / sqrt(d),   dK = dS^T Q / sqrt(d).

(The softmax Jacobian of row i is diag(p) - p p^T, so dS_i = p * (dP_i - p . dP_i);
and p . dP_i = sum_j P_ij dO_i . v_j = dO_i . O_i, a product of two T x d arrays:
FlashAttention's D_i.) Masked entries have P_ij = 0, so their dS_ij = 0. Finally the
input projection is a Dense layer on x: dw_in = d[Q K V]^T x, db_in = sum d[Q K V],
dx = d[Q K V] w_in.

Cache: x (B, T, D), [Q K V] (B, T, 3D), O (B, T, D) and ell (B, H, T): B T (5D + H)
numbers, linear in T (the attention matrix, B H T^2 numbers, is recomputed in the
backward instead of stored). For B = 1, D = 128, H = 4: 41,216 numbers at T = 64 and
659,456 at T = 1024 (2.6 MB in float32), against 4.2 million for P alone. (The
forward and the backward still form S, P and dS, T x T per head, while they run:
there is no FlashAttention tiling; what is linear in T is what is kept between them.)

The scores, the softmax (max-shifted) and the products with P run in at least
float32 (float16/bfloat16 inputs are upcast inside; O and dx are cast back).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from funcnn.core import initializers
from funcnn.core.dtypes import layer_dtypes, with_compute_dtype
from funcnn.core.sharding import batch_outer
from funcnn.core.validate import positive_int
from funcnn.core.layer import Layer


def _split_heads(a, heads):
    """(B, T, H d) -> (B, H, T, d)."""
    b, t, e = a.shape
    return a.reshape(b, t, heads, e // heads).transpose(0, 2, 1, 3)


def _merge_heads(a):
    """(B, H, T, d) -> (B, T, H d)."""
    b, h, t, d = a.shape
    return a.transpose(0, 2, 1, 3).reshape(b, t, h * d)


def softmax_rows_backward(p, dp, delta):
    """dS = P * (dP - Delta): the softmax Jacobian diag(p) - p p^T of each row, contracted."""
    return p * (dp - delta)


def MultiHeadAttention(heads: int, *, causal: bool = False, w_init="glorot_uniform", b_init="zeros",
                       param_dtype=jnp.float32, dtype=None) -> Layer:
    """Self-attention over x of shape (batch, T, D) with ``heads`` heads; output (batch, T, D).

    Params ``{"w_in": (3D, D), "b_in": (3D,), "w_out": (D, D), "b_out": (D,)}`` as in
    ``torch.nn.MultiheadAttention`` (Glorot-uniform weights, zero biases by default) in
    ``param_dtype``; ``dtype`` is the compute dtype (None: the input's). ``causal=True``
    lets position i attend to positions j <= i only. The scores and the softmax run in at
    least float32 (half-precision inputs are upcast inside). The module docstring gives the
    backward and what the cache holds (linear in T).

    Raises ``ValueError`` for a non-positive ``heads``, D not divisible by ``heads`` or an
    input that is not (batch, T, D); ``TypeError`` for a non-float input or dtype.
    """
    positive_int(heads, "heads", "MultiHeadAttention")
    if not isinstance(causal, bool):
        raise TypeError(f"MultiHeadAttention: causal must be a bool, got {causal!r}")
    param_dtype, dtype = layer_dtypes(param_dtype, dtype, "MultiHeadAttention")
    w_init = initializers.get(w_init, "w_init")
    b_init = initializers.get(b_init, "b_init")

    def check_shape(shape):
        shape = tuple(shape)
        if len(shape) != 2 or shape[1] % heads:
            raise ValueError(f"MultiHeadAttention: input must be (time, D) per example with D divisible by "
                             f"heads={heads}, got {shape}")
        return shape

    def init(key, input_shape):
        _, d = check_shape(input_shape)
        k1, k2, k3, k4 = jax.random.split(key, 4)
        return {"w_in": w_init(k1, (3 * d, d), d, 3 * d, dtype=param_dtype),
                "b_in": b_init(k2, (3 * d,), d, 3 * d, dtype=param_dtype),
                "w_out": w_init(k3, (d, d), d, d, dtype=param_dtype),
                "b_out": b_init(k4, (d,), d, d, dtype=param_dtype)}, {}

    def output_shape(input_shape):
        return check_shape(input_shape)

    def scores(q, k):
        """S = Q K^T / sqrt(d) with the causal mask (or None), in the statistics dtype."""
        s = jnp.einsum("bhid,bhjd->bhij", q, k) / math.sqrt(q.shape[-1])
        if not causal:
            return s, None
        t = s.shape[-1]
        mask = jnp.tril(jnp.ones((t, t), bool))
        return jnp.where(mask, s, -jnp.inf), mask

    def forward(params, state, x, *, key=None, train=False):
        if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
            raise TypeError(f"MultiHeadAttention: x must be a floating-point array, got dtype {jnp.result_type(x)}")
        d = params["w_out"].shape[0]
        if jnp.ndim(x) != 3 or jnp.shape(x)[-1] != d:
            raise ValueError(f"MultiHeadAttention: x must have shape (batch, time, {d}), got {jnp.shape(x)}")
        sd = jnp.promote_types(x.dtype, jnp.float32)
        qkv = x @ params["w_in"].T + params["b_in"]
        q, k, v = (_split_heads(a, heads).astype(sd) for a in jnp.split(qkv, 3, axis=-1))
        s, _ = scores(q, k)
        m = jax.lax.stop_gradient(jnp.max(s, axis=-1, keepdims=True))  # finite: a row always sees itself
        e = jnp.exp(s - m)
        total = jnp.sum(e, axis=-1, keepdims=True)
        lse = (m + jnp.log(total))[..., 0]
        o = _merge_heads(jnp.einsum("bhij,bhjd->bhid", e / total, v)).astype(x.dtype)
        return o @ params["w_out"].T + params["b_out"], state, (x, qkv, o, lse)

    def backward(params, cache, dy):
        x, qkv, o, lse = cache
        sd = lse.dtype
        dw_out, db_out = batch_outer(dy, o), jnp.sum(dy, axis=(0, 1))
        do = _split_heads(dy @ params["w_out"], heads).astype(sd)
        q, k, v = (_split_heads(a, heads).astype(sd) for a in jnp.split(qkv, 3, axis=-1))
        s, mask = scores(q, k)
        p = jnp.exp(s - lse[..., None])  # the forward's P, recomputed
        if mask is not None:
            p = jnp.where(mask, p, 0.0)
        dv = jnp.einsum("bhij,bhid->bhjd", p, do)
        dp = jnp.einsum("bhid,bhjd->bhij", do, v)
        delta = jnp.sum(do * _split_heads(o, heads).astype(sd), axis=-1, keepdims=True)
        ds = softmax_rows_backward(p, dp, delta) / math.sqrt(q.shape[-1])
        dq = jnp.einsum("bhij,bhjd->bhid", ds, k)
        dk = jnp.einsum("bhij,bhid->bhjd", ds, q)
        dqkv = jnp.concatenate([_merge_heads(a) for a in (dq, dk, dv)], axis=-1).astype(dy.dtype)
        grads = {"w_in": batch_outer(dqkv, x), "b_in": jnp.sum(dqkv, axis=(0, 1)), "w_out": dw_out, "b_out": db_out}
        return grads, dqkv @ params["w_in"]

    return with_compute_dtype(Layer("attention", init, forward, backward, output_shape), dtype)
