r"""Time integration: fixed-step RK4 in `lax.scan`, and an adaptive diffrax solver to check it.

RK4 for $\dot y = f(y)$ with step $\Delta t$:

$$
\begin{aligned}
k_1 &= f(y), & k_2 &= f\!\left(y + \tfrac{\Delta t}{2} k_1\right), &
k_3 &= f\!\left(y + \tfrac{\Delta t}{2} k_2\right), & k_4 &= f(y + \Delta t\, k_3),
\end{aligned}
\qquad
y \leftarrow y + \tfrac{\Delta t}{6}\,(k_1 + 2k_2 + 2k_3 + k_4),
$$

with global error $O(\Delta t^4)$. The loop is a `lax.scan`, so `simulate` is
jit-compiled, vmaps over currents or parameters, and differentiates (reverse mode)
through the loop.

Both solvers return a dict `{"t": (T,), "V": (T,), <gate>: (T,), ...}` (gate `N` for
Morris–Lecar; `m`, `h`, `n` for Hodgkin–Huxley). `current` is a constant applied current
(µA/cm²); `y0` defaults to the rest state at zero current (a current step from rest).
"""
from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Callable

import jax
import jax.numpy as jnp

from funcnn.core import extras
from funcnn.science.neurons.equilibrium import NeuronModel, rest_state

if TYPE_CHECKING:  # diffrax is needed only by simulate_adaptive
    import diffrax


def rk4_step(f: Callable[[jax.Array], jax.Array], y: jax.Array, dt: float | jax.Array) -> jax.Array:
    r"""One classical Runge–Kutta step of $\dot y = f(y)$ (module docstring).

    **Arguments:**

    - `f`: the vector field, state `(S,)` -> derivative `(S,)`.
    - `y`: the state, shape `(S,)`.
    - `dt`: the step (ms).

    **Returns:**

    The state after one step, shape `(S,)`.
    """
    k1 = f(y)
    k2 = f(y + 0.5 * dt * k1)
    k3 = f(y + 0.5 * dt * k2)
    k4 = f(y + dt * k3)
    return y + (dt / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)


def n_steps_for(t_max: float, dt: float, where: str = "simulate") -> int:
    """The number of RK4 steps, `round(t_max / dt)` (at least 1), after validating both.

    **Arguments:**

    - `t_max`: the simulated time (ms), concrete, finite and positive.
    - `dt`: the step (ms), concrete, positive and at most `t_max`.
    - `where`: the caller's name, for the error message.

    **Returns:**

    The step count; raises `ValueError` naming the bad argument otherwise.
    """
    dt, t_max = float(dt), float(t_max)
    if not (dt > 0 and dt == dt and dt != float("inf")):
        raise ValueError(f"{where}: dt must be > 0, got {dt!r}")
    if not (t_max > 0 and t_max != float("inf")):
        raise ValueError(f"{where}: t_max must be > 0, got {t_max!r}")
    if dt > t_max:
        raise ValueError(f"{where}: dt must be <= t_max, got dt={dt!r}, t_max={t_max!r}")
    return max(1, int(round(t_max / dt)))


def default_y0(params: NeuronModel) -> jax.Array:
    """The rest state at zero current (the lowest-voltage equilibrium), shape `(S,)`."""
    return rest_state(params, 0.0)


def _as_dict(params: NeuronModel, t: jax.Array, ys: jax.Array) -> dict[str, jax.Array]:
    out = {"t": t}
    for i, name in enumerate(params.state_names):
        out[name] = ys[..., i]
    return out


@partial(jax.jit, static_argnames=("n_save", "save_every"))
def rk4_trajectory(params: NeuronModel, current: jax.Array | float, y0: jax.Array, dt: float | jax.Array,
                   n_save: int, save_every: int) -> tuple[jax.Array, jax.Array]:
    """`n_save * save_every` RK4 steps from `y0`, keeping every `save_every`-th state.

    **Arguments:**

    - `params`: the model; `current`: the applied current (scalar).
    - `y0`: the initial state, shape `(S,)`; `dt`: the step (ms).
    - `n_save`, `save_every`: how many states to keep and the steps between them (static).

    **Returns:**

    `(t, ys)`: times of shape `(n_save + 1,)` and states of shape `(n_save + 1, S)`, the
    initial state first.
    """
    f = lambda y: params.rhs(y, current)

    def inner(y, _):
        return rk4_step(f, y, dt), None

    def outer(y, _):
        y, _ = jax.lax.scan(inner, y, None, length=save_every)
        return y, y

    _, ys = jax.lax.scan(outer, y0, None, length=n_save)
    ys = jnp.concatenate([y0[None], ys], axis=0)
    t = jnp.arange(n_save + 1, dtype=ys.dtype) * (dt * save_every)
    return t, ys


