r"""How good are predicted probabilities? Scores for probabilities `(N, C)` and labels `(N,)`.

- `nll`: $-\frac1N \sum_n \log p_{n, y_n}$ (the log guarded at the smallest positive float).
- `brier`: $\frac1N \sum_n \sum_c (p_{nc} - [c = y_n])^2$, in $[0, 2]$ (Brier, 1950).
- `reliability`: split the confidences $c_n = \max_c p_{nc}$ into `bins` equal bins
  $(lo, hi]$ of $[0, 1]$ (the first also takes 0); per bin the mean confidence, the
  accuracy and the count: the data of a reliability diagram.
- `expected_calibration_error`: $\mathrm{ECE} = \sum_b \frac{n_b}{N}\,|\mathrm{acc}_b - \mathrm{conf}_b|$
  over the bins (Naeini et al. 2015; Guo et al. 2017), 0 for a perfectly calibrated model.
- `predictive_entropy`: $H(p_n) = -\sum_c p_{nc} \log p_{nc}$ (with $0 \log 0 = 0$), high where
  the model does not know.
- `regression_nll`: the Gaussian NLL of targets under a predictive (mean, variance).

Each score checks its arguments' shapes and dtypes in Python, then runs as one compiled
program (``jax.jit``; op by op, each primitive of each new shape would compile alone).
"""
from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, NamedTuple

import jax
import jax.numpy as jnp

if TYPE_CHECKING:  # matplotlib is needed only to draw
    import matplotlib.axes


def _check(probs, labels, where, bins=1):
    if jnp.ndim(probs) != 2 or jnp.shape(labels) != (jnp.shape(probs)[0],):
        raise ValueError(
            f"{where}: probs must have shape (N, C) and labels (N,), got {jnp.shape(probs)} and {jnp.shape(labels)}"
        )
    if not jnp.issubdtype(jnp.result_type(labels), jnp.integer):
        raise TypeError(f"{where}: labels must be integers, got dtype {jnp.result_type(labels)}")
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"{where}: bins must be a positive integer, got {bins!r}")


def _log(p):
    return jnp.log(jnp.maximum(p, jnp.finfo(jnp.result_type(p)).tiny))


def nll(probs: jax.Array, labels: jax.Array) -> jax.Array:
    """The mean negative log-probability of the true class: probabilities `(N, C)`, labels `(N,)` -> scalar."""
    _check(probs, labels, "nll")
    return _nll(probs, labels)


@jax.jit
def _nll(probs, labels):
    return -jnp.mean(_log(jnp.take_along_axis(probs, labels[:, None], axis=1)))


def brier(probs: jax.Array, labels: jax.Array) -> jax.Array:
    """The mean squared distance between the probabilities `(N, C)` and the one-hot labels `(N,)`: a scalar."""
    _check(probs, labels, "brier")
    return _brier(probs, labels)


@jax.jit
def _brier(probs, labels):
    return jnp.mean(jnp.sum((probs - jax.nn.one_hot(labels, probs.shape[1], dtype=probs.dtype)) ** 2, axis=1))


class Reliability(NamedTuple):
    """Per bin, each `(B,)`: `confidence` (the mean max-probability), `accuracy`, `count`; both
    means are 0 in an empty bin. `edges`, `(B + 1,)`, are the bin boundaries."""

    edges: jax.Array
    confidence: jax.Array
    accuracy: jax.Array
    count: jax.Array


def reliability(probs: jax.Array, labels: jax.Array, bins: int = 15) -> Reliability:
    """Reliability-diagram data over `bins` equal confidence bins $(lo, hi]$: probabilities `(N, C)`, labels `(N,)`."""
    _check(probs, labels, "reliability", bins)
    return _reliability(probs, labels, bins)


@functools.partial(jax.jit, static_argnums=2)
def _reliability(probs, labels, bins):
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(probs.dtype)
    which = jnp.clip(jnp.ceil(conf * bins).astype(jnp.int32) - 1, 0, bins - 1)
    member = jax.nn.one_hot(which, bins, dtype=probs.dtype)  # (N, B)
    count = member.sum(0)
    safe = jnp.maximum(count, 1)
    return Reliability(jnp.linspace(0.0, 1.0, bins + 1), conf @ member / safe, correct @ member / safe, count)


def expected_calibration_error(probs: jax.Array, labels: jax.Array, bins: int = 15) -> jax.Array:
    r"""$\mathrm{ECE} = \sum_b (n_b / N)\,|\mathrm{acc}_b - \mathrm{conf}_b|$: probabilities `(N, C)`, labels `(N,)` -> scalar."""
    _check(probs, labels, "expected_calibration_error", bins)
    return _ece(probs, labels, bins)


@functools.partial(jax.jit, static_argnums=2)
def _ece(probs, labels, bins):
    r = _reliability(probs, labels, bins)
    return jnp.sum(r.count * jnp.abs(r.accuracy - r.confidence)) / probs.shape[0]


@jax.jit
def predictive_entropy(probs: jax.Array) -> jax.Array:
    """The entropy of each row of `probs` `(N, C)`, in nats: shape `(N,)`."""
    return -jnp.sum(jnp.where(probs > 0, probs * _log(probs), 0.0), axis=-1)


@jax.jit
def regression_nll(mean: jax.Array, variance: jax.Array, target: jax.Array) -> jax.Array:
    r"""The mean over elements of the Gaussian NLL $\frac12(\log 2\pi v + (t - m)^2 / v)$; all three the same shape -> scalar."""
    return 0.5 * jnp.mean(math.log(2 * math.pi) + jnp.log(variance) + (target - mean) ** 2 / variance)


def plot_reliability(ax: "matplotlib.axes.Axes", rel: Reliability, label: str | None = None, **style) -> None:
    """Draw accuracy against confidence for the non-empty bins, and the diagonal."""
    import numpy as np

    keep = np.asarray(rel.count) > 0
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--")
    ax.plot(np.asarray(rel.confidence)[keep], np.asarray(rel.accuracy)[keep], marker="o", ms=3,
            label=label, **style)
    ax.set(xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1))
