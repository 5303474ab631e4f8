r"""Bayes by Backprop dense layer (Blundell et al., 2015): a Gaussian over every weight.

**Posterior.** $q(W, b)$ is mean-field Gaussian, one independent
$\mathcal N(\mu, \sigma^2)$ per weight and bias, with $\sigma = \operatorname{softplus}(\rho)
= \log(1 + e^\rho)$ so that any real $\rho$ gives a positive $\sigma$. Params:
$\mu_W, \rho_W$ `(S, R)`, $\mu_b, \rho_b$ `(S,)`.

**Forward (training).** One sample of the weights is drawn per call by the
reparameterisation trick, from the `key` alone, then the Dense forward runs on it, for
$X$ `(N, R)`:

$$
\epsilon_W \sim \mathcal N(0, I) \;(S, R), \quad \epsilon_b \sim \mathcal N(0, I) \;(S,), \qquad
W = \mu_W + \operatorname{softplus}(\rho_W) \odot \epsilon_W, \quad
b = \mu_b + \operatorname{softplus}(\rho_b) \odot \epsilon_b,
$$

$$
Y = X W^\top + b \qquad (N, S).
$$

For a fixed key the layer is a smooth deterministic function of $(\mu, \rho, X)$. The cache
holds $X$ `(N, R)`, $\epsilon_W$ `(S, R)` and $\epsilon_b$ `(S,)`.

**Backward.** Given $\delta = \partial L / \partial Y$ `(N, S)`, the Dense backward gives the
gradients of the sampled $W$ and $b$ and of $X$; the chain rule through the sample,
with $\partial W / \partial \mu_W = 1$ and $\partial W / \partial \rho_W = \epsilon_W \odot
\operatorname{softplus}'(\rho_W) = \epsilon_W \odot \operatorname{sigmoid}(\rho_W)$
(elementwise), gives the rest:

$$
dW = \delta^\top X \;(S, R), \qquad db = \sum_n \delta_n \;(S,), \qquad dX = \delta\, W \;(N, R),
$$

$$
d\mu_W = dW, \quad d\rho_W = dW \odot \epsilon_W \odot \operatorname{sigmoid}(\rho_W), \qquad
d\mu_b = db, \quad d\rho_b = db \odot \epsilon_b \odot \operatorname{sigmoid}(\rho_b).
$$

**Eval mode** (`train=False`): the mean network, $Y = X \mu_W^\top + \mu_b$, and the $\rho$
gradients are zero (the cache's $\epsilon$ are `None`). To sample at prediction time (Monte
Carlo over the posterior) call with `train=True` and a key, as for MC dropout: that is
what `funcnn.science.bayes.predict` does.

**Prior.** $\mathcal N(0, \sigma_p^2)$ does not enter the forward pass; it enters the loss
through the KL term of the ELBO (`funcnn.science.bayes.kl`). It is kept in the layer's
state as `{"prior_sigma": scalar}` (a constant, threaded and never trained), so
`kl_penalty(state, n_data)` finds every Bayesian layer of a model and its prior.
`param_dtype` (params and that state) and `dtype` (computation) as every layer's
(`funcnn.core.dtypes`).
"""
from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp

from funcnn.core import initializers
from funcnn.core.sharding import batch_outer
from funcnn.core.dtypes import available, initialise, layer_dtypes, with_compute_dtype
from funcnn.core.validate import batch_input, input_rank, positive_int
from funcnn.core.layer import Layer, Params


def softplus_inverse(sigma: float) -> float:
    r"""$\rho$ with $\operatorname{softplus}(\rho) = \sigma$: $\log(e^\sigma - 1)$, computed as
    `log(expm1(sigma))` (and stably for large sigma).

    **Returns:**

    `rho`, a Python float.
    """
    return math.log(math.expm1(sigma)) if sigma < 30 else sigma + math.log1p(-math.exp(-sigma))


def _positive(value, arg):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"BayesDense: {arg} must be a positive number, got {value!r}")
    return float(value)


