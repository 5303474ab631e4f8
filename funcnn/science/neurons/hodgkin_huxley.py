r"""Hodgkin–Huxley (1952) squid-axon model, modern convention (rest at -65 mV).

.. math::

    C \dot V &= I - g_{Na} m^3 h (V - E_{Na}) - g_K n^4 (V - E_K) - g_L (V - E_L) \\
    \dot x &= q\,[\alpha_x(V)(1 - x) - \beta_x(V)\, x], \quad x \in \{m, h, n\},
    \quad q = 3^{(T - 6.3)/10}

Rates (1/ms, V in mV), the 1952 rates shifted by -65 mV:

* :math:`\alpha_m = 0.1 (V+40)/(1 - e^{-(V+40)/10})`, :math:`\beta_m = 4 e^{-(V+65)/18}`
* :math:`\alpha_h = 0.07 e^{-(V+65)/20}`, :math:`\beta_h = 1/(1 + e^{-(V+35)/10})`
* :math:`\alpha_n = 0.01 (V+55)/(1 - e^{-(V+55)/10})`, :math:`\beta_n = 0.125 e^{-(V+65)/80}`

Standard parameters: C=1 µF/cm², gNa=120, gK=36, gL=0.3 mS/cm², ENa=50, EK=-77,
EL=-54.387 mV (the 1952 values 115, -12, 10.613 mV relative to rest), T=6.3 °C.

:math:`\alpha_m` and :math:`\alpha_n` have removable singularities at V=-40 and V=-55 mV.
Both are ``a * xexp(x)`` with :math:`\mathrm{xexp}(x) = x/(1 - e^{-x})`, which is computed as
``x / -expm1(-x)`` away from 0 and by its Taylor series :math:`1 + x/2 + x^2/12` for
:math:`|x| < 10^{-3}` (truncation error < x^4/720). Both branches are evaluated on safe
inputs (the double-``where`` trick), so values *and* gradients are exact at the singular
voltages: :math:`\alpha_m(-40) = 1`, :math:`\alpha_n(-55) = 0.1`.
"""
from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp

from funcnn.science.neurons.morris_lecar import _check

_SMALL = 1e-3


def xexp(x):
    """x / (1 - exp(-x)), exact (limit 1) at x = 0, with finite gradient there (1/2)."""
    x = jnp.asarray(x)
    small = jnp.abs(x) < _SMALL
    safe = jnp.where(small, 1.0, x)  # never 0 in the division branch
    tiny = jnp.where(small, x, 0.0)  # never large in the series branch
    return jnp.where(small, 1.0 + tiny / 2.0 + tiny * tiny / 12.0, safe / -jnp.expm1(-safe))


class HodgkinHuxley(NamedTuple):
    """Hodgkin–Huxley parameters (a pytree), standard 1952 values at 6.3 °C."""

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
    def q(self):
        return 3.0 ** ((self.temperature - 6.3) / 10.0)

    @staticmethod
    def rates(V):
        """(alpha_m, beta_m, alpha_h, beta_h, alpha_n, beta_n) at 6.3 °C, in 1/ms."""
        am = xexp((V + 40.0) / 10.0)
        bm = 4.0 * jnp.exp(-(V + 65.0) / 18.0)
        ah = 0.07 * jnp.exp(-(V + 65.0) / 20.0)
        bh = 1.0 / (1.0 + jnp.exp(-(V + 35.0) / 10.0))
        an = 0.1 * xexp((V + 55.0) / 10.0)
        bn = 0.125 * jnp.exp(-(V + 65.0) / 80.0)
        return am, bm, ah, bh, an, bn

    def ionic_current(self, V, m, h, n):
        return (self.gNa * m ** 3 * h * (V - self.ENa) + self.gK * n ** 4 * (V - self.EK)
                + self.gL * (V - self.EL))

    def rhs(self, y, current):
        """Vector field d(V, m, h, n)/dt at ``y`` under applied ``current``."""
        V, m, h, n = y[0], y[1], y[2], y[3]
        am, bm, ah, bh, an, bn = self.rates(V)
        q = self.q
        dV = (current - self.ionic_current(V, m, h, n)) / self.C
        return jnp.stack([dV, q * (am * (1 - m) - bm * m), q * (ah * (1 - h) - bh * h),
                          q * (an * (1 - n) - bn * n)])

    def steady_state(self, V):
        """``[V, m_inf, h_inf, n_inf]`` at voltage V."""
        am, bm, ah, bh, an, bn = self.rates(V)
        return jnp.stack([V, am / (am + bm), ah / (ah + bh), an / (an + bn)])

    def cycle_seed(self):
        """A depolarised state (V=+20 mV, gates at their -65 mV values) that starts a spike."""
        s = self.steady_state(jnp.asarray(-65.0))
        return s.at[0].set(20.0)

    def validate(self, where: str = "hodgkin_huxley") -> "HodgkinHuxley":
        for f in ("gNa", "gK", "gL"):
            _check(getattr(self, f), f, ">= 0", lambda v: v >= 0, where)
        _check(self.C, "C", "> 0", lambda v: v > 0, where)
        return self


def hodgkin_huxley(**overrides) -> HodgkinHuxley:
    """Standard HH parameters with ``overrides``, validated."""
    bad = set(overrides) - set(HodgkinHuxley._fields)
    if bad:
        raise ValueError(f"hodgkin_huxley: unknown parameter(s) {sorted(bad)}; "
                         f"expected some of {HodgkinHuxley._fields}")
    return HodgkinHuxley()._replace(**overrides).validate()
