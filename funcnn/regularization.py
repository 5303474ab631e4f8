r"""L2 weight decay as a loss term, with its gradient written out.

$$
R(\theta) = \frac{\lambda}{2} \sum_{w\ \text{decayed}} \lVert w \rVert^2, \qquad
\frac{\partial R}{\partial w} = \lambda w \quad \text{(each decayed leaf, its own shape)}.
$$

By default only weight matrices and kernels decay: leaves whose name starts with `"w"`
(`w`, `w_ih`, `w_hh`, ...). Biases, BatchNorm's `gamma`/`beta` and anything else are left
alone; pass `include(path, leaf) -> bool` to choose.

This is *coupled* decay: the penalty enters the gradient, so an adaptive optimiser such as
Adam rescales it together with the data gradient, and a weight whose gradient has a large
running second moment is decayed less. Decoupled decay (AdamW, Loshchilov & Hutter 2019)
shrinks the weights directly, outside the adaptive scaling: writing
$\operatorname{adam}(g)$ for the step direction $\hat m / (\sqrt{\hat v} + \epsilon)$ that
Adam computes from the gradients it is fed,

$$
\text{L2 in Adam:}\quad \theta \leftarrow \theta - \eta\, \operatorname{adam}(g + \lambda \theta), \qquad
\text{AdamW:}\quad \theta \leftarrow \theta - \eta\, (\operatorname{adam}(g) + \lambda \theta).
$$

`adamw(lr, weight_decay)` below is `optax.adamw` masked with the same filter as `l2`
(optax's own default decays every leaf, biases included). For plain SGD the two coincide:
optax multiplies the decay by the learning rate, so
`optax.chain(optax.add_decayed_weights(lambda), optax.sgd(lr))` takes exactly the steps of
`optax.sgd(lr)` on the loss plus `l2(lambda)`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Penalty:
    """A term of the objective that depends on the params alone, with its gradient written out.

    **Fields:**

    - `name`: for reports (`"l2(0.001)"`; a sum is `"a+b"`).
    - `value(params) -> scalar`; `grad(params) -> tree`, the structure and shapes of `params`.

    `value_and_grad(..., penalty=...)` adds both (L2 decay, a KL term of an ELBO); `a + b`
    is the penalty whose value and gradient are the sums.
    """

    name: str
    value: Callable
    grad: Callable

    def __add__(self, other: Penalty) -> Penalty:
        """The sum of two penalties: values and gradients add."""
        return Penalty(
            f"{self.name}+{other.name}",
            lambda p: self.value(p) + other.value(p),
            lambda p: jax.tree_util.tree_map(jnp.add, self.grad(p), other.grad(p)),
        )


def leaf_name(path: tuple) -> str:
    """The name of a leaf from its pytree path: the last dict key (`"w"`, `"gamma"`), or
    `""` for a leaf reached by a sequence index. Handy in `include` filters."""
    if not path:
        return ""
    last = path[-1]
    name = getattr(last, "key", getattr(last, "name", ""))
    return name if isinstance(name, str) else ""


def decays_weights(path: tuple, leaf: Any) -> bool:
    """Default filter: decay leaves whose dict key starts with `"w"` (weight matrices and
    kernels); biases `b`, BatchNorm's `gamma`/`beta` and the rest are kept."""
    return leaf_name(path).startswith("w")


def decays_all(path: tuple, leaf: Any) -> bool:
    """Filter that decays every leaf (biases and normalisation parameters too)."""
    return True


def l2_penalty(params: Any, coeff: float, include: Callable[[tuple, Any], bool] = decays_weights) -> jax.Array:
    r"""$\frac{\lambda}{2} \sum_w \lVert w \rVert^2$ over the included leaves ($\lambda$ = `coeff`): a scalar."""
    squares = jax.tree_util.tree_map_with_path(
        lambda p, x: jnp.sum(x * x) if include(p, x) else 0.0, params
    )
    return 0.5 * coeff * sum(jax.tree_util.tree_leaves(squares))


def l2_grad(params: Any, coeff: float, include: Callable[[tuple, Any], bool] = decays_weights) -> Any:
    """`coeff * w` for included leaves, zeros elsewhere (the structure and shapes of `params`)."""
    return jax.tree_util.tree_map_with_path(
        lambda p, x: coeff * x if include(p, x) else jnp.zeros_like(x), params
    )


def l2(coeff: float, include: Callable[[tuple, Any], bool] = decays_weights) -> Penalty:
    """L2 weight decay as a `Penalty`: `l2_penalty` and `l2_grad`. Raises `ValueError` for
    a negative `coeff`."""
    if not coeff >= 0:
        raise ValueError(f"l2: coeff must be >= 0, got {coeff!r}")
    return Penalty(f"l2({coeff})", lambda p: l2_penalty(p, coeff, include), lambda p: l2_grad(p, coeff, include))


def weight_decay_mask(params: Any, include: Callable[[tuple, Any], bool] = decays_weights) -> Any:
    """A tree of bools with the structure of `params`: True where `include(path, leaf)` (an optax mask)."""
    return jax.tree_util.tree_map_with_path(lambda p, x: bool(include(p, x)), params)


def adamw(learning_rate: float | Callable, weight_decay: float, *,
          include: Callable[[tuple, Any], bool] = decays_weights, **adam_kwargs: Any) -> Any:
    """Decoupled weight decay: `optax.adamw` decaying only the leaves `include` picks.

    `learning_rate` may be a schedule; `adam_kwargs` (`b1`, `b2`, `eps`, ...) go to
    `optax.adamw`. The decay is multiplied by the learning rate, as in optax and PyTorch.

    **Returns:**

    An `optax.GradientTransformation`. Raises `ValueError` for a negative `weight_decay`.
    """
    import optax

    if not weight_decay >= 0:
        raise ValueError(f"adamw: weight_decay must be >= 0, got {weight_decay!r}")
    return optax.adamw(learning_rate, weight_decay=weight_decay,
                       mask=lambda params: weight_decay_mask(params, include), **adam_kwargs)
