r"""Multi-head self-attention (Vaswani et al., 2017) with a FlashAttention-style backward.

Parameters in `torch.nn.MultiheadAttention`'s layout: $W_{in}$ `(3D, D)` stacks the query,
key and value projections (rows `0:D`, `D:2D`, `2D:3D`), $b_{in}$ `(3D,)`, $W_{out}$ `(D, D)`,
$b_{out}$ `(D,)` (no biases with `use_bias=False`). $x$ has shape `(B, T, D)`; there are
$H$ heads of size $d = D / H$.

**Forward.**

$$
[Q\;K\;V] = x W_{in}^\top + b_{in}, \quad \text{each split into } H \text{ heads } (B, H, T, d),
$$

$$
S = \frac{Q K^\top}{\sqrt d} \;(B, H, T, T), \qquad
\ell_i = \log \sum_j e^{S_{ij}}, \qquad P = e^{S - \ell}, \qquad O = P V ,
$$

the heads merged back to `(B, T, D)`, and $y = O W_{out}^\top + b_{out}$. Causal: $S_{ij} = -\infty$
for $j > i$ (position $i$ sees $j \le i$ only, so $P_{ij} = 0$ there).

**Cache.** $x$ `(B, T, D)`, $[Q\;K\;V]$ `(B, T, 3D)`, $O$ `(B, T, D)` and $\ell$ `(B, H, T)`:
$BT(5D + H)$ numbers, linear in $T$. The attention matrix ($BHT^2$ numbers) is recomputed
in the backward from $Q$, $K$ and $\ell$ instead of stored. (The forward and the backward
still form $S$, $P$ and $dS$, $T \times T$ per head, while they run: what is linear in $T$ is
what is kept between them.)

**Backward.** Given $dy$ `(B, T, D)`. The output projection is a Dense layer:
$dW_{out} = dy^\top O$, $db_{out} = \sum dy$, $dO = dy\, W_{out}$. Per head, with $P$ recomputed:

$$
dV = P^\top dO, \qquad dP = dO\, V^\top, \qquad
dS = P \odot (dP - \Delta), \qquad \Delta_i = \sum_j P_{ij}\, dP_{ij} = dO_i \cdot O_i ,
$$

$$
dQ = \frac{dS\, K}{\sqrt d}, \qquad dK = \frac{dS^\top Q}{\sqrt d} .
$$

The softmax Jacobian of row $i$ is $\operatorname{diag}(p) - p p^\top$, so
$dS_i = p \odot (dP_i - p \cdot dP_i)$; and $p \cdot dP_i = \sum_j P_{ij}\, dO_i \cdot v_j = dO_i \cdot O_i$,
a product of two $T \times d$ arrays (FlashAttention's $D_i$). Masked entries have $P_{ij} = 0$, so
$dS_{ij} = 0$. Finally the input projection is a Dense layer on $x$:
$dW_{in} = d[Q\;K\;V]^\top x$, $db_{in} = \sum d[Q\;K\;V]$, $dx = d[Q\;K\;V]\, W_{in}$.

**Decoding with a key/value cache.** Called with a state
`{"k": (B, C, D), "v": (B, C, D), "pos": ()}` (from `decode_state`), the layer takes the
$T$ new positions `pos, ..., pos + T - 1` of a sequence whose earlier keys and values are
in the state, writes their keys and values at those rows, and attends over rows
$j \le$ `pos` $+ i$ (`decode_forward`): one new token costs $O(C D + D^2)$ whatever `pos` is.
Decoding is forward-only (no backward cache).

The scores, the softmax (max-shifted) and the products with $P$ run in at least float32
(float16/bfloat16 inputs are upcast inside; $O$ and $dx$ are cast back).
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp

from funcnn.core import initializers
from funcnn.core.dtypes import initialise, layer_dtypes, with_compute_dtype
from funcnn.core.layer import Layer
from funcnn.core.sharding import batch_outer
from funcnn.core.validate import positive_int

Cache = tuple[jax.Array, jax.Array, jax.Array, jax.Array]


def split_heads(a: jax.Array, heads: int) -> jax.Array:
    """`(B, T, H d)` -> `(B, H, T, d)`."""
    b, t, e = a.shape
    return a.reshape(b, t, heads, e // heads).transpose(0, 2, 1, 3)


def merge_heads(a: jax.Array) -> jax.Array:
    """`(B, H, T, d)` -> `(B, T, H d)`."""
    b, h, t, d = a.shape
    return a.transpose(0, 2, 1, 3).reshape(b, t, h * d)


def softmax_rows_backward(p: jax.Array, dp: jax.Array, delta: jax.Array) -> jax.Array:
    r"""$dS = P \odot (dP - \Delta)$: each row's softmax Jacobian $\operatorname{diag}(p) - p p^\top$, contracted.

    **Arguments:** `p`, `dp` of shape `(B, H, T, S)`; `delta` of shape `(B, H, T, 1)`.

    **Returns:** `dS`, shape `(B, H, T, S)`.
    """
    return p * (dp - delta)


def scores(q: jax.Array, k: jax.Array, causal: bool, offset: Any = 0) -> tuple[jax.Array, jax.Array | None]:
    r"""$S = Q K^\top / \sqrt d$, with query $i$ at position `offset` $+ i$ seeing keys $j \le$ `offset` $+ i$.

    **Arguments:** `q` `(B, H, T, d)`, `k` `(B, H, S, d)`; `causal`; `offset` (an int or a traced scalar).

    **Returns:** `(s, mask)`: `s` `(B, H, T, S)` ($-\infty$ where masked); `mask` `(T, S)` (True: seen)
    or `None` when not causal.
    """
    s = jnp.einsum("bhid,bhjd->bhij", q, k) / math.sqrt(q.shape[-1])
    if not causal:
        return s, None
    mask = jnp.arange(k.shape[2])[None, :] <= jnp.arange(q.shape[2])[:, None] + offset
    return jnp.where(mask, s, -jnp.inf), mask


def attention_forward(q: jax.Array, k: jax.Array, v: jax.Array, causal: bool,
                      offset: Any = 0) -> tuple[jax.Array, jax.Array]:
    r"""$O = \operatorname{softmax}(S) V$ per head, and the rows' log-sum-exp $\ell$.

    **Arguments:** `q` `(B, H, T, d)`; `k`, `v` `(B, H, S, d)`; `causal`; `offset` as in `scores`.

    **Returns:** `(o, lse)`: `o` `(B, H, T, d)`, `lse` `(B, H, T)`.
    """
    s, _ = scores(q, k, causal, offset)
    m = jax.lax.stop_gradient(jnp.max(s, axis=-1, keepdims=True))  # finite: a row always sees itself
    e = jnp.exp(s - m)
    total = jnp.sum(e, axis=-1, keepdims=True)
    return jnp.einsum("bhij,bhjd->bhid", e / total, v), (m + jnp.log(total))[..., 0]


def attention_backward(do: jax.Array, q: jax.Array, k: jax.Array, v: jax.Array, o: jax.Array, lse: jax.Array,
                       causal: bool) -> tuple[jax.Array, jax.Array, jax.Array]:
    r"""$(dQ, dK, dV)$ of `attention_forward`, $P$ recomputed from $Q$, $K$ and $\ell$ (module docstring).

    **Arguments:** `do`, `q`, `k`, `v`, `o` of shape `(B, H, T, d)`; `lse` `(B, H, T)`; `causal`.

    **Returns:** `(dq, dk, dv)`, each `(B, H, T, d)`.
    """
    s, mask = scores(q, k, causal)
    p = jnp.exp(s - lse[..., None])  # the forward's P, recomputed
    if mask is not None:
        p = jnp.where(mask, p, 0.0)
    dv = jnp.einsum("bhij,bhid->bhjd", p, do)
    dp = jnp.einsum("bhid,bhjd->bhij", do, v)
    delta = jnp.sum(do * o, axis=-1, keepdims=True)
    ds = softmax_rows_backward(p, dp, delta) / math.sqrt(q.shape[-1])
    return jnp.einsum("bhij,bhjd->bhid", ds, k), jnp.einsum("bhij,bhid->bhjd", ds, q), dv


def _project(a: jax.Array, w: jax.Array, b: jax.Array | None) -> jax.Array:
    """`a @ w.T (+ b)`: `(..., in)` -> `(..., out)`."""
    return a @ w.T if b is None else a @ w.T + b


def mha_forward(params: dict, x: jax.Array, heads: int, causal: bool) -> tuple[jax.Array, Cache]:
    r"""Multi-head self-attention: projections, `attention_forward` per head, output projection.

    **Arguments:** `params` (`w_in` `(3D, D)`, `w_out` `(D, D)`, optional `b_in`, `b_out`);
    `x` `(B, T, D)`; `heads` $H$; `causal`.

    **Returns:** `(y, cache)`: `y` `(B, T, D)`; `cache = (x, qkv, o, lse)` with `qkv` `(B, T, 3D)`,
    `o` `(B, T, D)`, `lse` `(B, H, T)` in the statistics dtype (at least float32).
    """
    sd = jnp.promote_types(x.dtype, jnp.float32)
    qkv = _project(x, params["w_in"], params.get("b_in"))
    q, k, v = (split_heads(a, heads).astype(sd) for a in jnp.split(qkv, 3, axis=-1))
    o, lse = attention_forward(q, k, v, causal)
    o = merge_heads(o).astype(x.dtype)
    return _project(o, params["w_out"], params.get("b_out")), (x, qkv, o, lse)


def mha_backward(params: dict, cache: Cache, dy: jax.Array, heads: int, causal: bool) -> tuple[dict, jax.Array]:
    r"""`(dparams, dx)` of `mha_forward`: two Dense backwards around `attention_backward`.

    **Arguments:** `params` as in `mha_forward`; its `cache`; `dy` `(B, T, D)`; `heads`; `causal`.

    **Returns:** `(dparams, dx)`: `dparams` with the structure of `params`, `dx` `(B, T, D)`.
    """
    x, qkv, o, lse = cache
    sd = lse.dtype
    grads = {"w_out": batch_outer(dy, o)}
    do = split_heads(dy @ params["w_out"], heads).astype(sd)
    q, k, v = (split_heads(a, heads).astype(sd) for a in jnp.split(qkv, 3, axis=-1))
    dq, dk, dv = attention_backward(do, q, k, v, split_heads(o, heads).astype(sd), lse, causal)
    dqkv = jnp.concatenate([merge_heads(a) for a in (dq, dk, dv)], axis=-1).astype(dy.dtype)
    grads["w_in"] = batch_outer(dqkv, x)
    if "b_in" in params:
        grads["b_in"], grads["b_out"] = jnp.sum(dqkv, axis=(0, 1)), jnp.sum(dy, axis=(0, 1))
    return grads, dqkv @ params["w_in"]


def decode_state(batch: int, context: int, width: int, dtype: Any = jnp.float32) -> dict[str, jax.Array]:
    """An empty key/value cache for decoding: `{"k": (batch, context, width), "v": ..., "pos": ()}`."""
    zeros = jnp.zeros((batch, context, width), dtype)
    return {"k": zeros, "v": zeros, "pos": jnp.zeros((), jnp.int32)}


def decode_forward(params: dict, state: dict, x: jax.Array, heads: int) -> tuple[jax.Array, dict]:
    r"""Causal attention of `T` new positions over the cached keys and values (module docstring).

    **Arguments:** `params` as in `mha_forward`; `state` `{"k", "v": (B, C, D), "pos": ()}`;
    `x` `(B, T, D)`, the positions `pos, ..., pos + T - 1` (`pos + T <= C`, not checked under `jit`).

    **Returns:** `(y, state)`: `y` `(B, T, D)` and the state with the new keys and values written
    at rows `pos, ..., pos + T - 1` and `pos` advanced by `T`.
    """
    pos = state["pos"]
    qkv = _project(x, params["w_in"], params.get("b_in"))
    q, k, v = jnp.split(qkv, 3, axis=-1)
    at = (jnp.zeros_like(pos), pos, jnp.zeros_like(pos))
    keys = jax.lax.dynamic_update_slice(state["k"], k.astype(state["k"].dtype), at)
    values = jax.lax.dynamic_update_slice(state["v"], v.astype(state["v"].dtype), at)
    sd = jnp.promote_types(x.dtype, jnp.float32)
    o, _ = attention_forward(*(split_heads(a, heads).astype(sd) for a in (q, keys, values)), True, pos)
    y = _project(merge_heads(o).astype(x.dtype), params["w_out"], params.get("b_out"))
    return y, {"k": keys, "v": values, "pos": pos + x.shape[1]}


def attention_params(key: jax.Array, d: int, w_init: Callable, out_init: Callable, b_init: Callable | None,
                     dtype: Any) -> dict[str, jax.Array]:
    """`{"w_in": (3d, d), "b_in": (3d,), "w_out": (d, d), "b_out": (d,)}` (no biases when `b_init` is None)."""
    k1, k2, k3, k4 = jax.random.split(key, 4)
    params = {"w_in": initialise(w_init, k1, (3 * d, d), d, 3 * d, dtype),
              "w_out": initialise(out_init, k3, (d, d), d, d, dtype)}
    if b_init is not None:
        params["b_in"] = initialise(b_init, k2, (3 * d,), d, 3 * d, dtype)
        params["b_out"] = initialise(b_init, k4, (d,), d, d, dtype)
    return params


def checked_shape(shape: Any, heads: int) -> tuple[int, ...]:
    """One example's shape `(T, D)` as a tuple; a one-line `ValueError` unless D is divisible by `heads`."""
    shape = tuple(shape)
    if len(shape) != 2 or shape[1] % heads:
        raise ValueError(f"MultiHeadAttention: input must be (time, D) per example with D divisible by "
                         f"heads={heads}, got {shape}")
    return shape


