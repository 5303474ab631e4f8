"""Bayes by Backprop, predictive distributions, calibration, and losses as likelihoods."""
import dataclasses
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import funcnn as fn
from funcnn import losses
from funcnn.science.bayes import calibration as cal
from funcnn.layers.bayes_dense import BayesDense, sample, softplus_inverse
from funcnn.science.bayes.kl import elbo, gaussian_kl, gaussian_kl_grad, kl_divergence, kl_penalty
from funcnn.science.bayes.predict import predict, sample_outputs
from funcnn.check import check_backward, check_layer, check_loss
from funcnn.gradients import value_and_grad
from helpers import RTOL_F32, RTOL_F64, assert_close


def _init(model, input_shape, *, scale=0.5, dtype=jnp.float32):
    """Params and state, every param leaf moved off its constant init (so each rho differs),
    in one compiled call (op-by-op dispatch would compile every small op on its own)."""

    @jax.jit
    def make(key):
        k_init, k_move = jax.random.split(key)
        params, state = model.init(k_init, input_shape)
        leaves, tree = jax.tree_util.tree_flatten(params)
        keys = jax.random.split(k_move, len(leaves))
        moved = [l.astype(dtype) + scale * jax.random.normal(k, l.shape, dtype) for k, l in zip(keys, leaves)]
        return jax.tree_util.tree_unflatten(tree, moved), state

    return make(jax.random.key(0))


def _train(model, loss, params, state, x, y, *, steps, lr, key, penalty=None):
    """Full-batch Adam on the manual gradient, the steps in one compiled scan."""
    vg = value_and_grad(model, loss, penalty=penalty)
    opt = optax.adam(optax.cosine_decay_schedule(lr, steps))

    @jax.jit
    def run(params, key):
        def step(carry, k):
            p, s = carry
            value, g, _ = vg(p, state, x, y, key=k)
            u, s = opt.update(g, s, p)
            return (optax.apply_updates(p, u), s), value

        (p, _), values = jax.lax.scan(step, (params, opt.init(params)), jax.random.split(key, steps))
        return p, values

    return run(params, key)


# ----------------------------------------------------------------------------- BayesDense


def test_bayes_dense_passes_checker():
    # a fixed key fixes eps, so the sampled layer is a deterministic function of (mu, rho, x);
    # eval mode is in the catalog (test_check_gallery); a whole ELBO is checked below
    check_layer(BayesDense(5, sigma_init=0.3), (4,), key=jax.random.key(3), train=True).assert_ok()


def test_forward_is_a_dense_layer_at_the_sampled_weights():
    layer = BayesDense(3, sigma_init=0.2)
    params, state = _init(layer, (4,))
    x = jax.random.normal(jax.random.key(2), (5, 4))
    k = jax.random.key(7)
    w, b, eps_w, eps_b = sample(params, k)
    assert_close(w, params["w_mu"] + np.log1p(np.exp(params["w_rho"])) * eps_w, RTOL_F32)
    y, _ = layer.apply(params, state, x, key=k, train=True)
    assert_close(y, np.asarray(x) @ np.asarray(w).T + np.asarray(b), RTOL_F32)
    y_eval, _ = layer.apply(params, state, x)
    assert_close(y_eval, np.asarray(x) @ np.asarray(params["w_mu"]).T + np.asarray(params["b_mu"]), RTOL_F32)


def test_sampled_weights_have_the_posterior_moments():
    layer = BayesDense(2, sigma_init=0.3)
    params, _ = _init(layer, (3,))
    ws = jax.jit(jax.vmap(lambda k: sample(params, k)[0]))(jax.random.split(jax.random.key(2), 20000))
    sigma = np.log1p(np.exp(np.asarray(params["w_rho"])))
    # standard errors sigma / sqrt(n) for the mean and about sigma / sqrt(2n) for the std
    np.testing.assert_array_less(np.abs(ws.mean(0) - params["w_mu"]), 5 * sigma / math.sqrt(20000))
    np.testing.assert_array_less(np.abs(ws.std(0) - sigma), 5 * sigma / math.sqrt(40000))
    assert float(jnp.corrcoef(ws[:, 0, 0], ws[:, 1, 2])[0, 1]) ** 2 < 25 / 20000  # independent


