r"""Time integration: fixed-step RK4 in ``lax.scan`` and an adaptive diffrax solver.

RK4 for :math:`\dot y = f(y)`, step :math:`\Delta t`:
:math:`k_1 = f(y)`, :math:`k_2 = f(y + \tfrac{\Delta t}{2} k_1)`,
:math:`k_3 = f(y + \tfrac{\Delta t}{2} k_2)`, :math:`k_4 = f(y + \Delta t k_3)`,
:math:`y \leftarrow y + \tfrac{\Delta t}{6}(k_1 + 2k_2 + 2k_3 + k_4)` (global error
:math:`O(\Delta t^4)`). The loop is a ``lax.scan``, so :func:`simulate` is jit-compiled,
vmaps over currents or parameters and differentiates (reverse mode) through the loop.

Both solvers return a dict ``{"t": (T,), "V": (T,), <gate>: (T,) ...}`` (gates ``N`` for
Morris–Lecar, ``m, h, n`` for Hodgkin–Huxley). ``current`` is a constant applied current
(µA/cm²); ``y0`` defaults to the rest state at zero current (a current step from rest).
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp


def rk4_step(f, y, dt):
    k1 = f(y)
    k2 = f(y + 0.5 * dt * k1)
    k3 = f(y + 0.5 * dt * k2)
    k4 = f(y + dt * k3)
    return y + (dt / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)


def n_steps_for(t_max, dt, where="simulate") -> int:
    """Validate concrete ``t_max``/``dt`` and return the number of steps round(t_max/dt)."""
    dt, t_max = float(dt), float(t_max)
    if not (dt > 0 and dt == dt and dt != float("inf")):
        raise ValueError(f"{where}: dt must be > 0, got {dt!r}")
    if not (t_max > 0 and t_max != float("inf")):
        raise ValueError(f"{where}: t_max must be > 0, got {t_max!r}")
    if dt > t_max:
        raise ValueError(f"{where}: dt must be <= t_max, got dt={dt!r}, t_max={t_max!r}")
    return max(1, int(round(t_max / dt)))


def default_y0(params):
    """Rest state at zero current (lowest-voltage equilibrium)."""
    from funcnn.science.neurons.analysis import rest_state
    return rest_state(params, 0.0)


def _as_dict(params, t, ys):
    out = {"t": t}
    for i, name in enumerate(params.state_names):
        out[name] = ys[..., i]
    return out


@partial(jax.jit, static_argnames=("n_save", "save_every"))
def _rk4_scan(params, current, y0, dt, n_save, save_every):
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


def simulate(params, current, t_max: float, dt: float | None = None, y0=None,
             save_every: int = 1):
    """Fixed-step RK4 trajectory from t=0 to ``t_max`` (ms), saved every ``save_every`` steps.

    jit-compiled (one compile per ``(params type, n_steps, save_every)``); vmap over
    ``current``/``params``/``y0`` and ``jax.grad`` through it work.
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
    t, ys = _rk4_scan(params, current, y0, dt, -(-n // save_every), save_every)
    return _as_dict(params, t, ys)


def simulate_adaptive(params, current, t_max: float, ts=None, y0=None, rtol: float = 1e-8,
                      atol: float = 1e-8, solver=None, max_steps: int = 1_000_000):
    """Adaptive diffrax solve (default Dopri5 with a PID controller), saved at ``ts``.

    For accuracy checks of :func:`simulate`: run it under ``jax.enable_x64(True)`` for tight
    tolerances. ``ts`` defaults to 1001 equally spaced times in [0, t_max].
    """
    import diffrax

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
