r"""Equilibria of a neuron model: the states at which nothing moves.

At an equilibrium every gate sits at its steady state for the voltage ($N_\infty(V)$ for
Morris–Lecar; $m_\infty, h_\infty, n_\infty$ for Hodgkin–Huxley), so the voltage equation
alone decides: $V$ is an equilibrium at applied current $I$ exactly when

$$
I = I_{ss}(V),
$$

the ionic current with the gates at steady state (`steady_current`). The roots are found
on a 0.1 mV grid over $[-120, 100]$ mV and refined by 40 bisection steps. `rest_state`, the
lowest-voltage root, is jit-compiled and vmaps over currents; `equilibria` lists every root
(concrete currents only).
"""
from __future__ import annotations

from functools import partial
from typing import Union

import jax
import jax.numpy as jnp
import numpy as np

from funcnn.science.neurons.hodgkin_huxley import HodgkinHuxley
from funcnn.science.neurons.morris_lecar import MorrisLecar

NeuronModel = Union[MorrisLecar, HodgkinHuxley]
"""A neuron model's parameters: a `MorrisLecar` or `HodgkinHuxley` pytree."""

GRID = (-120.0, 100.0, 2201)
"""The voltage grid (mV) the roots are bracketed on: `numpy.linspace(*GRID)`."""


def steady_current(params: NeuronModel, V: jax.Array | float) -> jax.Array:
    r"""$I_{ss}(V)$: the applied current that makes $V$ an equilibrium.

    **Arguments:**

    - `params`: the model.
    - `V`: voltage(s) in mV, any shape.

    **Returns:**

    The ionic current with every gate at its steady state, in µA/cm², the shape of `V`.
    """
    y = params.steady_state(V)
    return params.ionic_current(*[y[i] for i in range(y.shape[0])])


@partial(jax.jit, static_argnames=("iters",))
def bisect_root(params: NeuronModel, current: jax.Array | float, a: jax.Array | float, b: jax.Array | float,
                iters: int = 40) -> jax.Array:
    r"""The voltage in $[a, b]$ where $I_{ss}(V) = I$, by `iters` bisection steps.

    **Arguments:**

    - `params`: the model.
    - `current`: the applied current $I$ (scalar).
    - `a`, `b`: a bracket (scalars, mV) on which $I_{ss}(V) - I$ changes sign.
    - `iters`: bisection steps; 40 halve a 0.1 mV bracket below float64 resolution.

    **Returns:**

    The root, a scalar (mV).
    """
    g = lambda v: steady_current(params, v) - current

    def body(_, ab):
        a, b = ab
        m = 0.5 * (a + b)
        left = jnp.sign(g(m)) == jnp.sign(g(a))
        return jnp.where(left, m, a), jnp.where(left, b, m)

    a, b = jax.lax.fori_loop(0, iters, body, (a, b))
    return 0.5 * (a + b)


@jax.jit
def rest_state(params: NeuronModel, current: jax.Array | float) -> jax.Array:
    """The lowest-voltage equilibrium at `current` (jit-compiled; vmaps over `current`).

    **Arguments:**

    - `params`: the model.
    - `current`: the applied current (scalar, µA/cm²).

    **Returns:**

    The state at rest, shape `(len(params.state_names),)`: `[V, N]` or `[V, m, h, n]`.
    """
    V = jnp.linspace(*GRID)
    g = steady_current(params, V) - current
    i = jnp.argmax(g >= 0)
    i = jnp.maximum(i, 1)
    return params.steady_state(bisect_root(params, current, V[i - 1], V[i]))


def equilibria(params: NeuronModel, current: float) -> jax.Array:
    """Every equilibrium at `current`, sorted by voltage.

    **Arguments:**

    - `params`: the model.
    - `current`: the applied current, a concrete number (not traced).

    **Returns:**

    The equilibrium states stacked, shape `(E, len(params.state_names))` with `E` the number
    of equilibria (1 or 3 for Morris–Lecar, depending on the current).
    """
    V = np.linspace(*GRID)
    g = np.asarray(steady_current(params, jnp.asarray(V))) - float(current)
    idx = np.nonzero(np.sign(g[:-1]) * np.sign(g[1:]) <= 0)[0]
    idx = [i for i in idx if not (g[i] == 0 and i > 0 and g[i - 1] * g[i + 1] > 0)]
    roots = [bisect_root(params, float(current), V[i], V[i + 1]) for i in idx]
    roots = sorted({round(float(r), 6) for r in roots})
    return jnp.stack([params.steady_state(jnp.asarray(r)) for r in roots])
