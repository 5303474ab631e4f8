"""The checker's random draws: bit for bit those of ``jax.random``, compiled once per size.

Every draw of ``jax.random`` at a new shape is a new compiled program (threefry is long:
~0.3 s to compile on one CPU core), and a check needs several: a key split in 3 or 4,
the cotangent dy, the random parameters, the sampled elements of a large leaf (``sample``). With the
default counter-based threefry (``jax_threefry_partitionable``), a draw of n numbers is
the first n of a draw of any larger size from the same key, and the first n keys of a
larger split are the keys of ``split(key, n)``. So the checker splits keys at counts rounded
up to a power of two and draws its normals at the size buckets of ``funcnn.core.prng`` (the
initialisers' programs; a handful per process, shared by every check), and keeps
the prefix: the same numbers as ``jax.random.normal(key, shape)`` and
``jax.random.split(key, n)``, without a program per shape.
"""
from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from funcnn.core import prng

MIN_BUCKET = 64  # keys


def _bucket(n: int, least: int = MIN_BUCKET) -> int:
    return max(least, 1 << max(int(n) - 1, 0).bit_length())


def _typed(key):
    if jnp.issubdtype(jnp.result_type(key), jax.dtypes.prng_key):
        return key
    return jax.random.wrap_key_data(np.asarray(key, np.uint32))  # a raw uint32 key (jax.random.PRNGKey)


@functools.partial(jax.jit, static_argnums=1)
def _split_data(key, n):
    return jax.random.key_data(jax.random.split(key, n))


def split(key: jax.Array, n: int) -> list[jax.Array]:
    """``list(jax.random.split(key, n))``: ``n`` typed keys.

    **Arguments:**

    - `key`: a PRNG key (typed, or a raw `uint32` key of shape `(2,)`).
    - `n`: how many keys.

    **Returns:**

    A list of `n` scalar typed keys.
    """
    key = _typed(key)
    with jax.enable_x64(True):  # one program whatever the caller's precision
        data = np.asarray(_split_data(key, _bucket(n)))[:n]
    impl = jax.random.key_impl(key)
    return [jax.random.wrap_key_data(d, impl=impl) for d in data]


def normal(key: jax.Array, shape: Sequence[int]) -> np.ndarray:
    """``jax.random.normal(key, shape, float64)`` as a numpy array (needs ``jax.enable_x64``).

    **Arguments:**

    - `key`: a PRNG key; `shape`: a tuple of ints.

    **Returns:**

    A float64 array of `shape`.
    """
    shape = tuple(int(s) for s in shape)
    size = int(np.prod(shape))
    if size == 0:
        return np.zeros(shape, np.float64)
    with jax.enable_x64(True):
        return prng.normal_prefix(_typed(key), size, np.float64).reshape(shape)


def sample(key: jax.Array, n: int, count: int) -> np.ndarray:
    """A uniformly random subset of ``count`` of ``range(n)``, sorted: the indices of the
    ``count`` smallest of ``normal(key, (n,))`` (ties have probability zero). Made from the
    same bucketed draw as ``normal``, so it compiles nothing new.

    **Arguments:**

    - `key`: a PRNG key; `n`: the population size; `count`: how many, at most `n`.

    **Returns:**

    A sorted int array of shape `(count,)`.
    """
    if not 0 <= count <= n:
        raise ValueError(f"draws.sample: expected 0 <= count <= n, got count={count}, n={n}")
    return np.sort(np.argsort(normal(key, (n,)), kind="stable")[:count])


def labels(key: jax.Array, shape: Sequence[int], classes: int) -> np.ndarray:
    """Uniform class labels in ``range(classes)``: the argmin of ``classes`` standard normals
    (``normal(key, (*shape, classes))``), each class equally likely.

    **Arguments:**

    - `key`: a PRNG key; `shape`: the labels' shape; `classes`: how many classes.

    **Returns:**

    An int32 array of `shape`.
    """
    return np.argmin(normal(key, (*shape, int(classes))), axis=-1).astype(np.int32)
