"""Long short-term memory (Hochreiter & Schmidhuber 1997), PyTorch/cuDNN layout.

Params: ``w_ih`` (4H, F), ``w_hh`` (4H, H), ``b`` (4H,), gate blocks in the order
(i, f, g, o), so weights move to and from ``torch.nn.LSTM`` (there ``b = b_ih + b_hh``).
Forward, for every step t with a_t = x_t W_ih^T + h_{t-1} W_hh^T + b split into
(a_i, a_f, a_g, a_o):

    i = sigmoid(a_i)   f = sigmoid(a_f)   g = tanh(a_g)   o = sigmoid(a_o)
    c_t = f * c_{t-1} + i * g
    h_t = o * tanh(c_t)

Backward through time, a reverse scan carrying (dh, dc) = (dL/dh_t, dL/dc_t) from
the future (plus dL/dh_t from the output at t):

    do = dh * tanh(c_t)                        dc <- dc + dh * o * (1 - tanh^2 c_t)
    di = dc * g     df = dc * c_{t-1}          dg = dc * i
    da = [di i(1-i), df f(1-f), dg (1-g^2), do o(1-o)]          (B, 4H)
    dh_{t-1} = da W_hh                         dc_{t-1} = dc * f

The cell c_t is the "constant error carousel": dc_{t-1} = f * dc_t, so with f near 1
(the forget bias starts at 1) the gradient survives many steps. The weight gradients
are hoisted out of the scan (see ``_shell``).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from funcnn.core.layer import Layer
from funcnn.layers.recurrent._shell import Cell, recurrent_layer


def _bias_init(key, g, dtype):
    h = g // 4
    return {"b": jnp.zeros(g, dtype).at[h:2 * h].set(1.0)}


def _scan(params, xp, carry0, unroll=1):
    w_hh_t = params["w_hh"].T
    h_size = w_hh_t.shape[0]

    def step(carry, xp_t):
        h, c_prev = carry
        a = xp_t + h @ w_hh_t
        s = jax.nn.sigmoid(a)
        i, f, o = s[:, :h_size], s[:, h_size:2 * h_size], s[:, 3 * h_size:]
        g = jnp.tanh(a[:, 2 * h_size:3 * h_size])
        c = f * c_prev + i * g
        tc = jnp.tanh(c)
        h = o * tc
        return (h, c), (h, (i, f, g, o, c_prev, tc))

    _, (hs, cache) = jax.lax.scan(step, carry0, xp, unroll=unroll)
    return hs, cache


def _reverse_scan(params, cache, h_prev, dys, dcarry, unroll=1):
    w_hh = params["w_hh"]

    def step(carry, xs):
        dh, dc = carry
        (i, f, g, o, c_prev, tc), dy = xs
        if dy is not None:
            dh = dh + dy
        do = dh * tc
        dc = dc + dh * o * (1 - tc * tc)
        da = jnp.concatenate(
            [dc * g * i * (1 - i), dc * c_prev * f * (1 - f), dc * i * (1 - g * g), do * o * (1 - o)], axis=-1)
        return (da @ w_hh, dc * f), da

    dcarry0, da = jax.lax.scan(step, dcarry, (cache, dys), reverse=True, unroll=unroll)
    return da, da, dcarry0


def _bias_grads(da_x, da_h):
    return {"b": da_x.sum(axis=(0, 1))}


_CELL = Cell("lstm", "LSTM", 4, 2, "b", _bias_init, _scan, _reverse_scan, _bias_grads)


def LSTM(hidden: int, *, return_sequences: bool = True, w_init="glorot_uniform",
         recurrent_init="orthogonal", param_dtype="float32", dtype=None) -> Layer:
    """LSTM over x (batch, time, features) -> (batch, time, hidden), or (batch, hidden)
    (the last h) with ``return_sequences=False``.

    ``x`` may be a pair ``(x, (h0, c0))``, h0 and c0 each (batch, hidden), to start
    from a given state (zero otherwise); the backward then returns ``(dx, (dh0, dc0))``.
    ``w_ih`` starts Glorot-uniform, ``w_hh`` as four orthogonal blocks, ``b`` at zero
    except the forget gate's, at 1. ``param_dtype``/``dtype``: storage and computation
    dtypes (``funcnn.core.dtypes``).

    Raises ``ValueError`` for a non-positive ``hidden`` and, at trace time, for an
    input that is not (batch, time, features) with the features it was built for
    (e.g. a 2-D array) or an initial state of the wrong shape.
    """
    return recurrent_layer(_CELL, hidden, return_sequences, w_init, recurrent_init, param_dtype, dtype)
