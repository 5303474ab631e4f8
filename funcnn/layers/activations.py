"""Elementwise activations and softmax, each with its derivative written out.

For ``y = f(x)`` applied elementwise the Jacobian is diagonal, so the backward is
``dx = dy * f'(x)``, with f' expressed through what the forward already computed:

    sigmoid   y = 1 / (1 + e^-x)         f'(x) = y (1 - y)
    tanh      y = tanh x                 f'(x) = 1 - y^2
    relu      y = max(x, 0)              f'(x) = 1[x > 0]   (0 at the kink x = 0)
    step      y = 1[x >= 0]  (hardlim)   f'(x) = 0 almost everywhere
    identity  y = x                      f'(x) = 1

Softmax over the last axis, y_i = e^{x_i} / sum_j e^{x_j}, has the full Jacobian
J_ij = y_i (delta_ij - y_j), so its vector-Jacobian product is

    dx_i = sum_j dy_j J_ji = y_i (dy_i - sum_j dy_j y_j).

Every activation takes ``dtype`` (the computation's, None: the input's; no params, so no
``param_dtype``). Softmax's sums run in float32 at least (``funcnn.core.dtypes.stat_dtype``);
y and dx come back in x's dtype.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from funcnn.core.dtypes import float_dtype, stat_dtype, with_compute_dtype
from funcnn.core.layer import Layer


def _no_params(key, input_shape):
    return {}, {}


def _same_shape(input_shape):
    return tuple(input_shape)


def _check_float(x, name):
    if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
        raise TypeError(f"{name}: x must be a floating-point array, got dtype {jnp.result_type(x)}")


def _elementwise(name, f, local_grad, dtype=None):
    """A parameter-free layer ``y = f(x)`` with ``dx = dy * local_grad(x, y)``."""
    dtype = float_dtype(dtype, "dtype", name, allow_none=True)

    def forward(params, state, x, *, key=None, train=False):
        _check_float(x, name)
        y = f(x)
        return y, state, (x, y)

    def backward(params, cache, dy):
        x, y = cache
        return {}, dy * local_grad(x, y)

    return with_compute_dtype(Layer(name, _no_params, forward, backward, _same_shape), dtype)


def Sigmoid(*, dtype=None) -> Layer:
    return _elementwise("sigmoid", jax.nn.sigmoid, lambda x, y: y * (1 - y), dtype)


def Tanh(*, dtype=None) -> Layer:
    return _elementwise("tanh", jnp.tanh, lambda x, y: 1 - y * y, dtype)


def ReLU(*, dtype=None) -> Layer:
    return _elementwise("relu", jax.nn.relu, lambda x, y: (x > 0).astype(x.dtype), dtype)


def Step(*, dtype=None) -> Layer:
    """Hardlim: 1 where x >= 0, else 0. Its derivative is zero almost everywhere, so no
    gradient flows through it (which is why the perceptron uses its own rule)."""
    return _elementwise("step", lambda x: (x >= 0).astype(x.dtype), lambda x, y: jnp.zeros_like(x), dtype)


def Identity(*, dtype=None) -> Layer:
    return _elementwise("identity", lambda x: x, lambda x, y: jnp.ones_like(x), dtype)


def Softmax(*, dtype=None) -> Layer:
    """Softmax over the last axis (max-shifted, so large logits do not overflow), its sums
    in float32 at least."""
    dtype = float_dtype(dtype, "dtype", "softmax", allow_none=True)

    def forward(params, state, x, *, key=None, train=False):
        _check_float(x, "softmax")
        y = jax.nn.softmax(x.astype(stat_dtype(x.dtype)), axis=-1)
        return y.astype(x.dtype), state, y

    def backward(params, y, dy):
        return {}, (y * (dy - jnp.sum(dy * y, axis=-1, keepdims=True))).astype(dy.dtype)

    return with_compute_dtype(Layer("softmax", _no_params, forward, backward, _same_shape), dtype)


ACTIVATIONS = {
    "sigmoid": Sigmoid,
    "tanh": Tanh,
    "relu": ReLU,
    "step": Step,
    "identity": Identity,
    "softmax": Softmax,
}


def get(name: str) -> Layer:
    """An activation layer by name."""
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]()
