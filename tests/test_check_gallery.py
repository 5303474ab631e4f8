"""The checker must flag wrong derivations and pass right ones.

Each entry of the gallery is a plausible mistake in a hand-derived backward; the
checker has to report every one (and the correct originals must pass)."""
import dataclasses

import jax
import jax.numpy as jnp
import pytest

import funcnn as fn
from funcnn import losses
from funcnn.check import catalog


def _layer_with_backward(layer, backward):
    return dataclasses.replace(layer, backward=backward)


def _dense_backward(mutate):
    def backward(params, x, dy):
        return mutate(params, x, dy)
    return backward


WRONG_LAYERS = {
    "dense: dW off by 1%": (fn.Dense(4), lambda p, x, dy: ({"w": 1.01 * dy.T @ x, "b": dy.sum(0)}, dy @ p["w"])),
    "dense: bias gradient zero": (fn.Dense(4), lambda p, x, dy: ({"w": dy.T @ x, "b": jnp.zeros_like(p["b"])}, dy @ p["w"])),
    "dense: bias gradient missing": (fn.Dense(4), lambda p, x, dy: ({"w": dy.T @ x}, dy @ p["w"])),
    "dense: transposed dW": (fn.Dense(4), lambda p, x, dy: ({"w": x.T @ dy, "b": dy.sum(0)}, dy @ p["w"])),
    "dense: dx with W^T": (fn.Dense(4), lambda p, x, dy: ({"w": dy.T @ x, "b": dy.sum(0)}, dy @ p["w"].T)),
    "dense: sign error in dx": (fn.Dense(4), lambda p, x, dy: ({"w": dy.T @ x, "b": dy.sum(0)}, -dy @ p["w"])),
    "dense: bias gradient averaged": (fn.Dense(4), lambda p, x, dy: ({"w": dy.T @ x, "b": dy.mean(0)}, dy @ p["w"])),
    "sigmoid: sigma' written as sigma": (fn.Sigmoid(), lambda p, c, dy: ({}, dy * c[1])),
    "tanh: 1 - tanh instead of 1 - tanh^2": (fn.Tanh(), lambda p, c, dy: ({}, dy * (1 - c[1]))),
    "relu: gradient passed everywhere": (fn.ReLU(), lambda p, c, dy: ({}, dy)),
    "softmax: missing off-diagonal term": (fn.Softmax(), lambda p, y, dy: ({}, dy * y * (1 - y))),
    "dropout: mask not applied in backward": (fn.Dropout(0.5), lambda p, s, dy: ({}, dy)),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(WRONG_LAYERS))
def test_wrong_layer_backward_is_flagged(name):
    layer, backward = WRONG_LAYERS[name]
    report = fn.check_layer(_layer_with_backward(layer, backward), (4,), batch=3)
    assert not report.ok, f"{name} passed the checker:\n{report}"
    with pytest.raises(AssertionError, match="gradient check failed"):
        report.assert_ok()


WRONG_LOSSES = {
    "softmax CE: not divided by batch size": (
        losses.softmax_cross_entropy, (5, 3), lambda z, t: jax.nn.softmax(z) - jax.nn.one_hot(t, 3)),
    "mse: missing factor 2": (losses.mse, (4, 2), lambda p, t: (p - t) / p.size),
    "bce: sigmoid of the wrong sign": (
        losses.binary_cross_entropy, (4, 1), lambda z, t: (jax.nn.sigmoid(-z) - t) / z.size),
}


@pytest.mark.parametrize("name", sorted(WRONG_LOSSES))
def test_wrong_loss_grad_is_flagged(name):
    loss, shape, grad = WRONG_LOSSES[name]
    k1, k2 = jax.random.split(jax.random.key(1))
    pred = jax.random.normal(k1, shape)
    if loss is losses.softmax_cross_entropy:
        target = jax.random.randint(k2, (shape[0],), 0, shape[1])
    elif loss is losses.binary_cross_entropy:
        target = jax.random.bernoulli(k2, 0.5, shape).astype(jnp.float32)
    else:
        target = jax.random.normal(k2, shape)
    report = fn.check_loss(dataclasses.replace(loss, grad=grad), pred, target)
    assert not report.ok, f"{name} passed the checker:\n{report}"


