"""Multi-host data parallelism: two local processes of two CPU devices each, gloo
collectives (``tests/multihost_worker.py``), against one process of four devices; and
``funcnn train`` run as two processes: checkpoints written (orbax, from process 0) and a
resumed two-process run that ends as the run left alone."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from helpers import RTOL_F32, assert_close
from parallel_run import ENV, command, run

import funcnn


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(procs, timeout=300):
    """(returncode, stdout, stderr) of each process; every one killed if any is left."""
    outs = []
    try:
        outs = [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            p.kill()
    return [(p.returncode, *o) for p, o in zip(procs, outs)]


@pytest.mark.slow
def test_two_processes_of_two_devices_end_like_one_process_of_four(tmp_path):
    coordinator = f"127.0.0.1:{_free_port()}"
    procs = [subprocess.Popen(command("multihost_worker.py", 2, coordinator, 2, i, tmp_path / f"p{i}.npz"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
             for i in range(2)]
    ref = run("multihost_worker.py", 4, "-", 0, 0, tmp_path / "ref.npz", timeout=300)
    done = _wait(procs)
    assert ref.returncode == 0, ref.stderr[-2000:]
    for code, out, err in done:
        assert code == 0, err[-2000:]
        assert "of 2: 4 devices" in out
    assert not (tmp_path / "p1.npz").exists(), "only process 0 writes"
    got, want = np.load(tmp_path / "p0.npz"), np.load(tmp_path / "ref.npz")
    assert sorted(got) == sorted(want) and any(k.startswith("gpt") for k in got)  # fit's MLP and train_lm's GPT
    assert_close([got[k] for k in sorted(got)], [want[k] for k in sorted(want)], RTOL_F32)


def _train_two_processes(flags):
    """``funcnn train FLAGS`` as processes 0 and 1 of two, two CPU devices each."""
    multi = ["--devices", "2", "--coordinator", f"127.0.0.1:{_free_port()}", "--num-processes", "2"]
    procs = [subprocess.Popen([sys.executable, "-m", "funcnn", "train", *flags, *multi, "--process-id", str(i)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV) for i in range(2)]
    done = _wait(procs)
    for i, (code, _, err) in enumerate(done):
        assert code == 0, f"process {i}: {err[-2000:]}"
    # Gloo's lines are not ours; its threads may interleave them ("[Gloo] Rank [Gloo] Rank 3 is connected
    # to 3 peer ranks. ...\n2 is connected to 3 peer ranks. ..."), so they are known by their words too;
    # each thread writes its text and its newline apart, so two texts on one line leave an empty line after
    # it ("A-text B-text\n\n", seen once in a clean-clone run)
    own = [line for line in done[1][1].splitlines()
           if line.strip() and not line.startswith("[Gloo]") and "peer ranks" not in line]
    assert own == [], f"only process 0 prints: {own}"
    return done[0][1:]


def _final_params(run_dir, model):
    return funcnn.load_run(run_dir).params


RUNS = {  # (flags, the final params' folder, the history keys that are deterministic)
    "mlp": (["--data", "xor", "--hidden", "8", "--epochs", "2", "--batch-size", "20"], "model",
            ("loss", "train_loss", "test_loss")),
    "gpt": (["--model", "gpt", "--data", "pydoc", "--steps", "4", "--context", "8", "--layers", "1", "--heads", "2",
             "--width", "16", "--batch-size", "8", "--eval-every", "2", "--eval-windows", "4"], "model",
            ("step", "train_loss", "val_loss")),
}


@pytest.mark.slow
@pytest.mark.parametrize("model", sorted(RUNS))
def test_two_process_cli_run_checkpoints_and_resumes_to_the_run_left_alone(tmp_path, model):
    flags, final, keys = RUNS[model]
    whole = tmp_path / "whole"
    _train_two_processes([*flags, "--no-progress", "--out", str(whole)])
    steps = sorted(int(p.name) for p in (whole / "checkpoints").iterdir() if p.name.isdigit())
    assert steps == [1, 2] if model == "mlp" else steps == [2, 4]
    for name in ("run.json", "metrics.json", "curves.png", final):
        assert (whole / name).exists(), name
    assert json.loads((whole / "metrics.json").read_text())["args"]["devices"] == 2

    # the run killed after its first checkpoint: no final params, no metrics, no newest checkpoint;
    # resumed, it starts from that checkpoint (its progress bar starts there) and ends bitwise as the whole run
    cut = tmp_path / "cut"
    shutil.copytree(whole, cut)
    for name in (final, "metrics.json", "curves.png", f"checkpoints/{steps[-1]}"):
        shutil.rmtree(cut / name) if (cut / name).is_dir() else (cut / name).unlink()
    _, progress = _train_two_processes(["--resume", str(cut)])
    assert f" {steps[0]}/{steps[-1]} [" in progress and f" 0/{steps[-1]} [" not in progress, progress[-500:]
    a, b = _final_params(whole, model), _final_params(cut, model)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        assert np.array_equal(np.asarray(x), np.asarray(y))
    h_whole, h_cut = (json.loads((d / "metrics.json").read_text())["history"] for d in (whole, cut))
    assert {k: h_cut[k] for k in keys} == {k: h_whole[k] for k in keys}
