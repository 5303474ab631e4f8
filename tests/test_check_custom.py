"""custom_vjp / custom_jvp rules are checked against their undecorated primal, never
against themselves; second-order checks; the diagnosis says what is wrong."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnn as fn
from funcnn.check import diagnose, explain


def sin_times(x, w):
    return jnp.sin(x) * w


def softplus(x):
    return jnp.logaddexp(0.0, x)


def matvec(a, x):
    return a @ x


def tanh(x):
    return jnp.tanh(x)



VJP_RULES = {
    # name: (function, bwd(residual args, g), right?)
    "sin*w": (sin_times, lambda r, g: (g * jnp.cos(r[0]) * r[1], g * jnp.sin(r[0])), True),
    "softplus": (softplus, lambda r, g: (g * jax.nn.sigmoid(r[0]),), True),
    "matvec": (matvec, lambda r, g: (jnp.outer(g, r[1]), r[0].T @ g), True),
    "sin*w: product rule without the w": (sin_times, lambda r, g: (g * jnp.cos(r[0]), g * jnp.sin(r[0])), False),
    "softplus: sigmoid of -x": (softplus, lambda r, g: (g * jax.nn.sigmoid(-r[0]),), False),
    "matvec: da transposed": (matvec, lambda r, g: (jnp.outer(r[1], g), r[0].T @ g), False),
}

JVP_RULES = {
    "tanh": (tanh, lambda p, t: (jnp.tanh(p[0]), t[0] * (1 - jnp.tanh(p[0]) ** 2)), True),
    "matvec": (matvec, lambda p, t: (p[0] @ p[1], t[0] @ p[1] + p[0] @ t[1]), True),
    "tanh: 1 - tanh": (tanh, lambda p, t: (jnp.tanh(p[0]), t[0] * (1 - jnp.tanh(p[0]))), False),
    "matvec: dx term missing": (matvec, lambda p, t: (p[0] @ p[1], t[0] @ p[1]), False),
}


def _args(fun):
    k1, k2 = jax.random.split(jax.random.key(3))
    if fun is matvec:
        return jax.random.normal(k1, (3, 3)), jax.random.normal(k2, (3,))
    if fun is sin_times:
        return jax.random.normal(k1, (4,)), jax.random.normal(k2, (4,))
    return (jax.random.normal(k1, (5,)),)


def _make_vjp(fun, bwd):
    f = jax.custom_vjp(fun)
    f.defvjp(lambda *a: (fun(*a), a), bwd)
    return f


@pytest.mark.parametrize("name", sorted(VJP_RULES))
def test_custom_vjp_rules(name):
    fun, bwd, right = VJP_RULES[name]
    f = _make_vjp(fun, bwd)
    args = _args(fun)
    report = fn.check_custom_vjp(f, *args)
    assert report.ok == right, str(report)
    # check_backward with the rule as "backward" differentiates the primal, not the rule
    via_backward = fn.check_backward(f, lambda *a: jax.vjp(f, *a[:-1])[1](a[-1]), *args, fd=False)
    assert via_backward.ok == right, str(via_backward)


@pytest.mark.parametrize("name", sorted(JVP_RULES))
def test_custom_jvp_rules(name):
    fun, rule, right = JVP_RULES[name]
    f = jax.custom_jvp(fun)
    f.defjvp(rule)
    report = fn.check_custom_jvp(f, *_args(fun))
    assert report.ok == right, str(report)
    assert right or all(r.diagnosis for r in report.rows if not r.ok)


def test_rule_hidden_in_scan_is_refused_with_one_line():
    f = _make_vjp(softplus, VJP_RULES["softplus"][1])

    def forward(x):
        return jax.lax.scan(lambda c, xi: (c + f(xi), c), 0.0, x)[0]

    with pytest.raises(ValueError, match="check_custom_vjp") as e:
        fn.check_backward(forward, lambda x, dy: (dy * jax.nn.sigmoid(x),), jnp.ones(3))
    assert "\n" not in str(e.value)


def test_with_manual_vjp_is_checked_against_the_primal():
    """with_manual_vjp's apply is a custom_vjp: checking its jax.vjp as the backward
    must compare with the forward, and catch a wrong hand-written backward."""
    import dataclasses
    d = fn.Dense(3)
    wrong = dataclasses.replace(d, backward=lambda p, c, dy: ({"w": 2 * dy.T @ c, "b": dy.sum(0)}, dy @ p["w"]))
    for layer, right in ((d, True), (wrong, False)):
        m = fn.with_manual_vjp(layer)
        p, s = m.init(jax.random.key(0), (2,))
        x = jax.random.normal(jax.random.key(1), (4, 2))

        def apply(p, x):
            return m.apply(p, s, x)[0]

        report = fn.check_backward(apply, lambda p, x, dy: jax.vjp(apply, p, x)[1](dy), p, x, fd=False)
        assert report.ok == right, str(report)


def test_second_order_catches_a_backward_that_is_not_differentiable_as_written():
    """tanh's backward with the cached output under stop_gradient is right to first
    order, but jax.hessian through it (with_manual_vjp) would be wrong."""
    import dataclasses
    t = fn.Tanh()
    frozen = dataclasses.replace(t, backward=lambda p, c, dy: ({}, dy * (1 - jax.lax.stop_gradient(c[1]) ** 2)))
    assert fn.check_layer(frozen, (3,), fd=False).ok
    report = fn.check_layer(frozen, (3,), fd=False, order=2)
    assert not report.ok and all(r.order == 2 for r in report.rows if not r.ok)
    fn.check_layer(t, (3,), fd=False, order=2).assert_ok()
    fn.check_layer(fn.Dense(2), (3,), fd=False, order=2).assert_ok()
    with pytest.raises(ValueError, match="order must be 1 or 2"):
        fn.check_backward(jnp.sin, lambda x, dy: (dy * jnp.cos(x),), jnp.ones(2), order=3)


@pytest.mark.parametrize("m, r, expected", [
    (np.zeros((2, 3)), np.ones((2, 3)), "all zero"),
    (-np.arange(1.0, 7).reshape(2, 3), np.arange(1.0, 7).reshape(2, 3), "sign flipped"),
    (np.arange(1.0, 7) / 3, np.arange(1.0, 7), "scaled by 1/3"),
    (np.arange(1.0, 7) * 2, np.arange(1.0, 7), "scaled by 2"),
    (np.arange(9.0).reshape(3, 3).T, np.arange(9.0).reshape(3, 3), "transposed"),
    (np.arange(6.0).reshape(2, 3).T, np.arange(6.0).reshape(2, 3), "transposed"),
    (np.cos(np.arange(6.0)) + 0.5 * np.sin(np.arange(6.0)), np.cos(np.arange(6.0)), "right up to a term 1/2 * x"),
    (np.cos(np.arange(6.0)) * np.sin(np.arange(6.0)), np.cos(np.arange(6.0)), "multiplied elementwise by x"),
    (np.cos(np.arange(6.0)) + 1e-3 * np.sin(np.arange(6.0)) ** 3, np.cos(np.arange(6.0)), "no simple explanation"),
])
def test_explanations_fit_exactly_or_are_not_given(m, r, expected):
    assert explain(m, r, others={"x": np.sin(np.arange(6.0))}) == expected


def test_diagnosis_confines_errors_to_rows_and_names_the_worst_element():
    r = np.arange(1.0, 13).reshape(4, 3)
    m = r.copy()
    m[2, 1] += 2.0
    m[2, 2] *= 1.1
    text = diagnose(m, r, tol=1e-10, floor=1e-3)
    assert text.startswith("worst[2, 1]: 10 vs 8;")
    assert "17% of 12 elements wrong" in text and "wrong only in rows 2" in text
