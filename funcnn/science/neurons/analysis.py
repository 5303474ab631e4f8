r"""Analysis: equilibria, stability, nullclines, spikes, firing rates, f–I curves, onsets.

- **Equilibria** solve $I = I_{ss}(V)$, the ionic current with every gate at its steady
  state (`funcnn.science.neurons.equilibrium`; `rest_state` and `equilibria` are re-exported here).
- **Stability**: the eigenvalues of the Jacobian $\partial f/\partial y$ from `jax.jacfwd`.
  `rest_instability_current` bisects on the sign of $\max \operatorname{Re}\lambda$ at rest:
  the Hopf point (class II, HH) or the saddle-node knee (class I).
- **Saddle-node (fold) currents** are the local extrema of $I_{ss}(V)$.
- **Spikes** are upward crossings of `threshold` (linearly interpolated), ignoring
  crossings within `refractory` ms of the previous spike. The steady-state rate over the
  $n$ spikes after `t_transient` is $1000\,(n - 1)/(t_n - t_1)$ Hz (0 when $n < 2$).
- `fi_curve` counts spikes inside the RK4 scan (no trajectory stored) and vmaps over all
  currents in one compiled call.
- `onset_current` bisects on "fires at steady state". `start="rest"` starts at the
  equilibrium of each current plus a 0.1 mV kick (rest loses stability: firing *from
  rest*); `start="cycle"` starts from a depolarised state (a spike), so firing persists
  down to the lowest current with a stable cycle. `bistability_range` gives both.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from funcnn.science.neurons.equilibrium import GRID, NeuronModel, equilibria, rest_state, steady_current
from funcnn.science.neurons.integrate import n_steps_for, rk4_step

KICK = 0.1  # mV, perturbation off the equilibrium for start="rest"


def jacobian(params: NeuronModel, y: jax.Array, current: jax.Array | float) -> jax.Array:
    r"""The Jacobian $\partial f/\partial y$ of the vector field at state `y` (from `jax.jacfwd`).

    **Arguments:**

    - `params`: the model; `y`: a state, shape `(S,)`; `current`: the applied current.

    **Returns:**

    The Jacobian, shape `(S, S)`.
    """
    return jax.jacfwd(lambda z: params.rhs(z, current))(jnp.asarray(y))


@jax.jit
def jacobian_eigenvalues(params: NeuronModel, y: jax.Array, current: jax.Array | float) -> jax.Array:
    """The eigenvalues of the Jacobian at state `y`: the state is stable iff every real part is negative.

    **Arguments:**

    - `params`: the model; `y`: a state, shape `(S,)`; `current`: the applied current.

    **Returns:**

    Complex eigenvalues, shape `(S,)`.
    """
    return jnp.linalg.eigvals(jacobian(params, y, current))


def stability(params: NeuronModel, current: float) -> list[tuple[jax.Array, jax.Array, str]]:
    """Every equilibrium at `current` with its eigenvalues and verdict.

    **Arguments:**

    - `params`: the model; `current`: the applied current (concrete).

    **Returns:**

    `[(state (S,), eigenvalues (S,), "stable" | "unstable"), ...]`, sorted by voltage.
    """
    out = []
    for y in equilibria(params, current):
        ev = jacobian_eigenvalues(params, y, current)
        out.append((y, ev, "stable" if float(jnp.max(ev.real)) < 0 else "unstable"))
    return out


def nullclines(params: NeuronModel, current: float, V: jax.Array) -> dict[str, jax.Array]:
    r"""The Morris–Lecar nullclines over the voltages `V`.

    $\dot V = 0$: $N = \dfrac{I - g_L(V - V_L) - g_{Ca} m_\infty(V)(V - V_{Ca})}{g_K (V - V_K)}$;
    $\dot N = 0$: $N = N_\infty(V)$.

    **Arguments:**

    - `params`: a `MorrisLecar` model (`ValueError` otherwise: only it has a 2-D phase plane).
    - `current`: the applied current; `V`: voltages, shape `(K,)`.

    **Returns:**

    `{"V": (K,), "N_dV0": (K,), "N_dN0": (K,)}`.
    """
    if params.name != "morris_lecar":
        raise ValueError(f"nullclines: only Morris–Lecar has a 2-D phase plane, got {params.name}")
    V = jnp.asarray(V)
    p = params
    nv = (current - p.gL * (V - p.VL) - p.gCa * p.m_inf(V) * (V - p.VCa)) / (p.gK * (V - p.VK))
    return {"V": V, "N_dV0": nv, "N_dN0": p.N_inf(V)}


def saddle_node_currents(params: NeuronModel) -> list[tuple[float, float]]:
    """The folds of the equilibrium curve: the local extrema of $I_{ss}(V)$.

    **Arguments:**

    - `params`: the model.

    **Returns:**

    `[(V, I), ...]`, one pair per fold, in mV and µA/cm².
    """
    V = np.linspace(*GRID)
    dI = np.asarray(_dI(params, jnp.asarray(V)))
    out = []
    for i in np.nonzero(np.sign(dI[:-1]) * np.sign(dI[1:]) < 0)[0]:
        v = float(_fold(params, V[i], V[i + 1]))
        out.append((v, float(steady_current(params, v))))
    return out


@jax.jit
def _dI(params: NeuronModel, V: jax.Array) -> jax.Array:
    return jax.vmap(jax.grad(lambda v: steady_current(params, v)))(V)


@jax.jit
def _fold(params, a, b):
    """Bisection for the zero of $dI_{ss}/dV$ in `[a, b]`."""
    s = jnp.sign(_dI(params, a[None])[0])

    def body(_, ab):
        a, b = ab
        m = 0.5 * (a + b)
        right = jnp.sign(_dI(params, m[None])[0]) == s
        return jnp.where(right, m, a), jnp.where(right, b, m)

    a, b = jax.lax.fori_loop(0, 40, body, (a, b))
    return 0.5 * (a + b)


def rest_instability_current(params: NeuronModel, lo: float, hi: float, tol: float = 1e-4) -> float:
    """The current at which the rest state (the lowest equilibrium) loses stability, by bisection.

    **Arguments:**

    - `params`: the model.
    - `lo`, `hi`: a bracket: rest stable at `lo`, unstable at `hi` (`ValueError` otherwise).
    - `tol`: the bracket's relative width at which to stop.

    **Returns:**

    The current (µA/cm²): the Hopf point, or the saddle-node where rest disappears.
    """
    @jax.jit
    def growth(c):
        return jnp.max(jacobian_eigenvalues(params, rest_state(params, c), c).real)
    return _bisect(lambda c: float(growth(c)) > 0, lo, hi, tol, "rest_instability_current")


def spike_times(t: np.ndarray, V: np.ndarray, threshold: float = 0.0, refractory: float = 2.0) -> np.ndarray:
    """Upward crossings of `threshold`, linearly interpolated, with the refractory rule (NumPy).

    **Arguments:**

    - `t`, `V`: times (ms) and voltages (mV) of a trajectory, shape `(T,)` each.
    - `threshold`: the crossing level (mV); `refractory`: crossings closer than this (ms) to
      the previous spike are ignored.

    **Returns:**

    The spike times, shape `(n,)`.
    """
    t, V = np.asarray(t, float), np.asarray(V, float)
    i = np.nonzero((V[:-1] < threshold) & (V[1:] >= threshold))[0]
    tc = t[i] + (t[i + 1] - t[i]) * (threshold - V[i]) / (V[i + 1] - V[i])
    out, last = [], -np.inf
    for s in tc:
        if s - last > refractory:
            out.append(s)
            last = s
    return np.asarray(out)


def rate_from_spikes(spikes: np.ndarray, t_start: float = 0.0) -> float:
    """The steady-state rate $1000 (n - 1)/(t_n - t_1)$ Hz over the spikes at or after `t_start`.

    **Arguments:**

    - `spikes`: spike times (ms), shape `(n,)`; `t_start`: the first time counted.

    **Returns:**

    The rate in Hz; 0 with fewer than two spikes.
    """
    s = np.asarray(spikes)
    s = s[s >= t_start]
    return 0.0 if len(s) < 2 else 1000.0 * (len(s) - 1) / (s[-1] - s[0])


def _rate_core(params, current, y0, dt, n_steps, n_skip, threshold, refractory):
    """Steady-state rate via an RK4 scan that counts spikes as it goes (no trajectory kept)."""
    f = lambda y: params.rhs(y, current)
    inf = jnp.asarray(jnp.inf, y0.dtype)

    def step(carry, i):
        y, last, count, first, final = carry
        y1 = rk4_step(f, y, dt)
        v0, v1 = y[0], y1[0]
        cross = (v0 < threshold) & (v1 >= threshold)
        denom = jnp.where(cross, v1 - v0, 1.0)
        tc = (i + (threshold - v0) / denom) * dt
        accept = cross & (tc - last > refractory)
        last = jnp.where(accept, tc, last)
        win = accept & (i >= n_skip)
        first = jnp.where(win & (count == 0), tc, first)
        final = jnp.where(win, tc, final)
        return (y1, last, count + win, first, final), None

    init = (y0, -inf, jnp.asarray(0), inf, -inf)
    (_, _, count, first, final), _ = jax.lax.scan(step, init, jnp.arange(n_steps), unroll=4)
    span = jnp.where(count >= 2, final - first, 1.0)
    return jnp.where(count >= 2, 1000.0 * (count - 1) / span, 0.0)


@partial(jax.jit, static_argnames=("n_steps", "n_skip"))
def _rates(params, currents, y0s, dt, n_steps, n_skip, threshold, refractory):
    core = lambda c, y0: _rate_core(params, c, y0, dt, n_steps, n_skip, threshold, refractory)
    return jax.vmap(core)(currents, y0s)


def initial_states(params: NeuronModel, currents: jax.Array, start: str | jax.Array) -> jax.Array:
    """The initial state of each current's simulation.

    **Arguments:**

    - `params`: the model; `currents`: shape `(C,)` (a scalar is one current).
    - `start`: `"step"` (rest at zero current: a current step), `"rest"` (each current's own
      equilibrium plus a 0.1 mV kick), `"cycle"` (`params.cycle_seed()`, a depolarised state)
      or an explicit state of shape `(S,)`.

    **Returns:**

    The states, shape `(C, S)`.
    """
    currents = jnp.atleast_1d(jnp.asarray(currents, jnp.result_type(float)))
    n = currents.shape[0]
    if isinstance(start, str):
        if start == "step":  # current step from rest at I = 0
            y0 = rest_state(params, 0.0)
        elif start == "rest":  # equilibrium of each current, kicked by 0.1 mV
            return jax.vmap(lambda c: rest_state(params, c))(currents).at[:, 0].add(KICK)
        elif start == "cycle":  # a depolarised state that starts a spike
            y0 = params.cycle_seed()
        else:
            raise ValueError(f"fi_curve: start must be 'step', 'rest', 'cycle' or a state, "
                             f"got {start!r}")
    else:
        y0 = jnp.asarray(start)
    return jnp.broadcast_to(y0, (n, len(params.state_names)))


def _window(params, t_max, dt, t_transient, where):
    dt = params.default_dt if dt is None else dt
    n = n_steps_for(t_max, dt, where)
    t_transient = 0.5 * t_max if t_transient is None else float(t_transient)
    if not 0 <= t_transient < t_max:
        raise ValueError(f"{where}: t_transient must be in [0, t_max), got {t_transient!r}")
    return dt, n, int(round(t_transient / dt))


def fi_curve(params: NeuronModel, currents: jax.Array, t_max: float = 1000.0, dt: float | None = None,
             t_transient: float | None = None, start: str | jax.Array = "step", threshold: float | None = None,
             refractory: float | None = None) -> jax.Array:
    """The steady-state firing rate at each current: one vmapped, compiled RK4 scan.

    Spikes are counted inside the scan after `t_transient` (default `t_max / 2`); a rate
    below about `1000 / (t_max - t_transient)` Hz cannot be resolved and reads as 0.

    **Arguments:**

    - `params`: the model; `currents`: shape `(C,)`.
    - `t_max`, `dt`: the simulated time and step (ms; `dt` default `params.default_dt`).
    - `t_transient`: the time (ms) before which spikes are not counted.
    - `start`: the initial states (see `initial_states`).
    - `threshold`, `refractory`: spike detection (default the model's).

    **Returns:**

    The rates in Hz, shape `(C,)`.
    """
    params.validate()
    dt, n, skip = _window(params, t_max, dt, t_transient, "fi_curve")
    currents = jnp.atleast_1d(jnp.asarray(currents, jnp.result_type(float)))
    y0s = initial_states(params, currents, start)
    thr = params.threshold if threshold is None else threshold
    ref = params.refractory if refractory is None else refractory
    return _rates(params, currents, y0s, dt, n, skip, thr, ref)


def _bisect(fires, lo, hi, tol, where):
    lo, hi = float(lo), float(hi)
    if fires(lo) or not fires(hi):
        raise ValueError(f"{where}: need no firing at lo={lo} and firing at hi={hi}; "
                         f"widen the bracket or lengthen t_max")
    while hi - lo > tol * max(1.0, abs(hi)):
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if fires(mid) else (mid, hi)
    return 0.5 * (lo + hi)


@partial(jax.jit, static_argnames=("n_steps",))
def _cycle_state(params, current, y0, dt, n_steps):
    f = lambda y: params.rhs(y, current)

    def step(carry, i):
        y, best = carry
        y = rk4_step(f, y, dt)
        best = jnp.where((i >= n_steps // 2) & (y[0] > best[0]), y, best)
        return (y, best), None

    (_, best), _ = jax.lax.scan(step, (y0, jnp.full_like(y0, -jnp.inf)), jnp.arange(n_steps))
    return best


def cycle_state(params: NeuronModel, current: float, t_max: float = 1000.0, dt: float | None = None) -> jax.Array:
    """A point on the stable cycle at `current`: the spike peak over the second half of a run.

    **Arguments:**

    - `params`: the model; `current`: the applied current.
    - `t_max`, `dt`: the run started from `params.cycle_seed()` (ms).

    **Returns:**

    The state at the highest voltage of the run's second half, shape `(S,)`.
    """
    dt = params.default_dt if dt is None else dt
    return _cycle_state(params, current, params.cycle_seed(), dt, n_steps_for(t_max, dt))


def onset_current(params: NeuronModel, lo: float, hi: float, start: str | jax.Array = "rest", t_max: float = 2000.0,
                  dt: float | None = None, t_transient: float | None = None, tol: float = 1e-4) -> float:
    """The lowest current in `[lo, hi]` that fires repetitively at steady state, by bisection.

    **Arguments:**

    - `params`: the model.
    - `lo`, `hi`: a bracket: no firing at `lo`, firing at `hi` (`ValueError` otherwise).
    - `start`: `"rest"`, from the equilibrium of each current (+0.1 mV): firing from rest;
      `"cycle"`, from a point on the stable cycle at `hi` (`cycle_state`): the lowest current
      that still sustains firing (continuation down the cycle branch).
    - `t_max`, `dt`, `t_transient`: each simulation, as in `fi_curve`.
    - `tol`: the bracket's relative width at which to stop.

    **Returns:**

    The onset current (µA/cm²).
    """
    params.validate()
    dt, n, skip = _window(params, t_max, dt, t_transient, "onset_current")
    thr, ref = params.threshold, params.refractory
    if isinstance(start, str) and start == "cycle":
        start = cycle_state(params, float(hi), t_max, dt)

    def fires(c):
        y0 = initial_states(params, jnp.asarray([c]), start)
        return float(_rates(params, jnp.asarray([c]), y0, dt, n, skip, thr, ref)[0]) > 0
    return _bisect(fires, lo, hi, tol, "onset_current")


def bistability_range(params: NeuronModel, lo: float, hi: float, **kw) -> tuple[float, float]:
    """The currents between which rest and repetitive firing coexist.

    **Arguments:**

    - `params`, `lo`, `hi`: as in `onset_current`; `**kw`: its other arguments.

    **Returns:**

    `(lowest current sustaining firing started on the cycle, onset of firing from rest)`.
    """
    return (onset_current(params, lo, hi, start="cycle", **kw),
            onset_current(params, lo, hi, start="rest", **kw))
