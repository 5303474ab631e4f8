r"""Differentiable fitting: recover parameters by gradient descent through the simulator.

Chosen (positive) parameters $\theta_k$ are optimised in log space, $\theta_k = e^{u_k}$,
with Adam (optax) on the voltage-trace loss

$$
L(u) = \frac{1}{T} \sum_t \frac{\big(V_t(\theta(u)) - V^*_t\big)^2}{\sigma^2},
$$

where $V_t$ is the RK4 trajectory of `funcnn.science.neurons.simulate` (gradients by
reverse mode through the `lax.scan`) and $\sigma^2$ the target's variance. The
trace should hold a few spikes: over longer traces small timing errors accumulate and
the loss becomes non-convex in the parameters.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from funcnn.science.neurons.equilibrium import NeuronModel
from funcnn.science.neurons.integrate import default_y0, n_steps_for, rk4_trajectory


class FitResult(NamedTuple):
    """What `fit_parameters` returns.

    - `params`: the fitted model (the guess with the chosen fields replaced).
    - `losses`: the loss before each step and after the last, shape `(steps + 1,)`.
    - `history`: for each fitted name, its value before each step and after the last, `(steps + 1,)`.
    """

    params: NeuronModel
    losses: np.ndarray
    history: dict[str, np.ndarray]


def fit_parameters(params: NeuronModel, target_V: jax.Array, names: list[str] | tuple[str, ...],
                   current: float, t_max: float, dt: float | None = None, y0: jax.Array | None = None,
                   steps: int = 300, learning_rate: float = 0.03, save_every: int = 1) -> FitResult:
    """Fit the fields `names` of `params` (the initial guess) to the voltage trace `target_V`.

    **Arguments:**

    - `params`: the initial guess; the fields in `names` must be positive.
    - `target_V`: the target voltage, shape `(T,)`, sampled at the times of
      `simulate(params, current, t_max, dt, save_every=save_every)`.
    - `names`: the fields to fit, e.g. `["gCa", "gK", "phi"]`.
    - `current`, `t_max`, `dt`, `y0`, `save_every`: the simulation, as in `simulate`.
    - `steps`, `learning_rate`: Adam's steps and rate (in log-parameter space).

    **Returns:**

    A `FitResult`; raises `ValueError` naming a bad argument.
    """
    params.validate()
    bad = [n for n in names if n not in params._fields]
    if not names or bad:
        raise ValueError(f"fit_parameters: names must be fields of {type(params).__name__}, "
                         f"got {list(names)}")
    if any(float(getattr(params, n)) <= 0 for n in names):
        raise ValueError(f"fit_parameters: initial values of {list(names)} must be > 0")
    dt = params.default_dt if dt is None else dt
    n = n_steps_for(t_max, dt, "fit_parameters")
    n_save = -(-n // save_every)
    target_V = jnp.asarray(target_V)
    if target_V.shape != (n_save + 1,):
        raise ValueError(f"fit_parameters: target_V must have shape ({n_save + 1},), "
                         f"got {target_V.shape}")
    y0 = default_y0(params) if y0 is None else jnp.asarray(y0)
    scale = jnp.var(target_V)

    def loss(u):
        p = params._replace(**{k: jnp.exp(v) for k, v in u.items()})
        _, ys = rk4_trajectory(p, current, y0, dt, n_save, save_every)
        return jnp.mean((ys[:, 0] - target_V) ** 2) / scale

    opt = optax.adam(learning_rate)

    @jax.jit
    def step(u, state):
        value, g = jax.value_and_grad(loss)(u)
        updates, state = opt.update(g, state, u)
        return optax.apply_updates(u, updates), state, value

    u = {k: jnp.log(jnp.asarray(float(getattr(params, k)))) for k in names}
    state = opt.init(u)
    losses, history = [], {k: [] for k in names}
    for _ in range(steps):
        for k in names:
            history[k].append(float(jnp.exp(u[k])))
        u, state, value = step(u, state)
        losses.append(float(value))
    fitted = params._replace(**{k: float(jnp.exp(v)) for k, v in u.items()})
    losses.append(float(loss(u)))
    for k in names:
        history[k].append(float(getattr(fitted, k)))
    return FitResult(fitted, np.asarray(losses), {k: np.asarray(v) for k, v in history.items()})
