"""funcnn.core.autotune: the measured choice, its cache (memory and disk), forcing, and its users
(the convolution's formulation, fit's scan-vs-step). No test depends on a timing: the
timer is replaced by a fake that runs every candidate once and reports preset times."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import lax

import funcnn as fn
from funcnn import losses
from funcnn.core import autotune
from funcnn.layers import conv
from funcnn.layers.conv import Conv2D
from helpers import RTOL_F64, assert_close


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    for var in ("FUNCNN_IMPL", "FUNCNN_AUTOTUNE", "FUNCNN_AUTOTUNE_CACHE"):
        monkeypatch.delenv(var, raising=False)
    autotune.clear()
    yield
    autotune.clear()


class FakeTimer:
    """Stands in for ``autotune.measure``: calls every candidate once on the dummy inputs
    (the real code path), counts the measurements, reports ``times[name]`` seconds."""

    def __init__(self, times, default=1.0, run=True):
        self.times, self.default, self.run, self.calls, self.seen = times, default, run, 0, []

    def __call__(self, candidates, args, *, jit=True):
        self.calls += 1
        self.seen.append(sorted(candidates))
        for f in candidates.values() if self.run else ():
            jax.block_until_ready((jax.jit(f) if jit else f)(*args))
        return {n: self.times.get(n, self.default) for n in candidates}, {n: 0.0 for n in candidates}


def _square_candidates():
    return {"a": lambda x: x @ x, "b": lambda x: (x.T @ x.T).T, "c": lambda x: jnp.einsum("ij,jk->ik", x, x)}


def _args():
    return (autotune.dummy((8, 8), jnp.float32),)


def test_picks_the_fastest_once_per_key(monkeypatch):
    timer = FakeTimer({"a": 3.0, "b": 1.0, "c": 2.0})
    monkeypatch.setattr(autotune, "measure", timer)
    assert autotune.choose("op", ("k", 1), _square_candidates(), _args, fallback="a") == "b"
    timer.times = {"a": 0.1}  # the machine changed its mind: the process keeps its first choice
    assert autotune.choose("op", ("k", 1), _square_candidates(), _args, fallback="a") == "b"
    assert timer.calls == 1
    assert autotune.choose("op", ("k", 2), _square_candidates(), _args, fallback="a") == "a"  # a new key measures
    assert timer.calls == 2
    first = autotune.decisions()[0]
    assert first["choice"] == "b" and first["source"] == "measured" and first["times_ms"] == {
        "a": 3000.0, "b": 1000.0, "c": 2000.0}


def test_forcing_by_argument_and_environment(monkeypatch):
    timer = FakeTimer({"a": 3.0, "b": 1.0, "c": 2.0})
    monkeypatch.setattr(autotune, "measure", timer)
    assert autotune.choose("op", "k", _square_candidates(), _args, fallback="a", impl="c") == "c"
    monkeypatch.setenv("FUNCNN_IMPL", "other:b, op:a")
    assert autotune.choose("op", "k", _square_candidates(), _args, fallback="b") == "a"
    assert timer.calls == 0 and {d["source"] for d in autotune.decisions()} == {"forced"}
    with pytest.raises(ValueError, match="no op formulation matches 'z'"):
        autotune.choose("op", "k", _square_candidates(), _args, fallback="a", impl="z")
    monkeypatch.setenv("FUNCNN_IMPL", "op")
    with pytest.raises(ValueError, match="FUNCNN_IMPL: expected comma-separated op:impl pairs"):
        autotune.choose("op", "k2", _square_candidates(), _args, fallback="a")


def test_no_measurement_when_off_or_too_small(monkeypatch):
    timer = FakeTimer({"b": 0.0})
    monkeypatch.setattr(autotune, "measure", timer)
    assert autotune.choose("op", 1, _square_candidates(), _args, fallback="c", work=autotune.MIN_WORK / 2) == "c"
    counted = []  # work given as a function: asked only when it decides
    assert autotune.choose("op", 3, _square_candidates(), _args, fallback="c",
                           work=lambda: counted.append(1) or autotune.MIN_WORK / 2) == "c" and counted == [1]
    monkeypatch.setenv("FUNCNN_AUTOTUNE", "0")
    assert autotune.choose("op", 2, _square_candidates(), _args, fallback="a",
                           work=lambda: pytest.fail("work computed with the autotuner off")) == "a"
    assert timer.calls == 0 and [d["source"] for d in autotune.decisions()] == ["fallback"] * 3


def test_disk_cache_round_trip(monkeypatch, tmp_path):
    monkeypatch.setenv("FUNCNN_AUTOTUNE_CACHE", str(tmp_path))
    timer = FakeTimer({"a": 3.0, "b": 2.0, "c": 1.0})
    monkeypatch.setattr(autotune, "measure", timer)
    assert autotune.choose("op", (4, "x"), _square_candidates(), _args, fallback="a") == "c"
    stored = json.loads(autotune.cache_file().read_text())
    assert autotune.cache_file().parent == tmp_path
    assert stored["choices"] == {"op|(4, 'x')": "c"} and stored["fingerprint"] == autotune.fingerprint()
    autotune.clear()  # a new process: the choice comes from disk, nothing is measured
    timer.times = {"a": 0.0}
    assert autotune.choose("op", (4, "x"), _square_candidates(), _args, fallback="a") == "c"
    assert timer.calls == 1 and autotune.decisions()[0]["source"] == "disk"


def test_real_measure_reports_every_candidate():
    times, compile_s = autotune.measure(_square_candidates(), _args(), rounds=3, budget_s=0.0)
    assert set(times) == set(compile_s) == {"a", "b", "c"}
    assert all(t > 0 for t in times.values()) and all(t > 0 for t in compile_s.values())


@pytest.mark.slow
def test_conv_candidates_agree_and_the_choice_is_made_under_jit(monkeypatch):
    """Every convolution candidate (formulation x chunking) computes the same forward and
    backward (float64, against lax and its autodiff); ``impl=None`` under ``jit`` measures
    once at trace time and uses the winner in both forward and backward."""
    monkeypatch.setattr(autotune, "MIN_WORK", 0.0)
    n = 19  # chunks of 8: 8, 8, 3
    names = conv.candidates(n)
    assert {"gemm/all", "xla/all"} <= set(names)
    if jax.default_backend() == "cpu":
        assert {"gemm/8", "xla/8"} <= set(names)
    with jax.enable_x64(True):
        x = jax.random.normal(jax.random.key(1), (n, 7, 6, 3), jnp.float64)
        w = jax.random.normal(jax.random.key(2), (3, 3, 3, 4), jnp.float64)
        params = {"w": w, "b": jnp.linspace(-1.0, 1.0, 4)}

        def reference(w, x):
            return lax.conv_general_dilated(x, w, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))

        y_ref, vjp = jax.vjp(reference, w, x)
        dy = jnp.cos(y_ref)
        dw_ref, dx_ref = vjp(dy)
        for name in names:
            layer = Conv2D(4, 3, stride=2, impl=name)

            @jax.jit
            def run(params, x):
                y, _, cache = layer.forward(params, {}, x)
                return y, layer.backward(params, cache, dy)

            y, (grads, dx) = run(params, x)
            assert_close(y, y_ref + params["b"], RTOL_F64, what=name)
            assert_close(grads["w"], dw_ref, RTOL_F64, what=name)
            assert_close(dx, dx_ref, RTOL_F64, what=name)
        assert [d["source"] for d in autotune.decisions()] == ["forced"] * len(names)

        autotune.clear()
        timer = FakeTimer({"xla/all": 1.0}, default=2.0)
        monkeypatch.setattr(autotune, "measure", timer)
        layer = Conv2D(4, 3, stride=2)

        @jax.jit
        def manual(params, x):
            y, _, cache = layer.forward(params, {}, x)
            return layer.backward(params, cache, -jnp.sin(y))[0]  # d/dy sum(cos y)

        grads = manual(params, x)
        assert timer.calls == 1 and sorted(names) == timer.seen[0]
        (decision,) = autotune.decisions()
        assert decision["op"] == "conv" and decision["choice"] == "xla/all" and decision["source"] == "measured"
        assert_close(grads["w"], jax.grad(lambda w: jnp.sum(jnp.cos(reference(w, x) + params["b"])))(w), RTOL_F64)


def _fit_case():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 6, 6, 1)).astype(np.float32)
    y = rng.integers(0, 4, 40).astype(np.int32)
    model = fn.serial(Conv2D(3, 3, impl="xla/all"), fn.ReLU(), fn.Flatten(), fn.Dense(4))
    params, state = model.init(jax.random.key(0), (6, 6, 1))
    return model, params, state, x, y


@pytest.mark.slow
@pytest.mark.parametrize("faster", ["scan", "step"])
def test_fit_scans_or_steps_by_measurement(monkeypatch, faster):
    monkeypatch.setattr(autotune, "MIN_WORK", 0.0)
    timer = FakeTimer({faster: 1.0}, default=2.0)
    monkeypatch.setattr(autotune, "measure", timer)
    model, params, state, x, y = _fit_case()
    slow = fn.train.scan_is_slow(model, losses.softmax_cross_entropy, params, state, x, y, batch_size=8,
                                 optimizer=optax.adam(1e-2))
    assert slow == (faster == "step") and timer.calls == 1 and timer.seen == [["scan", "step"]]
    result = fn.train.fit(model, losses.softmax_cross_entropy, optax.adam(1e-2), (x, y), epochs=1, batch_size=8,
                          key=jax.random.key(3), progress=False)
    assert np.isfinite(result.history["loss"][0])
    assert timer.calls == 1  # the same step program (Adam(1e-2), same shapes): fit reuses the choice


def test_fit_choice_forced_or_fallback(monkeypatch):
    timer = FakeTimer({})
    monkeypatch.setattr(autotune, "measure", timer)
    model, params, state, x, y = _fit_case()

    def slow():
        return fn.train.scan_is_slow(model, losses.softmax_cross_entropy, params, state, x, y, batch_size=8)

    monkeypatch.setenv("FUNCNN_IMPL", "fit:step")
    assert slow()
    monkeypatch.setenv("FUNCNN_IMPL", "fit:scan")
    assert not slow()
    monkeypatch.delenv("FUNCNN_IMPL")
    assert not slow()  # this step is far below MIN_WORK: scanned, unmeasured
    assert timer.calls == 0 and autotune.decisions()[-1]["source"] == "fallback"


@pytest.mark.slow
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_recurrent_unrolls_agree_and_the_choice_is_measured(monkeypatch, cell):
    """Every scan unroll runs the same steps in the same order (float64: equal to rounding);
    the measured choice (a fake timer picks unroll4) is used by forward and backward alike."""
    from funcnn.layers.recurrent import GRU, LSTM

    make = {"lstm": LSTM, "gru": GRU}[cell]
    monkeypatch.setattr(autotune, "MIN_WORK", 0.0)
    with jax.enable_x64(True):
        x = jax.random.normal(jax.random.key(1), (3, 5, 2), jnp.float64)
        results = []
        for impl in ("unroll1", "unroll2", "unroll4"):
            monkeypatch.setenv("FUNCNN_IMPL", f"recurrent:{impl}")
            layer = make(4)
            params = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), layer.init(jax.random.key(0), (5, 2))[0])

            @jax.jit
            def run(params, x):
                y, _, cache = layer.forward(params, {}, x)
                return y, layer.backward(params, cache, jnp.cos(y))

            results.append(run(params, x))
        for other in results[1:]:
            assert_close(other, results[0], RTOL_F64)
        monkeypatch.delenv("FUNCNN_IMPL")
        timer = FakeTimer({"unroll4": 1.0}, default=2.0, run=False)  # the candidates ran above
        monkeypatch.setattr(autotune, "measure", timer)
        y, grads = jax.jit(lambda p, x: run.__wrapped__(p, x))(params, x)  # a fresh trace
        assert timer.calls == 1 and timer.seen == [["unroll1", "unroll2", "unroll4"]]
        (decision,) = [d for d in autotune.decisions() if d["source"] == "measured"]
        assert decision["op"] == "recurrent" and decision["choice"] == "unroll4"
        assert_close((y, grads), results[0], RTOL_F64)


def test_cache_file_location(monkeypatch, tmp_path):
    assert autotune.cache_file() is None  # off by default
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("FUNCNN_AUTOTUNE_CACHE", "1")
    path = autotune.cache_file()
    assert path.parent == tmp_path / "funcnn" and path.name.startswith("autotune-") and path.suffix == ".json"