def simulate(params: NeuronModel, current: jax.Array | float, t_max: float, dt: float | None = None,
             y0: jax.Array | None = None, save_every: int = 1) -> dict[str, jax.Array]:
    """Fixed-step RK4 trajectory from $t = 0$ to `t_max`, saved every `save_every` steps.

    jit-compiled (one compilation per model type, step count and `save_every`); `jax.vmap`
    over `current`, `params` or `y0`, and `jax.grad` through it, work.

    **Arguments:**

    - `params`: the model (validated).
    - `current`: the applied current (µA/cm²), a scalar.
    - `t_max`: the simulated time (ms).
    - `dt`: the step (ms); default `params.default_dt`.
    - `y0`: the initial state, shape `(S,)`; default the rest state at zero current.
    - `save_every`: keep every `save_every`-th state (a positive int).

    **Returns:**

    `{"t": (T,), "V": (T,), <gate>: (T,), ...}` with `T = ceil(n / save_every) + 1` for `n` steps.
    """
    params.validate()
    dt = params.default_dt if dt is None else dt
    n = n_steps_for(t_max, dt)
    if isinstance(save_every, bool) or not isinstance(save_every, int) or save_every <= 0:
        raise ValueError(f"simulate: save_every must be a positive integer, got {save_every!r}")
    y0 = default_y0(params) if y0 is None else jnp.asarray(y0)
    if y0.shape[-1] != len(params.state_names):
        raise ValueError(f"simulate: y0 must have {len(params.state_names)} entries "
                         f"{params.state_names}, got shape {y0.shape}")
    t, ys = rk4_trajectory(params, current, y0, dt, -(-n // save_every), save_every)
    return _as_dict(params, t, ys)


def simulate_adaptive(params: NeuronModel, current: jax.Array | float, t_max: float, ts: jax.Array | None = None,
                      y0: jax.Array | None = None, rtol: float = 1e-8, atol: float = 1e-8, solver: "diffrax.AbstractSolver | None" = None,
                      max_steps: int = 1_000_000) -> dict[str, jax.Array]:
    """Adaptive diffrax solve (default Dopri5 with a PID step-size controller), saved at `ts`.

    Meant to check `simulate`: run it under `jax.enable_x64(True)` for tight tolerances.
    diffrax is imported here, so the rest of the module does not need it.

    **Arguments:**

    - `params`, `current`, `t_max`, `y0`: as in `simulate`.
    - `ts`: the save times, shape `(T,)`; default 1001 equally spaced times in `[0, t_max]`.
    - `rtol`, `atol`: the controller's tolerances; `solver`: a diffrax solver (default Dopri5).
    - `max_steps`: diffrax's step limit.

    **Returns:**

    `{"t": (T,), "V": (T,), <gate>: (T,), ...}` as `simulate`.
    """
    diffrax = extras.require("diffrax", "simulate_adaptive")
    params.validate()
    n_steps_for(t_max, t_max, "simulate_adaptive")
    y0 = default_y0(params) if y0 is None else jnp.asarray(y0)
    ts = jnp.linspace(0.0, t_max, 1001) if ts is None else jnp.asarray(ts)
    term = diffrax.ODETerm(lambda t, y, args: params.rhs(y, args))
    sol = diffrax.diffeqsolve(
        term, solver or diffrax.Dopri5(), t0=0.0, t1=float(t_max), dt0=None, y0=y0,
        args=jnp.asarray(current, y0.dtype), saveat=diffrax.SaveAt(ts=ts),
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        max_steps=max_steps)
    return _as_dict(params, sol.ts, sol.ys)
