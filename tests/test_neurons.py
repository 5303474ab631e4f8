"""Morris–Lecar and Hodgkin–Huxley: equilibria, accuracy, onsets, gradients, errors.

Published values (µA/cm²) and where they come from:
* ML SNLC set, saddle-node on the invariant circle at I = 39.96: Rinzel & Ermentrout 1998
  (Methods in Neuronal Modeling, ch. 7), Ermentrout & Terman 2010 ch. 3.
* ML Hopf set, stable large cycle exists from I = 88.3 (fold of cycles): same sources.
* ML Hopf set, rest loses stability (subcritical Hopf): 93.86, the value fixed by the
  published parameters (trace of the Jacobian at rest changes sign; see the README, "Neuron models").
* HH (6.3 °C): subcritical Hopf at I = 9.78, fold of cycles at 6.26 — Rinzel & Miller 1980
  (Math. Biosci. 49:27), Guckenheimer & Labouriau 1993 (Bull. Math. Biol. 55:937).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnn.science.neurons import (
    PRESETS, equilibria, fi_curve, hodgkin_huxley, jacobian_eigenvalues, morris_lecar,
    initial_states, nullclines, onset_current, rest_instability_current, saddle_node_currents,
    simulate,
    simulate_adaptive, spike_times, stability,
)
from funcnn.science.neurons.hodgkin_huxley import HodgkinHuxley, xexp
from helpers import RTOL_F32, assert_close

HOPF, SNLC, HOMO = PRESETS["hopf"], PRESETS["snlc"], PRESETS["homoclinic"]
HH = hodgkin_huxley()


# ---------------------------------------------------------------- HH rate singularities
@pytest.mark.slow
@pytest.mark.parametrize("x64", [False, True])
def test_hh_rates_exact_at_removable_singularities(x64):
    with jax.enable_x64(x64):
        am = jax.jit(jax.vmap(lambda v: HodgkinHuxley.rates(v)[0]))
        an = jax.jit(jax.vmap(lambda v: HodgkinHuxley.rates(v)[4]))
        dam = jax.jit(jax.vmap(jax.grad(lambda v: HodgkinHuxley.rates(v)[0])))
        dan = jax.jit(jax.vmap(jax.grad(lambda v: HodgkinHuxley.rates(v)[4])))
        v = jnp.asarray([-40.0, -55.0])
        assert float(am(v)[0]) == 1.0 and float(an(v)[1]) == pytest.approx(0.1, rel=1e-7)
        # d/dV [a * x/(1-e^-x)], x = (V - V0)/10, at x = 0 is a/20
        assert float(dam(v)[0]) == pytest.approx(0.05, rel=1e-6)
        assert float(dan(v)[1]) == pytest.approx(0.005, rel=1e-6)
        # continuous with the closed form just off the singularity
        d = np.asarray([1e-3, -1e-3, 1e-2, -0.5])
        closed = 0.1 * d / (1 - np.exp(-d / 10))
        assert_close(np.asarray(am(jnp.asarray(-40.0 + d))), closed, RTOL_F32)
        g = jax.jit(jax.jacfwd(lambda y: HH.rhs(y, 0.0)))(HH.steady_state(jnp.asarray(-40.0)))
        assert bool(jnp.all(jnp.isfinite(g)))
    assert float(xexp(0.0)) == 1.0 and float(jax.grad(xexp)(0.0)) == 0.5


# ---------------------------------------------------------------- equilibria, stability
@pytest.mark.parametrize("params,current", [(HOPF, 0.0), (HOPF, 95.0), (SNLC, 30.0),
                                            (SNLC, 45.0), (HOMO, 38.0)])
def test_equilibria_lie_on_both_nullclines(params, current):
    eq = equilibria(params, current)
    assert len(eq) == (3 if (params is not HOPF and current < 39.96) else 1)
    for y in eq:
        nc = nullclines(params, current, y[0])
        assert float(nc["N_dV0"]) == pytest.approx(float(y[1]), abs=1e-5)
        assert float(nc["N_dN0"]) == pytest.approx(float(y[1]), abs=1e-6)
        assert float(jnp.max(jnp.abs(params.rhs(y, current)))) < 1e-4


@pytest.mark.slow
def test_stability_from_jacobian_eigenvalues():
    # SNLC set below onset: stable node, saddle, unstable focus (R&E 1998, Fig. 4B)
    kinds = [s for _, _, s in stability(SNLC, 30.0)]
    assert kinds == ["stable", "unstable", "unstable"]
    y = equilibria(SNLC, 30.0)[1]
    ev = np.sort(np.asarray(jacobian_eigenvalues(SNLC, y, 30.0)).real)
    assert ev[0] < 0 < ev[1]  # saddle
    for p in (HOPF, HH):
        assert [s for _, _, s in stability(p, 0.0)] == ["stable"]


# ---------------------------------------------------------------- RK4 vs adaptive solver
@pytest.mark.slow
@pytest.mark.parametrize("params,current,t_max,dt,tol", [
    (HOPF, 100.0, 200.0, 0.1, 1e-3), (HH, 10.0, 30.0, 0.01, 1e-3), (HH, 10.0, 30.0, 0.025, 0.05)])
def test_rk4_agrees_with_adaptive_dopri5(params, current, t_max, dt, tol):
    """max |V_rk4 - V_dopri5(rtol=atol=1e-10)| < tol mV (float64), spikes included."""
    with jax.enable_x64(True):
        y0 = params.cycle_seed()
        a = simulate(params, current, t_max, dt=dt, y0=y0)
        b = simulate_adaptive(params, current, t_max, ts=a["t"][::20], y0=y0, rtol=1e-10,
                              atol=1e-10)
        assert len(spike_times(b["t"], b["V"])) >= 1
        assert float(jnp.max(jnp.abs(a["V"][::20] - b["V"]))) < tol


# ---------------------------------------------------------------- onsets vs published
@pytest.mark.parametrize("params,lo,hi,published", [
    (SNLC, 30.0, 45.0, 39.96), (HOPF, 80.0, 110.0, 93.86), (HH, 5.0, 15.0, 9.78)])
def test_rest_loses_stability_at_published_current(params, lo, hi, published):
    assert rest_instability_current(params, lo, hi) == pytest.approx(published, rel=0.02)


def test_saddle_node_of_snlc_set():
    (v, i_sn), _ = saddle_node_currents(SNLC)
    assert i_sn == pytest.approx(39.96, abs=0.01)


def test_rest_of_homoclinic_set_vanishes_at_the_same_saddle_node():
    """The homoclinic set differs from the SNLC set in phi only, which moves no equilibrium:
    rest (one of three equilibria) vanishes at the same fold, 39.96 (E&T 2010 ch. 3)."""
    (v, i_sn), _ = saddle_node_currents(HOMO)
    assert i_sn == pytest.approx(39.96, abs=0.01)
    assert len(equilibria(HOMO, i_sn - 1.0)) == 3 and len(equilibria(HOMO, i_sn + 1.0)) == 1


# shared (t_max, dt) per model so that the compiled scans are reused across tests
ML_RUN = dict(t_max=2000.0, dt=0.5)
HH_RUN = dict(t_max=1000.0, dt=0.025)


@pytest.mark.slow
@pytest.mark.parametrize("params,start,lo,hi,run,published", [
    (SNLC, "rest", 35.0, 45.0, ML_RUN, 39.96),
    (HOPF, "rest", 85.0, 105.0, ML_RUN, 93.86),
    (HOPF, "cycle", 80.0, 100.0, ML_RUN, 88.3),
    (HH, "rest", 5.0, 15.0, HH_RUN, 9.78),
    (HH, "cycle", 4.0, 9.0, HH_RUN, 6.26),
])
def test_simulated_onsets_match_published(params, start, lo, hi, run, published):
    """Firing from rest starts late by the time the slow instability needs to grow
    (HH: 9.92 with a 1 s run vs 9.78); the cycle's lower end is within 0.1%."""
    got = onset_current(params, lo, hi, start=start, tol=1e-3, **run)
    assert got == pytest.approx(published, rel=0.02)


