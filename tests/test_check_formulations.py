"""check_layer checks a layer in every formulation the autotuner may pick for it, so a
backward wrong only in one of them (a chunk's weight gradient dropped, an unroll) is caught."""
import dataclasses

import jax
import pytest

import funcnn as fn
from funcnn.check import core
from funcnn.core import autotune
from funcnn.layers import conv


def test_forcing_overrides_and_recording_lists_candidates():
    fns = {"a": lambda: 1, "b": lambda: 2}
    with autotune.recording() as seen:
        assert autotune.choose("op_x", 1, fns, lambda: (), fallback="a") == "a"
    assert seen == {"op_x": ["a", "b"]}
    with autotune.forcing({"op_x": "b"}):
        assert autotune.choose("op_x", 2, fns, lambda: (), fallback="a") == "b"
        assert autotune.forcing_state() == (("op_x", "b"),)
        with autotune.forcing({"op_x": "zzz"}):  # not a candidate: the usual choice
            assert autotune.choose("op_x", 3, fns, lambda: (), fallback="a") == "a"
    assert autotune.forcing_state() == ()
    with pytest.raises(ValueError, match="autotune.forcing: choices must be a dict"):
        with autotune.forcing({"op_x": 1}):
            pass


@pytest.mark.slow
def test_conv_is_checked_in_every_formulation():
    report = fn.check_layer(fn.Conv2D(2, 3), (4, 4, 1), batch=12, fd=False)
    assert {r.formulation for r in report.rows} == {"conv=gemm/all", "conv=gemm/8", "conv=xla/all", "conv=xla/8"}
    assert report.ok
    assert "@random conv=gemm/8" in str(report)


@pytest.mark.slow
def test_recurrent_is_checked_in_every_unroll():
    report = fn.check_layer(fn.LSTM(2), (4, 2), fd=False)
    assert {r.formulation for r in report.rows} == {"recurrent=unroll1", "recurrent=unroll2", "recurrent=unroll4"}


@pytest.mark.slow
def test_first_chunk_only_weight_gradient_is_caught_at_a_batch_of_12(monkeypatch):
    """The chunked backward keeping only the first chunk's dW: one chunk at a batch of 3
    (nothing to see), caught at 12 in the chunks-of-8 formulations."""
    original = conv._chunked_backward

    def first_chunk_only(backward, size):
        def run(x, w, g, dy):
            parts = [backward(x[a:b], w, g, dy[a:b]) for a, b in conv.batch_chunks(x.shape[0], size)]
            return parts[0][0], jax.numpy.concatenate([p[1] for p in parts], axis=0)
        return run

    monkeypatch.setattr(conv, "_chunked_backward", first_chunk_only)
    assert fn.check_layer(fn.Conv2D(2, 3), (4, 4, 1), batch=3, fd=False).ok
    report = fn.check_layer(fn.Conv2D(2, 3), (4, 4, 1), batch=12, fd=False)
    wrong = {(r.path, r.formulation) for r in report.rows if not r.ok}
    assert wrong and all(f.endswith("/8") for _, f in wrong) and all(p == "params['w']" for p, _ in wrong)
    monkeypatch.setattr(conv, "_chunked_backward", original)


def test_compiled_check_is_reused_for_the_same_layer_and_shapes():
    layer = fn.Dense(3)
    core._PROGRAMS.clear()
    fn.check_layer(layer, (2,))
    n = len(core._PROGRAMS)
    fn.check_layer(layer, (2,), key=jax.random.key(4))
    assert len(core._PROGRAMS) == n == 1
    fn.check_layer(dataclasses.replace(layer, backward=layer.backward), (2,))
    assert len(core._PROGRAMS) == 1  # same functions: same program


def test_every_formulation_false_checks_only_the_chosen_one():
    report = fn.check_layer(fn.Conv2D(2, 3), (4, 4, 1), batch=12, fd=False, every_formulation=False)
    assert {r.formulation for r in report.rows} == {""}
