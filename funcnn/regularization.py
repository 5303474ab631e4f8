"""L2 weight decay as a loss term, with its gradient written out.

    R(theta) = (lambda / 2) * sum over decayed leaves w of ||w||^2,   dR/dw = lambda * w.

By default only weight matrices and kernels decay: leaves whose name starts with
``"w"`` (``w``, ``w_ih``, ``w_hh``, ...). Biases, BatchNorm's ``gamma``/``beta`` and
anything else are left alone; pass ``include(path, leaf) -> bool`` to choose.

This is *coupled* decay: the penalty enters the gradient, so an adaptive optimiser
such as Adam rescales it together with the data gradient, and a weight whose
gradient has a large running second moment is decayed less. Decoupled decay (AdamW,
Loshchilov & Hutter 2019) shrinks the weights directly, outside the adaptive
scaling: writing adam(g) for the step direction m_hat / (sqrt(v_hat) + eps) that
Adam computes from the gradients it is fed,

    L2 in Adam:  theta <- theta - lr * adam(g + lambda theta)
    AdamW:       theta <- theta - lr * (adam(g) + lambda theta).

``adamw(lr, weight_decay)`` below is ``optax.adamw`` masked with the same filter as
``l2`` (optax's own default decays every leaf, biases included). For plain SGD the
two coincide: optax multiplies the decay by the learning rate, so
``optax.chain(optax.add_decayed_weights(lambda), optax.sgd(lr))`` takes exactly the
steps of ``optax.sgd(lr)`` on the loss plus ``l2(lambda)``.
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


def leaf_name(path) -> str:
    """The name of a leaf from its pytree path: the last dict key (``"w"``, ``"gamma"``),
    or ``""`` for a leaf reached by a sequence index. Handy in ``include`` filters."""
    if not path:
        return ""
    last = path[-1]
    name = getattr(last, "key", getattr(last, "name", ""))
    return name if isinstance(name, str) else ""


def decays_weights(path, leaf) -> bool:
    """Default filter: decay leaves whose dict key starts with ``"w"`` (weight matrices
    and kernels); biases ``b``, BatchNorm's ``gamma``/``beta`` and the rest are kept."""
    return leaf_name(path).startswith("w")


def decays_all(path, leaf) -> bool:
    """Filter that decays every leaf (biases and normalisation parameters too)."""
    return True


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


def weight_decay_mask(params, include=decays_weights):
    """A tree of bools like ``params``: True where ``include(path, leaf)`` (an optax mask)."""
    return jax.tree_util.tree_map_with_path(lambda p, x: bool(include(p, x)), params)


def adamw(learning_rate, weight_decay: float, *, include=decays_weights, **adam_kwargs):
    """Decoupled weight decay: ``optax.adamw`` decaying only the leaves ``include`` picks.

    ``learning_rate`` may be a schedule; ``adam_kwargs`` (``b1``, ``b2``, ``eps``...) go to
    ``optax.adamw``. The decay is multiplied by the learning rate, as in optax and PyTorch.
    """
    import optax

    if not weight_decay >= 0:
        raise ValueError(f"adamw: weight_decay must be >= 0, got {weight_decay!r}")
    return optax.adamw(learning_rate, weight_decay=weight_decay,
                       mask=lambda params: weight_decay_mask(params, include), **adam_kwargs)
