"""The command line end to end: train, check, perceptron, and refusal of bad flags."""
import json
import subprocess
import sys

import pytest

from funcnn.cli import main


def funcnn(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "funcnn", *args], capture_output=True, text=True, cwd=cwd, timeout=600)


def test_train_end_to_end_writes_metrics_and_plot(tmp_path):
    out = tmp_path / "run"
    r = funcnn("train", "--epochs", "3", "--hidden", "32", "--lr", "0.005", "--out", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "test accuracy" in r.stdout
    assert "manual vs autodiff" in r.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["first_step_grad_rel_diff"] < 1e-5
    assert len(metrics["history"]["test_acc"]) == 3 and metrics["final"]["test_acc"] > 0.8
    assert (out / "curves.png").stat().st_size > 1000


@pytest.mark.parametrize("flags,expected", [
    (["--data", "cifar"], "argument --data: invalid choice: 'cifar'"),
    (["--lr", "-0.1"], "argument --lr: expected a positive number, got '-0.1'"),
    (["--hidden", "0"], "argument --hidden: expected comma-separated positive integers"),
    (["--hidden", "12,x"], "argument --hidden: expected comma-separated positive integers"),
    (["--epochs", "0"], "argument --epochs: expected a positive integer"),
    (["--optimizer", "lbfgs"], "argument --optimizer: invalid choice"),
    (["--model", "transformer"], "--model: expected one of"),
    (["--l2", "-1"], "argument --l2: expected a number >= 0"),
])
def test_train_refuses_bad_flags_in_one_line(tmp_path, capsys, flags, expected):
    out = tmp_path / "never"
    try:
        code = main(["train", *flags, "--out", str(out)])
    except SystemExit as e:
        code = e.code
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], lines
    assert lines[0].startswith("funcnn train: error: ")
    assert not out.exists()


def test_bad_flag_exits_2_without_traceback_from_the_shell(tmp_path):
    r = funcnn("train", "--lr", "-1", "--out", str(tmp_path / "never"))
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_perceptron_cli_converges_on_blobs_not_xor():
    r = funcnn("perceptron", "--data", "blobs")
    assert r.returncode == 0 and "converged in epoch" in r.stdout
    r = funcnn("perceptron", "--data", "xor", "--epochs", "20")
    assert r.returncode == 0 and "did not converge" in r.stdout


def test_check_cli_runs_selected_cases():
    r = funcnn("check", "--only", "dense,softmax,softmax_cross_entropy(labels)")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3 passed, 0 failed" in r.stdout and "params['w']" in r.stdout
    r = funcnn("check", "--only", "nonesuch")
    assert r.returncode == 2 and "--only: unknown case(s) nonesuch" in r.stderr
