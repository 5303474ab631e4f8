"""Every bad input gets one clear line: CLI exit code 2 (no traceback, nothing written),
API ``ValueError``/``TypeError`` naming the function and the argument.

Each case runs from an empty folder (the test's cwd) and must leave it as it was."""
import os

import jax
import numpy as np
import optax
import pytest

import funcnn as fn
from funcnn import losses, models
from funcnn.cli import main

ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False


def _setup(tmp_path, kind):
    """Prepared things some cases need, made before the snapshot of the folder."""
    if kind == "file":
        (tmp_path / "afile").write_text("x")
    elif kind == "full":
        (tmp_path / "full").mkdir()
        (tmp_path / "full" / "trace.csv").write_text("t,V\n")
    elif kind == "locked":
        (tmp_path / "locked").mkdir()
        os.chmod(tmp_path / "locked", 0o500)
    elif kind == "empty":
        (tmp_path / "emptydir").mkdir()
    elif kind == "complete":
        (tmp_path / "done" / "model").mkdir(parents=True)
        (tmp_path / "done" / "run.json").write_text('{"args": {}}')
    elif kind == "corrupt":
        (tmp_path / "bad").mkdir()
        (tmp_path / "bad" / "run.json").write_text("{not json")


CLI = [  # (argv, setup, expected text in the one line)
    (["train", "--data", "cifar"], None, "argument --data: invalid choice: 'cifar'"),
    (["train", "--lr", "-0.1"], None, "argument --lr: expected a positive number, got '-0.1'"),
    (["train", "--lr", "0"], None, "argument --lr: expected a positive number"),
    (["train", "--lr", "nan"], None, "argument --lr: expected a positive number"),
    (["train", "--lr", "inf"], None, "argument --lr: expected a positive number"),
    (["train", "--lr", "fast"], None, "argument --lr: expected a positive number"),
    (["train", "--hidden", "0"], None, "argument --hidden: expected comma-separated positive integers"),
    (["train", "--hidden", "12,x"], None, "argument --hidden: expected comma-separated positive integers"),
    (["train", "--hidden", ""], None, "argument --hidden: expected comma-separated positive integers"),
    (["train", "--hidden", "-5"], None, "argument --hidden: expected comma-separated positive integers"),
    (["train", "--epochs", "0"], None, "argument --epochs: expected a positive integer"),
    (["train", "--epochs", "2.5"], None, "argument --epochs: expected a positive integer"),
    (["train", "--optimizer", "lbfgs"], None, "argument --optimizer: invalid choice"),
    (["train", "--model", "transformer"], None, "--model: expected one of cnn, gpt, mlp"),
    (["train", "--l2", "-1"], None, "argument --l2: expected a number >= 0"),
    (["train", "--l2", "nan"], None, "argument --l2: expected a number >= 0"),
    (["train", "--seed", "-1"], None, "argument --seed: expected an integer seed in [0, 4294967295]"),
    (["train", "--seed", str(2**64)], None, "argument --seed: expected an integer seed in [0, 4294967295]"),
    (["train", "--seed", "abc"], None, "argument --seed: expected an integer seed"),
    (["train", "--batch-size", "0"], None, "argument --batch-size: expected a positive integer"),
    (["train", "--data", "blobs", "--batch-size", "100000"], None, "--batch-size: expected at most 300"),
    (["train", "--activation", "swish"], None, "argument --activation: invalid choice"),
    (["train", "--loss", "hinge"], None, "argument --loss: invalid choice"),
    (["train", "--schedule", "linear"], None, "argument --schedule: invalid choice"),
    (["train", "--grad", "numeric"], None, "argument --grad: invalid choice"),
    (["train", "--model", "cnn", "--data", "blobs"], None, "--model: cnn needs an image dataset"),
    (["train", "--out", ""], None, "--out: expected a folder path, got ''"),
    (["train", "--out", "afile"], "file", "--out: expected a new or empty folder, 'afile' is an existing file"),
    (["train", "--out", "full"], "full", "--out: expected a new or empty folder, 'full' is not empty"),
    (["train", "--out", "afile/run"], "file", "is a file, not a folder"),
    pytest.param(["train", "--out", "locked/run"], "locked", "is not writable",
                 marks=pytest.mark.skipif(ROOT, reason="root can write anywhere")),
    (["train", "--resume", "nowhere"], None, "--resume: expected a run folder written by funcnn train"),
    (["train", "--resume", "emptydir"], "empty", "--resume: expected a run folder written by funcnn train"),
    (["train", "--resume", "done", "--epochs", "5"], "complete", "--resume: continues with the run's recorded "
                                                               "arguments; drop --epochs"),
    (["train", "--resume", "done"], "complete", "--resume: the run in 'done' is complete"),
    (["train", "--resume", "bad"], "corrupt", "is not a funcnn run record"),
    (["train", "--frobnicate"], None, "unrecognized arguments: --frobnicate"),
    (["train", "--devices", "2", "--batch-size", "3"], None, "--batch-size: expected a multiple of the 2 devices "
                                                             "(--devices 2), got 3"),
    (["train", "--model", "gpt", "--data", "pydoc", "--devices", "4", "--batch-size", "6"], None,
     "--batch-size: expected a multiple of the 4 devices (--devices 4), got 6"),
    (["train", "--model", "gpt", "--data", "pydoc", "--devices", "2", "--coordinator", "h:1", "--num-processes", "2",
      "--process-id", "1", "--batch-size", "6"], None, "--batch-size: expected a multiple of the 4 devices "
                                                       "(--devices 2 x --num-processes 2), got 6"),
    (["train", "--model", "gpt", "--data", "pydoc", "--coordinator", "h:1"], None,
     "--coordinator, --num-processes and --process-id: expected all three or none"),
    (["evaluate", "nowhere"], None, "DIR: expected a run folder written by funcnn train"),
    (["evaluate", "emptydir"], "empty", "DIR: expected a run folder written by funcnn train"),
    (["evaluate", "bad"], "corrupt", "is not a funcnn run record"),
    (["evaluate", "nowhere", "--data", "cifar"], None, "--data: expected one of blobs, digits"),
    (["evaluate"], None, "the following arguments are required: DIR"),
    (["perceptron", "--seed", "-1"], None, "argument --seed: expected an integer seed in [0, 4294967295]"),
    (["perceptron", "--seed", str(2**64)], None, "argument --seed: expected an integer seed"),
    (["perceptron", "--data", "digits"], None, "argument --data: invalid choice"),
    (["perceptron", "--epochs", "0"], None, "argument --epochs: expected an integer in [1, 100000]"),
    (["perceptron", "--epochs", "x"], None, "argument --epochs: expected an integer in [1, 100000]"),
    (["neuron", "simulate", "--current", "nan"], None, "argument --current: expected a finite number, got 'nan'"),
    (["neuron", "simulate", "--current", "inf"], None, "argument --current: expected a finite number, got 'inf'"),
    (["neuron", "simulate", "--current=-inf"], None, "argument --current: expected a finite number"),
    (["neuron", "simulate", "--current", "ten"], None, "argument --current: expected a finite number"),
    (["neuron", "simulate", "--current", "1", "--param", "VK=nan"], None, "argument --param: expected NAME=NUMBER"),
    (["neuron", "simulate", "--current", "1", "--param", "V1=inf"], None, "argument --param: expected NAME=NUMBER"),
    (["neuron", "simulate", "--current", "1", "--param", "gK=-1"], None, "--param: morris_lecar: gK must be >= 0"),
    (["neuron", "simulate", "--current", "1", "--param", "gK"], None, "argument --param: expected NAME=NUMBER"),
    (["neuron", "simulate", "--current", "1", "--param", "=5"], None, "argument --param: expected NAME=NUMBER"),
    (["neuron", "simulate", "--current", "1", "--param", "nosuch=1"], None, "unknown parameter(s) ['nosuch']"),
    (["neuron", "simulate", "--current", "1", "--t-max", "1e12"], None, "--t-max/--dt: at most 10,000,000 RK4 steps"),
    (["neuron", "simulate", "--current", "1", "--dt", "1e-9"], None, "--t-max/--dt: at most 10,000,000 RK4 steps"),
    (["neuron", "simulate", "--current", "1", "--dt", "0"], None, "argument --dt: expected a positive number"),
    (["neuron", "simulate", "--current", "1", "--dt", "-1"], None, "argument --dt: expected a positive number"),
    (["neuron", "simulate", "--current", "1", "--t-max", "nan"], None, "argument --t-max: expected a positive number"),
    (["neuron", "simulate", "--model", "hh", "--current", "10", "--t-max", "5"], None, "too short to see a spike"),
    (["neuron", "simulate", "--model", "hh", "--current", "10", "--dt", "0.2"], None, "--dt: RK4 is not accurate"),
    (["neuron", "simulate", "--model", "lif", "--current", "1"], None, "argument --model: invalid choice"),
    (["neuron", "simulate", "--preset", "bursting", "--current", "1"], None, "argument --preset: invalid choice"),
    (["neuron", "simulate", "--current", "1", "--out", "full"], "full", "--out: expected a new or empty folder, "
                                                                     "'full' is not empty"),
    (["neuron", "simulate", "--current", "1", "--out", "afile"], "file", "'afile' is an existing file"),
    (["neuron", "simulate", "--current", "1", "--out", ""], None, "--out: expected a folder path"),
    (["neuron", "simulate"], None, "the following arguments are required: --current"),
    (["neuron", "fi", "--currents", "0:inf:5"], None, "argument --currents: expected start:stop:count with finite"),
    (["neuron", "fi", "--currents", "nan:5:5"], None, "argument --currents: expected start:stop:count"),
    (["neuron", "fi", "--currents", "5:3:10"], None, "argument --currents: expected start:stop:count"),
    (["neuron", "fi", "--currents", "0:20:1"], None, "argument --currents: expected start:stop:count"),
    (["neuron", "fi", "--currents", "0:20"], None, "argument --currents: expected start:stop:count"),
    (["neuron", "fi", "--currents", "0:20:100000"], None, "2 <= count <= 10000"),
    (["neuron", "fi", "--currents", "80:100:5", "--t-max", "300"], None, "too short"),
    (["neuron", "phase", "--model", "hh", "--current", "1"], None, "argument --model: invalid choice"),
    (["neuron", "phase", "--current", "nan"], None, "argument --current: expected a finite number"),
    (["neuron", "spike"], None, "argument neuron_command: invalid choice"),
    ([], None, "the following arguments are required: command"),
    (["fly"], None, "argument command: invalid choice: 'fly'"),
]


