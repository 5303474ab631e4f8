"""The simple (Elman) recurrent layer.

Params: ``w_ih`` (H, F), ``w_hh`` (H, H), ``b`` (H,). Forward, for every step t,

    a_t = x_t W_ih^T + h_{t-1} W_hh^T + b,      h_t = phi(a_t)     (phi = tanh by default)

Backward through time, a reverse scan carrying dh = dL/dh_t from the future:

    da_t = (dh + dL/dh_t|output) * phi'(a_t)       dh_{t-1} = da_t W_hh

so dL/dh_{t-k} is a product of k Jacobians diag(phi'(a)) W_hh: it shrinks (or grows)
geometrically with k, the vanishing-gradient problem that the LSTM's cell avoids.
phi' comes from the activation layer's own hand-written backward; the weight
gradients are hoisted out of the scan (see ``_shell``).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from funcnn.core.layer import Layer
from funcnn.layers import activations
from funcnn.layers.recurrent._shell import Cell, recurrent_layer

ACTIVATIONS = ("tanh", "relu", "sigmoid", "identity")


def _bias_init(key, g, dtype):
    return {"b": jnp.zeros(g, dtype)}


def _bias_grads(da_x, da_h):
    return {"b": da_x.sum(axis=(0, 1))}


def _cell(activation: str) -> Cell:
    phi = activations.get(activation)

    def scan(params, xp, h0, unroll=1):
        w_hh_t = params["w_hh"].T

        def step(h, xp_t):
            h, _, phi_cache = phi.forward({}, {}, xp_t + h @ w_hh_t)
            return h, (h, phi_cache)

        _, (hs, cache) = jax.lax.scan(step, h0, xp, unroll=unroll)
        return hs, cache

    def reverse_scan(params, cache, h_prev, dys, dh, unroll=1):
        w_hh = params["w_hh"]

        def step(dh, xs):
            phi_cache, dy = xs
            if dy is not None:
                dh = dh + dy
            _, da = phi.backward({}, phi_cache, dh)
            return da @ w_hh, da

        dh0, da = jax.lax.scan(step, dh, (cache, dys), reverse=True, unroll=unroll)
        return da, da, dh0

    return Cell("simple_rnn", "SimpleRNN", 1, 1, "b", _bias_init, scan, reverse_scan, _bias_grads)


def SimpleRNN(hidden: int, activation: str = "tanh", *, return_sequences: bool = True,
              w_init="glorot_uniform", recurrent_init="orthogonal", param_dtype="float32",
              dtype=None) -> Layer:
    """Elman RNN over x (batch, time, features) -> (batch, time, hidden), or
    (batch, hidden) (the last h) with ``return_sequences=False``.

    ``x`` may be a pair ``(x, h0)``, h0 (batch, hidden), to start from a given state
    (zero otherwise); the backward then returns ``(dx, dh0)``. ``activation`` is one
    of ``ACTIVATIONS``; ``w_ih`` starts Glorot-uniform, ``w_hh`` orthogonal, ``b`` zero.
    ``param_dtype``/``dtype``: storage and computation dtypes (``funcnn.core.dtypes``).

    Raises ``ValueError`` for a non-positive ``hidden``, an unknown activation and, at
    trace time, an input that is not (batch, time, features) with the features it was
    built for (e.g. a 2-D array) or an initial state of the wrong shape.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"SimpleRNN: activation must be one of {ACTIVATIONS}, got {activation!r}")
    return recurrent_layer(_cell(activation), hidden, return_sequences, w_init, recurrent_init,
                           param_dtype, dtype)