@pytest.mark.slow
def test_reparameterisation_gradient_formula():
    """drho = dW * eps * sigmoid(rho) with dW the Dense gradient at the sampled W."""
    with jax.enable_x64(True):
        layer = BayesDense(3, sigma_init=0.2)
        params, state = _init(layer, (4,), dtype=jnp.float64)
        x = jax.random.normal(jax.random.key(2), (6, 4), jnp.float64)
        dy = jax.random.normal(jax.random.key(3), (6, 3), jnp.float64)
        k = jax.random.key(4)
        _, _, cache = layer.forward(params, state, x, key=k, train=True)
        grads, dx = layer.backward(params, cache, dy)
        w, b, eps_w, eps_b = sample(params, k)
        dw = dy.T @ x
        assert_close(grads["w_mu"], dw, RTOL_F64)
        assert_close(grads["w_rho"], dw * eps_w / (1 + np.exp(-params["w_rho"])), RTOL_F64)
        assert_close(grads["b_rho"], dy.sum(0) * eps_b / (1 + np.exp(-params["b_rho"])), RTOL_F64)
        assert_close(dx, dy @ w, RTOL_F64)


WRONG_BACKWARDS = {
    "drho without sigmoid(rho)": lambda g, p, e: {**g, "w_rho": g["w_mu"] * e},
    "drho with softplus instead of sigmoid": lambda g, p, e: {**g, "w_rho": g["w_mu"] * e * jax.nn.softplus(p["w_rho"])},
    "drho missing eps": lambda g, p, e: {**g, "w_rho": g["w_mu"] * jax.nn.sigmoid(p["w_rho"])},
}


@pytest.mark.parametrize("name", sorted(WRONG_BACKWARDS))
def test_checker_flags_wrong_reparameterisation(name):
    layer = BayesDense(3, sigma_init=0.3)

    def backward(params, cache, dy):
        grads, dx = layer.backward(params, cache, dy)
        return WRONG_BACKWARDS[name](grads, params, cache[1]), dx

    assert not check_layer(dataclasses.replace(layer, backward=backward), (4,), fd=False).ok


def test_bayes_dense_errors():
    with pytest.raises(ValueError, match="BayesDense: prior_sigma must be a positive number"):
        BayesDense(3, prior_sigma=0.0)
    with pytest.raises(ValueError, match="BayesDense: sigma_init"):
        BayesDense(3, sigma_init=-1.0)
    with pytest.raises(ValueError, match="BayesDense: features"):
        BayesDense(0)
    layer = BayesDense(3)
    params, state = layer.init(jax.random.key(0), (4,))
    with pytest.raises(ValueError, match="BayesDense: a PRNG key is required"):
        layer.apply(params, state, jnp.ones((2, 4)), train=True)
    with pytest.raises(ValueError, match=r"BayesDense: x must have shape \(batch, 4\)"):
        layer.apply(params, state, jnp.ones((2, 5)))


def test_softplus_inverse():
    with jax.enable_x64(True):
        for s in (1e-4, 0.05, 1.0, 40.0):
            assert math.isclose(float(jax.nn.softplus(jnp.float64(softplus_inverse(s)))), s, rel_tol=1e-12)


# ----------------------------------------------------------------------------- KL


@pytest.mark.parametrize("prior", [0.3, 1.0])
def test_kl_matches_monte_carlo(prior):
    """KL(q || p) = E_q[log q(w) - log p(w)], estimated from 200k draws (5 standard errors)."""
    with jax.enable_x64(True):
        mu = jnp.array([0.0, 0.4, -1.2])
        rho = jnp.array([softplus_inverse(0.3), -1.0, 0.5])
        s = jax.nn.softplus(rho)
        w = mu + s * jax.random.normal(jax.random.key(0), (200_000, 3), jnp.float64)
        log_ratio = (jax.scipy.stats.norm.logpdf(w, mu, s) - jax.scipy.stats.norm.logpdf(w, 0.0, prior)).sum(1)
        mc, se = float(log_ratio.mean()), float(log_ratio.std() / math.sqrt(w.shape[0]))
        exact = float(gaussian_kl(mu, rho, prior))
        assert abs(mc - exact) < 5 * se, (mc, exact, se)
        assert exact > 0.1  # not a trivial case