def _listing(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.slow
@pytest.mark.parametrize("argv,setup,expected", CLI)
def test_cli_bad_input_one_line_exit_2_nothing_written(tmp_path, monkeypatch, capsys, argv, setup, expected):
    monkeypatch.chdir(tmp_path)
    _setup(tmp_path, setup)
    before = _listing(tmp_path)
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, (code, err)
    assert len(lines) == 1 and expected in lines[0] and lines[0].startswith("funcnn"), lines
    assert out == ""
    assert _listing(tmp_path) == before
    if setup == "locked":
        os.chmod(tmp_path / "locked", 0o700)


def _fit(data=None, **kw):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20, 3)).astype(np.float32)
    y = rng.integers(0, 2, 20).astype(np.int32)
    args = dict(model=models.mlp((3,), 2, hidden=(4,)), loss=losses.softmax_cross_entropy,
                optimizer=optax.sgd(0.1), data=(x, y) if data is None else data(x, y))
    args.update({k: kw.pop(k) for k in list(kw) if k in args})
    opts = dict(epochs=1, batch_size=5, key=jax.random.key(0), progress=False, checkpoint_dir="ck")
    opts.update(kw)
    return lambda: fn.train.fit(args["model"], args["loss"], args["optimizer"], args["data"], **opts)