@pytest.mark.slow
def test_class_I_onset_is_slow_and_class_II_onset_jumps():
    cur = jnp.asarray([39.0, 40.3, 41.0])
    snlc = np.asarray(fi_curve(SNLC, cur, start="rest", **ML_RUN))
    assert snlc[0] == 0 and 0 < snlc[1] < 4.0 and snlc[2] < 6.0  # arbitrarily low rates
    hopf = np.asarray(fi_curve(HOPF, jnp.asarray([93.0, 95.0, 100.0]), start="rest", **ML_RUN))
    assert hopf[0] == 0 and hopf[1] > 8.0  # jumps to ~11 Hz
    hh = np.asarray(fi_curve(HH, jnp.asarray([9.5, 10.5, 12.0]), start="rest", **HH_RUN))
    assert hh[0] == 0 and hh[1] > 40.0  # jumps to ~70 Hz


@pytest.mark.slow
def test_fi_curve_vmaps_and_matches_single_currents():
    cur = jnp.asarray([60.0, 80.0, 120.0])
    many = fi_curve(SNLC, cur, start="rest", **ML_RUN)
    one = [float(fi_curve(SNLC, c, start="rest", **ML_RUN)[0]) for c in cur]
    assert_close(np.asarray(many), one, RTOL_F32)
    tr = simulate(SNLC, 80.0, y0=initial_states(SNLC, [80.0], "rest")[0], **ML_RUN)
    s = spike_times(tr["t"], tr["V"], 0.0, SNLC.refractory)
    s = s[s >= 1000.0]
    assert float(many[1]) == pytest.approx(1000 * (len(s) - 1) / (s[-1] - s[0]), rel=1e-3)


