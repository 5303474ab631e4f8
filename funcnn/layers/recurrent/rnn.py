r"""The simple (Elman) recurrent layer.

**Params.** `w_ih` `(H, F)`, `w_hh` `(H, H)`, `b` `(H,)`.

**Forward** (`rnn_cell_forward`, one step; `rnn_forward`, the scan). With the input
projection hoisted out of the scan, $XP_t = x_t W_{ih}^\top + b$ `(B, H)`:

$$
a_t = XP_t + h_{t-1} W_{hh}^\top, \qquad h_t = \phi(a_t) \qquad (B, H),
$$

$\phi = \tanh$ by default (or ReLU, sigmoid, identity: `funcnn.layers.activations`). The
step's cache is $\phi$'s own, $(a_t, h_t)$, each `(B, H)`.

**Backward through time** (`rnn_cell_backward`, `rnn_backward`): a reverse scan carrying
$dh = \partial L / \partial h_t$ `(B, H)` from the future, plus the output's share at $t$:

$$
da_t = \left(dh + \frac{\partial L}{\partial h_t}\Big|_{\text{output}}\right) \odot \phi'(a_t),
\qquad dh_{t-1} = da_t\, W_{hh} \qquad (B, H).
$$

So $\partial L / \partial h_{t-k}$ is a product of $k$ Jacobians
$\operatorname{diag}(\phi'(a))\, W_{hh}$: it shrinks (or grows) geometrically with $k$, the
vanishing-gradient problem that the LSTM's cell avoids. $\phi'$ comes from the activation's
own hand-written backward; $da_t$ is the gradient of both projections, and the weight
gradients are hoisted out of the scan (`funcnn.layers.recurrent`).
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from funcnn.core.layer import Layer, Params
from funcnn.layers.activations import ELEMENTWISE
from funcnn.layers.recurrent._shell import Cell, recurrent_layer

ACTIVATIONS = ("tanh", "relu", "sigmoid", "identity")


def _bias_init(key, g, dtype):
    return {"b": jnp.zeros(g, dtype)}


def _bias_grads(da_x, da_h):
    return {"b": da_x.sum(axis=(0, 1))}


def rnn_cell_forward(h: jax.Array, xp_t: jax.Array, w_hh_t: jax.Array,
                     activation: str = "tanh") -> tuple[jax.Array, Any]:
    r"""One step, $h_t = \phi(XP_t + h_{t-1} W_{hh}^\top)$.

    **Arguments:**

    - `h`: $h_{t-1}$, `(B, H)`; `xp_t`: the input projection, `(B, H)`.
    - `w_hh_t`: the recurrent weight, transposed, `(H, H)`; `activation`: $\phi$'s name.

    **Returns:**

    `(h_t, cache)`: `h_t` of shape `(B, H)`; `cache` $\phi$'s, `(a_t, h_t)`, each `(B, H)`.
    """
    phi_forward, _ = ELEMENTWISE[activation]
    return phi_forward(xp_t + h @ w_hh_t)


def rnn_cell_backward(dh: jax.Array, cache: Any, w_hh: jax.Array,
                      activation: str = "tanh") -> tuple[jax.Array, jax.Array]:
    r"""One step back, $da_t = dh \odot \phi'(a_t)$, $dh_{t-1} = da_t W_{hh}$.

    **Arguments:**

    - `dh`: the gradient of `h_t` (output's share included), `(B, H)`.
    - `cache`: $\phi$'s cache of the step; `w_hh`: `(H, H)`; `activation`: $\phi$'s name.

    **Returns:**

    `(dh_{t-1}, da_t)`, each `(B, H)`.
    """
    _, phi_backward = ELEMENTWISE[activation]
    da = phi_backward(dh, cache)
    return da @ w_hh, da


def rnn_forward(params: Params, xp: jax.Array, h0: jax.Array, unroll: int = 1, *,
                activation: str = "tanh") -> tuple[jax.Array, Any]:
    r"""The forward scan of `rnn_cell_forward` over time.

    **Arguments:**

    - `params`: `{"w_hh": (H, H), ...}`; `xp`: the input projections `(T, B, H)`; `h0`:
      `(B, H)`; `unroll`: steps per loop iteration; `activation`: $\phi$'s name.

    **Returns:**

    `(hs, cache)`: `hs` of shape `(T, B, H)`; `cache` $\phi$'s caches stacked, `(a, h)`, each `(T, B, H)`.
    """
    w_hh_t = params["w_hh"].T

    def step(h, xp_t):
        h, phi_cache = rnn_cell_forward(h, xp_t, w_hh_t, activation)
        return h, (h, phi_cache)

    _, (hs, cache) = jax.lax.scan(step, h0, xp, unroll=unroll)
    return hs, cache


def rnn_backward(params: Params, cache: Any, h_prev: jax.Array, dys: jax.Array | None, dh: jax.Array,
                 unroll: int = 1, *, activation: str = "tanh") -> tuple[jax.Array, jax.Array, jax.Array]:
    r"""The reverse scan of `rnn_cell_backward` over time.

    **Arguments:**

    - `params`: `{"w_hh": (H, H), ...}`; `cache`: `rnn_forward`'s, `(a, h)`, each `(T, B, H)`.
    - `h_prev`: $h_{t-1}$ for every t, `(T, B, H)` (unused: $\phi$'s caches suffice).
    - `dys`: the outputs' gradients `(T, B, H)`, or `None` (only the last h is an output).
    - `dh`: the last state's gradient `(B, H)`; `unroll`; `activation`: $\phi$'s name.

    **Returns:**

    `(dA_x, dA_h, dh0)`: the pre-activations' gradients `(T, B, H)`, twice (the two
    projections are added), and `dh0` `(B, H)`.
    """
    w_hh = params["w_hh"]

    def step(dh, xs):
        phi_cache, dy = xs
        if dy is not None:
            dh = dh + dy
        return rnn_cell_backward(dh, phi_cache, w_hh, activation)

    dh0, da = jax.lax.scan(step, dh, (cache, dys), reverse=True, unroll=unroll)
    return da, da, dh0


def _cell(activation: str) -> Cell:
    def scan(params, xp, h0, unroll=1):
        return rnn_forward(params, xp, h0, unroll, activation=activation)

    def reverse_scan(params, cache, h_prev, dys, dh, unroll=1):
        return rnn_backward(params, cache, h_prev, dys, dh, unroll, activation=activation)

    return Cell("simple_rnn", "SimpleRNN", 1, 1, "b", _bias_init, scan, reverse_scan, _bias_grads)


def SimpleRNN(hidden: int, activation: str = "tanh", *, return_sequences: bool = True,
              w_init: str | Callable = "glorot_uniform", recurrent_init: str | Callable = "orthogonal",
              param_dtype: Any = "float32", dtype: Any = None) -> Layer:
    r"""Elman RNN over `(B, T, F) -> (B, T, H)`, or `(B, H)` (the last h) with
    `return_sequences=False`.

    Params `{"w_ih": (H, F), "w_hh": (H, H), "b": (H,)}`.

    **Arguments:**

    - `hidden`: H; `activation`: $\phi$, one of `ACTIVATIONS`.
    - `return_sequences`: output every h (default) or only the last.
    - `w_init`: `w_ih`'s initialiser (Glorot-uniform); `recurrent_init`: `w_hh`'s
      (orthogonal); `b` starts at zero.
    - `param_dtype`/`dtype`: storage and computation dtypes (`funcnn.core.dtypes`).

    `x` may be a pair `(x, h0)`, h0 `(B, H)`, to start from a given state (zero otherwise);
    the backward then returns `(dx, dh0)`.

    **Returns:**

    The `Layer`. Raises `ValueError` for a non-positive `hidden`, an unknown activation and,
    at trace time, an input that is not `(B, T, F)` with the features it was built for (e.g. a
    2-D array) or an initial state of the wrong shape.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"SimpleRNN: activation must be one of {ACTIVATIONS}, got {activation!r}")
    return recurrent_layer(_cell(activation), hidden, return_sequences, w_init, recurrent_init,
                           param_dtype, dtype)