def sample(params: Params, key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    r"""One reparameterised draw from the posterior: $W = \mu_W + \operatorname{softplus}(\rho_W) \odot \epsilon_W$, likewise $b$.

    **Arguments:**

    - `params`: `{"w_mu": (S, R), "w_rho": (S, R), "b_mu": (S,), "b_rho": (S,)}`.
    - `key`: the PRNG key of the draw.

    **Returns:**

    `(w, b, eps_w, eps_b)`: `(S, R)`, `(S,)`, `(S, R)`, `(S,)`.
    """
    kw, kb = jax.random.split(key)
    eps_w = jax.random.normal(kw, params["w_mu"].shape, params["w_mu"].dtype)
    eps_b = jax.random.normal(kb, params["b_mu"].shape, params["b_mu"].dtype)
    w = params["w_mu"] + jax.nn.softplus(params["w_rho"]) * eps_w
    b = params["b_mu"] + jax.nn.softplus(params["b_rho"]) * eps_b
    return w, b, eps_w, eps_b


def bayes_dense_forward(x: jax.Array, params: Params,
                        key: jax.Array | None) -> tuple[jax.Array, tuple[jax.Array, Any, Any]]:
    r"""$Y = X W^\top + b$ with $(W, b)$ sampled from `key`, or the means for `key=None`.

    **Arguments:**

    - `x`: input, shape `(N, R)`.
    - `params`: `{"w_mu": (S, R), "w_rho": (S, R), "b_mu": (S,), "b_rho": (S,)}`.
    - `key`: the PRNG key of the sample, or `None` for the mean network.

    **Returns:**

    `(y, cache)`: `y` of shape `(N, S)`; `cache` = `(x, eps_w, eps_b)`, `(N, R)`, `(S, R)`,
    `(S,)` (the eps `None` for the mean network).
    """
    if key is None:
        return x @ params["w_mu"].T + params["b_mu"], (x, None, None)
    w, b, eps_w, eps_b = sample(params, key)
    return x @ w.T + b, (x, eps_w, eps_b)


def bayes_dense_backward(dy: jax.Array, params: Params, cache: tuple[jax.Array, Any, Any]) -> tuple[jax.Array, Params]:
    """The Dense backward, then the chain rule through the sample (module docstring).

    **Arguments:**

    - `dy`: the output's gradient, shape `(N, S)`.
    - `params`: as `bayes_dense_forward`; `cache`: its cache.

    **Returns:**

    `(dx, grads)`: `dx` of shape `(N, R)`; `grads` shaped as `params`.
    """
    x, eps_w, eps_b = cache
    dw, db = batch_outer(dy, x), dy.sum(axis=0)
    if eps_w is None:
        grads = {"w_mu": dw, "w_rho": jnp.zeros_like(dw), "b_mu": db, "b_rho": jnp.zeros_like(db)}
        return dy @ params["w_mu"], grads
    w = params["w_mu"] + jax.nn.softplus(params["w_rho"]) * eps_w
    grads = {"w_mu": dw, "w_rho": dw * eps_w * jax.nn.sigmoid(params["w_rho"]),
             "b_mu": db, "b_rho": db * eps_b * jax.nn.sigmoid(params["b_rho"])}
    return dy @ w, grads


def bayes_dense_init(key: jax.Array, n_in: int, features: int, rho_init: float, w_init: Callable,
                     b_init: Callable, param_dtype: Any) -> Params:
    """The means drawn as a Dense layer's, every rho at `rho_init`.

    **Returns:**

    `{"w_mu": (features, n_in), "w_rho": (features, n_in), "b_mu": (features,), "b_rho": (features,)}`.
    """
    kw, kb = jax.random.split(key)
    w_mu = initialise(w_init, kw, (features, n_in), n_in, features, param_dtype)
    b_mu = initialise(b_init, kb, (features,), n_in, features, param_dtype)
    return {"w_mu": w_mu, "w_rho": jnp.full_like(w_mu, rho_init), "b_mu": b_mu, "b_rho": jnp.full_like(b_mu, rho_init)}


def BayesDense(features: int, prior_sigma: float = 1.0, *, sigma_init: float = 0.05,
               w_init: str | Callable = "glorot_uniform", b_init: str | Callable = "zeros",
               param_dtype: Any = "float32", dtype: Any = None) -> Layer:
    """A dense layer with a mean-field Gaussian posterior over its weights and biases:
    `(N, R) -> (N, features)`.

    Params `{"w_mu": (features, R), "w_rho": (features, R), "b_mu": (features,),
    "b_rho": (features,)}`; state `{"prior_sigma": ()}`: the prior N(0, prior_sigma^2) used by
    `kl_penalty`.

    **Arguments:**

    - `features`: S, the outputs.
    - `prior_sigma`: the prior's standard deviation, > 0.
    - `sigma_init`: sigma = softplus(rho) starts at it everywhere, > 0.
    - `w_init`, `b_init`: the means start as a Dense layer's.
    - `param_dtype`/`dtype`: storage and computation dtypes (`funcnn.core.dtypes`).

    `train=True` samples the weights from `key` (required); `train=False` uses the means.

    **Returns:**

    The `Layer`. Raises `ValueError` for a non-positive `features`, `prior_sigma` or
    `sigma_init`, an input that is not a batch of vectors of the built size, and a missing
    key in training mode.
    """
    positive_int(features, "features", "BayesDense")
    prior_sigma = _positive(prior_sigma, "prior_sigma")
    rho_init = softplus_inverse(_positive(sigma_init, "sigma_init"))
    w_init = initializers.get(w_init, "w_init")
    b_init = initializers.get(b_init, "b_init")
    param_dtype, dtype = layer_dtypes(param_dtype, dtype, "BayesDense")
    what = "features; add Flatten() before BayesDense"

    def init(key, input_shape):
        (n_in,) = input_rank(input_shape, 1, "BayesDense", what)
        params = bayes_dense_init(key, n_in, features, rho_init, w_init, b_init, available(param_dtype, "BayesDense"))
        return params, {"prior_sigma": jnp.asarray(prior_sigma, params["w_mu"].dtype)}

    def output_shape(input_shape):
        input_rank(input_shape, 1, "BayesDense", what)
        return (features,)

    def forward(params, state, x, *, key=None, train=False):
        batch_input(x, (params["w_mu"].shape[1],), "BayesDense", "a batch of input vectors")
        if train and key is None:
            raise ValueError(
                "BayesDense: a PRNG key is required in training mode (it draws the weights); "
                "pass key=jax.random.key(...) or call with train=False for the mean weights"
            )
        y, cache = bayes_dense_forward(x, params, key if train else None)
        return y, state, cache

    def backward(params, cache, dy):
        dx, grads = bayes_dense_backward(dy, params, cache)
        return grads, dx

    return with_compute_dtype(Layer("bayes_dense", init, forward, backward, output_shape), dtype)
