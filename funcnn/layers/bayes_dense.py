"""Bayes by Backprop dense layer (Blundell et al., 2015): a Gaussian over every weight.

The posterior q(W, b) is mean-field Gaussian, one independent N(mu, sigma^2) per
weight and bias, with sigma = softplus(rho) = log(1 + e^rho) so that any real rho
gives a positive sigma. In training mode (``train=True``) one sample of the weights
is drawn per call by the reparameterisation trick, from the ``key`` alone,

    eps ~ N(0, I),   W = mu_W + softplus(rho_W) * eps_W,   b = mu_b + softplus(rho_b) * eps_b,
    Y = X W^T + b,

so for a fixed key the layer is a smooth deterministic function of (mu, rho, X) and
its backward is the Dense backward followed by the chain rule through the sample
(dW/dmu = 1, dW/drho = eps * softplus'(rho) = eps * sigmoid(rho)):

    dW     = dY^T X                          dmu_W  = dW,     drho_W = dW * eps_W * sigmoid(rho_W)
    db     = sum_n dY_n                      dmu_b  = db,     drho_b = db * eps_b * sigmoid(rho_b)
    dX     = dY W

In eval mode (``train=False``) the layer is the mean network, Y = X mu_W^T + mu_b, and
the rho gradients are zero. To sample at prediction time (Monte Carlo over the
posterior) call with ``train=True`` and a key, as for MC dropout: that is what
``funcnn.science.bayes.predict`` does.

The prior N(0, prior_sigma^2) does not enter the forward pass; it enters the loss
through the KL term of the ELBO (``funcnn.science.bayes.kl``). It is kept in the layer's
state as ``{"prior_sigma": scalar}`` (a constant, threaded and never trained), so
``kl_penalty(state, n_data)`` finds every Bayesian layer of a model and its prior.
``param_dtype`` (params and that state) and ``dtype`` (computation) as every layer's
(``funcnn.core.dtypes``).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from funcnn.core import initializers
from funcnn.core.sharding import batch_outer
from funcnn.core.dtypes import available, initialise, layer_dtypes, with_compute_dtype
from funcnn.core.validate import batch_input, input_rank, positive_int
from funcnn.core.layer import Layer


def softplus_inverse(sigma: float) -> float:
    """rho with softplus(rho) = sigma: log(e^sigma - 1), computed as log(expm1(sigma))."""
    return math.log(math.expm1(sigma)) if sigma < 30 else sigma + math.log1p(-math.exp(-sigma))


def _positive(value, arg):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"BayesDense: {arg} must be a positive number, got {value!r}")
    return float(value)


def sample(params, key):
    """One reparameterised draw ``(w, b, eps_w, eps_b)`` from the posterior ``params``."""
    kw, kb = jax.random.split(key)
    eps_w = jax.random.normal(kw, params["w_mu"].shape, params["w_mu"].dtype)
    eps_b = jax.random.normal(kb, params["b_mu"].shape, params["b_mu"].dtype)
    w = params["w_mu"] + jax.nn.softplus(params["w_rho"]) * eps_w
    b = params["b_mu"] + jax.nn.softplus(params["b_rho"]) * eps_b
    return w, b, eps_w, eps_b


def BayesDense(features: int, prior_sigma: float = 1.0, *, sigma_init: float = 0.05,
               w_init="glorot_uniform", b_init="zeros", param_dtype="float32", dtype=None) -> Layer:
    """A dense layer with a mean-field Gaussian posterior over its weights and biases.

    Params ``{"w_mu": (features, in), "w_rho": (features, in), "b_mu": (features,),
    "b_rho": (features,)}``; sigma = softplus(rho) starts at ``sigma_init`` everywhere,
    the means start as a Dense layer's ``w_init``/``b_init``. State
    ``{"prior_sigma": ()}``: the prior N(0, prior_sigma^2) used by ``kl_penalty``.

    ``train=True`` samples the weights from ``key`` (required); ``train=False`` uses
    the means. Raises ``ValueError`` for a non-positive ``features``, ``prior_sigma``
    or ``sigma_init``, an input that is not a batch of vectors of the built size,
    and a missing key in training mode.
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
        kw, kb = jax.random.split(key)
        w_mu = initialise(w_init, kw, (features, n_in), n_in, features, available(param_dtype, "BayesDense"))
        b_mu = initialise(b_init, kb, (features,), n_in, features, param_dtype)
        params = {"w_mu": w_mu, "w_rho": jnp.full_like(w_mu, rho_init),
                  "b_mu": b_mu, "b_rho": jnp.full_like(b_mu, rho_init)}
        return params, {"prior_sigma": jnp.asarray(prior_sigma, w_mu.dtype)}

    def output_shape(input_shape):
        input_rank(input_shape, 1, "BayesDense", what)
        return (features,)

    def forward(params, state, x, *, key=None, train=False):
        batch_input(x, (params["w_mu"].shape[1],), "BayesDense", "a batch of input vectors")
        if not train:
            return x @ params["w_mu"].T + params["b_mu"], state, (x, None, None)
        if key is None:
            raise ValueError(
                "BayesDense: a PRNG key is required in training mode (it draws the weights); "
                "pass key=jax.random.key(...) or call with train=False for the mean weights"
            )
        w, b, eps_w, eps_b = sample(params, key)
        return x @ w.T + b, state, (x, eps_w, eps_b)

    def backward(params, cache, dy):
        x, eps_w, eps_b = cache
        dw, db = batch_outer(dy, x), dy.sum(axis=0)
        if eps_w is None:
            grads = {"w_mu": dw, "w_rho": jnp.zeros_like(dw), "b_mu": db, "b_rho": jnp.zeros_like(db)}
            return grads, dy @ params["w_mu"]
        w = params["w_mu"] + jax.nn.softplus(params["w_rho"]) * eps_w
        grads = {"w_mu": dw, "w_rho": dw * eps_w * jax.nn.sigmoid(params["w_rho"]),
                 "b_mu": db, "b_rho": db * eps_b * jax.nn.sigmoid(params["b_rho"])}
        return grads, dy @ w

    return with_compute_dtype(Layer("bayes_dense", init, forward, backward, output_shape), dtype)
