"""Gated recurrent unit (Cho et al. 2014) in PyTorch's formulation and layout.

Params: ``w_ih`` (3H, F), ``w_hh`` (3H, H), ``b_ih`` (3H,), ``b_hh`` (3H,), gate blocks
in the order (r, z, n) as in ``torch.nn.GRU``. With xp_t = x_t W_ih^T + b_ih and
hp_t = h_{t-1} W_hh^T + b_hh, split into their (r, z, n) blocks:

    r = sigmoid(xp_r + hp_r)     z = sigmoid(xp_z + hp_z)
    n = tanh(xp_n + r * hp_n)
    h_t = (1 - z) * n + z * h_{t-1}

Backward through time, a reverse scan carrying dh = dL/dh_t:

    dn = dh (1 - z)   ->  da_n = dn (1 - n^2)
    da_z = dh (h_{t-1} - n) z (1 - z)
    da_r = da_n hp_n r (1 - r)
    dA_x = [da_r, da_z, da_n]        (w.r.t. xp_t)
    dA_h = [da_r, da_z, da_n * r]    (w.r.t. hp_t: r gates the n block)
    dh_{t-1} = dh * z + dA_h W_hh

and after the scan dW_ih = dA_x^T X, dW_hh = dA_h^T H_prev, db_ih = sum dA_x,
db_hh = sum dA_h (see ``_shell``).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from funcnn.core.layer import Layer
from funcnn.layers.recurrent._shell import Cell, recurrent_layer


def _bias_init(key, g, dtype):
    return {"b_ih": jnp.zeros(g, dtype), "b_hh": jnp.zeros(g, dtype)}


def _scan(params, xp, h0, unroll=1):
    w_hh_t, b_hh = params["w_hh"].T, params["b_hh"]
    h_size = w_hh_t.shape[0]

    def step(h, xp_t):
        hp = h @ w_hh_t + b_hh
        rz = jax.nn.sigmoid(xp_t[:, :2 * h_size] + hp[:, :2 * h_size])
        r, z = rz[:, :h_size], rz[:, h_size:]
        hp_n = hp[:, 2 * h_size:]
        n = jnp.tanh(xp_t[:, 2 * h_size:] + r * hp_n)
        h_new = n + z * (h - n)
        return h_new, (h_new, (r, z, n, hp_n))

    _, (hs, cache) = jax.lax.scan(step, h0, xp, unroll=unroll)
    return hs, cache


def _reverse_scan(params, cache, h_prev, dys, dh, unroll=1):
    w_hh = params["w_hh"]

    def step(dh, xs):
        (r, z, n, hp_n), h_p, dy = xs
        if dy is not None:
            dh = dh + dy
        da_n = dh * (1 - z) * (1 - n * n)
        da_z = dh * (h_p - n) * z * (1 - z)
        da_r = da_n * hp_n * r * (1 - r)
        da_h = jnp.concatenate([da_r, da_z, da_n * r], axis=-1)
        return dh * z + da_h @ w_hh, (jnp.concatenate([da_r, da_z, da_n], axis=-1), da_h)

    dh0, (da_x, da_h) = jax.lax.scan(step, dh, (cache, h_prev, dys), reverse=True, unroll=unroll)
    return da_x, da_h, dh0


def _bias_grads(da_x, da_h):
    return {"b_ih": da_x.sum(axis=(0, 1)), "b_hh": da_h.sum(axis=(0, 1))}


_CELL = Cell("gru", "GRU", 3, 1, "b_ih", _bias_init, _scan, _reverse_scan, _bias_grads)


def GRU(hidden: int, *, return_sequences: bool = True, w_init="glorot_uniform",
        recurrent_init="orthogonal", param_dtype="float32", dtype=None) -> Layer:
    """GRU over x (batch, time, features) -> (batch, time, hidden), or (batch, hidden)
    (the last h) with ``return_sequences=False``.

    ``x`` may be a pair ``(x, h0)``, h0 (batch, hidden), to start from a given state
    (zero otherwise); the backward then returns ``(dx, dh0)``. ``w_ih`` starts
    Glorot-uniform, ``w_hh`` as three orthogonal blocks, both biases at zero.
    ``param_dtype``/``dtype``: storage and computation dtypes (``funcnn.core.dtypes``).

    Raises ``ValueError`` for a non-positive ``hidden`` and, at trace time, for an
    input that is not (batch, time, features) with the features it was built for
    (e.g. a 2-D array) or an initial state of the wrong shape.
    """
    return recurrent_layer(_CELL, hidden, return_sequences, w_init, recurrent_init, param_dtype, dtype)
