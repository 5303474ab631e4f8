r"""The KL term of the ELBO, in closed form, with its gradient written out.

For one weight with posterior $q = \mathcal N(\mu, s^2)$, $s = \operatorname{softplus}(\rho)$,
and prior $p = \mathcal N(0, P^2)$,

$$
\mathrm{KL}(q \,\|\, p) = \log P - \log s + \frac{s^2 + \mu^2}{2P^2} - \frac12,
\qquad
\frac{\partial\,\mathrm{KL}}{\partial \mu} = \frac{\mu}{P^2},
\qquad
\frac{\partial\,\mathrm{KL}}{\partial \rho} = \left(\frac{s}{P^2} - \frac1s\right)\operatorname{sigmoid}(\rho),
$$

using $ds/d\rho = \operatorname{sigmoid}(\rho)$. The mean-field KL of a model is the sum over
every weight and bias of every `BayesDense`. Bayes by Backprop minimises the negative
ELBO per example,

$$
L(\theta) = \frac1B \sum_{n \in \text{batch}} -\log p(y_n \mid x_n, W) + \frac{\mathrm{KL}(q \,\|\, p)}{N},
\qquad W \sim q,
$$

with $N$ the training-set size: an unbiased estimate of $-\mathrm{ELBO}/N$. The first term
is any NLL loss (`gaussian_nll`, `softmax_cross_entropy`; *not* `mse`, whose scale is not a
likelihood's), the second is `kl_penalty(state, N)`, a `funcnn.regularization.Penalty`
that `value_and_grad` and `fit` add.

$\log s$ is computed as $\log \operatorname{softplus}(\rho)$ for $\rho \ge -30$ and as $\rho$
below (where $\operatorname{softplus}(\rho) = e^\rho (1 + O(e^\rho))$ would underflow), and
$\operatorname{sigmoid}(\rho)/s$ as 1 there, so neither the value nor the gradient overflows
for any $\rho$.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from funcnn.core.layer import Layer
from funcnn.gradients import value_and_grad
from funcnn.losses import Loss
from funcnn.regularization import Penalty

_RHO_LOW = -30.0
PAIRS = (("w_mu", "w_rho"), ("b_mu", "b_rho"))


def _log_softplus(rho):
    return jnp.where(rho < _RHO_LOW, rho, jnp.log(jax.nn.softplus(jnp.maximum(rho, _RHO_LOW))))


def _sigmoid_over_softplus(rho):
    safe = jnp.maximum(rho, _RHO_LOW)
    return jnp.where(rho < _RHO_LOW, 1.0, jax.nn.sigmoid(safe) / jax.nn.softplus(safe))


def gaussian_kl(mu: jax.Array, rho: jax.Array, prior_sigma: float) -> jax.Array:
    r"""$\sum_i \mathrm{KL}(\mathcal N(\mu_i, \operatorname{softplus}(\rho_i)^2) \,\|\, \mathcal N(0, P^2))$ (module docstring).

    **Arguments:**

    - `mu`, `rho`: the posterior's means and pre-softplus scales, the same shape.
    - `prior_sigma`: the prior's standard deviation $P$.

    **Returns:**

    The summed KL, a scalar.
    """
    s = jax.nn.softplus(rho)
    p2 = prior_sigma**2
    return jnp.sum(jnp.log(prior_sigma) - _log_softplus(rho) + (s * s + mu * mu) / (2 * p2) - 0.5)


def gaussian_kl_grad(mu: jax.Array, rho: jax.Array, prior_sigma: float) -> tuple[jax.Array, jax.Array]:
    r"""The hand-written gradient of `gaussian_kl`: $(\partial\mathrm{KL}/\partial\mu, \partial\mathrm{KL}/\partial\rho)$.

    **Arguments:**

    - `mu`, `rho`, `prior_sigma`: as in `gaussian_kl`.

    **Returns:**

    `(dmu, drho)`, each the shape of `mu`.
    """
    p2 = prior_sigma**2
    return mu / p2, jax.nn.softplus(rho) * jax.nn.sigmoid(rho) / p2 - _sigmoid_over_softplus(rho)


def bayes_layers(state: dict) -> list[tuple[tuple[str, ...], float]]:
    """Where the `BayesDense` layers of a model are, read from its state.

    **Arguments:**

    - `state`: the model's state from `init` (concrete); each BayesDense keeps
      `{"prior_sigma": P}` there.

    **Returns:**

    `[(path, prior_sigma), ...]`, `path` the tuple of dict keys leading to the layer's params
    (`()` for a lone layer).
    """
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


def kl_divergence(params: dict, state: dict) -> jax.Array:
    r"""$\mathrm{KL}(q \,\|\, p)$ summed over every `BayesDense` of a model.

    **Arguments:**

    - `params`: the model's params; `state`: its state, which names the layers and priors.

    **Returns:**

    The KL, a scalar.
    """
    total = 0.0
    for path, prior in bayes_layers(state):
        p = _at(params, path)
        total = total + sum(gaussian_kl(p[m], p[r], prior) for m, r in PAIRS)
    return total


def kl_penalty(state: dict, n_data: int) -> Penalty:
    r"""$\mathrm{KL}(q \,\|\, p) / N$ as a `Penalty`: its value and its hand-written gradient.

    **Arguments:**

    - `state`: the model's state from `init`: it tells which params belong to a BayesDense
      and their priors.
    - `n_data`: the training-set size $N$, a positive int.

    **Returns:**

    The `Penalty`, for `value_and_grad(..., penalty=)` or `fit(..., penalty=)`; raises
    `ValueError` if the model has no BayesDense or `n_data` is not a positive integer.
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


def elbo(model: Layer, loss: Loss, state: dict, n_data: int, *, mode: str = "manual") -> Callable:
    r"""The `value_and_grad` of the negative ELBO per example.

    **Arguments:**

    - `model`: a model with BayesDense layers; `state`: its state from `init`.
    - `loss`: a negative log-likelihood (`gaussian_nll`, `softmax_cross_entropy`).
    - `n_data`: the training-set size; `mode`: `"manual"` or `"autodiff"`.

    **Returns:**

    `f(params, state, x, y, *, key, train=True) -> (loss, grads, state)` for
    $\text{loss}(\text{model}(x; W \sim q), y) + \mathrm{KL}(q \,\|\, p) / N$.
    """
    return value_and_grad(model, loss, mode=mode, penalty=kl_penalty(state, n_data))
