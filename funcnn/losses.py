"""Losses, each a value with ``value(pred, target) -> scalar`` (mean over the batch)
and a hand-written ``grad(pred, target) -> dvalue/dpred``.

Every loss here is a negative log-likelihood, so minimising it is maximum likelihood:

* ``mse``: L = mean over all elements of (p - t)^2; dL/dp = 2 (p - t) / size.
  It is the Gaussian NLL with a fixed variance, up to scale and constant.
* ``binary_cross_entropy`` from logits z, targets t in [0, 1]:
  L = mean softplus(z) - t z = mean max(z, 0) - t z + log1p(e^{-|z|}),
  which never exponentiates a large positive number (stable for |z| up to 1e4 and
  beyond); dL/dz = (sigmoid(z) - t) / size.
* ``softmax_cross_entropy`` from logits z (N, C), integer labels (N,) or
  probability targets t (N, C): L = mean_n [logsumexp(z_n) - sum_c t_nc z_nc]
  (the log-sum-exp is max-shifted); dL/dz = (softmax(z) sum_c t_nc - t) / N, which
  for one-hot t is the fused gradient (softmax - onehot) / N.
* ``gaussian_nll(sigma)``: with a fixed sigma, pred is the mean mu:
  L = mean_n sum_d [(t - mu)^2 / (2 sigma^2) + log sigma + log(2 pi)/2].
  With ``sigma=None`` the variance is learned: pred (N, 2D) holds [mu, s] with
  s = log sigma^2, and L = mean_n sum_d [(s + (t - mu)^2 e^{-s} + log 2 pi) / 2];
  dL/dmu = (mu - t) e^{-s} / N and dL/ds = (1 - (t - mu)^2 e^{-s}) / (2N).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp

_LOG_2PI = math.log(2 * math.pi)


@dataclasses.dataclass(frozen=True)
class Loss:
    """A loss: ``value(pred, target)`` and its hand-written ``grad(pred, target)``."""

    name: str
    value: Callable
    grad: Callable

    def __repr__(self) -> str:
        return f"Loss({self.name})"


def _same_shape(pred, target, name):
    if jnp.shape(pred) != jnp.shape(target):
        raise ValueError(
            f"{name}: target must have the shape of pred {jnp.shape(pred)}, got {jnp.shape(target)}"
        )


def _mse_value(pred, target):
    _same_shape(pred, target, "mse")
    return jnp.mean((pred - target) ** 2)


def _mse_grad(pred, target):
    return 2.0 * (pred - target) / pred.size


mse = Loss("mse", _mse_value, _mse_grad)


def _bce_value(logits, target):
    _same_shape(logits, target, "binary_cross_entropy")
    return jnp.mean(jnp.maximum(logits, 0) - target * logits + jnp.log1p(jnp.exp(-jnp.abs(logits))))


def _bce_grad(logits, target):
    return (jax.nn.sigmoid(logits) - target) / logits.size


binary_cross_entropy = Loss("binary_cross_entropy", _bce_value, _bce_grad)


def _as_probabilities(logits, target):
    """Integer labels (N,) become one-hot (N, C); probability targets pass through."""
    if logits.ndim != 2:
        raise ValueError(f"softmax_cross_entropy: pred must be logits of shape (batch, classes), got {logits.shape}")
    n, c = logits.shape
    if jnp.issubdtype(jnp.result_type(target), jnp.integer):
        if jnp.shape(target) != (n,):
            raise ValueError(
                f"softmax_cross_entropy: integer target must have shape ({n},), got {jnp.shape(target)}"
            )
        return jax.nn.one_hot(target, c, dtype=logits.dtype)
    if jnp.shape(target) != (n, c):
        raise ValueError(
            f"softmax_cross_entropy: target must be integer labels ({n},) or probabilities ({n}, {c}), "
            f"got shape {jnp.shape(target)}"
        )
    return target.astype(logits.dtype)


def _sce_value(logits, target):
    t = _as_probabilities(logits, target)
    lse = jax.nn.logsumexp(logits, axis=-1)
    return jnp.mean(lse * t.sum(-1) - jnp.sum(t * logits, axis=-1))


def _sce_grad(logits, target):
    t = _as_probabilities(logits, target)
    p = jax.nn.softmax(logits, axis=-1)
    return (p * t.sum(-1, keepdims=True) - t) / logits.shape[0]


softmax_cross_entropy = Loss("softmax_cross_entropy", _sce_value, _sce_grad)


def gaussian_nll(sigma: float | None = None) -> Loss:
    """Gaussian negative log-likelihood per example (summed over outputs, mean over batch).

    ``sigma`` fixed: pred is the mean. ``sigma=None``: pred (N, 2D) is the mean and
    the log-variance side by side, ``[mu, log sigma^2]``, and the variance is learned.
    """
    if sigma is not None:
        if not sigma > 0:
            raise ValueError(f"gaussian_nll: sigma must be positive or None (learned), got {sigma!r}")
        const = math.log(sigma) + 0.5 * _LOG_2PI

        def value(mu, target):
            _same_shape(mu, target, "gaussian_nll")
            sq = (target - mu) ** 2 / (2 * sigma**2) + const
            return jnp.sum(sq) / mu.shape[0]

        def grad(mu, target):
            return (mu - target) / (sigma**2 * mu.shape[0])

        return Loss(f"gaussian_nll(sigma={sigma})", value, grad)

    def split(pred, target):
        d = jnp.shape(target)[-1] if jnp.ndim(target) > 1 else 1
        target = target.reshape(target.shape[0], d)
        if pred.ndim != 2 or pred.shape != (target.shape[0], 2 * d):
            raise ValueError(
                f"gaussian_nll: pred must have shape ({target.shape[0]}, {2 * d}) = [mean, log-variance] "
                f"for target shape {jnp.shape(target)}, got {jnp.shape(pred)}"
            )
        return pred[:, :d], pred[:, d:], target

    def value(pred, target):
        mu, s, t = split(pred, target)
        return 0.5 * jnp.sum(s + (t - mu) ** 2 * jnp.exp(-s) + _LOG_2PI) / pred.shape[0]

    def grad(pred, target):
        mu, s, t = split(pred, target)
        inv_var = jnp.exp(-s)
        dmu = (mu - t) * inv_var
        ds = 0.5 * (1.0 - (t - mu) ** 2 * inv_var)
        return jnp.concatenate([dmu, ds], axis=1) / pred.shape[0]

    return Loss("gaussian_nll", value, grad)


LOSSES = {
    "mse": mse,
    "binary_cross_entropy": binary_cross_entropy,
    "softmax_cross_entropy": softmax_cross_entropy,
}


def get(name: str) -> Loss:
    if name not in LOSSES:
        raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {name!r}")
    return LOSSES[name]
