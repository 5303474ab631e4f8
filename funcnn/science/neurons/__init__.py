"""Biological neuron models (Morris–Lecar, Hodgkin–Huxley) as pure JAX functions of parameter pytrees.

Models (`morris_lecar`, `hodgkin_huxley`), their equilibria (`equilibrium`), fixed-step RK4
and adaptive integration (`integrate`), analysis: stability, spikes, f–I curves, onset
currents (`analysis`), and fitting by gradient descent through the simulator (`fit`).
"""
from funcnn.science.neurons.analysis import (
    bistability_range, cycle_state, fi_curve, initial_states, jacobian_eigenvalues, nullclines, onset_current,
    rate_from_spikes, rest_instability_current, saddle_node_currents, spike_times, stability,
)
from funcnn.science.neurons.equilibrium import equilibria, rest_state, steady_current
from funcnn.science.neurons.fit import FitResult, fit_parameters
from funcnn.science.neurons.hodgkin_huxley import HodgkinHuxley, hodgkin_huxley, xexp
from funcnn.science.neurons.integrate import simulate, simulate_adaptive
from funcnn.science.neurons.morris_lecar import PRESETS, MorrisLecar, morris_lecar

__all__ = [
    "FitResult", "HodgkinHuxley", "MorrisLecar", "PRESETS", "bistability_range", "cycle_state",
    "equilibria", "fi_curve", "fit_parameters", "hodgkin_huxley", "initial_states",
    "jacobian_eigenvalues", "morris_lecar", "nullclines", "onset_current", "rate_from_spikes",
    "rest_instability_current", "rest_state", "saddle_node_currents", "simulate",
    "simulate_adaptive", "spike_times", "stability", "steady_current", "xexp",
]
