"""Probability in networks: Bayes by Backprop, predictive distributions, calibration.

- `BayesDense`: a dense layer with a mean-field Gaussian posterior over its weights.
- `kl_penalty` / `kl_divergence` / `elbo`: the closed-form KL term of the ELBO.
- `predict`: Monte Carlo predictive mean and variance (Bayesian or MC-dropout nets).
- `nll`, `brier`, `expected_calibration_error`, `reliability`: calibration.
"""
from funcnn.science.bayes.calibration import (
    Reliability,
    brier,
    expected_calibration_error,
    nll,
    plot_reliability,
    predictive_entropy,
    regression_nll,
    reliability,
)
from funcnn.layers.bayes_dense import BayesDense, softplus_inverse
from funcnn.science.bayes.kl import elbo, gaussian_kl, gaussian_kl_grad, kl_divergence, kl_penalty
from funcnn.science.bayes.predict import Predictive, predict, sample_outputs

__all__ = [
    "BayesDense", "Predictive", "Reliability", "brier", "elbo", "expected_calibration_error",
    "gaussian_kl", "gaussian_kl_grad", "kl_divergence", "kl_penalty", "nll", "plot_reliability",
    "predict", "predictive_entropy", "regression_nll", "reliability", "sample_outputs",
    "softplus_inverse",
]