def test_wrong_number_of_gradients_is_flagged():
    report = fn.check_backward(lambda a, b: a * b, lambda a, b, dy: (dy * b,), jnp.ones(3), jnp.ones(3))
    assert not report.ok and "2 gradients" in str(report)


def test_wrong_gradient_shape_is_flagged():
    report = fn.check_backward(lambda a: a.sum(), lambda a, dy: (jnp.ones(4) * dy,), jnp.ones(3))
    assert not report.ok and "shape" in str(report)


# sequences (one program per unroll), convolutions at a batch of 12 (four formulations) and
# attention are the slow cases: the rest of the catalog runs in the quick loop
SLOW_CASES = ("simple_rnn", "lstm", "gru", "conv", "attention")


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c.name.startswith(SLOW_CASES) else c
                                  for c in catalog.LAYER_CASES], ids=lambda c: c.name)
def test_every_builtin_layer_passes(case):
    catalog.run_layer_case(case).assert_ok()


@pytest.mark.slow
@pytest.mark.parametrize("case", catalog.LOSS_CASES, ids=lambda c: c.name)
def test_every_builtin_loss_passes(case):
    catalog.run_loss_case(case).assert_ok()


def test_user_derivation_checked_with_check_backward():
    """The README's user story: a hand-derived VJP of f(a, x) = sin(a x) sum."""
    def f(a, x):
        return jnp.sin(a * x)

    def f_vjp(a, x, dy):
        c = jnp.cos(a * x) * dy
        return (jnp.sum(c * x), c * a)

    report = fn.check_backward(f, f_vjp, 0.7, jnp.linspace(-1.0, 1.0, 5))
    report.assert_ok()
    assert {r.path for r in report.rows} == {"arg0", "arg1"}
    assert all(r.rel_autodiff < 1e-12 for r in report.rows)


def test_report_table_lists_every_leaf():
    report = fn.check_layer(fn.Dense(3), (2,))
    text = str(report)
    for leaf in ("params['w']", "params['b']", "x"):
        assert leaf in text
    assert report.ok and "ok" in text.splitlines()[0]


def test_tolerance_does_not_grow_with_size():
    """A 1e-6 relative error in one element of a big leaf is flagged, as in a small one."""
    for n in (4, 400):
        def backward(a, dy, n=n):
            return (dy * 2 * a * (1 + 1e-6 * (jnp.arange(n) == 0)),)
        report = fn.check_backward(lambda a: a**2, backward, jnp.linspace(1.0, 2.0, n), fd=False)
        assert not report.ok


def test_leaf_with_zero_true_gradient_passes():
    """A bias just before a batch mean subtraction has gradient exactly 0; rounding noise
    in it must not fail the check, while a wrong nonzero value must."""
    def f(w, b, x):
        z = x @ w.T + b
        return jnp.tanh(z - z.mean(0))

    def f_vjp(w, b, x, dy):
        z = x @ w.T + b
        y = jnp.tanh(z - z.mean(0))
        dc = dy * (1 - y**2)
        dz = dc - dc.mean(0)
        return dz.T @ x, dz.sum(0), dz @ w

    args = (jax.random.normal(jax.random.key(0), (3, 4)), jnp.ones(3), jax.random.normal(jax.random.key(1), (5, 4)))
    fn.check_backward(f, f_vjp, *args).assert_ok()
    wrong = lambda w, b, x, dy: (f_vjp(w, b, x, dy)[0], f_vjp(w, b, x, dy)[1] + 1e-3, f_vjp(w, b, x, dy)[2])
    assert not fn.check_backward(f, wrong, *args).ok