def test_kl_is_zero_at_the_prior_and_finite_for_tiny_sigma():
    with jax.enable_x64(True):
        assert abs(float(gaussian_kl(jnp.zeros(4), jnp.full(4, softplus_inverse(0.7)), 0.7))) < 1e-14
    rho = jnp.array([-200.0, -50.0, -31.0, -29.0])  # sigma underflows in float32 for the first
    kl = gaussian_kl(jnp.zeros(4), rho, 1.0)
    dmu, drho = gaussian_kl_grad(jnp.zeros(4), rho, 1.0)
    assert np.isfinite(kl) and np.all(np.isfinite(drho))
    assert_close(drho, -1.0, RTOL_F32)  # d/drho (-log s) -> -1 as rho -> -inf
    # log sigma ~ rho for very negative rho: KL per weight ~ -rho - 1/2
    assert_close(float(kl), float(jnp.sum(-rho - 0.5)), RTOL_F32)


@pytest.mark.slow
def test_kl_penalty_gradient_passes_checker():
    layer = BayesDense(4, prior_sigma=0.5)
    with jax.enable_x64(True):
        params, state = _init(layer, (3,), dtype=jnp.float64)
        pen = kl_penalty(state, 17)
        check_backward(lambda p: pen.value(p),
                       lambda p, dy: (jax.tree_util.tree_map(lambda a: dy * a, pen.grad(p)),),
                       params, name="kl_penalty").assert_ok()


@pytest.mark.slow
def test_elbo_manual_equals_autodiff_with_a_prior_per_layer():
    """The negative ELBO's gradient (data term and KL over every BayesDense, each with its own
    prior; a plain Dense in between gets no KL) by the manual backward equals autodiff."""
    model = fn.serial(fn.Flatten(), BayesDense(5, prior_sigma=0.5, sigma_init=0.2), fn.Tanh(), fn.Dense(4),
                      BayesDense(2))
    with jax.enable_x64(True):
        params, state = _init(model, (2, 3), scale=0.2, dtype=jnp.float64)
        x = jax.random.normal(jax.random.key(1), (10, 2, 3), jnp.float64)
        y = jax.random.randint(jax.random.key(2), (10,), 0, 2)
        k = jax.random.key(3)
        vm, gm, _ = jax.jit(elbo(model, losses.softmax_cross_entropy, state, 50))(params, state, x, y, key=k)
        va, ga, _ = jax.jit(elbo(model, losses.softmax_cross_entropy, state, 50, mode="autodiff"))(
            params, state, x, y, key=k)
        assert abs(float(vm - va)) <= 1e-12 * abs(float(va))
        chex.assert_trees_all_equal_structs(gm, params)
        assert_close(gm, ga, RTOL_F64)

        @jax.jit
        def pieces(params):
            layer_kl = [gaussian_kl(params[n][m], params[n][r], prior)
                        for n, prior in (("1_bayes_dense", 0.5), ("4_bayes_dense", 1.0))
                        for m, r in (("w_mu", "w_rho"), ("b_mu", "b_rho"))]
            data_term = losses.softmax_cross_entropy.value(model.apply(params, state, x, key=k, train=True)[0], y)
            return (kl_penalty(state, 50).grad(params)["3_dense"]["w"], kl_divergence(params, state), sum(layer_kl),
                    data_term)

        dense_grad, total, by_hand, data_term = pieces(params)
        np.testing.assert_array_equal(dense_grad, 0.0)
        assert_close(total, by_hand, RTOL_F64)
        assert_close(vm, data_term + by_hand / 50, RTOL_F64)


def test_kl_penalty_errors():
    _, state = fn.serial(fn.Dense(3)).init(jax.random.key(0), (2,))
    with pytest.raises(ValueError, match="no BayesDense layer"):
        kl_penalty(state, 10)
    with pytest.raises(ValueError, match="n_data must be a positive integer"):
        kl_penalty({"prior_sigma": jnp.float32(1.0)}, 0)


