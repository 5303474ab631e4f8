r"""The training step: one gradient, one optimizer update, the non-finite guard's flags.

``make_step(model, loss, optimizer)`` builds the one step every trainer runs (``fit``'s
scanned, stepped and sharded epochs, ``train_lm``, ``funcnn bench`` and the benchmarks):

$$
(L_t, g_t) = \bigl(L(\theta_{t-1}), \nabla_\theta L(\theta_{t-1})\bigr), \quad
(u_t, s_t) = \mathrm{update}(g_t, s_{t-1}, \theta_{t-1}), \quad \theta_t = \theta_{t-1} + u_t,
$$

with $L$ the loss of one batch plus the penalties (``l2``, ``penalty``), its gradient by the
hand-written backward (``grad="manual"``) or by autodiff, and the update optax's.

**Loss scaling** is an option of the same step, read from the optimizer's state: when it is a
``precision.LossScaleState`` (the state of ``precision.loss_scaling``, float16 compute), the
objective is multiplied by its scale $S$ (a power of two, so exactly) before the backward,

$$
g = \nabla_\theta (S L) \;\text{(divided by } S \text{ in the optimizer)}, \qquad
\text{reported loss} = (S L) / S,
$$

and a step whose gradients are not finite is skipped: the optimizer leaves params and its own
state unchanged and halves $S$, and the step keeps the model state (running statistics) too.

**The guard.** Every step returns one flag per watched value, in the order of
``guard_names(params)``: the input batch, the loss, each gradient leaf, each parameter leaf
after the update; a flag is set when the value holds a non-finite element. The outer loop
(``funcnn.training.loop``) looks at the flags once per epoch or evaluation. Under loss scaling
a skipped step is the mechanism working, not a failure: its flags are cleared, unless the step
already ran at $S \le 1$ (nothing smaller is left to try), where they stand.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from funcnn.core.layer import Layer
from funcnn.gradients import _objective_penalty, value_and_grad
from funcnn.losses import Loss
from funcnn.regularization import Penalty, decays_weights
from funcnn.training.precision import LossScaleState, scaled_loss

PyTree = Any
Carry = tuple[PyTree, PyTree, PyTree]
"""``(params, state, opt_state)``: what a step threads from one batch to the next."""
Batch = tuple[jax.Array, jax.Array, "jax.Array | None"]
"""``(x, y, key)``: the inputs ``(B, ...)``, the targets ``(B, ...)`` and the step's PRNG key."""
Step = Callable[[Carry, Batch], tuple[Carry, tuple[jax.Array, jax.Array]]]
"""``step(carry, batch) -> (carry, (loss, flags))``, see ``make_step``."""


def guard_names(params: PyTree) -> list[str]:
    """What each flag of the non-finite guard watches, in the order of the step's flags.

    **Arguments:**

    - `params`: the model's params (any pytree; only its leaves' paths are used).

    **Returns:**

    `2 + 2 P` names for a tree of `P` leaves: `"the input batch"`, `"loss"`, then
    `"grads[...]"` for every leaf, then `"params[...] after the update"` for every leaf.
    """
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    return (["the input batch", "loss"] + [f"grads{p}" for p in paths]
            + [f"params{p} after the update" for p in paths])


def _nonfinite_flags(x: jax.Array, value: jax.Array, grads: PyTree, params: PyTree) -> jax.Array:
    """Bool `(2 + 2 P,)`: which of the values named by ``guard_names`` hold a non-finite element."""
    watched = [x, value, *jax.tree_util.tree_leaves(grads), *jax.tree_util.tree_leaves(params)]
    return jnp.stack([~jnp.all(jnp.isfinite(v)) for v in watched])


def _scaled_value_and_grad(model: Layer, loss: Loss, grad: str, extra: Penalty | None, scale: jax.Array):
    """``f(params, state, x, y, key) -> (S L, grad of S L, state)``: the objective times ``scale``."""
    vg = value_and_grad(model, scaled_loss(loss, scale), mode=grad)

    def f(params, state, x, y, key):
        value, grads, new_state = vg(params, state, x, y, key=key, train=True)
        if extra is not None:
            value = value + scale * extra.value(params)
            grads = jax.tree_util.tree_map(lambda g, r: g + (scale * r).astype(g.dtype), grads, extra.grad(params))
        return value, grads, new_state

    return f


def make_step(model: Layer, loss: Loss, optimizer: optax.GradientTransformation, *, grad: str = "manual",
              l2: float = 0.0, penalty: Penalty | None = None) -> Step:
    r"""The training step ``step((params, state, opt_state), (x, y, key)) -> (carry, (loss, flags))``.

    One gradient of the objective (the loss of the batch, $\frac{l_2}{2}\|w\|^2$ and
    ``penalty``) by the hand-written backward or autodiff, one optax update, and the guard's
    flags (module docstring). Pure and jit-able; ``jax.jit`` it, scan it or shard it.
    With a ``precision.loss_scaling`` optimizer the step is loss-scaled (module docstring).

    **Arguments:**

    - `model`: a funcnn ``Layer``.
    - `loss`: a ``funcnn.losses.Loss``.
    - `optimizer`: an optax ``GradientTransformation`` (or ``precision.loss_scaling(...)``).
    - `grad`: ``"manual"`` (hand-written backward) or ``"autodiff"``.
    - `l2`, `penalty`: extra terms of the objective (``funcnn.gradients.value_and_grad``).

    **Returns:**

    `step`: takes the carry `(params, state, opt_state)` and the batch `(x, y, key)`, `x` of
    shape `(B, ...)`, `y` the targets of the batch, `key` a PRNG key or ``None``; returns the
    new carry and `(loss, flags)`: the unscaled loss (a scalar) and bool flags of shape
    `(len(guard_names(params)),)`. Raises ``ValueError`` for an unknown `grad` or `l2 < 0`.
    """
    extra = _objective_penalty(l2, decays_weights, penalty)
    plain = value_and_grad(model, loss, mode=grad, l2=l2, penalty=penalty)

    def step(carry: Carry, batch: Batch) -> tuple[Carry, tuple[jax.Array, jax.Array]]:
        params, state, opt_state = carry
        x, y, key = batch
        scaled = isinstance(opt_state, LossScaleState)
        if scaled:
            s = opt_state.scale
            value, grads, new_state = _scaled_value_and_grad(model, loss, grad, extra, s)(params, state, x, y, key)
        else:
            value, grads, new_state = plain(params, state, x, y, key=key, train=True)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        if not scaled:
            return (new_params, new_state, opt_state), (value, _nonfinite_flags(x, value, grads, new_params))
        applied = opt_state.finite
        new_state = jax.tree_util.tree_map(lambda n, o: jnp.where(applied, n, o), new_state, state)
        value = value / s
        # g / S is finite exactly where g is (S >= 1): the scaled gradients are watched as they are
        flags = _nonfinite_flags(x, value, grads, new_params) & (applied | (s <= 1.0))
        return (new_params, new_state, opt_state), (value, flags)

    return step
