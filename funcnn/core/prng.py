"""Random draws for initialisers: bit for bit ``jax.random``'s, without a program per shape.

Run eagerly (outside ``jit``), every ``jax.random.normal`` or ``uniform`` at a new shape is
a program of its own, and threefry is long to compile (~0.1 s each on a CPU core, ~0.07 s
inside a larger program); a model's ``init`` draws one array per parameter, most of them
at shapes no other parameter has. With JAX's default counter-based threefry
(``jax_threefry_partitionable``), a draw of ``n`` numbers is the first ``n`` of a draw of
any larger size from the same key, whatever the shape. So eager draws run at a size
rounded up to a bucket (8 sizes per power of two: at most 1/8 drawn in vain) and keep the
prefix (cut on the host): one compiled program per bucket and dtype, shared by every layer.
Draws of more than ``MAX_BUCKETED`` numbers (whose compile time is small beside their own),
draws under a trace (``jit``, ``vmap``, ``eval_shape``), with another PRNG implementation or
with the partitionable mode off are ``jax.random``'s own.
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

MIN_BUCKET = 1024  # numbers: one program serves every small draw
MAX_BUCKETED = 1 << 22  # numbers: larger draws run at their own size


def bucket(n: int) -> int:
    """The size drawn for ``n`` numbers: ``n`` rounded up to 8 steps per power of two, at least
    ``MIN_BUCKET``."""
    n = max(int(n), MIN_BUCKET)
    step = 1 << max(n.bit_length() - 4, 0)
    return -(-n // step) * step


@functools.partial(jax.jit, static_argnums=(1, 2))
def _normal(key, size, dtype):
    return jax.random.normal(key, (size,), dtype)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _uniform(key, size, dtype, low, high):
    return jax.random.uniform(key, (size,), dtype, low, high)


def normal_prefix(key: jax.Array, size: int, dtype: Any) -> np.ndarray:
    """The first ``size`` numbers of ``jax.random.normal(key, (bucket(size),), dtype)``, on the
    host: ``jax.random.normal(key, (size,), dtype)`` under partitionable threefry, from the
    bucket's program (``funcnn.check.draws`` draws its float64 normals here too).

    **Arguments:**

    - `key`: a concrete typed threefry key; `size`: a positive int; `dtype`: a float dtype.

    **Returns:**

    A numpy array of shape `(size,)`.
    """
    return np.asarray(_normal(key, bucket(size), np.dtype(dtype)))[:size]


def _bucketed_size(key: Any, shape: tuple[int, ...]) -> int:
    """``prod(shape)`` when a draw of ``shape`` from ``key`` may run bucketed (a concrete threefry
    key, partitionable mode, 1 to ``MAX_BUCKETED`` numbers), else 0."""
    size = int(np.prod(shape))
    if not 0 < size <= MAX_BUCKETED or isinstance(key, jax.core.Tracer) or not jax.config.jax_threefry_partitionable:
        return 0
    if not jnp.issubdtype(jnp.result_type(key), jax.dtypes.prng_key) or np.shape(key):
        return 0  # a raw uint32 key or a batch of keys: jax.random's own path
    return size if str(jax.random.key_impl(key)) == "threefry2x32" else 0


def normal(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32, scale: float = 1.0) -> jax.Array:
    """``scale * jax.random.normal(key, shape, dtype)``, the same numbers.

    **Arguments:**

    - `key`: a typed PRNG key; `shape`: a tuple of ints; `dtype`: a float dtype.
    - `scale`: a Python float, rounded to `dtype` before the product (as `jax.random`'s
      result times a Python float is).

    **Returns:**

    An array of `shape` and `dtype`.
    """
    shape = tuple(int(s) for s in shape)
    size = _bucketed_size(key, shape)
    if not size:
        return scale * jax.random.normal(key, shape, dtype)
    out = normal_prefix(key, size, dtype).reshape(shape)
    # an IEEE product in the draw's dtype, as XLA's multiply of the unfused eager draw is
    return jax.device_put(out if scale == 1.0 else out * np.asarray(scale, out.dtype))


def uniform(key: jax.Array, shape: Sequence[int], dtype: Any, low: float, high: float) -> jax.Array:
    """``jax.random.uniform(key, shape, dtype, low, high)``, the same numbers.

    **Arguments:**

    - `key`: a typed PRNG key; `shape`: a tuple of ints; `dtype`: a float dtype;
      `low`, `high`: Python floats, the bounds.

    **Returns:**

    An array of `shape` and `dtype`.
    """
    shape = tuple(int(s) for s in shape)
    size = _bucketed_size(key, shape)
    if not size:
        return jax.random.uniform(key, shape, dtype, low, high)
    flat = _uniform(key, bucket(size), np.dtype(dtype), np.asarray(low, dtype), np.asarray(high, dtype))
    return jax.device_put(np.asarray(flat)[:size].reshape(shape))
