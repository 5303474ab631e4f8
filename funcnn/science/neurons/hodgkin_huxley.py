r"""Hodgkin–Huxley (1952) squid-axon model, modern convention (rest at -65 mV).

$$
\begin{aligned}
C \dot V &= I - g_{Na} m^3 h (V - E_{Na}) - g_K n^4 (V - E_K) - g_L (V - E_L), \\
\dot x &= q\,[\alpha_x(V)(1 - x) - \beta_x(V)\, x], \quad x \in \{m, h, n\},
\quad q = 3^{(T - 6.3)/10}.
\end{aligned}
$$

Rates (1/ms, $V$ in mV), the 1952 rates shifted by -65 mV:

- $\alpha_m = 0.1 (V+40)/(1 - e^{-(V+40)/10})$, $\beta_m = 4 e^{-(V+65)/18}$
- $\alpha_h = 0.07 e^{-(V+65)/20}$, $\beta_h = 1/(1 + e^{-(V+35)/10})$
- $\alpha_n = 0.01 (V+55)/(1 - e^{-(V+55)/10})$, $\beta_n = 0.125 e^{-(V+65)/80}$

Standard parameters: C=1 µF/cm², gNa=120, gK=36, gL=0.3 mS/cm², ENa=50, EK=-77,
EL=-54.387 mV (the 1952 values 115, -12, 10.613 mV relative to rest), T=6.3 °C.

$\alpha_m$ and $\alpha_n$ have removable singularities at $V = -40$ and $-55$ mV. Both are
`a * xexp(x)` with $\mathrm{xexp}(x) = x/(1 - e^{-x})$, computed as `x / -expm1(-x)` away
from 0 and by its Taylor series $1 + x/2 + x^2/12$ for $|x| < 10^{-3}$ (truncation error
below $x^4/720$). Both branches are evaluated on safe inputs (the double-`where` trick), so
values *and* gradients are exact at the singular voltages: $\alpha_m(-40) = 1$,
$\alpha_n(-55) = 0.1$.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from funcnn.science.neurons.morris_lecar import check_parameter

_SMALL = 1e-3


def xexp(x: jax.Array | float) -> jax.Array:
    r"""$x / (1 - e^{-x})$ elementwise, exact at $x = 0$ (the limit 1) with its gradient there (1/2).

    **Arguments:**

    - `x`: any shape.

    **Returns:**

    The values, the shape of `x`.
    """
    x = jnp.asarray(x)
    small = jnp.abs(x) < _SMALL
    safe = jnp.where(small, 1.0, x)  # never 0 in the division branch
    tiny = jnp.where(small, x, 0.0)  # never large in the series branch
    return jnp.where(small, 1.0 + tiny / 2.0 + tiny * tiny / 12.0, safe / -jnp.expm1(-safe))


class HodgkinHuxley(NamedTuple):
    """Hodgkin–Huxley parameters, a pytree of scalars: the standard 1952 values at 6.3 °C.

    Class attributes, not pytree fields: `name`, `state_names` (`("V", "m", "h", "n")`),
    `default_dt` (0.01 ms), `threshold` (0 mV) and `refractory` (2 ms) for spike detection.
    """

    C: float = 1.0
    gNa: float = 120.0
    gK: float = 36.0
    gL: float = 0.3
    ENa: float = 50.0
    EK: float = -77.0
    EL: float = -54.387
    temperature: float = 6.3

    name = "hodgkin_huxley"
    state_names = ("V", "m", "h", "n")
    default_dt = 0.01  # ms
    threshold = 0.0
    refractory = 2.0

    @property
    def q(self) -> float | jax.Array:
        r"""The temperature factor $q = 3^{(T - 6.3)/10}$ of every gate's rates."""
        return 3.0 ** ((self.temperature - 6.3) / 10.0)

    @staticmethod
    def rates(V: jax.Array) -> tuple[jax.Array, ...]:
        r"""$(\alpha_m, \beta_m, \alpha_h, \beta_h, \alpha_n, \beta_n)$ at 6.3 °C in 1/ms, each the shape of `V`."""
        am = xexp((V + 40.0) / 10.0)
        bm = 4.0 * jnp.exp(-(V + 65.0) / 18.0)
        ah = 0.07 * jnp.exp(-(V + 65.0) / 20.0)
        bh = 1.0 / (1.0 + jnp.exp(-(V + 35.0) / 10.0))
        an = 0.1 * xexp((V + 55.0) / 10.0)
        bn = 0.125 * jnp.exp(-(V + 65.0) / 80.0)
        return am, bm, ah, bh, an, bn

    def ionic_current(self, V: jax.Array, m: jax.Array, h: jax.Array, n: jax.Array) -> jax.Array:
        r"""The outward ionic current $g_{Na} m^3 h (V - E_{Na}) + g_K n^4 (V - E_K) + g_L (V - E_L)$."""
        return (self.gNa * m ** 3 * h * (V - self.ENa) + self.gK * n ** 4 * (V - self.EK)
                + self.gL * (V - self.EL))

    def rhs(self, y: jax.Array, current: jax.Array | float) -> jax.Array:
        """The vector field $d(V, m, h, n)/dt$ at state `y` (shape `(4,)`) under `current`; shape `(4,)`."""
        V, m, h, n = y[0], y[1], y[2], y[3]
        am, bm, ah, bh, an, bn = self.rates(V)
        q = self.q
        dV = (current - self.ionic_current(V, m, h, n)) / self.C
        return jnp.stack([dV, q * (am * (1 - m) - bm * m), q * (ah * (1 - h) - bh * h),
                          q * (an * (1 - n) - bn * n)])

    def steady_state(self, V: jax.Array) -> jax.Array:
        """`[V, m_inf, h_inf, n_inf]` at voltage `V`, shape `(4, *V.shape)`."""
        am, bm, ah, bh, an, bn = self.rates(V)
        return jnp.stack([V, am / (am + bm), ah / (ah + bh), an / (an + bn)])

    def cycle_seed(self) -> jax.Array:
        """A depolarised state (V=+20 mV, gates at their -65 mV values) that starts a spike."""
        s = self.steady_state(jnp.asarray(-65.0))
        return s.at[0].set(20.0)

    def validate(self, where: str = "hodgkin_huxley") -> "HodgkinHuxley":
        """Raise `ValueError` naming the first non-physical concrete value; returns `self`."""
        for f in ("gNa", "gK", "gL"):
            check_parameter(getattr(self, f), f, ">= 0", lambda v: v >= 0, where)
        check_parameter(self.C, "C", "> 0", lambda v: v > 0, where)
        return self


def hodgkin_huxley(**overrides: float) -> HodgkinHuxley:
    """The standard parameters with some overridden, validated.

    **Arguments:**

    - `**overrides`: fields of `HodgkinHuxley` and their values.

    **Returns:**

    The parameters; `ValueError` names an unknown field or a non-physical value.
    """
    bad = set(overrides) - set(HodgkinHuxley._fields)
    if bad:
        raise ValueError(f"hodgkin_huxley: unknown parameter(s) {sorted(bad)}; "
                         f"expected some of {HodgkinHuxley._fields}")
    return HodgkinHuxley()._replace(**overrides).validate()
