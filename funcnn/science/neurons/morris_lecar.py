r"""Morris–Lecar model (Morris & Lecar 1981) in the form of Rinzel & Ermentrout.

$$
\begin{aligned}
C \dot V &= I - g_L (V - V_L) - g_{Ca}\, m_\infty(V) (V - V_{Ca}) - g_K N (V - V_K), \\
\dot N &= \phi\, (N_\infty(V) - N) / \tau_N(V),
\end{aligned}
$$

with $m_\infty = (1 + \tanh((V - V_1)/V_2))/2$, $N_\infty = (1 + \tanh((V - V_3)/V_4))/2$ and
$\tau_N = 1/\cosh((V - V_3)/(2 V_4))$. Units: mV, ms, µF/cm², mS/cm², µA/cm².

Presets (the parameter sets of Rinzel & Ermentrout 1998, "Analysis of neural
excitability and oscillations", in Koch & Segev (eds.) *Methods in Neuronal Modeling*,
2nd ed., MIT Press, ch. 7, parameter table (hereafter R&E 1998), reproduced in Ermentrout & Terman
2010, *Mathematical Foundations of Neuroscience*, Springer, ch. 3 (hereafter E&T 2010)):

- `"hopf"` (class II): C=20, gL=2, VL=-60, gCa=4.4, VCa=120, gK=8, VK=-84, V1=-1.2,
  V2=18, V3=2, V4=30, phi=0.04. Rest loses stability by a subcritical Hopf bifurcation;
  rest and repetitive firing coexist over a range of currents.
- `"snlc"` (class I): as `"hopf"` but gCa=4, V3=12, V4=17.4, phi=1/15. Firing is born
  at a saddle-node on an invariant circle, with arbitrarily low frequency.
- `"homoclinic"`: as `"snlc"` but phi=0.23. The cycle is born at a homoclinic
  orbit below the saddle-node, so rest and firing coexist.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp


class MorrisLecar(NamedTuple):
    """Morris–Lecar parameters, a pytree of scalars (module docstring); defaults: the `"hopf"` preset.

    Class attributes, not pytree fields: `name`, `state_names` (`("V", "N")`), `default_dt`
    (0.1 ms: RK4 error well below 0.1 mV), `threshold` (0 mV) and `refractory` (5 ms) for
    spike detection. Units: mV, ms, µF/cm², mS/cm², µA/cm².
    """

    C: float = 20.0
    gL: float = 2.0
    VL: float = -60.0
    gCa: float = 4.4
    VCa: float = 120.0
    gK: float = 8.0
    VK: float = -84.0
    V1: float = -1.2
    V2: float = 18.0
    V3: float = 2.0
    V4: float = 30.0
    phi: float = 0.04

    # class attributes (not pytree fields)
    name = "morris_lecar"
    state_names = ("V", "N")
    default_dt = 0.1  # ms; RK4 error well below 0.1 mV at this step
    threshold = 0.0   # mV, spike detection
    refractory = 5.0  # ms

    def m_inf(self, V: jax.Array) -> jax.Array:
        r"""$m_\infty(V)$, the calcium activation at steady state (instantaneous); shape of `V`."""
        return 0.5 * (1.0 + jnp.tanh((V - self.V1) / self.V2))

    def N_inf(self, V: jax.Array) -> jax.Array:
        r"""$N_\infty(V)$, the potassium gate's steady state; shape of `V`."""
        return 0.5 * (1.0 + jnp.tanh((V - self.V3) / self.V4))

    def tau_N(self, V: jax.Array) -> jax.Array:
        r"""$\tau_N(V)$, the potassium gate's time scale (before dividing by $\phi$); shape of `V`."""
        return 1.0 / jnp.cosh((V - self.V3) / (2.0 * self.V4))

    def ionic_current(self, V: jax.Array, N: jax.Array) -> jax.Array:
        r"""The outward ionic current $g_L(V - V_L) + g_{Ca} m_\infty(V)(V - V_{Ca}) + g_K N (V - V_K)$."""
        return (self.gL * (V - self.VL) + self.gCa * self.m_inf(V) * (V - self.VCa)
                + self.gK * N * (V - self.VK))

    def rhs(self, y: jax.Array, current: jax.Array | float) -> jax.Array:
        """The vector field $d(V, N)/dt$ at state `y = [V, N]` (shape `(2,)`) under `current`; shape `(2,)`."""
        V, N = y[0], y[1]
        dV = (current - self.ionic_current(V, N)) / self.C
        dN = self.phi * (self.N_inf(V) - N) / self.tau_N(V)
        return jnp.stack([dV, dN])

    def steady_state(self, V: jax.Array) -> jax.Array:
        r"""The state with the gate at its steady state: `[V, N_inf(V)]`, shape `(2, *V.shape)`."""
        return jnp.stack([V, self.N_inf(V)])

    def cycle_seed(self) -> jax.Array:
        """A depolarised state (V=+20 mV, N at its rest value) that starts a spike."""
        return jnp.stack([jnp.asarray(20.0), self.N_inf(jnp.asarray(-60.0))])

    def validate(self, where: str = "morris_lecar") -> "MorrisLecar":
        """Raise `ValueError` naming the first non-physical concrete value; returns `self`."""
        for f in ("gL", "gCa", "gK"):
            check_parameter(getattr(self, f), f, ">= 0", lambda v: v >= 0, where)
        for f in ("C", "phi", "V2", "V4"):
            check_parameter(getattr(self, f), f, "> 0", lambda v: v > 0, where)
        return self


def check_parameter(value: float | jax.Array, field: str, what: str, ok: Callable[[float], bool],
                    where: str) -> None:
    """Raise `ValueError` (`"<where>: <field> must be <what>, got <value>"`) unless `ok(value)`
    holds and the value is finite; traced values are not checked."""
    try:
        v = float(value)
    except (TypeError, Exception):  # traced values are not checked
        return
    if not (ok(v) and v == v and abs(v) != float("inf")):
        raise ValueError(f"{where}: {field} must be {what}, got {v!r}")


PRESETS: dict[str, "MorrisLecar"] = {
    "hopf": MorrisLecar(),
    "snlc": MorrisLecar(gCa=4.0, V3=12.0, V4=17.4, phi=1.0 / 15.0),
    "homoclinic": MorrisLecar(gCa=4.0, V3=12.0, V4=17.4, phi=0.23),
}


def morris_lecar(preset: str = "hopf", **overrides: float) -> MorrisLecar:
    """The named preset with some parameters overridden, validated.

    **Arguments:**

    - `preset`: `"hopf"`, `"snlc"` or `"homoclinic"` (module docstring).
    - `**overrides`: fields of `MorrisLecar` and their values.

    **Returns:**

    The parameters; `ValueError` names an unknown preset or field, or a non-physical value.
    """
    if preset not in PRESETS:
        raise ValueError(f"morris_lecar: preset must be one of {sorted(PRESETS)}, got {preset!r}")
    bad = set(overrides) - set(MorrisLecar._fields)
    if bad:
        raise ValueError(f"morris_lecar: unknown parameter(s) {sorted(bad)}; "
                         f"expected some of {MorrisLecar._fields}")
    return PRESETS[preset]._replace(**overrides).validate()
