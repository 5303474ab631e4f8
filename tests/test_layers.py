"""Forward passes against references, shapes, initialisers and input errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnn as fn
from funcnn.core import initializers
from helpers import RTOL_F32, assert_close


def test_dense_forward_is_wx_plus_b_per_example():
    layer = fn.Dense(3)
    params, state = layer.init(jax.random.key(0), (4,))
    assert params["w"].shape == (3, 4) and params["b"].shape == (3,)
    params = {"w": params["w"], "b": jnp.array([0.1, -0.2, 0.3])}
    x = jax.random.normal(jax.random.key(1), (5, 4))
    y, _ = layer.apply(params, state, x)
    for n in range(5):  # y_n = W x_n + b, the seed notation (W is S x R)
        assert_close(y[n], np.asarray(params["w"]) @ np.asarray(x[n]) + np.asarray(params["b"]), RTOL_F32)


def test_dense_without_bias_has_no_b_and_its_backward_passes_the_checker():
    layer = fn.Dense(3, use_bias=False)
    params, state = layer.init(jax.random.key(0), (4,))
    assert set(params) == {"w"}
    x = jax.random.normal(jax.random.key(1), (5, 4))
    assert_close(layer.apply(params, state, x)[0], x @ params["w"].T, RTOL_F32)
    fn.check_layer(layer, (4,)).assert_ok()
    with pytest.raises(TypeError, match="Dense: use_bias must be a bool, got 'no'"):
        fn.Dense(3, use_bias="no")


@pytest.mark.parametrize("layer,ref", [
    (fn.Sigmoid(), lambda x: 1 / (1 + np.exp(-x))),
    (fn.Tanh(), np.tanh),
    (fn.ReLU(), lambda x: np.maximum(x, 0)),
    (fn.Step(), lambda x: (x >= 0).astype(np.float32)),
    (fn.Identity(), lambda x: x),
    (fn.Softmax(), lambda x: np.exp(x - x.max(-1, keepdims=True)) / np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True)),
])
def test_activation_forward(layer, ref):
    x = np.array([[-2.0, -0.5, 0.0, 0.5, 3.0], [1.0, 2.0, -3.0, 0.0, 0.25]], np.float32)
    y, _ = layer.apply({}, {}, jnp.asarray(x))
    assert_close(y, ref(x), RTOL_F32)


def test_softmax_is_stable_for_huge_logits():
    y, _ = fn.Softmax().apply({}, {}, jnp.array([[1e4, 0.0, -1e4]]))
    assert np.all(np.isfinite(y)) and np.isclose(float(y[0, 0]), 1.0)


def test_step_backward_is_zero():
    _, _, cache = fn.Step().forward({}, {}, jnp.array([[-1.0, 2.0]]))
    _, dx = fn.Step().backward({}, cache, jnp.ones((1, 2)))
    np.testing.assert_array_equal(dx, 0.0)


def test_flatten_and_serial_shapes():
    model = fn.serial(fn.Flatten(), fn.Dense(7), fn.ReLU(), fn.Dense(2))
    assert model.output_shape((3, 4, 1)) == (2,)
    params, state = model.init(jax.random.key(0), (3, 4, 1))
    assert sorted(params) == ["0_flatten", "1_dense", "2_relu", "3_dense"]
    assert params["1_dense"]["w"].shape == (7, 12)
    y, _ = model.apply(params, state, jnp.ones((5, 3, 4, 1)))
    assert y.shape == (5, 2)


@pytest.mark.parametrize("name,var", [("he_normal", lambda i, o: 2 / i), ("glorot_normal", lambda i, o: 2 / (i + o)),
                                      ("glorot_uniform", lambda i, o: 2 / (i + o)), ("he_uniform", lambda i, o: 2 / i)])
def test_initialiser_variance(name, var):
    w = initializers.get(name)(jax.random.key(0), (400, 300), 300, 400)
    assert abs(float(jnp.var(w)) / var(300, 400) - 1) < 0.02


@pytest.mark.slow
def test_eager_draws_are_jax_randoms_numbers_from_a_program_per_bucket(monkeypatch):
    from funcnn.core import prng

    shapes = [(3,), (7, 5), (130, 9), (2, 3, 4, 5), (1500,), (0, 4)]
    for dtype in (jnp.float32, jnp.bfloat16, jnp.float16):
        for shape in shapes:
            for seed, scale in ((0, 1.0), (1, 0.02), (2, 0.1234567)):
                key = jax.random.key(seed)
                got, want = prng.normal(key, shape, dtype, scale), scale * jax.random.normal(key, shape, dtype)
                assert got.dtype == want.dtype and got.shape == want.shape
                np.testing.assert_array_equal(np.asarray(got), np.asarray(want), err_msg=f"{dtype} {shape} {scale}")
                got, want = prng.uniform(key, shape, dtype, -scale, scale), jax.random.uniform(key, shape, dtype, -scale, scale)
                np.testing.assert_array_equal(np.asarray(got), np.asarray(want), err_msg=f"{dtype} {shape} {scale}")
    # the initialisers draw what they drew before, std * jax.random.normal and jax.random.uniform(-a, a)
    key, fan_in, fan_out = jax.random.key(4), 11, 6
    for name, variance in (("glorot_normal", 2 / 17), ("he_normal", 2 / 11), ("lecun_normal", 1 / 11),
                           ("glorot_uniform", 2 / 17), ("he_uniform", 2 / 11)):
        got = initializers.get(name)(key, (fan_out, fan_in), fan_in, fan_out)
        want = (variance ** 0.5 * jax.random.normal(key, (fan_out, fan_in)) if name.endswith("normal") else
                jax.random.uniform(key, (fan_out, fan_in), jnp.float32, -(3 * variance) ** 0.5, (3 * variance) ** 0.5))
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want), err_msg=name)
    assert [prng.bucket(n) for n in (1, 1024, 1025, 2047, 4097)] == [1024, 1024, 1152, 2048, 4608]
    assert all(n <= prng.bucket(n) <= n * 9 / 8 for n in range(1024, 70000, 37))
    # one program per bucket and dtype, whatever the shapes drawn in it
    prng._normal._clear_cache()
    for shape in ((5, 3), (4, 4), (17,), (2, 2, 2)):
        prng.normal(jax.random.key(0), shape, jnp.float32, 0.5)
    assert prng._normal._cache_size() == 1
    # a draw above MAX_BUCKETED is jax.random's own, at its own size: no bucketed program
    monkeypatch.setattr(prng, "MAX_BUCKETED", 16)
    got = prng.normal(jax.random.key(5), (17,), jnp.float32, 0.5)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(0.5 * jax.random.normal(jax.random.key(5), (17,))))
    assert prng._normal._cache_size() == 1


def test_dense_rejects_wrong_input():
    layer = fn.Dense(3)
    params, state = layer.init(jax.random.key(0), (4,))
    with pytest.raises(ValueError, match=r"Dense: x must have shape \(batch, 4\)"):
        layer.apply(params, state, jnp.ones((2, 5)))
    with pytest.raises(ValueError, match="add Flatten"):
        layer.init(jax.random.key(0), (2, 2))
    with pytest.raises(ValueError, match="features must be a positive integer"):
        fn.Dense(0)
    with pytest.raises(TypeError, match="floating-point"):
        layer.apply(params, state, jnp.ones((2, 4), jnp.int32))


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="w_init must be a callable or one of"):
        fn.Dense(3, w_init="orthogonal_typo")
    with pytest.raises(ValueError, match="activation must be one of"):
        fn.layers.activations.get("swish")
    with pytest.raises(TypeError, match="argument 1 must be a Layer"):
        fn.serial(fn.Dense(2), lambda x: x)


def test_layers_are_jit_and_vmap_able():
    model = fn.serial(fn.Dense(4), fn.Tanh(), fn.Dense(2))
    params, state = model.init(jax.random.key(0), (3,))
    x = jax.random.normal(jax.random.key(1), (6, 3))
    y_jit, _ = jax.jit(model.apply)(params, state, x)
    y_vmap = jax.vmap(lambda xi: model.apply(params, state, xi[None])[0][0])(x)
    assert_close(y_jit, y_vmap, RTOL_F32)
