"""Derivations wrong only away from the initial parameters (gains 1, biases 0,
log-scales 0, slopes 0): checked at the initial values alone they pass, so
``check_layer`` must check at random parameters too -- and flag every one."""
import dataclasses

import jax
import jax.numpy as jnp
import pytest

import funcnn as fn
import check_examples as ex
from funcnn.check import core

ONLY_WRONG_AWAY_FROM_INIT = {
    "layernorm: gain left out of dx": lambda w: ex.LayerNorm(forget_gain_in_dx=w),
    "scale: exp(log-scale) left out of dx": lambda w: ex.Scale(wrong=w),
    "affine: dgain multiplied by the gain": lambda w: ex.Affine(wrong=w),
    "prelu: slope left out of dx": lambda w: ex.PReLU(wrong=w),
    "dense+tanh: bias left out of the recomputed pre-activation": lambda w: ex.DenseTanh(wrong=w),
    "forget gate: sigmoid'(f) frozen at its value 1/4 at f = 0": lambda w: ex.ForgetGate(wrong=w),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ONLY_WRONG_AWAY_FROM_INIT))
def test_wrong_only_away_from_init_is_flagged(name):
    make = ONLY_WRONG_AWAY_FROM_INIT[name]
    assert fn.check_layer(make(True), (4,), random=False, fd=False).ok, "gallery entry must hide at init"
    report = fn.check_layer(make(True), (4,), fd=False)
    assert not report.ok, f"{name} passed the checker:\n{report}"
    wrong = [r for r in report.rows if not r.ok]
    assert all(r.point == "random" for r in wrong) and all(r.diagnosis for r in wrong)
    fn.check_layer(make(False), (4,), fd=False).assert_ok()


def test_given_params_and_state_are_used():
    layer = ex.LayerNorm(forget_gain_in_dx=True)
    params = {"g": jnp.full(4, 1.0), "b": jnp.zeros(4)}
    assert fn.check_layer(layer, (4,), params=params, fd=False).ok
    params = {"g": jnp.array([0.5, 2.0, -1.0, 3.0]), "b": jnp.zeros(4)}
    report = fn.check_layer(layer, (4,), params=params, fd=False)
    assert not report.ok and {r.point for r in report.rows} == {"given"}
    bn = fn.BatchNorm()
    p, s = bn.init(jax.random.key(0), (3,))
    s = {"mean": jnp.array([0.1, -0.2, 0.3]), "var": jnp.array([0.5, 2.0, 1.5])}
    fn.check_layer(bn, (3,), params=p, state=s, train=False, fd=False).assert_ok()


def test_random_params_move_every_float_leaf():
    p, _ = fn.LSTM(3).init(jax.random.key(0), (4, 2))
    q = fn.check.random_params(p, jax.random.key(1))
    for a, b in zip(jax.tree_util.tree_leaves(p), jax.tree_util.tree_leaves(q)):
        assert float(jnp.min(jnp.abs(a - b))) > 0


@pytest.mark.slow
def test_check_loss_draws_its_own_points():
    fn.check_loss(fn.losses.softmax_cross_entropy, shape=(2, 3, 4)).assert_ok()
    fn.check_loss(fn.losses.softmax_cross_entropy, shape=(2, 3, 4), weights=jnp.array([[1.0, 0, 2], [0, 1, 1]])).assert_ok()
    fn.check_loss(fn.losses.multiclass_hinge, shape=(5, 3)).assert_ok()
    fn.check_loss(fn.losses.binary_cross_entropy, shape=(4, 1)).assert_ok()
    # at logits exactly 0 (the false MISMATCH)
    fn.check_loss(fn.losses.binary_cross_entropy, jnp.zeros((4, 1)), jnp.array([[1.0], [1.0], [1.0], [0.0]])).assert_ok()
    with pytest.raises(ValueError, match="check_loss: give pred"):
        fn.check_loss(fn.losses.mse)