@pytest.mark.slow
def test_posterior_sigma_shrinks_with_more_data_towards_the_mean_field_optimum():
    """Bayesian linear regression: the mean-field optimum has sigma_i^2 = 1 / Lambda_ii with
    Lambda = I / P^2 + X~^T X~ / s^2 (X~ = [x, 1]); a 100x larger data set shrinks sigma ~10x."""
    noise, prior = 0.5, 1.0
    sigmas, optima = [], []
    for n in (20, 2000):
        kx, ke = jax.random.split(jax.random.key(n))
        x = jax.random.normal(kx, (n, 1))
        y = 1.5 * x + 0.5 + noise * jax.random.normal(ke, (n, 1))
        layer = BayesDense(1, prior, sigma_init=0.05)
        params, state = layer.init(jax.random.key(0), (1,))
        params, _ = _train(layer, losses.gaussian_nll(noise), params, state, x, y, steps=3000, lr=0.1,
                           key=jax.random.key(1), penalty=kl_penalty(state, n))
        xt = np.concatenate([np.asarray(x), np.ones((n, 1))], 1)
        lam = np.eye(2) / prior**2 + xt.T @ xt / noise**2
        optima.append(1 / np.sqrt(np.diag(lam)))
        # the posterior mean of a linear-Gaussian model is exact under mean field
        mean = np.linalg.solve(lam, xt.T @ np.asarray(y)[:, 0] / noise**2)
        got = np.array([float(params["w_mu"][0, 0]), float(params["b_mu"][0])])
        np.testing.assert_array_less(np.abs(got - mean), 0.5 * optima[-1])
        sigmas.append(np.array([float(jax.nn.softplus(params["w_rho"][0, 0])),
                                float(jax.nn.softplus(params["b_rho"][0]))]))
    assert np.all(sigmas[1] < sigmas[0] / 5), sigmas
    for got, want in zip(sigmas, optima):
        assert_close(got, want, 0.15)  # SGD noise is about 5%


# ----------------------------------------------------------------------------- predict


@pytest.fixture(scope="module")
def toy_bbb():
    """Bayes by Backprop on the cubic toy (x/4, y/50 scaling), 20 points in [-4, 4]."""
    kx, ke = jax.random.split(jax.random.key(0))
    x = jax.random.uniform(kx, (20, 1), minval=-4.0, maxval=4.0)
    y = x**3 + 3.0 * jax.random.normal(ke, (20, 1))
    model = fn.serial(BayesDense(32, sigma_init=0.05, w_init="he_normal"), fn.ReLU(), BayesDense(1, sigma_init=0.05))
    params, state = model.init(jax.random.key(1), (1,))
    noise = 3.0 / 50.0
    params, values = _train(model, losses.gaussian_nll(noise), params, state, x / 4, y / 50, steps=3000,
                            lr=0.01, key=jax.random.key(2), penalty=kl_penalty(state, 20))
    return model, params, state, x, y, noise


@pytest.mark.slow
def test_predictive_variance_is_larger_far_from_the_data(toy_bbb):
    model, params, state, x, y, noise = toy_bbb
    grid = jnp.linspace(-6.0, 6.0, 121)[:, None]
    pred = predict(model, params, state, grid / 4, jax.random.key(5), samples=200, noise_var=noise**2)
    std = np.sqrt(np.asarray(pred.variance[:, 0]))
    g = np.asarray(grid[:, 0])
    inside, outside = std[np.abs(g) <= 3.5].mean(), std[np.abs(g) >= 5.5].mean()
    assert outside > 2 * inside, (inside, outside)
    # and the mean fits the data where there is data
    fit = predict(model, params, state, x / 4, jax.random.key(6), samples=200).mean * 50
    assert float(jnp.sqrt(jnp.mean((fit - y) ** 2))) < 10.0  # y spans about +-64, the noise sd is 3


