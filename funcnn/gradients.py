r"""Gradients of a model's loss, by the hand-written backward or by autodiff.

`value_and_grad(model, loss, mode="manual")` computes, for one batch $(x, y)$,

$$
L(\theta) = \text{loss}(\text{model}(\theta, x), y) + \frac{l_2}{2} \lVert w \rVert^2 + \text{penalty}(\theta)
$$

and $\partial L / \partial \theta$ (`penalty` is any `funcnn.regularization.Penalty`, e.g. a
KL term). Manual mode runs `forward` (keeping caches), seeds the chain rule with the loss's
own gradient $\partial L / \partial \hat y$ and calls `backward`; autodiff mode asks
`jax.value_and_grad` of `apply`. Both return the same numbers up to rounding.

`per_example_grads` is `jax.vmap` of the same function over one-example batches, so
per-example gradients cost one batched call in either mode.
"""
from __future__ import annotations

from typing import Any, Callable

import jax

from funcnn.core.layer import Layer, Params, State
from funcnn.losses import Loss
from funcnn.regularization import Penalty, decays_weights, l2 as l2_term

MODES = ("manual", "autodiff")


GradFn = Callable[..., tuple[jax.Array, Params, State]]
PerExampleGradFn = Callable[..., tuple[jax.Array, Params]]


def _check_mode(mode):
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def _objective_penalty(l2, l2_include, penalty):
    if not l2 >= 0:
        raise ValueError(f"l2 must be >= 0, got {l2!r}")
    terms = ([l2_term(l2, l2_include)] if l2 else []) + ([penalty] if penalty is not None else [])
    if not terms:
        return None
    return terms[0] if len(terms) == 1 else terms[0] + terms[1]


def value_and_grad(model: Layer, loss: Loss, *, mode: str = "manual", l2: float = 0.0,
                   l2_include: Callable[[Any, Any], bool] = decays_weights,
                   penalty: Penalty | None = None) -> GradFn:
    """A pure, jit-able `f(params, state, x, y, *, key=None, train=True) -> (loss, grads, state)`.

    **Arguments:**

    - `model`: the `Layer`; `loss`: a `funcnn.losses.Loss` (its value and its gradient).
    - `mode`: `"manual"` (the hand-written backward) or `"autodiff"` (`jax.value_and_grad`).
    - `l2`: the L2 coefficient, >= 0; `l2_include(path, leaf)`: which leaves decay.
    - `penalty`: another `Penalty` added to the objective, or `None`.

    **Returns:**

    `f`: for `x` of shape `(N, *input_shape)` and targets `y` as `loss` takes them, `loss` is
    a scalar, `grads` has exactly the structure and shapes of `params`, and `state` is the
    new state; gradients never flow into `state` (running statistics are threaded, not
    differentiated). Raises `ValueError` for an unknown mode or a negative `l2`.
    """
    _check_mode(mode)
    extra = _objective_penalty(l2, l2_include, penalty)

    def manual(params, state, x, y, *, key=None, train=True):
        pred, new_state, cache = model.forward(params, state, x, key=key, train=train)
        value = loss.value(pred, y)
        grads, _ = model.backward(params, cache, loss.grad(pred, y))
        if extra is not None:
            value = value + extra.value(params)
            grads = jax.tree_util.tree_map(lambda g, r: g + r, grads, extra.grad(params))
        return value, grads, new_state

    def autodiff(params, state, x, y, *, key=None, train=True):
        def objective(p):
            pred, new_state = model.apply(p, state, x, key=key, train=train)
            value = loss.value(pred, y)
            if extra is not None:
                value = value + extra.value(p)
            return value, new_state

        (value, new_state), grads = jax.value_and_grad(objective, has_aux=True)(params)
        return value, grads, new_state

    return manual if mode == "manual" else autodiff


def per_example_grads(model: Layer, loss: Loss, *, mode: str = "manual", l2: float = 0.0,
                      l2_include: Callable[[Any, Any], bool] = decays_weights,
                      penalty: Penalty | None = None) -> PerExampleGradFn:
    """`f(params, state, x, y, *, key=None, train=True) -> (losses, grads)`, one per example.

    Arguments as `value_and_grad`.

    **Returns:**

    `f`: for a batch of N examples, `losses` of shape `(N,)` and `grads` shaped as `params`
    with a leading batch axis on every leaf: `grads[...][n]` is the gradient of example n's
    loss alone. With a key, example n uses `jax.random.split(key, N)[n]`.
    """
    vg = value_and_grad(model, loss, mode=mode, l2=l2, l2_include=l2_include, penalty=penalty)

    def one(params, state, xi, yi, key, train):
        value, grads, _ = vg(params, state, xi[None], yi[None], key=key, train=train)
        return value, grads

    def f(params, state, x, y, *, key=None, train=True):
        keys = None if key is None else jax.random.split(key, x.shape[0])
        key_axis = None if key is None else 0
        return jax.vmap(one, in_axes=(None, None, 0, 0, key_axis, None))(params, state, x, y, keys, train)

    return f
