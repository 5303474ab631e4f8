"""L2 weight decay as a loss term, with its gradient written out.

    R(theta) = (lambda / 2) * sum over decayed leaves w of ||w||^2,   dR/dw = lambda * w.

By default only weight matrices and kernels decay: leaves whose name starts with
``"w"`` (``w``, ``w_ih``, ``w_hh``, ...). Biases, BatchNorm's ``gamma``/``beta`` and
anything else are left alone; pass ``include(path, leaf) -> bool`` to choose.

This is *coupled* decay: the penalty enters the gradient, so an adaptive optimiser
such as Adam rescales it together with the data gradient. Decoupled decay (AdamW,
``optax.adamw(lr, weight_decay=...)``) shrinks the weights directly, outside the
adaptive scaling; for plain SGD the two coincide (with weight_decay = lr * lambda).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Penalty:
    """A term of the objective that depends on the params alone, with its gradient
    written out: ``value(params) -> scalar`` and ``grad(params) -> tree like params``.
    ``value_and_grad(..., penalty=...)`` adds both (L2 decay, a KL term of an ELBO)."""

    name: str
    value: Callable
    grad: Callable

    def __add__(self, other: "Penalty") -> "Penalty":
        return Penalty(
            f"{self.name}+{other.name}",
            lambda p: self.value(p) + other.value(p),
            lambda p: jax.tree_util.tree_map(jnp.add, self.grad(p), other.grad(p)),
        )


def decays_weights(path, leaf) -> bool:
    """Default filter: decay leaves whose dict key starts with ``"w"``."""
    last = path[-1]
    name = getattr(last, "key", getattr(last, "name", ""))
    return isinstance(name, str) and name.startswith("w")


def l2_penalty(params, coeff: float, include=decays_weights):
    """(coeff / 2) * sum of squares of the included leaves."""
    squares = jax.tree_util.tree_map_with_path(
        lambda p, x: jnp.sum(x * x) if include(p, x) else 0.0, params
    )
    return 0.5 * coeff * sum(jax.tree_util.tree_leaves(squares))


def l2_grad(params, coeff: float, include=decays_weights):
    """coeff * w for included leaves, zeros elsewhere (same structure as ``params``)."""
    return jax.tree_util.tree_map_with_path(
        lambda p, x: coeff * x if include(p, x) else jnp.zeros_like(x), params
    )


def l2(coeff: float, include=decays_weights) -> Penalty:
    """L2 weight decay as a ``Penalty``."""
    if not coeff >= 0:
        raise ValueError(f"l2: coeff must be >= 0, got {coeff!r}")
    return Penalty(f"l2({coeff})", lambda p: l2_penalty(p, coeff, include), lambda p: l2_grad(p, coeff, include))
