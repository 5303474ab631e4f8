r"""Weight initialisers, `init(key, shape, fan_in, fan_out, dtype) -> array` of `shape`.

For a Dense weight of shape `(out, in)`, `fan_in = in` and `fan_out = out`; for a
convolution kernel `(kh, kw, in, out)`, `fan_in = kh kw in` and `fan_out = kh kw out`.

- Glorot/Xavier (2010): $\mathrm{Var}(w) = 2 / (\text{fan\_in} + \text{fan\_out})$, keeps
  activation and gradient variance for tanh/sigmoid units near their linear regime.
- He/Kaiming (2015): $\mathrm{Var}(w) = 2 / \text{fan\_in}$, compensates for ReLU halving
  the variance.
- LeCun: $\mathrm{Var}(w) = 1 / \text{fan\_in}$.

Uniform variants draw from $U(-a, a)$ with $a = \sqrt{3\, \mathrm{Var}}$.

The numbers are `jax.random`'s (`std * jax.random.normal(key, shape, dtype)`,
`jax.random.uniform(key, shape, dtype, -a, a)`); run eagerly they come from one compiled
program per size bucket (`funcnn.core.prng`), not one per shape.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp

from funcnn.core import prng

Initializer = Callable[..., jax.Array]  # init(key, shape, fan_in, fan_out[, dtype]) -> array of `shape`


def _normal(key, shape, variance, dtype):
    return prng.normal(key, shape, dtype, math.sqrt(variance))


def _uniform(key, shape, variance, dtype):
    a = math.sqrt(3.0 * variance)
    return prng.uniform(key, shape, dtype, -a, a)


def zeros(key: jax.Array, shape: tuple[int, ...], fan_in: int | None = None, fan_out: int | None = None,
          dtype: Any = jnp.float32) -> jax.Array:
    """An array of zeros of `shape` (the key and fans are ignored)."""
    return jnp.zeros(shape, dtype)


def ones(key: jax.Array, shape: tuple[int, ...], fan_in: int | None = None, fan_out: int | None = None,
         dtype: Any = jnp.float32) -> jax.Array:
    """An array of ones of `shape` (the key and fans are ignored)."""
    return jnp.ones(shape, dtype)


def glorot_normal(key: jax.Array, shape: tuple[int, ...], fan_in: int, fan_out: int,
                  dtype: Any = jnp.float32) -> jax.Array:
    r"""$\mathcal N(0, 2 / (\text{fan\_in} + \text{fan\_out}))$, an array of `shape`."""
    return _normal(key, shape, 2.0 / (fan_in + fan_out), dtype)


def glorot_uniform(key: jax.Array, shape: tuple[int, ...], fan_in: int, fan_out: int,
                   dtype: Any = jnp.float32) -> jax.Array:
    r"""$U(-a, a)$ with $a = \sqrt{6 / (\text{fan\_in} + \text{fan\_out})}$, an array of `shape`."""
    return _uniform(key, shape, 2.0 / (fan_in + fan_out), dtype)


def he_normal(key: jax.Array, shape: tuple[int, ...], fan_in: int, fan_out: int,
              dtype: Any = jnp.float32) -> jax.Array:
    r"""$\mathcal N(0, 2 / \text{fan\_in})$, an array of `shape`."""
    return _normal(key, shape, 2.0 / fan_in, dtype)


def he_uniform(key: jax.Array, shape: tuple[int, ...], fan_in: int, fan_out: int,
               dtype: Any = jnp.float32) -> jax.Array:
    r"""$U(-a, a)$ with $a = \sqrt{6 / \text{fan\_in}}$, an array of `shape`."""
    return _uniform(key, shape, 2.0 / fan_in, dtype)


def lecun_normal(key: jax.Array, shape: tuple[int, ...], fan_in: int, fan_out: int,
                 dtype: Any = jnp.float32) -> jax.Array:
    r"""$\mathcal N(0, 1 / \text{fan\_in})$, an array of `shape`."""
    return _normal(key, shape, 1.0 / fan_in, dtype)


INITIALIZERS: dict[str, Initializer] = {
    "glorot_normal": glorot_normal,
    "glorot_uniform": glorot_uniform,
    "he_normal": he_normal,
    "he_uniform": he_uniform,
    "lecun_normal": lecun_normal,
    "zeros": zeros,
    "ones": ones,
}


def get(init: str | Initializer, arg: str = "init") -> Initializer:
    """An initialiser from a name (a key of `INITIALIZERS`) or a callable (returned as is).

    Raises `ValueError` naming `arg` for an unknown name.
    """
    if callable(init):
        return init
    if init not in INITIALIZERS:
        raise ValueError(f"{arg} must be a callable or one of {sorted(INITIALIZERS)}, got {init!r}")
    return INITIALIZERS[init]