@pytest.mark.slow
def test_predict_is_the_average_over_samples():
    model = fn.serial(fn.Dense(16), fn.ReLU(), fn.Dropout(0.5), fn.Dense(3))
    params, state = model.init(jax.random.key(0), (4,))
    x = jax.random.normal(jax.random.key(1), (7, 4))
    k = jax.random.key(2)
    ys = sample_outputs(model, params, state, x, k, 20)
    keys = jax.random.split(k, 20)
    one = jax.jit(lambda kk: model.apply(params, state, x, key=kk, train=True)[0])
    loop = np.stack([np.asarray(one(kk)) for kk in keys])
    assert_close(ys, loop, RTOL_F32)

    reg = predict(model, params, state, x, k, samples=20, noise_var=0.25)
    assert_close(reg.mean, loop.mean(0), RTOL_F32)
    assert_close(reg.variance, loop.var(0) + 0.25, RTOL_F32)
    assert np.all(np.asarray(reg.variance) > 0.25)  # MC dropout spreads the outputs

    cls = predict(model, params, state, x, k, samples=20, output="logits")
    p = np.exp(loop - loop.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    assert_close(cls.mean, p.mean(0), RTOL_F32)
    assert_close(cls.variance, p.var(0), 1e-3)
    assert_close(cls.mean.sum(-1), np.ones(np.shape(cls.mean)[:-1]), RTOL_F32)


def test_predict_mean_logvar_and_deterministic_models():
    model = fn.serial(fn.Dense(2))
    params, state = model.init(jax.random.key(0), (3,))
    x = jax.random.normal(jax.random.key(1), (5, 3))
    out = np.asarray(model.apply(params, state, x)[0])
    pred = predict(model, params, state, x, jax.random.key(2), samples=4, output="mean_logvar")
    assert_close(pred.mean, out[:, :1], RTOL_F32)
    assert_close(pred.variance, np.exp(out[:, 1:]), RTOL_F32)
    with pytest.raises(ValueError, match="even output width"):
        predict(fn.serial(fn.Dense(3)), *fn.serial(fn.Dense(3)).init(jax.random.key(0), (3,)), x,
                jax.random.key(0), output="mean_logvar")
    with pytest.raises(ValueError, match="predict: output must be one of"):
        predict(model, params, state, x, jax.random.key(0), output="probs")
    with pytest.raises(ValueError, match="predict: samples must be a positive integer"):
        predict(model, params, state, x, jax.random.key(0), samples=0)


def test_predict_compiles_once():
    model = fn.serial(BayesDense(4), fn.Tanh(), BayesDense(2))
    params, state = model.init(jax.random.key(0), (3,))
    x = jnp.ones((5, 3))
    traces = []
    orig = model.apply_fn

    def counting(*a, **k):
        traces.append(1)
        return orig(*a, **k)

    model = dataclasses.replace(model, apply_fn=counting)
    for i in range(3):
        predict(model, params, state, x, jax.random.key(i), samples=8, noise_var=0.1 * i)
    assert len(traces) == 1


# ----------------------------------------------------------------------------- calibration


def test_calibration_metrics_on_a_hand_computed_case():
    probs = jnp.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]])
    labels = jnp.array([0, 1, 1, 0])
    assert_close(cal.nll(probs, labels), -(math.log(0.9) + math.log(0.4) + math.log(0.7)
                                                        + math.log(0.2)) / 4, RTOL_F32)
    assert_close(cal.brier(probs, labels), (0.02 + 0.72 + 0.18 + 1.28) / 4, RTOL_F32)
    # confidences 0.9, 0.6, 0.7, 0.8 and correct 1, 0, 1, 0; with 2 bins all fall in (0.5, 1]
    assert_close(cal.expected_calibration_error(probs, labels, bins=2), abs(0.5 - 0.75), RTOL_F32)
    # 5 bins: (0.4, 0.6] holds 0.6 (wrong), (0.6, 0.8] holds 0.7 (right) and 0.8 (wrong), (0.8, 1] 0.9 (right)
    r = cal.reliability(probs, labels, bins=5)
    np.testing.assert_array_equal(r.count, [0, 0, 1, 2, 1])
    assert_close(r.confidence, [0, 0, 0.6, 0.75, 0.9], RTOL_F32)
    assert_close(r.accuracy, [0, 0, 0, 0.5, 1], RTOL_F32)
    want = (0.6 + 2 * 0.25 + 0.1) / 4
    assert_close(cal.expected_calibration_error(probs, labels, bins=5), want, RTOL_F32)


