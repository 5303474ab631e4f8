"""Diagnostics of a training run that are not part of training itself."""
from __future__ import annotations

from typing import Any

import jax
import numpy as np

from funcnn.core.layer import Layer
from funcnn.gradients import value_and_grad
from funcnn.losses import Loss


def first_step_gradient_gap(model: Layer, loss: Loss, params: dict, state: dict, x: Any, y: Any,
                            key: jax.Array | None, l2: float) -> float:
    r"""How far the hand-written gradients are from autodiff's at one batch:

    $$
    \max_\ell \frac{\max |g^{\text{manual}}_\ell - g^{\text{autodiff}}_\ell|}{\max |g^{\text{autodiff}}_\ell|}
    $$

    over the params' leaves $\ell$ (the denominator at least $10^{-30}$).

    **Arguments:**

    - `model`, `loss`: what is trained.
    - `params`, `state`: the model's, e.g. at initialisation.
    - `x`, `y`: one batch, `x` of shape `(N, ...)`, `y` of shape `(N,)` or `(N, C)`.
    - `key`: the dropout key of the step, or `None`.
    - `l2`: the L2 coefficient of the objective.

    **Returns:**

    The largest relative difference, a Python float.
    """
    g_m = jax.jit(value_and_grad(model, loss, mode="manual", l2=l2))(params, state, x, y, key=key)[1]
    g_a = jax.jit(value_and_grad(model, loss, mode="autodiff", l2=l2))(params, state, x, y, key=key)[1]
    gaps = jax.tree_util.tree_map(
        lambda m, a: float(np.max(np.abs(m - a)) / max(float(np.max(np.abs(a))), 1e-30)), g_m, g_a)
    return max(jax.tree_util.tree_leaves(gaps))
