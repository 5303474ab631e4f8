r"""Long short-term memory (Hochreiter & Schmidhuber 1997), PyTorch/cuDNN layout.

**Params.** `w_ih` `(4H, F)`, `w_hh` `(4H, H)`, `b` `(4H,)`, gate blocks in the order
$(i, f, g, o)$, so weights move to and from `torch.nn.LSTM` (there `b = b_ih + b_hh`).

**Forward** (`lstm_cell_forward`, one step; `lstm_forward`, the scan over $t$). With the
input projection hoisted out of the scan ($XP_t = x_t W_{ih}^\top + b$, `(B, 4H)`), the
pre-activations of step $t$ and their four `(B, H)` blocks are

$$
a_t = XP_t + h_{t-1} W_{hh}^\top = [a_i, a_f, a_g, a_o] \qquad (B, 4H),
$$

$$
i = \sigma(a_i), \quad f = \sigma(a_f), \quad g = \tanh(a_g), \quad o = \sigma(a_o), \qquad
c_t = f \odot c_{t-1} + i \odot g, \qquad h_t = o \odot \tanh(c_t),
$$

every one `(B, H)`. The step's cache holds $i, f, g, o, c_{t-1}$ and $\tanh c_t$, each
`(B, H)`; the scan stacks them to `(T, B, H)`.

**Backward through time** (`lstm_cell_backward`, one step; `lstm_backward`, the reverse
scan). The scan carries $(dh, dc) = (\partial L / \partial h_t, \partial L / \partial c_t)$
from the future, each `(B, H)`; $dh$ first gains $\partial L / \partial h_t$ from the
output at $t$. Then, with the local derivatives $\sigma' = \sigma (1 - \sigma)$ and
$\tanh' = 1 - \tanh^2$:

$$
do = dh \odot \tanh c_t, \qquad dc \mathrel{+}= dh \odot o \odot (1 - \tanh^2 c_t),
$$

$$
di = dc \odot g, \qquad df = dc \odot c_{t-1}, \qquad dg = dc \odot i,
$$

$$
da_t = [\,di \odot i (1 - i),\; df \odot f (1 - f),\; dg \odot (1 - g^2),\; do \odot o (1 - o)\,]
\qquad (B, 4H),
$$

$$
dh_{t-1} = da_t\, W_{hh} \quad (B, H), \qquad dc_{t-1} = dc \odot f \quad (B, H).
$$

$da_t$ is the gradient of both projections ($dA_x = dA_h$: the cell adds them), so the
weight gradients are hoisted out of the scan (`funcnn.layers.recurrent`).

The cell $c_t$ is the "constant error carousel": $dc_{t-1} = f \odot dc_t$, so with $f$ near
1 (the forget bias starts at 1) the gradient survives many steps.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from funcnn.core.layer import Layer, Params
from funcnn.layers.recurrent._shell import Cell, recurrent_layer

LSTMStepCache = tuple  # (i, f, g, o, c_prev, tanh c): each (B, H), or (T, B, H) stacked


def _bias_init(key, g, dtype):
    h = g // 4
    return {"b": jnp.zeros(g, dtype).at[h:2 * h].set(1.0)}


def lstm_cell_forward(carry: tuple[jax.Array, jax.Array], xp_t: jax.Array,
                      w_hh_t: jax.Array) -> tuple[tuple[jax.Array, jax.Array], LSTMStepCache]:
    r"""One LSTM step (module docstring).

    **Arguments:**

    - `carry`: `(h_{t-1}, c_{t-1})`, each `(B, H)`.
    - `xp_t`: the input projection of step t, $x_t W_{ih}^\top + b$, `(B, 4H)`.
    - `w_hh_t`: the recurrent weight, transposed, `(H, 4H)`.

    **Returns:**

    `((h_t, c_t), cache)`: `h_t` and `c_t` of shape `(B, H)`; `cache` = `(i, f, g, o,
    c_{t-1}, tanh c_t)`, each `(B, H)`.
    """
    h_size = w_hh_t.shape[0]
    h, c_prev = carry
    a = xp_t + h @ w_hh_t
    s = jax.nn.sigmoid(a)
    i, f, o = s[:, :h_size], s[:, h_size:2 * h_size], s[:, 3 * h_size:]
    g = jnp.tanh(a[:, 2 * h_size:3 * h_size])
    c = f * c_prev + i * g
    tc = jnp.tanh(c)
    h = o * tc
    return (h, c), (i, f, g, o, c_prev, tc)


def lstm_cell_backward(dcarry: tuple[jax.Array, jax.Array], cache: LSTMStepCache,
                       w_hh: jax.Array) -> tuple[tuple[jax.Array, jax.Array], jax.Array]:
    """One step back through time (module docstring).

    **Arguments:**

    - `dcarry`: `(dh, dc)`, the gradients of `h_t` (output's share included) and of `c_t`
      from the future, each `(B, H)`.
    - `cache`: the step's cache from `lstm_cell_forward`.
    - `w_hh`: the recurrent weight, `(4H, H)`.

    **Returns:**

    `((dh_{t-1}, dc_{t-1}), da_t)`: each of the first two `(B, H)`; `da_t`, the gradient of
    the pre-activations, `(B, 4H)`.
    """
    dh, dc = dcarry
    i, f, g, o, c_prev, tc = cache
    do = dh * tc
    dc = dc + dh * o * (1 - tc * tc)
    da = jnp.concatenate(
        [dc * g * i * (1 - i), dc * c_prev * f * (1 - f), dc * i * (1 - g * g), do * o * (1 - o)], axis=-1)
    return (da @ w_hh, dc * f), da


def lstm_forward(params: Params, xp: jax.Array, carry0: tuple[jax.Array, jax.Array],
                 unroll: int = 1) -> tuple[jax.Array, LSTMStepCache]:
    """The forward scan of `lstm_cell_forward` over time.

    **Arguments:**

    - `params`: `{"w_hh": (4H, H), ...}`; `xp`: the input projections, `(T, B, 4H)`.
    - `carry0`: `(h0, c0)`, each `(B, H)`; `unroll`: steps per loop iteration.

    **Returns:**

    `(hs, cache)`: `hs` of shape `(T, B, H)`; `cache` the step caches stacked, each `(T, B, H)`.
    """
    w_hh_t = params["w_hh"].T

    def step(carry, xp_t):
        carry, cache = lstm_cell_forward(carry, xp_t, w_hh_t)
        return carry, (carry[0], cache)

    _, (hs, cache) = jax.lax.scan(step, carry0, xp, unroll=unroll)
    return hs, cache


def lstm_backward(params: Params, cache: LSTMStepCache, h_prev: jax.Array, dys: jax.Array | None,
                  dcarry: tuple[jax.Array, jax.Array], unroll: int = 1) -> tuple[jax.Array, jax.Array, Any]:
    """The reverse scan of `lstm_cell_backward` over time.

    **Arguments:**

    - `params`: `{"w_hh": (4H, H), ...}`; `cache`: `lstm_forward`'s, each `(T, B, H)`.
    - `h_prev`: $h_{t-1}$ for every t, `(T, B, H)` (unused: the LSTM's caches suffice).
    - `dys`: the outputs' gradients `(T, B, H)`, or `None` (only the last h is an output).
    - `dcarry`: `(dh_T, dc_T)`, each `(B, H)`; `unroll`: steps per loop iteration.

    **Returns:**

    `(dA_x, dA_h, (dh0, dc0))`: the pre-activations' gradients `(T, B, 4H)`, twice (the two
    projections are added), and the initial state's gradients, each `(B, H)`.
    """
    w_hh = params["w_hh"]

    def step(carry, xs):
        cache, dy = xs
        if dy is not None:
            carry = (carry[0] + dy, carry[1])
        return lstm_cell_backward(carry, cache, w_hh)

    dcarry0, da = jax.lax.scan(step, dcarry, (cache, dys), reverse=True, unroll=unroll)
    return da, da, dcarry0


def _bias_grads(da_x, da_h):
    return {"b": da_x.sum(axis=(0, 1))}


_CELL = Cell("lstm", "LSTM", 4, 2, "b", _bias_init, lstm_forward, lstm_backward, _bias_grads)


def LSTM(hidden: int, *, return_sequences: bool = True, w_init: str | Callable = "glorot_uniform",
         recurrent_init: str | Callable = "orthogonal", param_dtype: Any = "float32", dtype: Any = None) -> Layer:
    """LSTM over `(B, T, F) -> (B, T, H)`, or `(B, H)` (the last h) with `return_sequences=False`.

    Params `{"w_ih": (4H, F), "w_hh": (4H, H), "b": (4H,)}`, gates (i, f, g, o).

    **Arguments:**

    - `hidden`: H.
    - `return_sequences`: output every h (default) or only the last.
    - `w_init`: `w_ih`'s initialiser (Glorot-uniform); `recurrent_init`: `w_hh`'s (four
      orthogonal blocks). `b` starts at zero except the forget gate's, at 1.
    - `param_dtype`/`dtype`: storage and computation dtypes (`funcnn.core.dtypes`).

    `x` may be a pair `(x, (h0, c0))`, h0 and c0 each `(B, H)`, to start from a given state
    (zero otherwise); the backward then returns `(dx, (dh0, dc0))`.

    **Returns:**

    The `Layer`. Raises `ValueError` for a non-positive `hidden` and, at trace time, for an
    input that is not `(B, T, F)` with the features it was built for (e.g. a 2-D array) or an
    initial state of the wrong shape.
    """
    return recurrent_layer(_CELL, hidden, return_sequences, w_init, recurrent_init, param_dtype, dtype)
