"""residual, parallel, fan_out, fan_in_sum, fan_in_concat: values, backwards (checked three
ways at perturbed params), jit/vmap, the manual VJP bridge and errors."""
import jax
import jax.numpy as jnp
import pytest
from helpers import RTOL_F32, RTOL_F64, assert_close
from layer_checks import check_at as _check_at, perturbed

import funcnn as fn
from funcnn.losses import mse


def check_at(layer, input_shape, x):
    _check_at(layer, input_shape, x).assert_ok()


def normal(key, shape):
    return jax.random.normal(jax.random.key(key), shape)


def test_residual_is_x_plus_f_and_its_backward_adds_dy():
    block = fn.residual(fn.serial(fn.Dense(4), fn.Tanh(), fn.Dense(4)))
    params, state = block.init(jax.random.key(0), (4,))
    assert list(params) == ["0_serial"] and [k for k, _ in block.children] == ["0_serial"]
    x = normal(1, (3, 4))
    y, _ = block.apply(params, state, x)
    f_y, _ = block.children[0][1].apply(params["0_serial"], state["0_serial"], x)
    assert_close(y, x + f_y, RTOL_F32)  # its backward: checked in funcnn check's catalog


def test_fan_out_parallel_fan_in_sum_is_f_plus_g():
    f, g = fn.Dense(3), fn.serial(fn.Dense(3), fn.Tanh())
    model = fn.serial(fn.fan_out(2), fn.parallel(f, g), fn.fan_in_sum())
    params, state = model.init(jax.random.key(0), (5,))
    p = params["1_parallel"]
    assert sorted(p) == ["0_dense", "1_serial"]
    x = normal(1, (4, 5))
    y, _ = model.apply(params, state, x)
    want = f.apply(p["0_dense"], {}, x)[0] + g.apply(p["1_serial"], state["1_parallel"]["1_serial"], x)[0]
    assert_close(y, want, RTOL_F32)  # its backward: checked in funcnn check's catalog


@pytest.mark.slow
def test_parallel_takes_and_returns_tuples_and_fan_in_concat_splits_back():
    model = fn.serial(fn.parallel(fn.Dense(2), fn.Dense(3)), fn.fan_in_concat())
    assert model.output_shape(((4,), (6,))) == (5,)
    x = (normal(1, (3, 4)), normal(2, (3, 6)))
    params, state = model.init(jax.random.key(0), ((4,), (6,)))
    y, _ = model.apply(params, state, x)
    p = params["0_parallel"]
    want = jnp.concatenate([x[0] @ p["0_dense"]["w"].T + p["0_dense"]["b"],
                            x[1] @ p["1_dense"]["w"].T + p["1_dense"]["b"]], axis=-1)
    assert_close(y, want, RTOL_F32)
    check_at(model, ((4,), (6,)), x)


@pytest.mark.slow
def test_fan_in_concat_along_a_middle_axis_and_fan_out_of_three():
    model = fn.serial(fn.fan_out(3), fn.parallel(fn.Tanh(), fn.Identity(), fn.Sigmoid()), fn.fan_in_concat(axis=1))
    assert model.output_shape((2, 3)) == (6, 3)
    x = normal(1, (2, 2, 3))
    y, _ = model.apply(*model.init(jax.random.key(0), (2, 3)), x)
    assert_close(y, jnp.concatenate([jnp.tanh(x), x, jax.nn.sigmoid(x)], axis=1), RTOL_F32)
    _, _, cache = model.forward(*model.init(jax.random.key(0), (2, 3)), x)
    _, dx = model.backward({"0_fan_out": {}, "1_parallel": {"0_tanh": {}, "1_identity": {}, "2_sigmoid": {}},
                            "2_fan_in_concat": {}}, cache, jnp.ones((2, 6, 3)))
    assert_close(dx, (1 - jnp.tanh(x) ** 2) + 1 + jax.nn.sigmoid(x) * (1 - jax.nn.sigmoid(x)), RTOL_F32)


