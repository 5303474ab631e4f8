"""check_model checks every layer at the input it receives and blames the layer
where the error starts, not the earlier layers the error travels to."""
import dataclasses

import pytest

import funcnn as fn
from funcnn.core.layer import Layer
import check_examples as ex


@pytest.mark.slow
def test_blame_lands_on_the_wrong_layer():
    """The issue's case: a LayerNorm without its gain in dx inside
    serial(Dense, LayerNorm, Tanh, Dense); end to end, 0_dense and x are flagged."""
    model = fn.serial(fn.Dense(4), ex.LayerNorm(forget_gain_in_dx=True), fn.Tanh(), fn.Dense(2))
    report = fn.check_model(model, (3,), fd=False)
    assert not report.ok and report.first_wrong == "1_layernorm"
    assert report["0_dense"].ok and report["2_tanh"].ok and report["3_dense"].ok
    assert not report["(model)"].ok
    text = str(report)
    assert "first wrong layer: 1_layernorm" in text
    assert [line.split()[0] for line in text.splitlines()[2:] if not line.startswith("      ")] == [
        "0_dense", "1_layernorm", "2_tanh", "3_dense", "(model)"]
    with pytest.raises(AssertionError, match="gradient check failed"):
        report.assert_ok()


def test_blame_inside_a_nested_serial():
    wrong = dataclasses.replace(fn.Dense(3), backward=lambda p, x, dy: ({"w": dy.T @ x, "b": dy.sum(0)}, -dy @ p["w"]))
    model = fn.serial(fn.Dense(3), fn.serial(fn.Tanh(), wrong), fn.Dense(2))
    report = fn.check_model(model, (2,), fd=False, random=False)
    assert report.first_wrong == "1_serial/1_dense"
    bad = [r for r in report["1_serial/1_dense"].report.rows if not r.ok]
    assert [r.path for r in bad] == ["x"] and "sign flipped" in bad[0].diagnosis


def Residual(inner):
    """y = x + inner(x): a combinator that is not serial (children get its input)."""
    def init(key, shape):
        p, s = inner.init(key, shape)
        return {"0_inner": p}, {"0_inner": s}

    def forward(params, state, x, *, key=None, train=False):
        y, s, cache = inner.forward(params["0_inner"], state["0_inner"], x, key=key, train=train)
        return x + y, {"0_inner": s}, cache

    def backward(params, cache, dy):
        g, dx = inner.backward(params["0_inner"], cache, dy)
        return {"0_inner": g}, dy + dx

    return Layer("residual", init, forward, backward, lambda s: tuple(s), children=(("0_inner", inner),))


@pytest.mark.slow
def test_children_of_other_combinators_are_checked_at_its_input():
    right = fn.serial(fn.Dense(3), Residual(ex.LayerNorm()), fn.Tanh())
    report = fn.check_model(right, (3,), fd=False)
    report.assert_ok()
    assert [r.path for r in report.rows] == ["0_dense", "1_residual/0_inner", "1_residual", "2_tanh", "(model)"]
    wrong = fn.serial(fn.Dense(3), Residual(ex.LayerNorm(forget_gain_in_dx=True)), fn.Tanh())
    assert fn.check_model(wrong, (3,), fd=False).first_wrong == "1_residual/0_inner"


@pytest.mark.slow
def test_builtin_models_pass_with_dropout_and_batchnorm():
    model = fn.serial(fn.Dense(4), fn.BatchNorm(), fn.ReLU(), fn.Dropout(0.3), fn.Dense(2))
    report = fn.check_model(model, (3,), batch=4, fd=False)
    report.assert_ok()
    assert report.first_wrong is None and len(report.rows) == 6


@pytest.mark.slow
def test_blame_inside_parallel_branches_follows_the_feed():
    """``parallel`` feeds branch i the i-th part of its tuple input (``Layer.feed``): the
    wrong LayerNorm in the second branch is checked at that input and blamed."""
    def model(second):
        return fn.serial(fn.Dense(4), fn.fan_out(2), fn.parallel(fn.Dense(4), fn.serial(fn.Tanh(), second)),
                         fn.fan_in_sum())

    right = fn.check_model(model(ex.LayerNorm()), (3,), fd=False)
    right.assert_ok()
    assert "2_parallel/1_serial/1_layernorm" in [r.path for r in right.rows]
    assert all(r.report is not None for r in right.rows)  # every branch checked, none skipped
    wrong = fn.check_model(model(ex.LayerNorm(forget_gain_in_dx=True)), (3,), fd=False)
    assert wrong.first_wrong == "2_parallel/1_serial/1_layernorm"
