"""The command line end to end: train, check, perceptron, and refusal of bad flags."""
import argparse
import json
import subprocess
import sys

import pytest

from funcnn.cli import build_parser, main


def funcnn(*args, cwd=None):
    """``python -m funcnn args``: the command as the shell runs it (exit code, no traceback)."""
    return subprocess.run([sys.executable, "-m", "funcnn", *args], capture_output=True, text=True, cwd=cwd, timeout=600)


def in_process(capsys, *args):
    """``funcnn args`` run by ``main`` in this process (what it prints, its exit code): the
    pytest worker's JAX is started already, so no interpreter or backend start per command."""
    try:
        code = main(list(args))
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.slow
def test_train_end_to_end_writes_metrics_and_plot(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, stderr = in_process(capsys, "train", "--epochs", "3", "--hidden", "32", "--lr", "0.005",
                                      "--out", str(out), "--no-progress")
    assert code == 0, stderr
    assert "test accuracy" in stdout
    assert "manual vs autodiff" in stdout
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


@pytest.mark.slow
def test_bad_flag_exits_2_without_traceback_from_the_shell(tmp_path):
    r = funcnn("train", "--lr", "-1", "--out", str(tmp_path / "never"))
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_perceptron_cli_converges_on_blobs_not_xor(capsys):
    code, stdout, _ = in_process(capsys, "perceptron", "--data", "blobs")
    assert code == 0 and "converged in epoch" in stdout
    code, stdout, _ = in_process(capsys, "perceptron", "--data", "xor", "--epochs", "20")
    assert code == 0 and "did not converge" in stdout


@pytest.mark.slow
def test_check_cli_runs_selected_cases(capsys):
    r = funcnn("check", "--only", "dense,softmax,softmax_cross_entropy(labels)")  # --jobs 2: worker processes
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3 passed, 0 failed" in r.stdout and "params['w']" in r.stdout
    code, _, stderr = in_process(capsys, "check", "--only", "nonesuch")
    assert code == 2 and "--only: unknown case(s) nonesuch" in stderr


def _commands(parser, path=()):
    """Every command path of the parser: (), ("train",), ("neuron", "fi"), ..."""
    yield path
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*path, name))


def test_every_help_text_prints(capsys):
    """``--help`` of every command and subcommand prints its usage and exits 0 (argparse formats
    each help string with %: a bare '%' in one is a traceback)."""
    paths = list(_commands(build_parser()))
    assert ("bench",) in paths and len(paths) > 8
    for path in paths:
        code, out, err = in_process(capsys, *path, "--help")
        assert code == 0 and out.startswith("usage: funcnn") and not err, (path, err)
