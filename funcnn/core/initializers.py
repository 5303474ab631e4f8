"""Weight initialisers, ``init(key, shape, fan_in, fan_out, dtype) -> array``.

For a Dense weight of shape (out, in), ``fan_in = in`` and ``fan_out = out``; for a
convolution kernel (kh, kw, in, out), ``fan_in = kh*kw*in`` and ``fan_out = kh*kw*out``.

* Glorot/Xavier (2010): Var(w) = 2 / (fan_in + fan_out), keeps activation and
  gradient variance for tanh/sigmoid units near their linear regime.
* He/Kaiming (2015): Var(w) = 2 / fan_in, compensates for ReLU halving the variance.
* LeCun: Var(w) = 1 / fan_in.

Uniform variants draw from U(-a, a) with a = sqrt(3 Var).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def _normal(scale_fn):
    def init(key, shape, fan_in, fan_out, dtype=jnp.float32):
        std = math.sqrt(scale_fn(fan_in, fan_out))
        return std * jax.random.normal(key, shape, dtype)

    return init


def _uniform(scale_fn):
    def init(key, shape, fan_in, fan_out, dtype=jnp.float32):
        a = math.sqrt(3.0 * scale_fn(fan_in, fan_out))
        return jax.random.uniform(key, shape, dtype, -a, a)

    return init


def zeros(key, shape, fan_in=None, fan_out=None, dtype=jnp.float32):
    return jnp.zeros(shape, dtype)


def ones(key, shape, fan_in=None, fan_out=None, dtype=jnp.float32):
    return jnp.ones(shape, dtype)


glorot_normal = _normal(lambda i, o: 2.0 / (i + o))
glorot_uniform = _uniform(lambda i, o: 2.0 / (i + o))
he_normal = _normal(lambda i, o: 2.0 / i)
he_uniform = _uniform(lambda i, o: 2.0 / i)
lecun_normal = _normal(lambda i, o: 1.0 / i)

INITIALIZERS = {
    "glorot_normal": glorot_normal,
    "glorot_uniform": glorot_uniform,
    "he_normal": he_normal,
    "he_uniform": he_uniform,
    "lecun_normal": lecun_normal,
    "zeros": zeros,
    "ones": ones,
}


def get(init, arg: str = "init"):
    """An initialiser from a name or a callable."""
    if callable(init):
        return init
    if init not in INITIALIZERS:
        raise ValueError(f"{arg} must be a callable or one of {sorted(INITIALIZERS)}, got {init!r}")
    return INITIALIZERS[init]
