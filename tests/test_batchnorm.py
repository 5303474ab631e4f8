"""BatchNorm: forward against a NumPy reference, the closed-form backward against a
step-by-step (computational-graph) derivation and the checker, running statistics,
eval mode, state that no gradient reaches, and input errors."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnn.check import check_layer
from funcnn.gradients import value_and_grad
from funcnn.core.layer import serial
from funcnn.layers.activations import ReLU
from funcnn.layers.batchnorm import (BatchNorm, batchnorm_backward, batchnorm_backward_staged,
                                     batchnorm_forward_train)
from funcnn.layers.dense import Dense
from funcnn.losses import softmax_cross_entropy
from helpers import RTOL_F32, RTOL_F64, assert_close

# (example shape, feature axis of the batched x, batch size)
LAYOUTS = {
    "dense (N, F)": ((5,), -1, 6),
    "NHWC (N, H, W, C)": ((3, 3, 4), -1, 2),
    "NCHW (N, C, H, W), axis=1": ((4, 3, 3), 1, 2),
}


def _scale_init(key, shape, *_):
    return 1.0 + 0.5 * jax.random.normal(key, shape)


def _shift_init(key, shape, *_):
    return 0.5 * jax.random.normal(key, shape)


def _layer(axis=-1, **kwargs):
    """BatchNorm with random gamma/beta, so a missing gamma factor cannot hide behind 1."""
    return BatchNorm(axis=axis, gamma_init=_scale_init, beta_init=_shift_init, **kwargs)


def _reduce_axes(ndim, axis):
    ax = axis % ndim
    return tuple(i for i in range(ndim) if i != ax), ax


def _per_feature(v, ndim, ax):
    shape = [1] * ndim
    shape[ax] = -1
    return np.asarray(v).reshape(shape)


def _setup(layout, key=0):
    shape, axis, batch = LAYOUTS[layout]
    layer = _layer(axis)
    params, state = jax.jit(layer.init, static_argnums=1)(jax.random.key(key), shape)
    x = 2.0 + 3.0 * jax.random.normal(jax.random.key(key + 1), (batch, *shape))
    return layer, params, state, x, axis


def _train_apply(layer):
    return jax.jit(lambda p, s, x: layer.apply(p, s, x, train=True))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_training_forward_matches_numpy(layout):
    layer, params, state, x, axis = _setup(layout)
    y, _ = _train_apply(layer)(params, state, x)
    xn = np.asarray(x, np.float64)
    red, ax = _reduce_axes(xn.ndim, axis)
    mean, var = xn.mean(red, keepdims=True), xn.var(red, keepdims=True)  # biased variance
    g, b = _per_feature(params["gamma"], xn.ndim, ax), _per_feature(params["beta"], xn.ndim, ax)
    assert_close(y, g * (xn - mean) / np.sqrt(var + 1e-5) + b, RTOL_F32)
    # every feature of the output has mean beta and standard deviation ~|gamma|
    np.testing.assert_allclose(np.asarray(y).mean(red), params["beta"], atol=1e-5)
    assert_close(np.asarray(y).std(red), np.abs(params["gamma"]), RTOL_F32)


def _step_by_step_backward(x, gamma, dy, axis, eps):
    """CS231n's staged derivation: walk the graph of the forward back one node at a time.

    mu = mean(x); xc = x - mu; sq = xc^2; var = mean(sq); std = sqrt(var + eps);
    istd = 1 / std; xhat = xc * istd; y = gamma * xhat + beta.
    """
    red, ax = _reduce_axes(x.ndim, axis)
    m = x.size // x.shape[ax]
    g = _per_feature(gamma, x.ndim, ax)
    mu = x.mean(red, keepdims=True)
    xc = x - mu
    sq = xc**2
    var = sq.mean(red, keepdims=True)
    std = np.sqrt(var + eps)
    istd = 1.0 / std
    xhat = xc * istd
    # y = gamma * xhat + beta
    dbeta = dy.sum(red)
    dgamma = (dy * xhat).sum(red)
    dxhat = dy * g
    # xhat = xc * istd: two parents
    dxc = dxhat * istd
    distd = (dxhat * xc).sum(red, keepdims=True)
    # istd = 1 / std;  std = sqrt(var + eps)
    dstd = -distd / std**2
    dvar = dstd * 0.5 / std
    # var = mean(sq);  sq = xc^2
    dsq = np.broadcast_to(dvar / m, x.shape)
    dxc = dxc + 2.0 * xc * dsq
    # xc = x - mu;  mu = mean(x)
    dmu = -dxc.sum(red, keepdims=True)
    dx = dxc + np.broadcast_to(dmu / m, x.shape)
    return dgamma, dbeta, dx


@pytest.mark.parametrize("layout", LAYOUTS)
def test_closed_form_backward_agrees_with_step_by_step_derivation(layout):
    with jax.enable_x64(True):
        layer, params, state, x, axis = _setup(layout)
        params = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), params)
        x = x.astype(jnp.float64)
        dy = jax.random.normal(jax.random.key(7), x.shape, jnp.float64)
        grads, dx = jax.jit(lambda p, x, dy: layer.backward(p, layer.forward(p, state, x, train=True)[2], dy))(
            params, x, dy)
        dgamma, dbeta, dx_ref = _step_by_step_backward(np.asarray(x), np.asarray(params["gamma"]),
                                                       np.asarray(dy), axis, 1e-5)
    assert_close(grads["gamma"], dgamma, RTOL_F64)
    assert_close(grads["beta"], dbeta, RTOL_F64)
    assert_close(dx, dx_ref, RTOL_F64)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_library_staged_backward_agrees_with_closed_form(layout):
    """The module's two derivations, CS231n's staged walk and the closed form, agree."""
    shape, axis, batch = LAYOUTS[layout]
    @jax.jit  # one program (op by op, each primitive would compile alone)
    def derivations():
        x = 2.0 + 3.0 * jax.random.normal(jax.random.key(1), (batch, *shape), jnp.float64)
        ax = axis % x.ndim
        gamma, beta = (jax.random.normal(jax.random.key(k), (x.shape[ax],), jnp.float64) for k in (2, 3))
        _, _, _, cache = batchnorm_forward_train(x, gamma, beta, axis=ax, eps=1e-5)
        dy = jax.random.normal(jax.random.key(7), x.shape, jnp.float64)
        return x, gamma, dy, batchnorm_backward(dy, cache), batchnorm_backward_staged(dy, cache)

    with jax.enable_x64(True):
        x, gamma, dy, closed, staged = derivations()
        dgamma, dbeta, dx_ref = _step_by_step_backward(np.asarray(x), np.asarray(gamma), np.asarray(dy), axis, 1e-5)
    for a, b in zip(closed, staged):
        assert_close(a, b, RTOL_F64)
    assert_close(staged[0], dx_ref, RTOL_F64)
    assert_close(staged[1], dgamma, RTOL_F64)
    assert_close(staged[2], dbeta, RTOL_F64)


def _with_state(layer, state_fn):
    """The same layer, initialised with the running statistics ``state_fn(params)``."""
    def init(key, shape):
        params, state = layer.init(key, shape)
        return params, state_fn(key, state)
    return dataclasses.replace(layer, init=init)


def _random_state(key, state):
    km, kv = jax.random.split(jax.random.fold_in(key, 1))
    f = state["mean"].shape
    return {"mean": jax.random.normal(km, f), "var": jax.random.uniform(kv, f, minval=0.5, maxval=2.0)}


# training mode on (N, F) and NHWC is checked by funcnn.check.catalog (tests/test_check_gallery.py)
CHECKS = [("NCHW (N, C, H, W), axis=1", True)] + [(layout, False) for layout in LAYOUTS]


@pytest.mark.parametrize("layout,train", CHECKS, ids=[f"{lay}-{'train' if t else 'eval'}" for lay, t in CHECKS])
def test_checker_passes(layout, train):
    shape, axis, batch = LAYOUTS[layout]
    layer = _with_state(_layer(axis), _random_state)
    check_layer(layer, shape, batch=batch, train=train, key=jax.random.key(3)).assert_ok()


WRONG_BACKWARDS = {
    "variance path missing (no xhat * dgamma / m term)":
        lambda g, c, dy, db, dg, m: g * c.inv_std * (dy - db / m),
    "mean path missing (no dbeta / m term)":
        lambda g, c, dy, db, dg, m: g * c.inv_std * (dy - c.xhat * dg / m),
    "gamma left out of dx":
        lambda g, c, dy, db, dg, m: c.inv_std * (dy - db / m - c.xhat * dg / m),
    "m - 1 instead of m":
        lambda g, c, dy, db, dg, m: g * c.inv_std * (dy - db / (m - 1) - c.xhat * dg / (m - 1)),
}


@pytest.mark.parametrize("name", WRONG_BACKWARDS)
def test_checker_flags_wrong_batchnorm_backward(name):
    layer = _layer()

    def backward(params, cache, dy):
        db, dg = dy.sum(0), (dy * cache.xhat).sum(0)
        return {"gamma": dg, "beta": db}, WRONG_BACKWARDS[name](params["gamma"], cache, dy, db, dg, dy.shape[0])

    report = check_layer(dataclasses.replace(layer, backward=backward), (4,), batch=5)
    assert not report.ok, f"{name} passed the checker:\n{report}"


def test_running_statistics_after_one_step():
    layer = BatchNorm(momentum=0.8)
    params, state = layer.init(jax.random.key(0), (3,))
    x = jax.random.normal(jax.random.key(1), (5, 3)) * 2.0 + 1.0
    _, new = layer.apply(params, state, x, train=True)
    xn = np.asarray(x, np.float64)
    assert_close(new["mean"], 0.8 * 0.0 + 0.2 * xn.mean(0), RTOL_F32)
    assert_close(new["var"], 0.8 * 1.0 + 0.2 * xn.var(0, ddof=1), RTOL_F32)  # unbiased
    assert new["mean"].dtype == state["mean"].dtype and new["var"].dtype == state["var"].dtype


def test_running_statistics_converge_to_the_population_with_the_unbiased_variance():
    """Batches of 4 from N(3, 2^2): the running variance tends to 4 (with the biased batch
    variance it would tend to 4 * 3/4 = 3)."""
    layer = BatchNorm(momentum=0.99)
    params, state = layer.init(jax.random.key(0), (64,))

    def step(state, key):
        x = 3.0 + 2.0 * jax.random.normal(key, (4, 64))
        return layer.apply(params, state, x, train=True)[1], None

    state, _ = jax.jit(lambda s: jax.lax.scan(step, s, jax.random.split(jax.random.key(1), 1500)))(state)
    assert abs(float(state["mean"].mean()) - 3.0) < 0.05
    assert abs(float(state["var"].mean()) - 4.0) < 0.15


def test_eval_mode_uses_running_statistics_and_keeps_state():
    layer = _layer()
    params, _ = layer.init(jax.random.key(0), (3,))
    state = {"mean": jnp.array([1.0, -2.0, 0.5]), "var": jnp.array([4.0, 0.25, 1.0])}
    x = jax.random.normal(jax.random.key(1), (6, 3))
    y, new = layer.apply(params, state, x, train=False)
    ref = params["gamma"] * (x - state["mean"]) / jnp.sqrt(state["var"] + 1e-5) + params["beta"]
    assert_close(y, ref, RTOL_F32)
    assert new is state
    # each example is normalised on its own: the result does not depend on the batch
    y0, _ = layer.apply(params, state, x[:1], train=False)
    assert_close(y0, y[:1], RTOL_F32)
    y_train, _ = layer.apply(params, state, x, train=True)
    assert not np.allclose(y_train, y)


def test_no_gradient_flows_into_state():
    layer, params, state, x, _ = _setup("dense (N, F)")

    def stats(p, s, x):
        new = layer.apply(p, s, x, train=True)[1]
        return jnp.sum(new["mean"]) + jnp.sum(new["var"])

    for argnum in (0, 1, 2):
        grads = jax.grad(stats, argnums=argnum)(params, state, x)
        for g in jax.tree_util.tree_leaves(grads):
            np.testing.assert_array_equal(g, 0.0)
    # in eval mode the running statistics are constants, not inputs to differentiate
    g_state = jax.grad(lambda s: jnp.sum(layer.apply(params, s, x, train=False)[0]))(state)
    for g in jax.tree_util.tree_leaves(g_state):
        np.testing.assert_array_equal(g, 0.0)


@pytest.mark.slow
def test_value_and_grad_threads_the_running_statistics():
    model = serial(Dense(6), BatchNorm(), ReLU(), Dense(3))
    params, state = model.init(jax.random.key(0), (4,))
    x = jax.random.normal(jax.random.key(1), (8, 4))
    y = jax.random.randint(jax.random.key(2), (8,), 0, 3)
    _, _, new_manual = jax.jit(value_and_grad(model, softmax_cross_entropy, mode="manual"))(params, state, x, y)
    _, _, new_auto = jax.jit(value_and_grad(model, softmax_cross_entropy, mode="autodiff"))(params, state, x, y)
    h = x @ params["0_dense"]["w"].T + params["0_dense"]["b"]
    assert_close(new_manual["1_batchnorm"]["mean"], 0.1 * h.mean(0), RTOL_F32)
    assert_close(new_manual["1_batchnorm"]["var"], 0.9 + 0.1 * jnp.var(h, 0, ddof=1), RTOL_F32)
    jax.tree_util.tree_map(np.testing.assert_array_equal, new_manual, new_auto)


def test_vmap_over_independent_batches_equals_a_loop():
    layer, params, state, _, _ = _setup("dense (N, F)")
    xs = jax.random.normal(jax.random.key(5), (3, 6, 5))
    apply = _train_apply(layer)
    ys, states = jax.jit(jax.vmap(apply, in_axes=(None, None, 0)))(params, state, xs)
    for i in range(3):
        y, s = apply(params, state, xs[i])
        assert_close(ys[i], y, RTOL_F32)
        assert_close(states["var"][i], s["var"], RTOL_F32)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match=r"BatchNorm: momentum must be a number in \[0, 1\)"):
        BatchNorm(momentum=1.0)
    with pytest.raises(ValueError, match="BatchNorm: eps must be a positive number"):
        BatchNorm(eps=0.0)
    with pytest.raises(TypeError, match="BatchNorm: axis must be an int"):
        BatchNorm(axis=1.0)
    with pytest.raises(ValueError, match="axis 0 is the batch axis"):
        BatchNorm(axis=0).init(jax.random.key(0), (3,))
    with pytest.raises(ValueError, match="axis 0 is the batch axis"):
        BatchNorm(axis=3).init(jax.random.key(0), (3, 2))
    with pytest.raises(ValueError, match="gamma_init must be a callable or one of"):
        BatchNorm(gamma_init="unit")
    layer = BatchNorm()
    params, state = layer.init(jax.random.key(0), (3,))
    with pytest.raises(ValueError, match=r"BatchNorm: x must have 3 features on axis -1, got shape \(4, 5\)"):
        layer.apply(params, state, jnp.ones((4, 5)), train=True)
    with pytest.raises(ValueError, match="more than one value per feature"):
        layer.apply(params, state, jnp.ones((1, 3)), train=True)
    with pytest.raises(TypeError, match="BatchNorm: x must be a floating-point array"):
        layer.apply(params, state, jnp.ones((4, 3), jnp.int32), train=True)
    with pytest.raises(TypeError, match="BatchNorm: train must be a Python bool.*static_argnames"):
        jax.jit(lambda x, train: layer.apply(params, state, x, train=train))(jnp.ones((4, 3)), True)
    # one example is fine in eval mode
    assert layer.apply(params, state, jnp.ones((1, 3)), train=False)[0].shape == (1, 3)
