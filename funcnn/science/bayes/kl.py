"""The KL term of the ELBO, in closed form, with its gradient written out.

For one weight with posterior q = N(mu, s^2), s = softplus(rho), and prior
p = N(0, P^2),

    KL(q || p) = log P - log s + (s^2 + mu^2) / (2 P^2) - 1/2,

    dKL/dmu  = mu / P^2,
    dKL/drho = (s / P^2 - 1 / s) * sigmoid(rho)          (ds/drho = sigmoid(rho)).

The mean-field KL of a model is the sum over every weight and bias of every
``BayesDense``. Bayes by Backprop minimises the negative ELBO per example,

    L(theta) = (1/B) sum_{n in batch} -log p(y_n | x_n, W),  W ~ q  +  KL(q || p) / N,

with N the training-set size: an unbiased estimate of -ELBO / N. The first term is
any NLL loss (``gaussian_nll``, ``softmax_cross_entropy``; *not* ``mse``, whose scale
is not a likelihood's), the second is ``kl_penalty(state, N)``, a
``funcnn.regularization.Penalty`` that ``value_and_grad`` and ``fit`` add.

``log s`` is computed as ``log(softplus(rho))`` for rho >= -30 and as ``rho`` below
(where softplus(rho) = e^rho (1 + O(e^rho)) and would underflow), and ``sigmoid/s`` as 1
there, so neither the value nor the gradient overflows for any rho.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from funcnn.gradients import value_and_grad
from funcnn.regularization import Penalty

_RHO_LOW = -30.0
PAIRS = (("w_mu", "w_rho"), ("b_mu", "b_rho"))


def _log_softplus(rho):
    return jnp.where(rho < _RHO_LOW, rho, jnp.log(jax.nn.softplus(jnp.maximum(rho, _RHO_LOW))))


def _sigmoid_over_softplus(rho):
    safe = jnp.maximum(rho, _RHO_LOW)
    return jnp.where(rho < _RHO_LOW, 1.0, jax.nn.sigmoid(safe) / jax.nn.softplus(safe))


def gaussian_kl(mu, rho, prior_sigma):
    """sum over elements of KL(N(mu, softplus(rho)^2) || N(0, prior_sigma^2))."""
    s = jax.nn.softplus(rho)
    p2 = prior_sigma**2
    return jnp.sum(jnp.log(prior_sigma) - _log_softplus(rho) + (s * s + mu * mu) / (2 * p2) - 0.5)


def gaussian_kl_grad(mu, rho, prior_sigma):
    """(dKL/dmu, dKL/drho) of ``gaussian_kl``."""
    p2 = prior_sigma**2
    return mu / p2, jax.nn.softplus(rho) * jax.nn.sigmoid(rho) / p2 - _sigmoid_over_softplus(rho)


def bayes_layers(state) -> list[tuple[tuple, float]]:
    """``(path, prior_sigma)`` for every BayesDense in a model's ``state`` (``path`` is the
    tuple of dict keys leading to the layer's params, ``()`` for a lone layer)."""
    found = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        keys = tuple(getattr(k, "key", None) for k in path)
        if keys and keys[-1] == "prior_sigma":
            try:
                prior = float(leaf)
            except (TypeError, jax.errors.ConcretizationTypeError) as e:
                raise ValueError("kl_penalty: state must be concrete (call it outside jit)") from e
            found.append((keys[:-1], prior))
    return found


def _at(tree, path):
    for k in path:
        tree = tree[k]
    return tree


def _replace(tree, path, value):
    if not path:
        return value
    return {**tree, path[0]: _replace(tree[path[0]], path[1:], value)}


def kl_divergence(params, state):
    """KL(q || p) summed over every BayesDense of the model (``state`` names the priors)."""
    total = 0.0
    for path, prior in bayes_layers(state):
        p = _at(params, path)
        total = total + sum(gaussian_kl(p[m], p[r], prior) for m, r in PAIRS)
    return total


def kl_penalty(state, n_data: int) -> Penalty:
    """``KL(q || p) / n_data`` as a ``Penalty`` (value and hand-written grad).

    ``state`` is the model's state from ``init``: it tells which params belong to a
    BayesDense and their prior. Raises ``ValueError`` if there is none or ``n_data``
    is not a positive integer.
    """
    if isinstance(n_data, bool) or not isinstance(n_data, int) or n_data < 1:
        raise ValueError(f"kl_penalty: n_data must be a positive integer (the training-set size), got {n_data!r}")
    layers = bayes_layers(state)
    if not layers:
        raise ValueError("kl_penalty: the state has no 'prior_sigma' entry; the model has no BayesDense layer")

    def value(params):
        return kl_divergence(params, state) / n_data

    def grad(params):
        g = jax.tree_util.tree_map(jnp.zeros_like, params)
        for path, prior in layers:
            p = _at(params, path)
            dp = dict(_at(g, path))
            for m, r in PAIRS:
                dmu, drho = gaussian_kl_grad(p[m], p[r], prior)
                dp[m], dp[r] = dmu / n_data, drho / n_data
            g = _replace(g, path, dp)
        return g

    return Penalty(f"kl/{n_data}", value, grad)


def elbo(model, loss, state, n_data: int, *, mode: str = "manual"):
    """``f(params, state, x, y, *, key, train=True) -> (loss, grads, state)`` for the
    negative ELBO per example, ``loss(model(x; W ~ q), y) + KL(q || p) / n_data``
    (``loss`` must be a negative log-likelihood)."""
    return value_and_grad(model, loss, mode=mode, penalty=kl_penalty(state, n_data))
