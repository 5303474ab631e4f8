"""One-line errors for bad input: each names the argument and what was expected.

`where` is always the caller's name (e.g. `"Dense"`), the error's first word.
"""
from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np


def positive_int(value: Any, arg: str, where: str) -> int:
    """`value` if it is a positive int (not a bool), else a `ValueError` naming `arg`."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{where}: {arg} must be a positive integer, got {value!r}")
    return value


def example_shape(input_shape: Any, where: str) -> tuple:
    """One example's shape (no batch axis) as a tuple of positive integers.

    A tuple of shapes (a structured input) comes back as a tuple of such tuples. Raises
    `TypeError`/`ValueError` for anything else.
    """
    if isinstance(input_shape, (str, bytes)) or not hasattr(input_shape, "__iter__"):
        raise TypeError(f"{where}: input_shape must be a tuple of positive integers (one example's shape, "
                        f"no batch axis), e.g. (4,), got {input_shape!r}")
    shape = tuple(input_shape)
    if shape and all(isinstance(d, (tuple, list)) for d in shape):  # a structured input: a tuple of shapes
        return tuple(example_shape(d, where) for d in shape)
    if not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d > 0 for d in shape):
        raise ValueError(f"{where}: input_shape must be a tuple of positive integers (one example's shape, "
                         f"no batch axis), got {shape}")
    return tuple(int(d) for d in shape)


def input_rank(input_shape: Any, rank: int, where: str, what: str) -> tuple[int, ...]:
    """One example's shape (no batch axis), checked to have `rank` axes (`what`: their names).

    **Returns:**

    The shape as a tuple of `rank` positive ints.
    """
    shape = example_shape(input_shape, where)
    if len(shape) != rank:
        raise ValueError(
            f"{where}: input_shape must have {rank} axes ({what}) per example, got {shape}"
        )
    return shape


def cotangent(dy: Any, shape: tuple[int, ...], where: str) -> None:
    """Check a backward's `dy` has the shape of the forward's output, `shape` (batch included)."""
    if tuple(jnp.shape(dy)) != tuple(shape):
        raise ValueError(f"{where}.backward: dy must have the shape of the layer's output {tuple(shape)}, "
                         f"got {tuple(jnp.shape(dy))}")


def batch_input(x: Any, trailing: tuple[int | None, ...], where: str, what: str) -> None:
    """Check `x` is a floating batch `(N, *trailing)` (`None` in `trailing` matches any size)."""
    shape = jnp.shape(x)
    ok = len(shape) == len(trailing) + 1 and all(
        t is None or s == t for s, t in zip(shape[1:], trailing)
    )
    if not ok:
        want = "(batch, " + ", ".join("?" if t is None else str(t) for t in trailing) + ")"
        raise ValueError(f"{where}: x must have shape {want} ({what}), got {shape}")
    if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
        raise TypeError(f"{where}: x must be a floating-point array, got dtype {jnp.result_type(x)}")