def _check_input(x: Any, d: int) -> None:
    """One-line errors unless `x` is a float array `(batch, time, d)`."""
    if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
        raise TypeError(f"MultiHeadAttention: x must be a floating-point array, got dtype {jnp.result_type(x)}")
    if jnp.ndim(x) != 3 or jnp.shape(x)[-1] != d:
        raise ValueError(f"MultiHeadAttention: x must have shape (batch, time, {d}), got {jnp.shape(x)}")


def MultiHeadAttention(heads: int, *, causal: bool = False, w_init: str | Callable = "glorot_uniform",
                       b_init: str | Callable = "zeros", out_init: str | Callable | None = None,
                       use_bias: bool = True, param_dtype: Any = jnp.float32, dtype: Any = None) -> Layer:
    """Self-attention over x `(batch, T, D)` with `heads` heads -> `(batch, T, D)`.

    Params `{"w_in": (3D, D), "b_in": (3D,), "w_out": (D, D), "b_out": (D,)}` as in
    `torch.nn.MultiheadAttention` (no biases with `use_bias=False`); `w_init` draws `w_in`,
    `out_init` (default: `w_init`) draws `w_out`. `param_dtype`, `dtype` as every layer's.
    `causal=True`: position i attends to j <= i only. A state from `decode_state` (instead
    of `{}`) makes the layer decode with a key/value cache (causal only; module docstring).

    **Raises:** `ValueError` for a non-positive `heads`, D not divisible by `heads` or an input
    that is not (batch, T, D); `TypeError` for a non-bool `causal`/`use_bias`, a non-float input or dtype.
    """
    positive_int(heads, "heads", "MultiHeadAttention")
    for value, arg in ((causal, "causal"), (use_bias, "use_bias")):
        if not isinstance(value, bool):
            raise TypeError(f"MultiHeadAttention: {arg} must be a bool, got {value!r}")
    param_dtype, dtype = layer_dtypes(param_dtype, dtype, "MultiHeadAttention")
    w_init = initializers.get(w_init, "w_init")
    out_init = w_init if out_init is None else initializers.get(out_init, "out_init")
    b_init = initializers.get(b_init, "b_init") if use_bias else None
    check_shape = functools.partial(checked_shape, heads=heads)

    def init(key, input_shape):
        return attention_params(key, check_shape(input_shape)[1], w_init, out_init, b_init, param_dtype), {}

    def forward(params, state, x, *, key=None, train=False):
        _check_input(x, params["w_out"].shape[0])
        if state:
            if not causal:
                raise ValueError("MultiHeadAttention: decoding with a key/value cache needs causal=True")
            y, state = decode_forward(params, state, x, heads)
            return y, state, None
        y, cache = mha_forward(params, x, heads, causal)
        return y, state, cache

    def backward(params, cache, dy):
        return mha_backward(params, cache, dy, heads, causal)

    return with_compute_dtype(Layer("attention", init, forward, backward, check_shape), dtype)