@pytest.mark.slow
def test_calibration_extremes():
    onehot = jax.nn.one_hot(jnp.array([2, 0, 1]), 3)
    labels = jnp.array([2, 0, 1])
    assert float(cal.nll(onehot, labels)) == 0.0
    assert float(cal.brier(onehot, labels)) == 0.0
    assert float(cal.expected_calibration_error(onehot, labels)) == 0.0
    wrong = jnp.array([0, 1, 2])
    assert float(cal.brier(onehot, wrong)) == 2.0
    assert np.isfinite(float(cal.nll(onehot, wrong)))  # guarded log of 0
    np.testing.assert_allclose(cal.predictive_entropy(onehot), 0.0)
    assert_close(cal.predictive_entropy(jnp.full((2, 4), 0.25)), math.log(4), RTOL_F32)
    assert_close(cal.regression_nll(jnp.zeros(3), jnp.full(3, 4.0), jnp.array([0.0, 2.0, -2.0])), 0.5 * (math.log(2 * math.pi * 4) + (0 + 1 + 1) / 3), RTOL_F32)
    with pytest.raises(ValueError, match="nll: probs must have shape"):
        cal.nll(onehot, labels[:2])
    with pytest.raises(TypeError, match="labels must be integers"):
        cal.brier(onehot, jnp.array([0.0, 1.0, 2.0]))


# ----------------------------------------------------------------------------- losses as likelihoods


def test_mse_is_gaussian_nll_with_fixed_variance_up_to_scale_and_constant():
    pred = jax.random.normal(jax.random.key(0), (6, 3))
    target = jax.random.normal(jax.random.key(1), (6, 3))
    sigma = 0.7
    nll = losses.gaussian_nll(sigma)
    n, d = pred.shape
    # sum_d [(t - mu)^2 / 2 s^2 + log s + log(2 pi) / 2] averaged over n  =  (d / 2 s^2) mse + const
    const = d * (math.log(sigma) + 0.5 * math.log(2 * math.pi))
    assert_close(nll.value(pred, target), d / (2 * sigma**2) * losses.mse.value(pred, target) + const, RTOL_F32)
    assert_close(nll.grad(pred, target), d / (2 * sigma**2) * losses.mse.grad(pred, target), RTOL_F32)
    # and against the Gaussian density itself
    ref = -jax.scipy.stats.norm.logpdf(target, pred, sigma).sum() / n
    assert_close(nll.value(pred, target), ref, RTOL_F32)


def test_softmax_cross_entropy_is_the_categorical_nll():
    logits = 3 * jax.random.normal(jax.random.key(0), (8, 5))
    labels = jax.random.randint(jax.random.key(1), (8,), 0, 5)
    z = np.asarray(logits, np.float64)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    ref = -np.mean(np.log(p[np.arange(8), np.asarray(labels)]))
    assert_close(losses.softmax_cross_entropy.value(logits, labels), ref, RTOL_F32)
    assert_close(cal.nll(jnp.asarray(p), labels), ref, RTOL_F32)


def test_gaussian_nll_learned_variance_is_the_density_and_passes_checker():
    loss = losses.gaussian_nll()
    pred = jax.random.normal(jax.random.key(0), (5, 4))
    target = jax.random.normal(jax.random.key(1), (5, 2))
    mu, s = pred[:, :2], pred[:, 2:]
    ref = -jax.scipy.stats.norm.logpdf(target, mu, jnp.exp(0.5 * s)).sum() / 5
    assert_close(loss.value(pred, target), ref, RTOL_F32)
    check_loss(loss, pred, target, key=jax.random.key(2)).assert_ok()
    # a 1-D target works too
    check_loss(loss, pred[:, :2], target[:, 0], key=jax.random.key(3)).assert_ok()
