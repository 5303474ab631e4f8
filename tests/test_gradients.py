"""Manual backward == autodiff, per-example gradients, and the custom_vjp bridge."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import funcnn as fn
from funcnn import losses
from helpers import RTOL_F32, assert_close


def _model():
    return fn.serial(fn.Flatten(), fn.Dense(16), fn.Tanh(), fn.Dense(12), fn.ReLU(), fn.Dense(8),
                     fn.Sigmoid(), fn.Dropout(0.2), fn.Dense(4))


def _batch(key, n=6):
    kx, ky = jax.random.split(key)
    return jax.random.normal(kx, (n, 3, 2)), jax.random.randint(ky, (n,), 0, 4)


def _max_rel(a, b):
    return max(jax.tree_util.tree_leaves(jax.tree_util.tree_map(
        lambda u, v: float(jnp.max(jnp.abs(u - v)) / jnp.max(jnp.abs(v))), a, b)))


@pytest.mark.slow
@pytest.mark.parametrize("loss,l2", [(losses.softmax_cross_entropy, 0.0), (losses.softmax_cross_entropy, 0.1),
                                     (losses.mse, 0.0)])
def test_manual_equals_autodiff_float64(loss, l2):
    with jax.enable_x64(True):
        model = _model()
        params, state = model.init(jax.random.key(1), (3, 2))
        params = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), params)
        x, y = _batch(jax.random.key(2))
        x = x.astype(jnp.float64)
        if loss is losses.mse:
            y = jax.nn.one_hot(y, 4, dtype=jnp.float64)
        k = jax.random.key(3)
        vm, gm, _ = jax.jit(fn.value_and_grad(model, loss, mode="manual", l2=l2))(params, state, x, y, key=k)
        va, ga, _ = jax.jit(fn.value_and_grad(model, loss, mode="autodiff", l2=l2))(params, state, x, y, key=k)
        chex.assert_trees_all_equal_structs(gm, params)
        assert abs(float(vm - va)) <= 1e-12 * abs(float(va))
        assert _max_rel(gm, ga) <= 1e-10


def test_l2_excludes_biases_and_adds_its_gradient():
    model = fn.serial(fn.Dense(3), fn.Dense(2))
    params, state = model.init(jax.random.key(0), (4,))
    x, y = jnp.ones((2, 4)), jnp.array([0, 1])
    _, g0, _ = fn.value_and_grad(model, losses.softmax_cross_entropy)(params, state, x, y)
    v1, g1, _ = fn.value_and_grad(model, losses.softmax_cross_entropy, l2=0.5)(params, state, x, y)
    assert_close(g1["0_dense"]["w"], g0["0_dense"]["w"] + 0.5 * params["0_dense"]["w"], RTOL_F32)
    np.testing.assert_array_equal(g1["0_dense"]["b"], g0["0_dense"]["b"])


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["manual", "autodiff"])
def test_per_example_grads_equal_the_loop(mode):
    model = fn.serial(fn.Dense(5), fn.Tanh(), fn.Dense(3))
    params, state = model.init(jax.random.key(0), (4,))
    x = jax.random.normal(jax.random.key(1), (7, 4))
    y = jax.random.randint(jax.random.key(2), (7,), 0, 3)
    values, grads = jax.jit(fn.per_example_grads(model, losses.softmax_cross_entropy, mode=mode))(params, state, x, y)
    vg = jax.jit(fn.value_and_grad(model, losses.softmax_cross_entropy, mode=mode))
    assert values.shape == (7,)
    # sliced on the host: each eager slice of a device array would compile a program of its own
    values, grads, x, y = jax.tree_util.tree_map(np.asarray, (values, grads, x, y))
    for n in range(7):
        v, g, _ = vg(params, state, x[n:n + 1], y[n:n + 1])
        assert_close(values[n], v, RTOL_F32)
        assert_close(jax.tree_util.tree_map(lambda a: a[n], grads), g, RTOL_F32)
    # the batch gradient is the mean of the per-example gradients
    _, g_batch, _ = vg(params, state, x, y)
    assert_close(jax.tree_util.tree_map(lambda a: a.mean(0), grads), g_batch, RTOL_F32)


def test_with_manual_vjp_uses_the_handwritten_backward():
    """A deliberately scaled backward shows up in jax.grad: the bridge really uses it."""
    import dataclasses

    dense = fn.Dense(2)
    doubled = dataclasses.replace(dense, backward=lambda p, x, dy: jax.tree_util.tree_map(lambda g: 2 * g, dense.backward(p, x, dy)))
    params, state = dense.init(jax.random.key(0), (3,))
    x = jnp.ones((4, 3))

    def total(layer, p):
        return layer.apply(p, state, x)[0].sum()

    g_true = jax.grad(lambda p: total(dense, p))(params)
    g_bridge = jax.grad(lambda p: total(fn.with_manual_vjp(doubled), p))(params)
    assert_close(g_bridge, jax.tree_util.tree_map(lambda g: 2 * g, g_true), RTOL_F32)


@pytest.mark.slow
def test_with_manual_vjp_under_jit_and_vmap():
    with jax.enable_x64(True):
        model = _model()
        bridged = fn.with_manual_vjp(model)
        params, state = model.init(jax.random.key(0), (3, 2))
        params = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), params)
        x, y = _batch(jax.random.key(1))
        x = x.astype(jnp.float64)

        def loss_of(m, p, xi, yi, k):
            return losses.softmax_cross_entropy.value(m.apply(p, state, xi, key=k, train=True)[0], yi)

        keys = jax.random.split(jax.random.key(2), 6)
        per_ex = lambda m: jax.jit(jax.vmap(jax.grad(lambda p, xi, yi, k: loss_of(m, p, xi[None], yi[None], k), argnums=0),
                                            in_axes=(None, 0, 0, 0)))
        g_bridge = per_ex(bridged)(params, x, y, keys)
        g_auto = per_ex(model)(params, x, y, keys)
        assert _max_rel(g_bridge, g_auto) <= 1e-10


@pytest.mark.slow
def test_training_with_bridge_matches_autodiff():
    d = fn.data.load("digits")
    data = (d.x_train[:256], d.y_train[:256])
    model = fn.serial(fn.Flatten(), fn.Dense(32), fn.Tanh(), fn.Dense(10))
    kwargs = dict(epochs=2, batch_size=32, key=jax.random.key(0), progress=False)
    bridged = fn.train.fit(fn.with_manual_vjp(model), losses.softmax_cross_entropy, optax.adam(1e-2), data, grad="autodiff", **kwargs)
    auto = fn.train.fit(model, losses.softmax_cross_entropy, optax.adam(1e-2), data, grad="autodiff", **kwargs)
    manual = fn.train.fit(model, losses.softmax_cross_entropy, optax.adam(1e-2), data, grad="manual", **kwargs)
    assert_close(bridged.params, auto.params, RTOL_F32)
    assert_close(manual.params, auto.params, RTOL_F32)


def test_bad_mode_is_refused():
    with pytest.raises(ValueError, match="mode must be one of"):
        fn.value_and_grad(fn.Dense(2), losses.mse, mode="numeric")
    with pytest.raises(ValueError, match="l2 must be >= 0"):
        fn.value_and_grad(fn.Dense(2), losses.mse, l2=-1.0)
