r"""Gated recurrent unit (Cho et al. 2014) in PyTorch's formulation and layout.

**Params.** `w_ih` `(3H, F)`, `w_hh` `(3H, H)`, `b_ih` `(3H,)`, `b_hh` `(3H,)`, gate blocks
in the order $(r, z, n)$ as in `torch.nn.GRU`.

**Forward** (`gru_cell_forward`, one step; `gru_forward`, the scan). With the input
projection hoisted out of the scan, $XP_t = x_t W_{ih}^\top + b_{ih}$ `(B, 3H)`, and the
recurrent one $HP_t = h_{t-1} W_{hh}^\top + b_{hh}$ `(B, 3H)`, split into their
$(r, z, n)$ blocks, each `(B, H)`:

$$
r = \sigma(xp_r + hp_r), \qquad z = \sigma(xp_z + hp_z), \qquad
n = \tanh(xp_n + r \odot hp_n),
$$

$$
h_t = (1 - z) \odot n + z \odot h_{t-1} \qquad (B, H),
$$

computed as $h_t = n + z \odot (h_{t-1} - n)$. The step's cache holds $r, z, n$ and
$hp_n$, each `(B, H)`; the scan stacks them to `(T, B, H)`.

**Backward through time** (`gru_cell_backward`, `gru_backward`): a reverse scan carrying
$dh = \partial L / \partial h_t$ `(B, H)` (the output's share at $t$ added first). The
local derivatives of $h_t$ are $\partial h_t / \partial n = 1 - z$,
$\partial h_t / \partial z = h_{t-1} - n$, $\partial h_t / \partial h_{t-1} = z$ (directly);
through the nonlinearities ($\tanh' = 1 - n^2$, $\sigma' = \sigma(1 - \sigma)$):

$$
da_n = dh \odot (1 - z) \odot (1 - n^2), \qquad
da_z = dh \odot (h_{t-1} - n) \odot z (1 - z), \qquad
da_r = da_n \odot hp_n \odot r (1 - r),
$$

each `(B, H)`. The input projection enters every gate additively, the recurrent one's
$n$ block through $r \odot hp_n$:

$$
dA_{x,t} = [da_r, da_z, da_n], \qquad dA_{h,t} = [da_r, da_z, da_n \odot r] \qquad (B, 3H),
$$

$$
dh_{t-1} = dh \odot z + dA_{h,t}\, W_{hh} \qquad (B, H).
$$

After the scan $dW_{ih} = dA_x^\top X$, $dW_{hh} = dA_h^\top H_{prev}$,
$db_{ih} = \sum dA_x$, $db_{hh} = \sum dA_h$ (`funcnn.layers.recurrent`).
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from funcnn.core.layer import Layer, Params
from funcnn.layers.recurrent._shell import Cell, recurrent_layer

GRUStepCache = tuple  # (r, z, n, hp_n): each (B, H), or (T, B, H) stacked


def _bias_init(key, g, dtype):
    return {"b_ih": jnp.zeros(g, dtype), "b_hh": jnp.zeros(g, dtype)}


def gru_cell_forward(h: jax.Array, xp_t: jax.Array, w_hh_t: jax.Array,
                     b_hh: jax.Array) -> tuple[jax.Array, GRUStepCache]:
    r"""One GRU step (module docstring).

    **Arguments:**

    - `h`: $h_{t-1}$, `(B, H)`.
    - `xp_t`: the input projection of step t, $x_t W_{ih}^\top + b_{ih}$, `(B, 3H)`.
    - `w_hh_t`: the recurrent weight, transposed, `(H, 3H)`; `b_hh`: its bias, `(3H,)`.

    **Returns:**

    `(h_t, cache)`: `h_t` of shape `(B, H)`; `cache` = `(r, z, n, hp_n)`, each `(B, H)`.
    """
    h_size = w_hh_t.shape[0]
    hp = h @ w_hh_t + b_hh
    rz = jax.nn.sigmoid(xp_t[:, :2 * h_size] + hp[:, :2 * h_size])
    r, z = rz[:, :h_size], rz[:, h_size:]
    hp_n = hp[:, 2 * h_size:]
    n = jnp.tanh(xp_t[:, 2 * h_size:] + r * hp_n)
    h_new = n + z * (h - n)
    return h_new, (r, z, n, hp_n)


def gru_cell_backward(dh: jax.Array, cache: GRUStepCache, h_p: jax.Array,
                      w_hh: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """One step back through time (module docstring).

    **Arguments:**

    - `dh`: the gradient of `h_t` (output's share included), `(B, H)`.
    - `cache`: the step's cache from `gru_cell_forward`; `h_p`: $h_{t-1}$, `(B, H)`.
    - `w_hh`: the recurrent weight, `(3H, H)`.

    **Returns:**

    `(dh_{t-1}, (dA_x, dA_h))`: `(B, H)`; the gradients of the two projections, each `(B, 3H)`.
    """
    r, z, n, hp_n = cache
    da_n = dh * (1 - z) * (1 - n * n)
    da_z = dh * (h_p - n) * z * (1 - z)
    da_r = da_n * hp_n * r * (1 - r)
    da_h = jnp.concatenate([da_r, da_z, da_n * r], axis=-1)
    return dh * z + da_h @ w_hh, (jnp.concatenate([da_r, da_z, da_n], axis=-1), da_h)


def gru_forward(params: Params, xp: jax.Array, h0: jax.Array, unroll: int = 1) -> tuple[jax.Array, GRUStepCache]:
    """The forward scan of `gru_cell_forward` over time.

    **Arguments:**

    - `params`: `{"w_hh": (3H, H), "b_hh": (3H,), ...}`; `xp`: the input projections,
      `(T, B, 3H)`; `h0`: `(B, H)`; `unroll`: steps per loop iteration.

    **Returns:**

    `(hs, cache)`: `hs` of shape `(T, B, H)`; `cache` the step caches stacked, each `(T, B, H)`.
    """
    w_hh_t, b_hh = params["w_hh"].T, params["b_hh"]

    def step(h, xp_t):
        h_new, cache = gru_cell_forward(h, xp_t, w_hh_t, b_hh)
        return h_new, (h_new, cache)

    _, (hs, cache) = jax.lax.scan(step, h0, xp, unroll=unroll)
    return hs, cache


def gru_backward(params: Params, cache: GRUStepCache, h_prev: jax.Array, dys: jax.Array | None,
                 dh: jax.Array, unroll: int = 1) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The reverse scan of `gru_cell_backward` over time.

    **Arguments:**

    - `params`: `{"w_hh": (3H, H), ...}`; `cache`: `gru_forward`'s, each `(T, B, H)`.
    - `h_prev`: $h_{t-1}$ for every t, `(T, B, H)`.
    - `dys`: the outputs' gradients `(T, B, H)`, or `None` (only the last h is an output).
    - `dh`: the last state's gradient, `(B, H)`; `unroll`: steps per loop iteration.

    **Returns:**

    `(dA_x, dA_h, dh0)`: the projections' gradients, each `(T, B, 3H)`; `dh0` `(B, H)`.
    """
    w_hh = params["w_hh"]

    def step(dh, xs):
        cache, h_p, dy = xs
        if dy is not None:
            dh = dh + dy
        return gru_cell_backward(dh, cache, h_p, w_hh)

    dh0, (da_x, da_h) = jax.lax.scan(step, dh, (cache, h_prev, dys), reverse=True, unroll=unroll)
    return da_x, da_h, dh0


def _bias_grads(da_x, da_h):
    return {"b_ih": da_x.sum(axis=(0, 1)), "b_hh": da_h.sum(axis=(0, 1))}


_CELL = Cell("gru", "GRU", 3, 1, "b_ih", _bias_init, gru_forward, gru_backward, _bias_grads)


def GRU(hidden: int, *, return_sequences: bool = True, w_init: str | Callable = "glorot_uniform",
        recurrent_init: str | Callable = "orthogonal", param_dtype: Any = "float32", dtype: Any = None) -> Layer:
    """GRU over `(B, T, F) -> (B, T, H)`, or `(B, H)` (the last h) with `return_sequences=False`.

    Params `{"w_ih": (3H, F), "w_hh": (3H, H), "b_ih": (3H,), "b_hh": (3H,)}`, gates (r, z, n).

    **Arguments:**

    - `hidden`: H.
    - `return_sequences`: output every h (default) or only the last.
    - `w_init`: `w_ih`'s initialiser (Glorot-uniform); `recurrent_init`: `w_hh`'s (three
      orthogonal blocks). Both biases start at zero.
    - `param_dtype`/`dtype`: storage and computation dtypes (`funcnn.core.dtypes`).

    `x` may be a pair `(x, h0)`, h0 `(B, H)`, to start from a given state (zero otherwise);
    the backward then returns `(dx, dh0)`.

    **Returns:**

    The `Layer`. Raises `ValueError` for a non-positive `hidden` and, at trace time, for an
    input that is not `(B, T, F)` with the features it was built for (e.g. a 2-D array) or an
    initial state of the wrong shape.
    """
    return recurrent_layer(_CELL, hidden, return_sequences, w_init, recurrent_init, param_dtype, dtype)
