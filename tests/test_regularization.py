"""L2 decay (its gradient, what it decays), AdamW against L2-in-Adam, and a model with
dropout and batchnorm through value_and_grad (both modes), with_manual_vjp, jit and fit."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from funcnn import data
from funcnn.gradients import value_and_grad
from funcnn.core.layer import serial
from funcnn.layers.activations import ReLU, Tanh
from funcnn.layers.batchnorm import BatchNorm
from funcnn.layers.dense import Dense
from funcnn.layers.dropout import Dropout
from funcnn.layers.flatten import Flatten
from funcnn.losses import softmax_cross_entropy
from funcnn.core.manual_vjp import with_manual_vjp
from funcnn.regularization import adamw, decays_all, l2, leaf_name, weight_decay_mask
from funcnn.training.fit import evaluate, fit
from helpers import RTOL_F32, RTOL_F64, assert_close


def _model():
    return serial(Flatten(), Dense(12), BatchNorm(), Tanh(), Dropout(0.3), Dense(8), BatchNorm(), ReLU(),
                  Dense(3))


def _f64(tree):
    return jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), tree)


MODEL = _model()


@jax.jit
def _arrays():
    params, state = MODEL.init(jax.random.key(0), (2, 3))
    # move gamma/beta off 1/0 (and biases off 0), so no term can hide behind them
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(9), len(leaves))
    params = treedef.unflatten([a + 0.1 * jax.random.normal(k, a.shape) for a, k in zip(leaves, keys)])
    x = jax.random.normal(jax.random.key(1), (10, 2, 3))
    y = jax.random.randint(jax.random.key(2), (10,), 0, 3)
    return params, state, x, y


def _problem(dtype=jnp.float32):
    """The model, its params and state, and a batch of 10 examples, in ``dtype``
    (cast through NumPy: no second compilation for float64)."""
    params, state, x, y = _arrays()
    cast = lambda t: jax.tree_util.tree_map(lambda a: jnp.asarray(np.asarray(a), dtype), t)  # noqa: E731
    return MODEL, cast(params), cast(state), cast(x), y


@pytest.mark.slow
def test_l2_value_and_handwritten_gradient():
    with jax.enable_x64(True):
        _, params, _, _, _ = _problem(jnp.float64)
        penalty = l2(0.3)
        weights = [np.asarray(params[k]["w"]) for k in ("1_dense", "5_dense", "8_dense")]
        value, grad, autodiff = jax.jit(lambda p: (penalty.value(p), penalty.grad(p), jax.grad(penalty.value)(p)))(
            params)
        assert_close(value, 0.15 * sum(np.sum(w * w) for w in weights), RTOL_F64)
        chex.assert_trees_all_equal_structs(grad, params)
        assert_close(grad, autodiff, RTOL_F64)
        for k in ("1_dense", "5_dense", "8_dense"):
            assert_close(grad[k]["w"], 0.3 * params[k]["w"], RTOL_F64)


@pytest.mark.slow
def test_biases_and_batchnorm_params_are_not_decayed_by_default():
    _, params, _, _, _ = _problem()
    grad = jax.jit(l2(0.3).grad)(params)
    mask = weight_decay_mask(params)
    for path, g in jax.tree_util.tree_flatten_with_path(grad)[0]:
        name = leaf_name(path)
        if name in ("b", "gamma", "beta"):
            np.testing.assert_array_equal(g, 0.0)
        else:
            assert name == "w" and float(jnp.abs(g).max()) > 0
    decayed = {leaf_name(p) for p, m in jax.tree_util.tree_flatten_with_path(mask)[0] if m}
    assert decayed == {"w"}


def test_what_decays_is_configurable():
    _, params, _, _, _ = _problem()
    everything = jax.jit(l2(0.3, include=decays_all).grad)(params)
    assert_close(everything, jax.tree_util.tree_map(lambda p: 0.3 * np.asarray(p), params), RTOL_F32)
    only_gamma = jax.jit(l2(0.3, include=lambda path, leaf: leaf_name(path) == "gamma").grad)(params)
    for path, g in jax.tree_util.tree_flatten_with_path(only_gamma)[0]:
        assert (float(jnp.abs(g).max()) > 0) == (leaf_name(path) == "gamma")
    # value_and_grad forwards the filter: the bias gradient gains 0.3 * b only with decays_all
    model, params, state, x, y = _problem()
    key = jax.random.key(5)
    _, g_default, _ = jax.jit(value_and_grad(model, softmax_cross_entropy, l2=0.3))(params, state, x, y, key=key)
    _, g_all, _ = jax.jit(value_and_grad(model, softmax_cross_entropy, l2=0.3, l2_include=decays_all))(
        params, state, x, y, key=key)
    assert_close(g_all["8_dense"]["b"], g_default["8_dense"]["b"] + 0.3 * params["8_dense"]["b"], RTOL_F32)
    assert_close(g_all["2_batchnorm"]["gamma"], g_default["2_batchnorm"]["gamma"] + 0.3 * params["2_batchnorm"]["gamma"], RTOL_F32)


def test_adamw_is_not_l2_inside_adam_but_both_are_the_same_for_sgd():
    model, params, state, x, y = _problem()
    lam, lr = 0.1, 1e-2
    _, g, _ = jax.jit(value_and_grad(model, softmax_cross_entropy))(params, state, x, y, key=jax.random.key(3))
    g_l2 = jax.jit(lambda g, p: jax.tree_util.tree_map(jnp.add, g, l2(lam).grad(p)))(g, params)

    def first_update(opt, grads):
        return jax.jit(lambda g, p: opt.update(g, opt.init(p), p)[0])(grads, params)

    coupled = first_update(optax.adam(lr), g_l2)
    decoupled = first_update(adamw(lr, lam), g)
    plain = first_update(optax.adam(lr), g)
    w = params["5_dense"]["w"]
    # AdamW: the data step of Adam plus -lr * lambda * w, outside the adaptive scaling
    assert_close(decoupled["5_dense"]["w"], plain["5_dense"]["w"] - lr * lam * w, RTOL_F32)
    assert float(jnp.max(jnp.abs(coupled["5_dense"]["w"] - decoupled["5_dense"]["w"]))) > 1e-3 * lr
    # nothing but weights decays: biases and batchnorm params take the plain Adam step
    for k, leaf in (("5_dense", "b"), ("2_batchnorm", "gamma"), ("2_batchnorm", "beta")):
        np.testing.assert_array_equal(decoupled[k][leaf], plain[k][leaf])
        np.testing.assert_array_equal(coupled[k][leaf], plain[k][leaf])
    # with plain SGD decoupled decay and the L2 term take the same step
    sgd_l2 = first_update(optax.sgd(lr), g_l2)
    sgd_decoupled = first_update(
        optax.chain(optax.add_decayed_weights(lam, mask=weight_decay_mask(params)), optax.sgd(lr)), g)
    assert_close(sgd_l2, sgd_decoupled, RTOL_F32)


@pytest.mark.slow
@pytest.mark.parametrize("train,l2_coeff", [(True, 0.05), (False, 0.0)], ids=["train+l2", "eval"])
def test_value_and_grad_modes_agree_with_dropout_and_batchnorm(train, l2_coeff):
    with jax.enable_x64(True):
        model, params, state, x, y = _problem(jnp.float64)
        key = jax.random.key(4)
        vm, gm, sm = jax.jit(value_and_grad(model, softmax_cross_entropy, mode="manual", l2=l2_coeff),
                             static_argnames="train")(params, state, x, y, key=key, train=train)
        va, ga, sa = jax.jit(value_and_grad(model, softmax_cross_entropy, mode="autodiff", l2=l2_coeff),
                             static_argnames="train")(params, state, x, y, key=key, train=train)
        chex.assert_trees_all_equal_structs(gm, params)
        assert_close(vm, va, RTOL_F64)
        # the biases before BatchNorm have true gradient 0: both modes give ~1e-17 of
        # noise there, judged against the largest gradient (the helpers' floor)
        assert_close(gm, ga, RTOL_F64)
        assert_close(sm, sa, RTOL_F64)
        changed = not np.allclose(sm["2_batchnorm"]["mean"], state["2_batchnorm"]["mean"])
        assert changed == train


@pytest.mark.slow
def test_with_manual_vjp_runs_the_handwritten_backward_under_jax_grad():
    with jax.enable_x64(True):
        model, params, state, x, y = _problem(jnp.float64)
        bridged = with_manual_vjp(model)
        key = jax.random.key(4)

        def objective(p):
            pred, new_state = bridged.apply(p, state, x, key=key, train=True)
            return softmax_cross_entropy.value(pred, y), new_state

        (v, s), g = jax.jit(jax.value_and_grad(objective, has_aux=True))(params)
        vm, gm, sm = jax.jit(value_and_grad(model, softmax_cross_entropy))(params, state, x, y, key=key)
        assert_close(v, vm, RTOL_F64)
        assert_close(g, gm, RTOL_F64)
        assert_close(s, sm, RTOL_F64)


def test_jit_compiles_once_and_the_key_drives_dropout():
    model, params, state, x, y = _problem()
    vg = value_and_grad(model, softmax_cross_entropy)
    step = jax.jit(chex.assert_max_traces(lambda p, s, k: vg(p, s, x, y, key=k), n=1))
    v1, g1, s1 = step(params, state, jax.random.key(1))
    v1b, g1b, _ = step(params, state, jax.random.key(1))
    v2, g2, s2 = step(params, state, jax.random.key(2))
    assert float(v1) == float(v1b)
    chex.assert_trees_all_equal(g1, g1b)
    assert float(v1) != float(v2)  # a different dropout mask
    # the batch statistics do not depend on the dropout key of a later layer
    np.testing.assert_array_equal(s1["2_batchnorm"]["mean"], s2["2_batchnorm"]["mean"])


@pytest.fixture(scope="module")
def fitted():
    ds = data.load("blobs")
    model = serial(Dense(16), BatchNorm(), ReLU(), Dropout(0.3), Dense(8), BatchNorm(), ReLU(), Dense(2))
    result = fit(model, softmax_cross_entropy, optax.adam(1e-2), ds, epochs=4, batch_size=30,
                 key=jax.random.key(0), l2=1e-3, progress=False)
    return model, ds, result


@pytest.mark.slow
def test_fit_trains_a_model_with_dropout_and_batchnorm(fitted):
    model, ds, result = fitted
    assert all(np.isfinite(result.history["loss"]))
    assert result.history["test_acc"][-1] > 0.9
    init_state = model.init(jax.random.key(0), (2,))[1]
    assert not np.allclose(result.state["1_batchnorm"]["mean"], init_state["1_batchnorm"]["mean"])


@pytest.mark.slow
def test_fit_evaluates_in_eval_mode(fitted):
    model, ds, result = fitted
    pred, _ = model.apply(result.params, result.state, jnp.asarray(ds.x_test), train=False)
    acc = float(jnp.mean(jnp.argmax(pred, -1) == ds.y_test))
    assert result.history["test_acc"][-1] == pytest.approx(acc, abs=1e-6)
    # eval mode needs no key and is deterministic
    assert evaluate(model, softmax_cross_entropy, result.params, result.state, ds.x_test, ds.y_test) == \
        evaluate(model, softmax_cross_entropy, result.params, result.state, ds.x_test, ds.y_test)