@pytest.mark.slow
def test_under_disable_jit_the_check_runs_op_by_op_with_the_same_rows(monkeypatch):
    """``jax.disable_jit()`` runs the check's programs op by op (what the mutation sweep uses):
    nothing lowered for XLA as a whole; the same rows, passes and failures, and diagnoses;
    errors equal where they are above rounding."""
    lowered = []
    lower = jax.stages.Traced.lower
    monkeypatch.setattr(jax.stages.Traced, "lower", lambda self, *a, **k: lowered.append(1) or lower(self, *a, **k))
    for wrong in (False, True):
        lowered.clear()
        compiled = fn.check_layer(ex.LayerNorm(forget_gain_in_dx=wrong), (4,))
        assert lowered
        lowered.clear()
        with jax.disable_jit():
            eager = fn.check_layer(ex.LayerNorm(forget_gain_in_dx=wrong), (4,))
        assert not lowered
        assert compiled.ok is (not wrong) and eager.ok is compiled.ok
        assert [(r.path, r.point, r.ok, r.diagnosis) for r in eager.rows] == \
            [(r.path, r.point, r.ok, r.diagnosis) for r in compiled.rows]
        for a, b in zip(eager.rows, compiled.rows):
            if not b.ok:
                assert abs(a.rel_autodiff - b.rel_autodiff) <= 1e-6 * b.rel_autodiff


def test_reusing_references_runs_only_the_backward_again_and_keeps_every_verdict():
    """Inside ``reusing_references`` a check repeated with another backward (same name, forward,
    points) takes its references (output, autodiff, finite differences) from the first: the
    forward is traced only where the hand-written backward calls it, and the rows, errors and
    diagnoses are those of the same checks made outside the block -- a wrong backward still fails."""
    def counted(layer, calls):
        def forward(*args, **kwargs):
            calls.append(1)
            return layer.forward(*args, **kwargs)
        return dataclasses.replace(layer, forward=forward)

    def rows(report):
        return [(r.path, r.point, r.ok, r.rel_autodiff, r.rel_fd, r.diagnosis) for r in report.rows]

    outside_calls = []
    outside = {w: fn.check_layer(counted(ex.LayerNorm(forget_gain_in_dx=w), outside_calls), (4,), name="ln")
               for w in (False, True)}
    with core.reusing_references():
        first_calls, again_calls = [], []
        first = fn.check_layer(counted(ex.LayerNorm(forget_gain_in_dx=False), first_calls), (4,), name="ln")
        again = fn.check_layer(counted(ex.LayerNorm(forget_gain_in_dx=True), again_calls), (4,), name="ln")
        with core.reusing_references():  # a block inside another shares its memo
            nested_calls = []
            nested = fn.check_layer(counted(ex.LayerNorm(forget_gain_in_dx=True), nested_calls), (4,), name="ln")
    assert len(nested_calls) == len(again_calls) and rows(nested) == rows(again)
    # the forward traced for shapes, formulations and the backward's cache, not for references
    assert len(again_calls) < len(first_calls) == len(outside_calls) // 2, (again_calls, first_calls)
    assert rows(first) == rows(outside[False]) and first.ok
    assert rows(again) == rows(outside[True]) and not again.ok


def test_the_checkers_xla_cpu_options_go_only_to_cpu_programs():
    """XLA:CPU's options (a GPU's compiler refuses them: "No such compile option") are given only
    on CPU; there a program with a convolution gets the level-3 set, the others the fast one."""
    from funcnn.check.core import COMPILER_OPTIONS, CONV_COMPILER_OPTIONS, compiler_options

    plain = jax.make_jaxpr(lambda x: x * 2)(1.0).jaxpr
    conv = jax.make_jaxpr(lambda x, w: jax.lax.conv(x, w, (1, 1), "SAME"))(
        jnp.ones((1, 1, 4, 4)), jnp.ones((1, 1, 3, 3))).jaxpr
    assert compiler_options(plain, "cpu") == COMPILER_OPTIONS
    assert compiler_options(conv, "cpu") == CONV_COMPILER_OPTIONS
    assert compiler_options(plain, "gpu") is None and compiler_options(conv, "tpu") is None
