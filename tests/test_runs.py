"""Runs you can trust: exact resume after SIGKILL, Ctrl-C / SIGTERM on a real process,
the non-finite guard, saved runs (load_run, evaluate), strict metrics."""
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import optax
import pytest

import funcnn as fn
from funcnn import losses, models
from funcnn.check.nonfinite import first_nonfinite
from funcnn.training.checkpoint import json_safe
from funcnn.cli import main

# a tiny run: blobs (300 train), an 8-unit MLP, 3 steps per epoch
RUN = ["train", "--data", "blobs", "--hidden", "8", "--batch-size", "100", "--lr", "0.05", "--no-progress"]


def _start(args, cwd):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")])))
    return subprocess.Popen([sys.executable, "-m", "funcnn", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(predicate, proc, timeout=240):
    t0 = time.time()
    while not predicate():
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t0 < timeout
        time.sleep(0.05)


def _steps(run_dir):
    ck = run_dir / "checkpoints"
    return sorted(int(p.name) for p in ck.iterdir() if p.name.isdigit()) if ck.exists() else []


def _same_run(a, b):
    ra, rb = fn.load_run(a), fn.load_run(b)
    for x, y in zip(jax.tree_util.tree_leaves((ra.params, ra.state)), jax.tree_util.tree_leaves((rb.params, rb.state))):
        assert np.asarray(x).tobytes() == np.asarray(y).tobytes()  # bitwise
    assert json.loads((a / "metrics.json").read_text())["history"] == json.loads((b / "metrics.json").read_text())["history"]


@pytest.mark.slow
def test_sigkill_then_resume_is_bitwise_the_uninterrupted_run(tmp_path):
    epochs = ["--epochs", "12"]
    proc = _start([*RUN, *epochs, "--out", str(tmp_path / "killed")], tmp_path)
    _wait_for(lambda: len(_steps(tmp_path / "killed")) >= 1 and _steps(tmp_path / "killed")[-1] >= 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "killed" / "model").exists()  # it really died mid-run
    assert main(["train", "--resume", str(tmp_path / "killed"), "--no-progress"]) == 0
    assert main([*RUN, *epochs, "--out", str(tmp_path / "whole")]) == 0
    _same_run(tmp_path / "killed", tmp_path / "whole")


@pytest.mark.slow
@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_checkpoints_prints_one_line_and_exits(tmp_path, sig, code):
    out = tmp_path / "run"
    proc = _start([*RUN, "--epochs", "200", "--out", str(out)], tmp_path)
    # SIGINT as soon as the run folder exists (while compiling: the first seconds);
    # SIGTERM once training is under way
    _wait_for((lambda: (out / "run.json").exists()) if sig == signal.SIGINT else (lambda: len(_steps(out)) > 0), proc)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=240)
    assert proc.returncode == code, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("interrupted at epoch "), stderr
    assert lines[0].endswith(f"; resume with: funcnn train --resume {out}")
    epoch = int(lines[0].split()[3].rstrip(";"))
    assert _steps(out)[-1] == epoch and epoch < 200
    assert "Traceback" not in stderr and not (out / "model").exists()
    run = fn.load_run(out)  # an interrupted run loads from its newest checkpoint
    assert not run.complete and len(run.history["loss"]) == epoch


def _xy(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 3)).astype(np.float32), rng.integers(0, 2, n).astype(np.int32)


@pytest.mark.slow
def test_resume_in_process_matches_and_keeps_newest_checkpoints(tmp_path):
    x, y = _xy()
    model = models.mlp((3,), 2, hidden=(5,))
    kw = dict(batch_size=10, key=jax.random.key(1), progress=False)
    whole = fn.train.fit(model, losses.softmax_cross_entropy, optax.adam(0.01), (x, y), epochs=5, **kw)
    fn.train.fit(model, losses.softmax_cross_entropy, optax.adam(0.01), (x, y), epochs=5, **kw,
                 checkpoint_dir=tmp_path / "ck", keep=2)
    assert _steps(tmp_path) == [] and sorted(os.listdir(tmp_path / "ck")) == ["4", "5"]
    # resume from epoch 3 (a copy of a run stopped there)
    part = fn.train.fit(model, losses.softmax_cross_entropy, optax.adam(0.01), (x, y), epochs=5, **kw,
                        checkpoint_dir=tmp_path / "ck3", checkpoint_every=3, keep=5)
    import shutil
    shutil.rmtree(tmp_path / "ck3" / "5")
    resumed = fn.train.fit(model, losses.softmax_cross_entropy, optax.adam(0.01), (x, y), epochs=5, **kw,
                           checkpoint_dir=tmp_path / "ck3", resume=True)
    for r in (part, resumed):
        for a, b in zip(jax.tree_util.tree_leaves(whole.params), jax.tree_util.tree_leaves(r.params)):
            assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
        assert json_safe(r.history) == json_safe(whole.history)  # nan (no test set) as None
    with pytest.raises(ValueError, match="already holds checkpoints .newest: epoch 5.; pass resume=True"):
        fn.train.fit(model, losses.softmax_cross_entropy, optax.adam(0.01), (x, y), epochs=5, **kw,
                     checkpoint_dir=tmp_path / "ck")
    with pytest.raises(ValueError, match="written by a run with a different key"):
        fn.train.fit(model, losses.softmax_cross_entropy, optax.adam(0.01), (x, y), epochs=5,
                     **{**kw, "key": jax.random.key(2)}, checkpoint_dir=tmp_path / "ck3", resume=True)