@pytest.mark.slow
def test_manual_and_autodiff_gradients_agree_through_combinators_and_the_vjp_bridge():
    model = fn.serial(fn.Dense(6), fn.residual(fn.serial(fn.Dense(6), fn.Tanh())),
                      fn.fan_out(2), fn.parallel(fn.Dense(2), fn.Dense(2)), fn.fan_in_sum())
    with jax.enable_x64(True):
        params, state = jax.jit(lambda k: model.init(k, (4,)))(jax.random.key(0))
        params = perturbed(jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), params), jax.random.key(3))
        x, y = normal(1, (5, 4)).astype(jnp.float64), normal(2, (5, 2)).astype(jnp.float64)
        lm, gm, _ = jax.jit(fn.value_and_grad(model, mse, mode="manual"))(params, state, x, y)
        la, ga, _ = jax.jit(fn.value_and_grad(model, mse, mode="autodiff"))(params, state, x, y)
        bridged = fn.with_manual_vjp(model)
        gb = jax.jit(jax.grad(lambda p: mse.value(bridged.apply(p, state, x)[0], y)))(params)
    assert_close(lm, la, RTOL_F64)
    assert_close(gm, ga, RTOL_F64)
    assert_close(gb, ga, RTOL_F64)


@pytest.mark.slow
def test_jit_and_vmap_match_eager():
    model = fn.serial(fn.fan_out(2), fn.parallel(fn.Dense(3), fn.Dense(2)), fn.fan_in_concat())
    params, state = model.init(jax.random.key(0), (4,))
    x, dy = normal(1, (6, 4)), normal(2, (6, 5))

    def grads(p, xx, d):
        _, _, cache = model.forward(p, state, xx)
        return model.backward(p, cache, d)

    eager = grads(params, x, dy)
    assert_close(jax.jit(grads)(params, x, dy), eager, RTOL_F32)
    per_example = jax.vmap(grads, in_axes=(None, 0, 0))(params, x[:, None], dy[:, None])
    summed = jax.tree_util.tree_map(lambda g: g.sum(0), per_example[0])
    assert_close(summed, eager[0], RTOL_F32)
    assert_close(per_example[1][:, 0], eager[1], RTOL_F32)


def test_errors_are_one_line_and_name_the_argument():
    with pytest.raises(ValueError, match="residual: f must keep the shape"):
        fn.residual(fn.Dense(3)).init(jax.random.key(0), (4,))
    with pytest.raises(TypeError, match="residual: argument 0 must be a Layer"):
        fn.residual(lambda x: x)
    with pytest.raises(ValueError, match="parallel: expected at least one layer"):
        fn.parallel()
    par = fn.parallel(fn.Tanh(), fn.Tanh())
    with pytest.raises(ValueError, match=r"parallel: x must be a tuple of 2 values"):
        par.apply({"0_tanh": {}, "1_tanh": {}}, {"0_tanh": {}, "1_tanh": {}}, jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="parallel: input_shape must be a tuple of 2 shapes"):
        par.init(jax.random.key(0), ((3,),))
    with pytest.raises(ValueError, match="fan_out: n must be a positive integer"):
        fn.fan_out(0)
    with pytest.raises(ValueError, match="fan_in_sum: inputs must all have one shape"):
        fn.fan_in_sum().apply({}, {}, (jnp.ones((2, 3)), jnp.ones((2, 4))))
    with pytest.raises(ValueError, match="fan_in_concat: axis must be a non-batch axis"):
        fn.fan_in_concat(axis=0).apply({}, {}, (jnp.ones((2, 3)), jnp.ones((2, 4))))
    with pytest.raises(ValueError, match="fan_in_concat: inputs must agree on every axis but -1"):
        fn.fan_in_concat().output_shape(((2, 3), (3, 3)))
