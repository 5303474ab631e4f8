r"""Rosenblatt's perceptron: $S$ hardlim neurons over $R$ inputs.

For an input $p$ of shape `(R,)` the layer outputs $a = \operatorname{hardlim}(W p + b)$ with
$W$ of shape `(S, R)`, $b$ of shape `(S,)`, and $\operatorname{hardlim}(n) = 1$ if $n \ge 0$
else 0. The learning rule, applied one example at a time with error $e = t - a$ (entries in
$\{-1, 0, 1\}$):

$$
W \leftarrow W + e\, p^\top, \qquad b \leftarrow b + e.
$$

The perceptron convergence theorem: if the classes are linearly separable, the rule makes
a finite number of updates and then classifies every training example correctly. On XOR
no $(W, b)$ exists, so it keeps making updates forever.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class PerceptronResult(NamedTuple):
    """What `train` returns: the weights `w` `(S, R)` and biases `b` `(S,)`; `updates`, the number
    of presentations that changed them; `errors_per_epoch` `(epochs,)`, the misclassified
    presentations of each epoch; `converged`, whether an epoch went by without an error."""

    w: jax.Array  # (S, R)
    b: jax.Array  # (S,)
    updates: jax.Array  # total number of example presentations that changed W or b
    errors_per_epoch: jax.Array  # (epochs,) misclassified presentations in each epoch
    converged: jax.Array  # bool: an epoch went by with no error


def hardlim(n: jax.Array) -> jax.Array:
    """The hard limit, 1 where `n >= 0` and 0 elsewhere, elementwise in `n`'s dtype."""
    return (n >= 0).astype(n.dtype)


def predict(w: jax.Array, b: jax.Array, p: jax.Array) -> jax.Array:
    r"""$a = \operatorname{hardlim}(p W^\top + b)$: weights `(S, R)`, biases `(S,)`, inputs `(N, R)` -> `(N, S)`."""
    return hardlim(p @ w.T + b)


def _targets(t):
    """Integer class labels (N,) become S = 1 binary targets; (N, S) 0/1 pass through."""
    t = jnp.asarray(t)
    return t.reshape(-1, 1).astype(jnp.float32) if t.ndim == 1 else t.astype(jnp.float32)


@jax.jit(static_argnames=("epochs",))
def _train(w, b, p, t, key, epochs):
    def present(carry, example):
        w, b = carry
        pi, ti = example
        e = ti - hardlim(w @ pi + b)
        wrong = jnp.any(e != 0)
        return (w + jnp.outer(e, pi), b + e), wrong

    def epoch(carry, k):
        order = jax.random.permutation(k, p.shape[0])
        carry, wrong = jax.lax.scan(present, carry, (p[order], t[order]))
        return carry, wrong.sum()

    (w, b), errors = jax.lax.scan(epoch, (w, b), jax.random.split(key, epochs))
    return w, b, errors


def train(p: jax.Array, t: jax.Array, *, epochs: int = 100, key: jax.Array | None = None) -> PerceptronResult:
    r"""Run the Rosenblatt rule for `epochs` passes (each shuffled by `key`) from $W = 0$, $b = 0$.

    Every presentation with $e \ne 0$ is an update, so `updates` is the total number of
    errors; after convergence the per-epoch error count stays at zero.

    **Arguments:**

    - `p`: inputs, shape `(N, R)`.
    - `t`: 0/1 labels `(N,)` for one neuron, or targets `(N, S)`.
    - `epochs`: passes over the data (a positive int); `key`: the shuffling key (default key 0).

    **Returns:**

    A `PerceptronResult`; raises `ValueError` naming a bad argument.
    """
    p = jnp.asarray(p, jnp.float32)
    if p.ndim != 2:
        raise ValueError(f"perceptron: p must have shape (examples, inputs), got {p.shape}")
    t = _targets(t)
    if t.shape[0] != p.shape[0]:
        raise ValueError(f"perceptron: t must have {p.shape[0]} rows like p, got shape {t.shape}")
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"perceptron: epochs must be a positive integer, got {epochs!r}")
    key = jax.random.key(0) if key is None else key
    w0 = jnp.zeros((t.shape[1], p.shape[1]), jnp.float32)
    b0 = jnp.zeros((t.shape[1],), jnp.float32)
    w, b, errors = _train(w0, b0, p, t, key, epochs)
    return PerceptronResult(w, b, errors.sum(), errors, jnp.any(errors == 0))
