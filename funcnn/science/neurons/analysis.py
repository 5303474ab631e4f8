r"""Analysis: equilibria, stability, nullclines, spikes, firing rates, f–I curves, onsets.

* Equilibria solve :math:`I = I_{ss}(V)`, the ionic current with every gate at its steady
  state (:math:`N_\infty(V)` or :math:`m_\infty, h_\infty, n_\infty`), on a 0.1 mV grid
  over [-120, 100] mV refined by 40 bisection steps. :func:`rest_state` (the
  lowest-voltage root) is jit-able and vmaps over currents.
* Stability: eigenvalues of the Jacobian :math:`\partial f/\partial y` from ``jax.jacfwd``.
  :func:`rest_instability_current` bisects on the sign of :math:`\max \mathrm{Re}\,\lambda`
  at rest: the Hopf point (class II, HH) or the saddle-node knee (class I).
* Saddle-node (fold) currents are the local extrema of :math:`I_{ss}(V)`.
* Spikes are upward crossings of ``threshold`` (linearly interpolated), ignoring crossings
  within ``refractory`` ms of the previous spike. The steady-state rate is
  :math:`1000 (n - 1)/(t_n - t_1)` Hz over the spikes after ``t_transient`` (0 when n < 2).
* :func:`fi_curve` counts spikes inside the RK4 scan (no trajectory stored) and vmaps over
  all currents in one compiled call.
* :func:`onset_current` bisects on "fires at steady state". ``start="rest"`` starts at the
  equilibrium of each current plus a 0.1 mV kick (rest loses stability: firing *from
  rest*); ``start="cycle"`` starts from a depolarised state (a spike), so firing persists
  down to the lowest current with a stable cycle. :func:`bistability_range` gives both.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from funcnn.science.neurons.integrate import n_steps_for, rk4_step

_GRID = (-120.0, 100.0, 2201)
KICK = 0.1  # mV, perturbation off the equilibrium for start="rest"


def steady_current(params, V):
    """I_ss(V): the applied current that makes V an equilibrium (gates at steady state)."""
    y = params.steady_state(V)
    return params.ionic_current(*[y[i] for i in range(y.shape[0])])


@partial(jax.jit, static_argnames=("iters",))
def _bisect_root(params, current, a, b, iters=40):
    g = lambda v: steady_current(params, v) - current

    def body(_, ab):
        a, b = ab
        m = 0.5 * (a + b)
        left = jnp.sign(g(m)) == jnp.sign(g(a))
        return jnp.where(left, m, a), jnp.where(left, b, m)

    a, b = jax.lax.fori_loop(0, iters, body, (a, b))
    return 0.5 * (a + b)


@jax.jit
def rest_state(params, current):
    """The lowest-voltage equilibrium at ``current`` (jit-able, vmaps over ``current``)."""
    V = jnp.linspace(*_GRID)
    g = steady_current(params, V) - current
    i = jnp.argmax(g >= 0)
    i = jnp.maximum(i, 1)
    return params.steady_state(_bisect_root(params, current, V[i - 1], V[i]))


def equilibria(params, current):
    """All equilibria at ``current`` (concrete), as an array of states sorted by V."""
    V = np.linspace(*_GRID)
    g = np.asarray(steady_current(params, jnp.asarray(V))) - float(current)
    idx = np.nonzero(np.sign(g[:-1]) * np.sign(g[1:]) <= 0)[0]
    idx = [i for i in idx if not (g[i] == 0 and i > 0 and g[i - 1] * g[i + 1] > 0)]
    roots = [_bisect_root(params, float(current), V[i], V[i + 1]) for i in idx]
    roots = sorted({round(float(r), 6) for r in roots})
    return jnp.stack([params.steady_state(jnp.asarray(r)) for r in roots])


def jacobian(params, y, current):
    return jax.jacfwd(lambda z: params.rhs(z, current))(jnp.asarray(y))


@jax.jit
def jacobian_eigenvalues(params, y, current):
    """Eigenvalues of the Jacobian at state ``y`` (from ``jax.jacfwd``); stable iff all Re < 0."""
    return jnp.linalg.eigvals(jacobian(params, y, current))


def stability(params, current):
    """[(state, eigenvalues, 'stable'|'unstable'), ...] for every equilibrium at ``current``."""
    out = []
    for y in equilibria(params, current):
        ev = jacobian_eigenvalues(params, y, current)
        out.append((y, ev, "stable" if float(jnp.max(ev.real)) < 0 else "unstable"))
    return out


def nullclines(params, current, V):
    """Morris–Lecar nullclines over voltages ``V``: ``{"V", "N_dV0", "N_dN0"}``.

    dV/dt = 0: N = (I - gL(V-VL) - gCa m_inf(V)(V-VCa)) / (gK (V-VK)); dN/dt = 0: N = N_inf(V).
    """
    if params.name != "morris_lecar":
        raise ValueError(f"nullclines: only Morris–Lecar has a 2-D phase plane, got {params.name}")
    V = jnp.asarray(V)
    p = params
    nv = (current - p.gL * (V - p.VL) - p.gCa * p.m_inf(V) * (V - p.VCa)) / (p.gK * (V - p.VK))
    return {"V": V, "N_dV0": nv, "N_dN0": p.N_inf(V)}


def saddle_node_currents(params):
    """Fold points of the equilibrium curve: [(V, I)] at the local extrema of I_ss(V)."""
    V = np.linspace(*_GRID)
    dI = np.asarray(_dI(params, jnp.asarray(V)))
    out = []
    for i in np.nonzero(np.sign(dI[:-1]) * np.sign(dI[1:]) < 0)[0]:
        v = float(_fold(params, V[i], V[i + 1]))
        out.append((v, float(steady_current(params, v))))
    return out


@jax.jit
def _dI(params, V):
    return jax.vmap(jax.grad(lambda v: steady_current(params, v)))(V)


@jax.jit
def _fold(params, a, b):
    """Bisection for the zero of dI_ss/dV in [a, b]."""
    s = jnp.sign(_dI(params, a[None])[0])

    def body(_, ab):
        a, b = ab
        m = 0.5 * (a + b)
        right = jnp.sign(_dI(params, m[None])[0]) == s
        return jnp.where(right, m, a), jnp.where(right, b, m)

    a, b = jax.lax.fori_loop(0, 40, body, (a, b))
    return 0.5 * (a + b)


def rest_instability_current(params, lo, hi, tol=1e-4):
    """Bisect for the current at which the rest state (lowest equilibrium) loses stability."""
    @jax.jit
    def growth(c):
        return jnp.max(jacobian_eigenvalues(params, rest_state(params, c), c).real)
    return _bisect(lambda c: float(growth(c)) > 0, lo, hi, tol, "rest_instability_current")


def spike_times(t, V, threshold=0.0, refractory=2.0):
    """Upward threshold crossings (linear interpolation), refractory rule applied (numpy)."""
    t, V = np.asarray(t, float), np.asarray(V, float)
    i = np.nonzero((V[:-1] < threshold) & (V[1:] >= threshold))[0]
    tc = t[i] + (t[i + 1] - t[i]) * (threshold - V[i]) / (V[i + 1] - V[i])
    out, last = [], -np.inf
    for s in tc:
        if s - last > refractory:
            out.append(s)
            last = s
    return np.asarray(out)


def rate_from_spikes(spikes, t_start=0.0):
    """Steady-state rate (Hz, time in ms) from the spikes at or after ``t_start``."""
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


def initial_states(params, currents, start):
    """Initial states for ``start`` in {"step", "rest", "cycle"} or an explicit state."""
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


def fi_curve(params, currents, t_max=1000.0, dt=None, t_transient=None, start="step",
             threshold=None, refractory=None):
    """Steady-state firing rate (Hz) at each current: one vmapped, compiled RK4 scan.

    Spikes are counted after ``t_transient`` (default t_max/2); a rate below
    ~1000/(t_max - t_transient) Hz cannot be resolved and reads as 0.
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


def cycle_state(params, current, t_max=1000.0, dt=None):
    """A point on the stable cycle at ``current``: the spike peak (max V) over the second half
    of a run started from ``params.cycle_seed()``."""
    dt = params.default_dt if dt is None else dt
    return _cycle_state(params, current, params.cycle_seed(), dt, n_steps_for(t_max, dt))


def onset_current(params, lo, hi, start="rest", t_max=2000.0, dt=None, t_transient=None,
                  tol=1e-4):
    """Bisect on [lo, hi] for the lowest current that fires repetitively at steady state.

    ``start="rest"``: from the equilibrium of each current (+0.1 mV), i.e. firing from rest.
    ``start="cycle"``: from a point on the stable cycle at ``hi`` (see :func:`cycle_state`),
    i.e. the lowest current that still sustains firing (continuation down the cycle branch).
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


def bistability_range(params, lo, hi, **kw):
    """(lowest current sustaining firing started on the cycle, onset of firing from rest)."""
    return (onset_current(params, lo, hi, start="cycle", **kw),
            onset_current(params, lo, hi, start="rest", **kw))
