r"""Predictive distributions by Monte Carlo over the model's randomness.

`predict` runs the model $S$ times in training mode (`train=True`), each time with its own
key, so every `BayesDense` draws fresh weights and every `Dropout` a fresh mask (MC
dropout, Gal & Ghahramani 2016); the $S$ runs are one `vmap` inside one `jit`. With $y_s$
the $S$ outputs:

- `output="mean"` (regression, the network outputs the mean):
  $\bar y = \frac1S \sum_s y_s$ and variance $\frac1S \sum_s (y_s - \bar y)^2 + \sigma^2_{\text{noise}}$
  (the epistemic spread plus a known aleatoric noise variance, `noise_var`);
- `output="mean_logvar"` (heteroscedastic regression, the network outputs $[\mu, \log v]$):
  mean $\mathbb E_s[\mu_s]$ and variance $\operatorname{Var}_s[\mu_s] + \mathbb E_s[v_s] + \sigma^2_{\text{noise}}$;
- `output="logits"` (classification): the averaged class probabilities
  $\frac1S \sum_s \operatorname{softmax}(y_s)$ and their variance across samples.

Training mode also switches on anything else that behaves differently in training (e.g.
batch statistics in a normalisation layer): use `predict` with models whose only
train-mode difference is the sampling. A deterministic model gives zero variance.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from funcnn.core.layer import Layer
from funcnn.core.validate import positive_int

OUTPUTS = ("mean", "mean_logvar", "logits")


class Predictive(NamedTuple):
    """What `predict` returns: `mean`, shape `(N, D)` (class probabilities for `output="logits"`),
    and `variance`, shape `(N, D)`."""

    mean: jax.Array
    variance: jax.Array


def sample_outputs(model: Layer, params: dict, state: dict, x: jax.Array, key: jax.Array,
                   samples: int) -> jax.Array:
    """The model's outputs in training mode under `samples` keys split from `key`.

    **Arguments:**

    - `model`, `params`, `state`: the model; `x`: inputs, shape `(N, ...)`.
    - `key`: a PRNG key; `samples`: $S$, the number of runs.

    **Returns:**

    The outputs stacked, shape `(S, N, ...)`.
    """
    keys = jax.random.split(key, samples)
    return jax.vmap(lambda k: model.apply(params, state, x, key=k, train=True)[0])(keys)


def _moments(ys, output, noise_var):
    if output == "logits":
        p = jax.nn.softmax(ys, axis=-1)
        return Predictive(p.mean(0), p.var(0))
    if output == "mean_logvar":
        d = ys.shape[-1] // 2
        mu, log_var = ys[..., :d], ys[..., d:]
        return Predictive(mu.mean(0), mu.var(0) + jnp.exp(log_var).mean(0) + noise_var)
    return Predictive(ys.mean(0), ys.var(0) + noise_var)


_COMPILED: dict = {}


def _compiled(model, samples, output):
    k = (model, samples, output)
    if k not in _COMPILED:
        def run(params, state, x, key, noise_var):
            return _moments(sample_outputs(model, params, state, x, key, samples), output, noise_var)

        _COMPILED[k] = jax.jit(run)
    return _COMPILED[k]


def predict(model: Layer, params: dict, state: dict, x: jax.Array, key: jax.Array, *, samples: int = 32,
            output: str = "mean", noise_var: float = 0.0) -> Predictive:
    """The Monte Carlo predictive mean and variance of `model` at `x` (module docstring).

    **Arguments:**

    - `model`, `params`, `state`: the model; `x`: inputs, shape `(N, ...)`.
    - `key`: a PRNG key; `samples`: $S$, the number of runs (a positive int).
    - `output`: `"mean"`, `"mean_logvar"` (an even output width $2D$) or `"logits"`.
    - `noise_var`: a known noise variance added to the variance (>= 0).

    **Returns:**

    `Predictive(mean, variance)`, each `(N, D)`; raises `ValueError` naming a bad argument.
    """
    positive_int(samples, "samples", "predict")
    if output not in OUTPUTS:
        raise ValueError(f"predict: output must be one of {OUTPUTS}, got {output!r}")
    if not noise_var >= 0:
        raise ValueError(f"predict: noise_var must be >= 0, got {noise_var!r}")
    if output == "mean_logvar":
        width = model.output_shape(tuple(jnp.shape(x)[1:]))[-1]
        if width % 2:
            raise ValueError(f"predict: output='mean_logvar' needs an even output width [mean, log-variance], got {width}")
    return _compiled(model, samples, output)(params, state, x, key, noise_var)
