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
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from funcnn.layer import Layer


def _no_params(key, input_shape):
    return {}, {}


def _same_shape(input_shape):
    return tuple(input_shape)


def _check_float(x, name):
    if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
        raise TypeError(f"{name}: x must be a floating-point array, got dtype {jnp.result_type(x)}")


def _elementwise(name, f, local_grad):
    """A parameter-free layer ``y = f(x)`` with ``dx = dy * local_grad(x, y)``."""

    def forward(params, state, x, *, key=None, train=False):
        _check_float(x, name)
        y = f(x)
        return y, state, (x, y)

    def backward(params, cache, dy):
        x, y = cache
        return {}, dy * local_grad(x, y)

    return Layer(name, _no_params, forward, backward, _same_shape)


def Sigmoid() -> Layer:
    return _elementwise("sigmoid", jax.nn.sigmoid, lambda x, y: y * (1 - y))


def Tanh() -> Layer:
    return _elementwise("tanh", jnp.tanh, lambda x, y: 1 - y * y)


def ReLU() -> Layer:
    return _elementwise("relu", jax.nn.relu, lambda x, y: (x > 0).astype(x.dtype))


def Step() -> Layer:
    """Hardlim: 1 where x >= 0, else 0. Its derivative is zero almost everywhere, so no
    gradient flows through it (which is why the perceptron uses its own rule)."""
    return _elementwise("step", lambda x: (x >= 0).astype(x.dtype), lambda x, y: jnp.zeros_like(x))


def Identity() -> Layer:
    return _elementwise("identity", lambda x: x, lambda x, y: jnp.ones_like(x))


def Softmax() -> Layer:
    """Softmax over the last axis (max-shifted, so large logits do not overflow)."""

    def forward(params, state, x, *, key=None, train=False):
        _check_float(x, "softmax")
        y = jax.nn.softmax(x, axis=-1)
        return y, state, y

    def backward(params, y, dy):
        return {}, y * (dy - jnp.sum(dy * y, axis=-1, keepdims=True))

    return Layer("softmax", _no_params, forward, backward, _same_shape)


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
