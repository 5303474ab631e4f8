"""Losses, each a value with ``value(pred, target) -> scalar`` (mean over the batch)
and a hand-written ``grad(pred, target) -> dvalue/dpred``.

Every loss here except the hinge is a negative log-likelihood, so minimising it is
maximum likelihood:

* ``mse``: L = mean over all elements of (p - t)^2; dL/dp = 2 (p - t) / size.
  It is the Gaussian NLL with a fixed variance, up to scale and constant.
* ``binary_cross_entropy`` from logits z, targets t in [0, 1]:
  L = mean softplus(z) - t z, with softplus(z) = log(1 + e^z) = logaddexp(0, z)
  (stable for |z| up to 1e4 and beyond, and smooth at z = 0, so autodiff of the value
  is right there too: no |z| whose derivative at 0 autodiff takes as 1);
  dL/dz = (sigmoid(z) - t) / size.
* ``softmax_cross_entropy`` from logits z (..., C), integer labels (...) or
  probability targets t (..., C), optional weights w (...) >= 0 (default 1):
  nll = logsumexp(z) sum_c t_c - sum_c t_c z_c  (max-shifted log-sum-exp) per position,
  L = sum(w nll) / sum(w), and dL/dz = w (softmax(z) sum_c t_c - t) / sum(w), which for
  one-hot t is the fused gradient w (softmax - onehot) / sum(w). Positions with weight
  0 (padding) contribute nothing; if every weight is 0 the loss and gradient are 0.
  The value and the gradient share their first operations (``shifted_exp``), so a step
  that computes both under one ``jit`` takes the exponentials once.
* ``multiclass_hinge`` (the multiclass SVM loss, margin 1, as torch's
  ``F.multi_margin_loss``) from scores z (..., C) and integer labels y (...):
  L = mean over positions of sum_{j != y} max(0, 1 - z_y + z_j) / C. With
  a_j = [1 - z_y + z_j > 0] for j != y: dL/dz_j = a_j / (C n), dL/dz_y = -sum_j a_j / (C n)
  (n positions; at a margin of exactly 0 the subgradient 0 is taken, as torch does).
* ``gaussian_nll(sigma)``: with a fixed sigma, pred is the mean mu:
  L = mean_n sum_d [(t - mu)^2 / (2 sigma^2) + log sigma + log(2 pi)/2].
  With ``sigma=None`` the variance is learned: pred (N, 2D) holds [mu, s] with
  s = log sigma^2, and L = mean_n sum_d [(s + (t - mu)^2 e^{-s} + log 2 pi) / 2];
  dL/dmu = (mu - t) e^{-s} / N and dL/ds = (1 - (t - mu)^2 e^{-s}) / (2N).

Every ``grad`` validates its arguments exactly as its ``value`` does (a pred of shape
(3, 1) with a target of shape (3,) is refused by both, never broadcast to (3, 3)).
Targets are validated where their values are concrete (outside ``jit``): labels
outside [0, C), BCE targets outside [0, 1], negative probabilities or weights raise a
one-line ``ValueError`` instead of contributing a silent 0. Inside ``jit`` nothing can
be inspected; wrap the step with ``funcnn.check.debug.checked`` to compile the same checks
in. ``validate_targets(loss, output_shape, target)`` runs them up front (``fit`` does).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from funcnn.check import debug

_LOG_2PI = math.log(2 * math.pi)


@dataclasses.dataclass(frozen=True)
class Loss:
    """A loss: ``value(pred, target)`` and its hand-written ``grad(pred, target)``.

    ``validate(pred_shape, target)``, when present, raises a one-line ``ValueError``
    for a target that does not fit predictions of that shape (see ``validate_targets``).
    """

    name: str
    value: Callable
    grad: Callable
    validate: Callable | None = None

    def __repr__(self) -> str:
        return f"Loss({self.name})"


def _require(ok, message, found=None):
    """Concrete ``ok``: raise ``ValueError(message, got found())`` unless all true.
    Traced ``ok`` (inside jit): a run-time check under ``funcnn.check.debug.checked``, else none."""
    if isinstance(ok, jax.core.Tracer):
        debug.require(ok, message)
    elif not bool(jnp.all(ok)):
        raise ValueError(message + (f", got {found()}" if found is not None else ""))


def _range(x):
    return lambda: f"values from {jnp.min(x)} to {jnp.max(x)}"


def _same_shape(pred_shape, target, name):
    if tuple(pred_shape) != jnp.shape(target):
        raise ValueError(
            f"{name}: target must have the shape of pred {tuple(pred_shape)}, got {jnp.shape(target)}"
        )


def _mse_value(pred, target):
    _same_shape(jnp.shape(pred), target, "mse")
    return jnp.mean((pred - target) ** 2)


def _mse_grad(pred, target):
    _same_shape(jnp.shape(pred), target, "mse")
    return 2.0 * (pred - target) / pred.size


mse = Loss("mse", _mse_value, _mse_grad, lambda pred_shape, target: _same_shape(pred_shape, target, "mse"))


def _bce_validate(pred_shape, target):
    _same_shape(pred_shape, target, "binary_cross_entropy")
    _require((target >= 0) & (target <= 1), "binary_cross_entropy: targets must lie in [0, 1]", _range(target))


def _bce_value(logits, target):
    _bce_validate(jnp.shape(logits), target)
    return jnp.mean(jnp.logaddexp(0.0, logits) - target * logits)


def _bce_grad(logits, target):
    _bce_validate(jnp.shape(logits), target)
    return (jax.nn.sigmoid(logits) - target) / logits.size


binary_cross_entropy = Loss("binary_cross_entropy", _bce_value, _bce_grad, _bce_validate)


def _labels_or_probabilities(name, pred_shape, target, *, probabilities=True):
    """Validate ``target`` for scores of shape (..., C); True if it holds integer labels."""
    pred_shape = tuple(pred_shape)
    if len(pred_shape) < 2:
        raise ValueError(f"{name}: pred must have shape (batch, ..., classes), got {pred_shape}")
    c = pred_shape[-1]
    if jnp.issubdtype(jnp.result_type(target), jnp.integer):
        if jnp.shape(target) != pred_shape[:-1]:
            raise ValueError(f"{name}: integer target must have shape {pred_shape[:-1]}, got {jnp.shape(target)}")
        _require((target >= 0) & (target < c), f"{name}: integer labels must lie in [0, {c}) for {c} classes",
                 _range(target))
        return True
    if not probabilities:
        raise TypeError(f"{name}: target must be integer labels of shape {pred_shape[:-1]}, "
                        f"got dtype {jnp.result_type(target)}")
    if jnp.shape(target) != pred_shape:
        raise ValueError(f"{name}: target must be integer labels {pred_shape[:-1]} or probabilities "
                         f"{pred_shape}, got shape {jnp.shape(target)}")
    _require(target >= 0, f"{name}: probability targets must be >= 0", _range(target))
    return False


def _weights(name, pred_shape, weights, dtype):
    """Weights (...) >= 0 as ``dtype`` (ones when None) and the denominator sum(w) (1 if 0)."""
    if weights is None:
        n = math.prod(pred_shape[:-1])
        return jnp.ones(pred_shape[:-1], dtype), n
    if jnp.shape(weights) != tuple(pred_shape[:-1]):
        raise ValueError(f"{name}: weights must have the labels' shape {tuple(pred_shape[:-1])}, "
                         f"got {jnp.shape(weights)}")
    weights = jnp.asarray(weights)
    _require(weights >= 0, f"{name}: weights must be >= 0", _range(weights))
    w = weights.astype(dtype)
    total = jnp.sum(w)
    return w, jnp.where(total > 0, total, 1)


def _sce_validate(pred_shape, target, weights=None):
    _labels_or_probabilities("softmax_cross_entropy", pred_shape, target)
    if weights is not None:
        _weights("softmax_cross_entropy", pred_shape, weights, jnp.float32)


def shifted_exp(logits):
    r"""The shared first half of the softmax and the log-sum-exp over the last axis.

    **Arguments:** `logits` `(..., C)`.

    **Returns:** `(m, e, s)`: the row maxima $m$ `(..., 1)` (0 where not finite, held
    constant for autodiff), $e = e^{z - m}$ `(..., C)` and $s = \sum_c e_c$ `(..., 1)`; then
    $\mathrm{logsumexp}(z) = m + \log s$ and $\mathrm{softmax}(z) = e / s$.

    The value and the gradient of ``softmax_cross_entropy`` both start with these same
    operations on the same logits, so inside one ``jit`` (the training step) XLA computes
    them once: the exponentials of a large vocabulary are taken once per step, not twice.
    """
    m = jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
    m = jnp.where(jnp.isfinite(m), m, jnp.zeros_like(m))
    e = jnp.exp(logits - m)
    return m, e, jnp.sum(e, axis=-1, keepdims=True)


def _sce_value(logits, target, weights=None):
    labels = _labels_or_probabilities("softmax_cross_entropy", jnp.shape(logits), target)
    w, total = _weights("softmax_cross_entropy", jnp.shape(logits), weights, logits.dtype)
    m, _, s = shifted_exp(logits)
    lse = (m + jnp.log(s))[..., 0]
    if labels:
        nll = lse - jnp.take_along_axis(logits, target[..., None], axis=-1)[..., 0]
    else:
        t = target.astype(logits.dtype)
        nll = lse * t.sum(-1) - jnp.sum(t * logits, axis=-1)
    return jnp.sum(w * nll) / total


def _sce_grad(logits, target, weights=None):
    labels = _labels_or_probabilities("softmax_cross_entropy", jnp.shape(logits), target)
    w, total = _weights("softmax_cross_entropy", jnp.shape(logits), weights, logits.dtype)
    _, e, s = shifted_exp(logits)
    p = e / s
    if labels:
        g = p - jax.nn.one_hot(target, logits.shape[-1], dtype=logits.dtype)
    else:
        t = target.astype(logits.dtype)
        g = p * t.sum(-1, keepdims=True) - t
    return g * (w / total)[..., None]


softmax_cross_entropy = Loss("softmax_cross_entropy", _sce_value, _sce_grad, _sce_validate)


def _hinge_validate(pred_shape, target):
    _labels_or_probabilities("multiclass_hinge", pred_shape, target, probabilities=False)


def _hinge_parts(scores, labels):
    """Margins 1 - z_y + z_j with the j = y entries zeroed, and the one-hot of y."""
    _hinge_validate(jnp.shape(scores), labels)
    onehot = jax.nn.one_hot(labels, scores.shape[-1], dtype=scores.dtype)
    z_y = jnp.sum(onehot * scores, axis=-1, keepdims=True)
    return (1.0 - z_y + scores) * (1 - onehot), onehot


def _hinge_value(scores, labels):
    margin, _ = _hinge_parts(scores, labels)
    return jnp.sum(jnp.maximum(margin, 0)) / scores.size


def _hinge_grad(scores, labels):
    margin, onehot = _hinge_parts(scores, labels)
    active = (margin > 0).astype(scores.dtype)
    return (active - onehot * active.sum(-1, keepdims=True)) / scores.size


multiclass_hinge = Loss("multiclass_hinge", _hinge_value, _hinge_grad, _hinge_validate)


def validate_targets(loss: Loss, output_shape: Sequence[int], target: jax.typing.ArrayLike) -> None:
    """Raise a one-line ``ValueError`` if ``target`` (with its batch axis) does not fit
    ``loss`` for a model whose output for one example has shape ``output_shape``
    (labels out of range, BCE targets outside [0, 1], wrong shapes). Call it once on
    the whole training set before training; losses without a ``validate`` pass."""
    if loss.validate is not None:
        target = jnp.asarray(target)
        loss.validate((jnp.shape(target)[0], *tuple(output_shape)), target)


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
            _same_shape(jnp.shape(mu), target, "gaussian_nll")
            sq = (target - mu) ** 2 / (2 * sigma**2) + const
            return jnp.sum(sq) / mu.shape[0]

        def grad(mu, target):
            _same_shape(jnp.shape(mu), target, "gaussian_nll")
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
    "multiclass_hinge": multiclass_hinge,
}


def get(name: str) -> Loss:
    """The built-in loss called ``name``.

    **Arguments:**

    - `name`: one of ``"mse"``, ``"binary_cross_entropy"``, ``"softmax_cross_entropy"``,
      ``"multiclass_hinge"`` (the keys of ``LOSSES``).

    **Returns:**

    The ``Loss``. Raises ``ValueError`` (one line) for any other name.
    """
    if name not in LOSSES:
        raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {name!r}")
    return LOSSES[name]