@pytest.mark.parametrize("scan", [True, False])
def test_non_finite_guard_names_epoch_step_and_leaf_and_keeps_last_checkpoint(tmp_path, scan):
    x, y = _xy()
    model = models.mlp((3,), 2, hidden=(5,))
    # SGD with a huge rate: finite for a while, then the parameters overflow
    with pytest.raises(fn.train.NonFiniteError) as e:
        fn.train.fit(model, losses.softmax_cross_entropy, optax.sgd(1e30), (x, y), epochs=6, batch_size=10,
                     key=jax.random.key(0), progress=False, scan=scan, checkpoint_dir=tmp_path / "ck")
    err = e.value
    assert isinstance(err, FloatingPointError) and "\n" not in str(err)
    assert str(err).startswith(f"fit: non-finite value at epoch {err.epoch}, step {err.step}: {err.where}")
    assert err.where in fn.train.guard_names(model.init(jax.random.key(0), (3,))[0])
    kept = sorted(int(p) for p in os.listdir(tmp_path / "ck") if p.isdigit())
    assert kept[-1] == err.epoch - 1  # the last good epoch, nothing after it


def test_guard_flags_the_first_bad_value_exactly():
    """A Dense whose weight gradient alone is poisoned at one known step: the guard must name
    that step and grads['1_dense']['w'], not the loss or another leaf."""
    import dataclasses

    x, y = _xy()
    model = models.mlp((3,), 2, hidden=(5,))
    inner = model.backward

    def backward(params, cache, dy):
        grads, dx = inner(params, cache, dy)
        poison = jax.numpy.where(params["3_dense"]["b"][0] == params["3_dense"]["b"][0], 0.0, 0.0)
        grads["1_dense"]["w"] = grads["1_dense"]["w"].at[0, 0].add(jax.numpy.log(poison * 0.0))  # -inf
        return grads, dx

    bad = dataclasses.replace(model, backward=backward)
    with pytest.raises(fn.train.NonFiniteError) as e:
        fn.train.fit(bad, losses.softmax_cross_entropy, optax.sgd(0.1), (x, y), epochs=2, batch_size=10,
                     key=jax.random.key(0), progress=False)
    assert (e.value.epoch, e.value.step, e.value.where) == (1, 1, "grads['1_dense']['w']")


def test_cli_non_finite_exits_1_with_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    code = main([*RUN, "--epochs", "3", "--optimizer", "sgd", "--lr", "1e30", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and err[0].startswith("funcnn train: fit: non-finite value at epoch "), err
    assert (out / "run.json").exists() and not (out / "metrics.json").exists()


@pytest.mark.slow
def test_first_nonfinite_names_the_layer():
    import dataclasses

    model = fn.serial(fn.Dense(4), fn.ReLU(), fn.Dense(2))
    params, state = model.init(jax.random.key(0), (3,))
    x, y = _xy(8)
    sce = losses.softmax_cross_entropy
    assert first_nonfinite(model, params, state, x, y, sce) is None
    x_bad = x.copy()
    x_bad[2, 1] = np.inf
    assert first_nonfinite(model, params, state, x_bad, y, sce) == "the input x"
    p = jax.tree_util.tree_map(lambda a: a, params)
    p["2_dense"]["w"] = p["2_dense"]["w"].at[0, 0].set(np.inf)
    assert first_nonfinite(model, p, state, x, y, sce) == "forward: output of ['2_dense']"
    dense = fn.Dense(4)
    poisoned = dataclasses.replace(dense, backward=lambda p, c, dy: (
        {"w": dense.backward(p, c, dy)[0]["w"], "b": dy.sum(0) * np.nan}, dense.backward(p, c, dy)[1]))
    model = fn.serial(poisoned, fn.ReLU(), fn.Dense(2))
    assert first_nonfinite(model, params, state, x, y, sce) == "backward: grads['0_dense']['b']"


@pytest.mark.slow
def test_saved_run_loads_evaluates_and_metrics_are_strict_json(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*RUN, "--epochs", "2", "--loss", "mse", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text(), parse_constant=lambda c: pytest.fail(f"bare {c}"))
    assert 0.5 <= metrics["final"]["test_acc"] <= 1.0  # mse on one-hot targets reports accuracy
    r = fn.load_run(out)
    assert r.complete and r.args["loss"] == "mse" and r.input_shape == (2,)
    d = fn.data.load("blobs")
    eye = np.eye(2, dtype=np.float32)
    value, acc = fn.train.evaluate(r.model, losses.mse, r.params, r.state, d.x_test, eye[d.y_test])
    assert acc == metrics["final"]["test_acc"] and value == metrics["final"]["test_loss"]
    capsys.readouterr()
    assert main(["evaluate", str(out)]) == 0
    assert f"test loss {value:.4f}  test accuracy {acc:.4f}" in capsys.readouterr().out
    assert sorted(os.listdir(out)) == ["checkpoints", "curves.png", "metrics.json", "model", "run.json"]


@pytest.mark.slow
def test_mnist1d_loads_offline_seeded():
    d = fn.data.load("mnist1d")
    assert d.x_train.shape == (4000, 40, 1) and d.x_test.shape == (1000, 40, 1) and d.num_classes == 10
    assert d.x_train.dtype == np.float32 and d.y_train.dtype == np.int32
    state = np.random.get_state()[1].copy()
    again = fn.data.load("mnist1d")
    assert np.array_equal(again.x_train, d.x_train)
    assert np.array_equal(np.random.get_state()[1], state)  # the global NumPy state is left alone