# ---------------------------------------------------------------- gradients
@pytest.mark.slow
def test_gradient_through_simulator_matches_finite_differences():
    with jax.enable_x64(True):
        y0 = HOPF.cycle_seed()

        def loss(theta):
            p = HOPF._replace(gCa=theta[0], gK=theta[1], phi=theta[2])
            return jnp.mean(simulate(p, 100.0, 60.0, dt=0.5, y0=y0)["V"])

        theta = jnp.asarray([4.4, 8.0, 0.04])
        g = jax.grad(loss)(theta)
        loss = jax.jit(loss)
        for i, h in enumerate([1e-4, 1e-4, 1e-6]):
            e = jnp.zeros(3).at[i].set(h)
            fd = (loss(theta + e) - loss(theta - e)) / (2 * h)
            assert float(g[i]) == pytest.approx(float(fd), rel=1e-5)

        def hh_loss(gna):  # a spike crosses V = -55 and -40 (the removable singularities)
            return jnp.mean(simulate(HH._replace(gNa=gna), 10.0, 10.0, dt=0.025,
                                     y0=HH.cycle_seed())["V"])
        g = jax.grad(hh_loss)(120.0)
        hh_loss = jax.jit(hh_loss)
        fd = (hh_loss(120.0 + 1e-4) - hh_loss(120.0 - 1e-4)) / 2e-4
        assert float(g) == pytest.approx(float(fd), rel=1e-5)


# ---------------------------------------------------------------- bad input
def test_bad_input_errors():
    with pytest.raises(ValueError, match="gK must be >= 0, got -1.0"):
        morris_lecar("hopf", gK=-1.0)
    with pytest.raises(ValueError, match="preset must be one of"):
        morris_lecar("nope")
    with pytest.raises(ValueError, match="gNa must be >= 0"):
        hodgkin_huxley(gNa=-5.0)
    with pytest.raises(ValueError, match="unknown parameter"):
        hodgkin_huxley(gCa=1.0)
    with pytest.raises(ValueError, match="dt must be > 0"):
        simulate(HOPF, 0.0, 10.0, dt=0.0)
    with pytest.raises(ValueError, match="t_max must be > 0"):
        simulate(HOPF, 0.0, -1.0)
    with pytest.raises(ValueError, match="t_transient"):
        fi_curve(HOPF, [1.0], t_max=100.0, t_transient=200.0)
    with pytest.raises(ValueError, match="need no firing at lo"):
        onset_current(HOPF, 100.0, 120.0, **ML_RUN)
    with pytest.raises(ValueError, match="y0 must have 2 entries"):
        simulate(HOPF, 0.0, 10.0, y0=jnp.zeros(4))