def _nan_at(a, i):
    a = a.copy()
    a[i] = np.nan
    return a


def _train_lm(**kw):
    from funcnn.data import text
    from funcnn.training import lm

    corpus = text.load_pydoc(0)
    return lm.train_lm(models.gpt(corpus.vocab_size, context=4, layers=1, heads=1, width=4), corpus, context=4,
                       steps=1, batch_size=2, **kw)


K = jax.random.key(0)
API = [  # (call, exception type, expected text)
    (lambda: fn.Dense(3).init(K, 4), TypeError, "Dense: input_shape must be a tuple of positive integers"),
    (lambda: fn.Dense(3).init(K, (-4,)), ValueError, "Dense: input_shape must be a tuple of positive integers"),
    (lambda: fn.Dense(3).init(K, (0,)), ValueError, "Dense: input_shape must be a tuple of positive integers"),
    (lambda: fn.Dense(3).init(K, (4, 2)), ValueError, "Dense: input_shape must have 1 axes"),
    (lambda: fn.Dense(3).init(K, (2.5,)), ValueError, "Dense: input_shape must be a tuple of positive integers"),
    (lambda: fn.Dense(3).init(K, "4"), TypeError, "Dense: input_shape must be a tuple"),
    (lambda: fn.Dense(0), ValueError, "Dense: features must be a positive integer"),
    (lambda: fn.Dense(2.5), ValueError, "Dense: features must be a positive integer"),
    (lambda: fn.serial(), ValueError, "serial: expected at least one layer"),
    (lambda: fn.serial(3), TypeError, "serial: argument 0 must be a Layer"),
    (lambda: fn.serial(fn.Dense(3)).init(K, 4), TypeError, "serial.init: input_shape must be a tuple"),
    (lambda: fn.serial(fn.Dense(3)).output_shape((-1,)), ValueError, "serial.output_shape: input_shape must be"),
    (lambda: fn.Flatten().output_shape(4), TypeError, "Flatten: input_shape must be a tuple"),
    (lambda: fn.Conv2D(4, 3).init(K, (8, 8)), ValueError, "Conv2D: input_shape must have 3 axes"),
    (lambda: fn.Conv2D(4, 3).init(K, (8, -8, 1)), ValueError, "Conv2D: input_shape must be a tuple of positive"),
    (lambda: fn.BatchNorm().init(K, (0,)), ValueError, "BatchNorm: input_shape must be a tuple of positive"),
    (lambda: fn.LSTM(4).init(K, 5), TypeError, "LSTM: input_shape must be a tuple"),
    (lambda: fn.GlobalAvgPool().init(K, 3), TypeError, "GlobalAvgPool: input_shape must be a tuple"),
    (lambda: fn.Dropout(1.5), ValueError, "Dropout: rate must be a number in [0, 1)"),
    (lambda: fn.Dense(3).backward({"w": np.ones((3, 4), np.float32), "b": np.ones(3, np.float32)},
                                  np.ones((2, 4), np.float32), np.ones((2, 4), np.float32)), ValueError,
     "Dense.backward: dy must have the shape of the layer's output (2, 3), got (2, 4)"),
    (lambda: fn.Dense(3).forward({"w": np.ones((3, 4), np.float32), "b": np.ones(3, np.float32)}, {},
                                 np.ones((2, 5), np.float32)), ValueError, "Dense: x must have shape (batch, 4)"),
    (_fit(data=lambda x, y: (x, y[:15])), ValueError, "fit: x_train and y_train must have the same number"),
    (_fit(data=lambda x, y: (_nan_at(x, (3, 1)), y)), ValueError, "fit: x_train must be finite, got nan at index (3, 1)"),
    (_fit(data=lambda x, y: (x, y, x[:4], y[:5])), ValueError, "fit: x_test and y_test must have the same number"),
    (_fit(data=lambda x, y: (x, y, np.full_like(x[:4], np.inf), y[:4])), ValueError, "fit: x_test must be finite"),
    (_fit(data=lambda x, y: (x, np.where(y == 0, 0.0, np.nan).astype(np.float32)), loss=losses.mse),
     ValueError, "fit: y_train must be finite"),
    (_fit(data=lambda x, y: (x, y + 3)), ValueError, "fit: y_train must hold class labels in [0, 2)"),
    (_fit(data=lambda x, y: (x, y - 1)), ValueError, "fit: y_train must hold class labels in [0, 2)"),
    (_fit(data=lambda x, y: (x, y, x)), ValueError, "fit: data must be a Dataset"),
    (_fit(loss="softmax_cross_entropy"), TypeError, "fit: loss must be a Loss such as funcnn.losses.softmax_cross"),
    (_fit(loss=print), TypeError, "fit: loss must be a Loss with value and grad"),
    (_fit(optimizer="adam"), TypeError, "fit: optimizer must be an optax GradientTransformation"),
    (_fit(model="mlp"), TypeError, "fit: model must be a funcnn Layer"),
    (_fit(key=0), TypeError, "fit: key must be a PRNG key"),
    (_fit(epochs=0), ValueError, "fit: epochs must be a positive integer"),
    (_fit(epochs=1.5), ValueError, "fit: epochs must be a positive integer"),
    (_fit(batch_size=0), ValueError, "fit: batch_size must be an integer in [1, 20]"),
    (_fit(batch_size=21), ValueError, "fit: batch_size must be an integer in [1, 20]"),
    (_fit(batch_size=True), ValueError, "fit: batch_size must be an integer in [1, 20]"),
    (_fit(grad="numeric"), ValueError, "fit: grad must be one of"),
    (_fit(checkpoint_every=0), ValueError, "fit: checkpoint_every must be a positive integer"),
    (_fit(keep=0), ValueError, "fit: keep must be a positive integer"),
    (_fit(checkpoint_dir=None, resume=True), ValueError, "fit: resume=True needs checkpoint_dir"),
    (lambda: fn.data.load("cifar"), ValueError, "data: unknown dataset 'cifar'"),
    (lambda: fn.data.load("blobs", seed=-1), ValueError, "data.load: seed must be an integer in [0, 4294967295]"),
    (lambda: fn.data.load("blobs", seed=2**64), ValueError, "data.load: seed must be an integer"),
    (lambda: fn.data.load("blobs", seed=1.5), ValueError, "data.load: seed must be an integer"),
    (lambda: fn.load_run("nowhere"), ValueError, "load_run: expected a run folder written by funcnn train"),
    (lambda: losses.get("hinge"), ValueError, "loss must be one of"),
    (lambda: models.build("transformer", (2,), 2), ValueError, "model must be one of"),
    (lambda: _train_lm(mesh="data"), TypeError, "train_lm: mesh must be a jax.sharding.Mesh, got str"),
    (lambda: _train_lm(mesh=jax.make_mesh((1,), ("model",))), ValueError,
     "train_lm: mesh must have a 'data' axis, got axes ('model',)"),
]


@pytest.mark.parametrize("call,exc,expected", API)
def test_api_bad_input_one_line_error_nothing_written(tmp_path, monkeypatch, call, exc, expected):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(exc) as e:
        call()
    message = str(e.value)
    assert expected in message and "\n" not in message, message
    assert _listing(tmp_path) == []


def test_there_are_at_least_80_cases():
    assert len(CLI) + len(API) >= 80
