"""Precision as a choice: param_dtype/dtype on every layer, float64 end to end, the policy's
hand-written backward against autodiff of the same cast forward (a GPT's against the float32
gradient), and fp16 loss scaling."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import RTOL_BF16, RTOL_F16, RTOL_F32, RTOL_F64, assert_close

import funcnn as fn
from funcnn import losses
from funcnn.data import text
from funcnn.training import lm, precision
from funcnn.science.bayes import BayesDense
from funcnn.training.fit import fit

# (name, factory(**dtypes), per-example input shape, train)
LAYERS = [
    ("dense", lambda **k: fn.Dense(3, **k), (4,), True),
    ("conv1d", lambda **k: fn.Conv1D(3, 2, **k), (5, 2), True),
    ("conv2d", lambda **k: fn.Conv2D(3, 2, **k), (4, 4, 2), True),
    ("batchnorm", lambda **k: fn.BatchNorm(**k), (4,), True),
    ("batchnorm_eval", lambda **k: fn.BatchNorm(**k), (4,), False),
    ("simple_rnn", lambda **k: fn.SimpleRNN(3, **k), (3, 2), True),
    ("lstm", lambda **k: fn.LSTM(3, **k), (3, 2), True),
    ("gru", lambda **k: fn.GRU(3, return_sequences=False, **k), (3, 2), True),
    ("bayes_dense", lambda **k: BayesDense(3, **k), (4,), True),
]
PARAMETER_FREE = [
    ("sigmoid", fn.Sigmoid, (4,)), ("tanh", fn.Tanh, (4,)), ("relu", fn.ReLU, (4,)),
    ("identity", fn.Identity, (4,)), ("softmax", fn.Softmax, (4,)), ("flatten", fn.Flatten, (2, 2)),
    ("dropout", lambda **k: fn.Dropout(0.3, **k), (4,)), ("maxpool2d", lambda **k: fn.MaxPool2D(2, **k), (4, 4, 2)),
    ("avgpool1d", lambda **k: fn.AvgPool1D(2, **k), (4, 2)), ("global_avg_pool", fn.GlobalAvgPool, (3, 3, 2)),
]


def assert_close_per_leaf(actual, expected, rtol, what=""):
    """``assert_close`` leaf by leaf with the floor at each leaf's largest magnitude: in a
    reduced-precision computation an entry's rounding error is proportional to the terms
    summed into it (a few ulps of the leaf's scale), not to the entry itself, which may be
    zero up to rounding (e.g. a gradient that cancels over the batch)."""
    la, lb = jax.tree_util.tree_leaves(actual), jax.tree_util.tree_leaves(expected)
    assert len(la) == len(lb), what
    for i, (a, b) in enumerate(zip(la, lb)):
        assert_close(a, b, rtol, floor_frac=1.0, what=f"{what} leaf {i}")


def _float_dtypes(tree):
    return {np.dtype(a.dtype).name for a in jax.tree_util.tree_leaves(tree) if jnp.issubdtype(a.dtype, jnp.floating)}


@pytest.mark.slow
@pytest.mark.parametrize("name,make,shape,train", LAYERS, ids=[c[0] for c in LAYERS])
@pytest.mark.parametrize("param_dtype", ["float16", "bfloat16"])
def test_init_honours_param_dtype(name, make, shape, train, param_dtype):
    params, state = make(param_dtype=param_dtype).init(jax.random.key(0), shape)
    assert _float_dtypes(params) == {param_dtype}
    # BatchNorm keeps its running statistics in float32 at least (its module docstring)
    want_state = {"float32"} if name.startswith("batchnorm") else {param_dtype}
    assert _float_dtypes(state) <= want_state


def _manual_and_autodiff(layer, params, state, x, train):
    """(y, manual (dparams, dx), autodiff (dparams, dx)) of <layer(x), dy> at a random dy,
    compiled as one program, as training runs them."""
    def both(params, state, x):
        key = jax.random.key(5)
        y, _, cache = layer.forward(params, state, x, key=key, train=train)
        dy = jax.random.normal(jax.random.key(6), y.shape, y.dtype)
        manual = layer.backward(params, cache, dy)
        _, vjp = jax.vjp(lambda p, xx: layer.apply(p, state, xx, key=key, train=train)[0], params, x)
        return y, manual, vjp(dy)

    return jax.jit(both)(params, state, x)


def _init(layer, shape):
    """``layer.init(key(0), shape)`` as one compiled program."""
    return jax.jit(lambda key: layer.init(key, shape))(jax.random.key(0))


POLICIES = [("bfloat16", RTOL_BF16), ("float16", RTOL_F16)]
LAYER_POLICIES = [(*c, "bfloat16", RTOL_BF16) for c in LAYERS] + [
    (*c, "float16", RTOL_F16) for c in LAYERS if c[0] in ("dense", "batchnorm", "lstm")]


@pytest.mark.slow
@pytest.mark.parametrize("name,make,shape,train,compute,rtol", LAYER_POLICIES,
                         ids=[f"{c[0]}-{c[4]}" for c in LAYER_POLICIES])
def test_every_layer_under_a_policy_manual_equals_autodiff(name, make, shape, train, compute, rtol):
    layer = fn.with_policy(make(), fn.Policy("float32", compute, "float32"))
    params, state = _init(layer, shape)
    x = jax.random.normal(jax.random.key(1), (3, *shape))
    y, (dp, dx), (dp_a, dx_a) = _manual_and_autodiff(layer, params, state, x, train)
    assert y.dtype == jnp.float32 and dx.dtype == jnp.float32 and _float_dtypes(dp) == {"float32"}
    assert_close_per_leaf((dp, dx), (dp_a, dx_a), rtol, what=f"{name} {compute}")


@pytest.mark.slow
@pytest.mark.parametrize("name,make,shape,train", LAYERS, ids=[c[0] for c in LAYERS])
def test_x64_every_layer_is_float64_end_to_end(name, make, shape, train):
    """Under x64 the defaults give one float width per layer (float32) and param_dtype=float64
    gives float64 params whose manual backward matches autodiff at float64 rounding."""
    with jax.enable_x64(True):
        params, state = _init(make(), shape)
        assert _float_dtypes(params) == {"float32"} and _float_dtypes(state) <= {"float32"}
        layer = make(param_dtype="float64")
        params, state = _init(layer, shape)
        assert _float_dtypes(params) == {"float64"} and _float_dtypes(state) <= {"float64"}
        x = jax.random.normal(jax.random.key(1), (3, *shape), jnp.float64)
        y, (dp, dx), (dp_a, dx_a) = _manual_and_autodiff(layer, params, state, x, train)
        assert y.dtype == jnp.float64 and dx.dtype == jnp.float64 and _float_dtypes(dp) == {"float64"}
        assert_close((dp, dx), (dp_a, dx_a), RTOL_F64, what=name)


@pytest.mark.slow
@pytest.mark.parametrize("name,make,shape", PARAMETER_FREE, ids=[c[0] for c in PARAMETER_FREE])
def test_parameter_free_layers_compute_in_dtype(name, make, shape):
    """dtype=bfloat16 on a float32 input: the output is bfloat16 and dx comes back float32."""
    layer = make(dtype="bfloat16")
    params, state = _init(layer, shape)
    x = jax.random.normal(jax.random.key(1), (3, *shape))
    y, (_, dx), (_, dx_a) = _manual_and_autodiff(layer, params, state, x, True)
    assert y.dtype == jnp.bfloat16 and dx.dtype == jnp.float32
    assert_close_per_leaf(dx, dx_a, RTOL_BF16, what=name)


def test_default_dtype_follows_the_input_and_grads_follow_the_params():
    layer = fn.Dense(3)
    params, state = layer.init(jax.random.key(0), (4,))
    x = jax.random.normal(jax.random.key(1), (2, 4)).astype(jnp.bfloat16)
    y, _, cache = layer.forward(params, state, x)
    assert y.dtype == jnp.bfloat16
    dp, dx = layer.backward(params, cache, jnp.ones_like(y))
    assert _float_dtypes(dp) == {"float32"} and dx.dtype == jnp.bfloat16


def test_bad_dtypes_are_refused_in_one_line():
    with pytest.raises(TypeError, match="Dense: param_dtype must be a floating dtype"):
        fn.Dense(3, param_dtype="int32")
    with pytest.raises(TypeError, match="LSTM: dtype must be a floating dtype"):
        fn.LSTM(3, dtype="complex64")
    if not jax.config.jax_enable_x64:
        with pytest.raises(ValueError, match="Dense: float64 needs 64-bit JAX"):
            fn.Dense(3, param_dtype="float64").init(jax.random.key(0), (4,))


@pytest.mark.slow
def test_x64_lstm_model_trains_with_fit():
    """The bug this guards against: under x64, LSTM's bias was float64 beside float32 weights and
    ``fit`` died in lax.scan. Float32 and float64 data both train, leaves stay float32."""
    with jax.enable_x64(True):
        model = fn.serial(fn.LSTM(4, return_sequences=False), fn.Dense(2))
        x = np.random.default_rng(0).normal(size=(32, 4, 3))
        y = (x[:, :, 0].sum(1) > 0).astype(np.int32)
        for xs in (x.astype(np.float32), x):
            r = fit(model, losses.softmax_cross_entropy, optax.adam(3e-2), (xs, y), epochs=3, batch_size=16,
                    key=jax.random.key(0), progress=False)
            assert _float_dtypes(r.params) == {"float32"}
            assert np.isfinite(r.history["loss"]).all() and r.history["loss"][-1] < r.history["loss"][0]


def test_policy_parse_and_presets():
    p = fn.Policy.parse("params=float32,compute=bfloat16,output=float32")
    assert (p.params, p.compute, p.output) == (jnp.float32, jnp.bfloat16, jnp.float32)
    assert fn.Policy.parse("bf16-mixed") == p and str(p) == "params=float32,compute=bfloat16,output=float32"
    assert fn.Policy.parse("fp16") == fn.Policy.parse("fp16-mixed") and fn.Policy.parse("fp16").loss_scaling
    assert fn.Policy.parse("compute=float16") == fn.Policy("float32", jnp.float16)
    for bad in ("compute=bf16x", "fp8", "compute=float16,compute=float32", "dtype=float32"):
        with pytest.raises((ValueError, TypeError), match="Policy"):
            fn.Policy.parse(bad)


def _cnn_with_batchnorm():
    # AvgPool, not MaxPool: bfloat16 makes ties common, where autodiff of max splits the
    # gradient and the hand-written backward gives it to the first tap (both subgradients)
    return fn.serial(fn.Conv2D(4, 3, use_bias=False), fn.BatchNorm(), fn.ReLU(), fn.AvgPool2D(2), fn.Flatten(),
                     fn.Dense(16),
                     fn.Tanh(), fn.Dropout(0.2), fn.Dense(5))


def _policy_grads(model, compute):
    policy = fn.Policy(params="float32", compute=compute, output="float32")
    model = fn.with_policy(model, policy)
    loss = precision.float32_loss(losses.softmax_cross_entropy)
    params, state = model.init(jax.random.key(0), (6, 6, 2))
    x = jax.random.normal(jax.random.key(1), (8, 6, 6, 2))
    y = jnp.arange(8) % 5
    key = jax.random.key(2)
    v_m, g_m, s_m = jax.jit(fn.value_and_grad(model, loss, mode="manual"))(params, state, x, y, key=key)
    v_a, g_a, s_a = jax.jit(fn.value_and_grad(model, loss, mode="autodiff"))(params, state, x, y, key=key)
    return model, params, state, x, (v_m, g_m, s_m), (v_a, g_a, s_a)


@pytest.mark.slow
@pytest.mark.parametrize("compute,rtol", POLICIES)
def test_policy_manual_backward_equals_autodiff_of_the_cast_forward(compute, rtol):
    model, params, state, x, (v_m, g_m, s_m), (v_a, g_a, s_a) = _policy_grads(_cnn_with_batchnorm(), compute)
    assert _float_dtypes(g_m) == {"float32"} and _float_dtypes(s_m) == {"float32"}
    assert_close_per_leaf(g_m, g_a, rtol, what=f"{compute} grads")
    assert_close(v_m, v_a, rtol)
    assert_close_per_leaf(s_m, s_a, rtol)
    # the forward really runs in the compute dtype: the model by hand on cast params and input
    out, _ = model.apply(params, state, x, train=False)
    inner = _cnn_with_batchnorm()
    ref, _ = inner.apply(precision.cast_floats(params, compute), state, x.astype(compute), train=False)
    assert out.dtype == jnp.float32 and np.array_equal(np.asarray(out), np.asarray(ref.astype(jnp.float32)))


def test_the_policy_comparison_flags_a_wrong_backward():
    """The same comparison fails for a backward off by 10% in one weight gradient."""
    import dataclasses

    dense = fn.Dense(5)

    def backward(params, cache, dy):
        grads, dx = dense.backward(params, cache, dy)
        return {**grads, "w": grads["w"] * 1.1}, dx

    wrong = fn.serial(fn.Flatten(), fn.Dense(16), fn.Tanh(), dataclasses.replace(dense, backward=backward))
    for compute, rtol in POLICIES:
        *_, (_, g_m, _), (_, g_a, _) = _policy_grads(wrong, compute)
        with pytest.raises(AssertionError):
            assert_close_per_leaf(g_m, g_a, rtol)


def test_adjust_scale_halves_on_overflow_and_grows_after_period():
    s, n = jnp.float32(8.0), jnp.int32(0)
    s, n = precision.adjust_scale(s, n, jnp.asarray(False), period=3, factor=2.0)
    assert (float(s), int(n)) == (4.0, 0)
    for _ in range(2):
        s, n = precision.adjust_scale(s, n, jnp.asarray(True), period=3, factor=2.0)
    assert (float(s), int(n)) == (4.0, 2)
    s, n = precision.adjust_scale(s, n, jnp.asarray(True), period=3, factor=2.0)
    assert (float(s), int(n)) == (8.0, 0)
    s, _ = precision.adjust_scale(jnp.float32(1.0), n, jnp.asarray(False), period=3, factor=2.0)
    assert float(s) == 1.0  # never below 1


def test_loss_scaling_skips_non_finite_steps_and_unscales_finite_ones():
    params = {"w": jnp.array([1.0, -2.0])}
    inner = optax.adam(0.1)
    opt = precision.loss_scaling(inner, init_scale=4.0, period=10)
    st = opt.init(params)
    bad = {"w": jnp.array([jnp.inf, 1.0])}
    upd, st2 = opt.update(bad, st, params)
    assert not bool(st2.finite) and bool(precision.step_skipped(st2)) and float(st2.scale) == 2.0
    assert np.array_equal(upd["w"], np.zeros(2))
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(st2.inner),
                                                    jax.tree_util.tree_leaves(st.inner)))
    g = {"w": jnp.array([0.5, -1.5])}
    upd, st3 = opt.update(jax.tree_util.tree_map(lambda a: a * 2.0, g), st2, params)
    want, _ = inner.update(g, inner.init(params), params)
    assert bool(st3.finite) and not bool(precision.step_skipped(st3)) and int(st3.good_steps) == 1
    assert_close(upd, want, RTOL_F32)


@pytest.mark.slow
def test_fp16_step_skips_and_halves_until_the_gradients_fit():
    """A scale of 2^40 overflows float16 at once: the step is skipped (params unchanged,
    scale halved) and the loss returned is the unscaled one."""
    d = fn.data.load("digits", seed=0)
    model = fn.models.mlp(d.x_train.shape[1:], 10, hidden=(16,))
    opt = precision.loss_scaling(optax.adam(3e-3), init_scale=2.0 ** 40, period=20)
    m, lo, opt = precision.prepare(model, losses.softmax_cross_entropy, opt, "fp16-mixed")
    params, state = m.init(jax.random.key(0), d.x_train.shape[1:])
    step = jax.jit(fn.train.make_step(m, lo, opt))  # the one step: loss-scaled by opt's state
    batch = (d.x_train[:64], d.y_train[:64], jax.random.key(1))
    carry, (value, flags) = step((params, state, opt.init(params)), batch)
    assert bool(precision.step_skipped(carry[2])) and float(carry[2].scale) == 2.0 ** 39
    assert not bool(flags.any())  # a skipped step is loss scaling at work, not a failure
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(carry[0]),
                                                    jax.tree_util.tree_leaves(params)))
    assert_close(value, lo.value(m.apply(params, state, batch[0])[0], batch[1]), RTOL_F16)
    for _ in range(40):
        carry, _ = step(carry, batch)
    assert not bool(precision.step_skipped(carry[2])) and float(carry[2].scale) < 2.0 ** 39
    assert not all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(carry[0]),
                                                        jax.tree_util.tree_leaves(params)))


def _poisoned(model, at):
    """``model`` whose backward returns -inf in grads[at]['w'][0, 0]."""
    import dataclasses

    inner = model.backward

    def backward(params, cache, dy):
        grads, dx = inner(params, cache, dy)
        grads[at]["w"] = grads[at]["w"].at[0, 0].add(-jnp.inf)
        return grads, dx

    return dataclasses.replace(model, backward=backward)


@pytest.mark.slow
def test_loss_scaled_step_keeps_the_model_state_when_skipped_and_flags_only_at_scale_1():
    """A skipped step keeps params, optimizer state and model state (BatchNorm's running
    statistics); above scale 1 it reports no flag, at scale 1 the guard names the bad gradient."""
    d = fn.data.load("digits", seed=0)
    model = fn.serial(fn.Flatten(), fn.Dense(8), fn.BatchNorm(), fn.ReLU(), fn.Dense(10))
    batch = (d.x_train[:32], d.y_train[:32], jax.random.key(1))
    for init_scale, flagged in ((2.0 ** 10, False), (1.0, True)):
        opt = precision.loss_scaling(optax.sgd(0.1), init_scale=init_scale)
        m, lo, opt = precision.prepare(_poisoned(model, "1_dense"), losses.softmax_cross_entropy, opt, "fp16-mixed")
        params, state = m.init(jax.random.key(0), d.x_train.shape[1:])
        opt_state = opt.init(params)
        (p2, s2, o2), (value, flags) = jax.jit(fn.train.make_step(m, lo, opt))((params, state, opt_state), batch)
        assert bool(precision.step_skipped(o2)) and float(o2.scale) == max(init_scale / 2, 1.0)
        for new, old in ((p2, params), (s2, state), (o2.inner, opt_state.inner)):
            assert all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(new),
                                                            jax.tree_util.tree_leaves(old)))
        assert np.isfinite(float(value))
        names = [n for n, f in zip(fn.train.guard_names(params), np.asarray(flags)) if f]
        assert names == (["grads['1_dense']['w']"] if flagged else []), names


@pytest.mark.slow
def test_mixed_precision_fit_matches_fp32_accuracy_on_digits():
    """fit(policy=...) keeps float32 master params; bf16 and fp16 (loss-scaled) reach the
    fp32 test accuracy within 3 points on digits (360 test images: 1 point is 3.6 images)."""
    d = fn.data.load("digits", seed=0)
    model = fn.models.mlp(d.x_train.shape[1:], 10, hidden=(32,))
    acc = {}
    for name in ("fp32", "bf16-mixed", "fp16-mixed"):
        r = fit(model, losses.softmax_cross_entropy, optax.adam(3e-3), d, epochs=3, batch_size=64,
                key=jax.random.key(0), progress=False, policy=name)
        assert _float_dtypes(r.params) == {"float32"}
        acc[name] = r.history["test_acc"][-1]
    assert acc["fp32"] > 0.85, acc
    assert acc["bf16-mixed"] > acc["fp32"] - 0.03 and acc["fp16-mixed"] > acc["fp32"] - 0.03, acc


@pytest.mark.slow
def test_cli_fp64_prints_the_first_step_gap_at_float64_rounding(tmp_path, capsys):
    import json

    from funcnn.cli import main

    out = tmp_path / "run"
    code = main(["train", "--precision", "fp64", "--epochs", "3", "--lr", "0.005", "--hidden", "32",
                 "--out", str(out), "--no-progress"])
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    assert "manual vs autodiff (float64)" in stdout and "params=float64,compute=float64" in stdout
    assert not jax.config.jax_enable_x64  # float64 was the run's, not left switched on in this process
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["first_step_grad_rel_diff"] <= 1e-12 and metrics["final"]["test_acc"] > 0.8


def test_cli_refuses_an_unknown_precision(tmp_path, capsys):
    from funcnn.cli import main

    try:
        code = main(["train", "--precision", "fp8", "--out", str(tmp_path / "never")])
    except SystemExit as e:
        code = e.code
    assert code == 2 and "argument --precision: invalid choice: 'fp8'" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


@pytest.mark.slow
@pytest.mark.parametrize("compute,rtol", POLICIES)
def test_gpt_under_a_policy_hand_written_grads_are_within_rounding_of_float32(compute, rtol):
    """A small GPT of experiments/precision.py on pydoc ids: under a bfloat16/float16 policy the
    hand-written backward is within the compute dtype's rounding of the float32 gradient, leaf
    by leaf (and in float32 it equals autodiff to float32 rounding). The reference is the
    float32 one, not autodiff of the cast forward: jax.grad sums the biases' and the
    embedding's gradients over the B*T positions in the compute dtype (the transposes of a
    broadcast and of a gather), where the hand-written backward accumulates in float32;
    experiments/precision.py reports both differences."""
    corpus = text.load_pydoc(0)
    x, y = next(lm.batches(corpus.train, context=32, batch_size=16, steps=1, seed=0))
    model = fn.models.gpt(corpus.vocab_size, context=32, layers=1, heads=2, width=32)

    def grads(policy, mode):
        m, loss, _ = precision.prepare(model, losses.softmax_cross_entropy, optax.adam(1e-3), policy)
        params, state = m.init(jax.random.key(0), (32,))
        return jax.jit(fn.value_and_grad(m, loss, mode=mode))(params, state, x, y)[1]

    reference = grads("fp32", "autodiff")
    assert_close_per_leaf(grads("fp32", "manual"), reference, RTOL_F32, what="float32")
    manual = grads(fn.Policy("float32", compute, "float32"), "manual")
    assert _float_dtypes(manual) == {"float32"}
    assert_close_per_leaf(manual, reference, rtol, what=f"{compute} manual vs float32")
