"""Runs that survive damage: every fault of a run folder (damaged, truncated, emptied, foreign,
unwritable), a kill during every kind of write and every bad flag ends in a fallback with one
line, or in one line and its exit code; nothing intact is lost or changed.

One tiny MLP run (blobs, hidden 4, 2 epochs of 3 steps: checkpoints 1 and 2) is trained once
per module; each case works on a copy of it. Kills are real SIGKILLs of a subprocess at a
chosen write (orbax's final rename, or our own); everything else runs in-process."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import funcnn as fn
from funcnn.cli import main

DATA = Path(__file__).parent / "data"
RUN = ["train", "--data", "blobs", "--hidden", "4", "--epochs", "2", "--batch-size", "100", "--lr", "0.05",
       "--no-progress"]
ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def _call(argv, capsys):
    """``funcnn ARGV`` in-process: (exit code, stdout, the lines of stderr)."""
    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err.strip().splitlines()


def _digest(folder: Path) -> dict:
    """Every file under ``folder`` with the hash of its bytes: what "unchanged" compares."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _leaves(run):
    return [np.asarray(a) for a in jax.tree_util.tree_leaves((run.params, run.state))]


def _bitwise(a, b):
    return all(x.dtype == y.dtype and x.tobytes() == y.tobytes() for x, y in zip(_leaves(a), _leaves(b)))


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A finished run (checkpoints 1 and 2, model/), never modified: cases copy it."""
    out = tmp_path_factory.mktemp("pristine") / "run"
    assert main([*RUN, "--out", str(out)]) == 0
    return out


@pytest.fixture
def copy(pristine, tmp_path):
    def make(name="run", unfinished=False):
        dst = tmp_path / name
        shutil.copytree(pristine, dst)
        if unfinished:  # killed after its last checkpoint, before its final files
            shutil.rmtree(dst / "model")
            (dst / "metrics.json").unlink()
            (dst / "curves.png").unlink()
        return dst

    return make


# ---- damage to a checkpoint: the newest is set aside, the run continues from the one before

def _data_file(step: Path) -> Path:
    return max((step / "arrays" / "d").iterdir(), key=lambda p: p.stat().st_size)


def _cut(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _empty(step: Path) -> None:
    for p in step.iterdir():
        shutil.rmtree(p) if p.is_dir() else p.unlink()


DAMAGE = {  # what is done to checkpoints/2
    "data file cut in half": lambda s: _cut(_data_file(s)),
    "data file deleted": lambda s: _data_file(s).unlink(),
    "metadata cut": lambda s: _cut(s / "meta" / "metadata"),
    "folder emptied": _empty,
    "manifest deleted": lambda s: (s / "arrays" / "manifest.ocdbt").unlink(),
}


@pytest.mark.slow
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_resume_sets_a_damaged_checkpoint_aside_and_ends_bitwise_as_the_run_left_alone(
        pristine, copy, capsys, damage):
    run = copy(unfinished=True)
    DAMAGE[damage](run / "checkpoints" / "2")
    damaged, older = _digest(run / "checkpoints" / "2"), _digest(run / "checkpoints" / "1")
    code, out, err = _call(["train", "--resume", run, "--no-progress"], capsys)
    assert code == 0 and len(err) == 1, err
    assert err[0].startswith(f"fit: checkpoint {run.resolve() / 'checkpoints' / '2'} set aside as 2.damaged (")
    assert err[0].endswith("; resuming from epoch 1")
    assert _digest(run / "checkpoints" / "2.damaged") == damaged  # set aside, not deleted or changed
    assert _digest(run / "checkpoints" / "1") == older
    assert _bitwise(fn.load_run(run), fn.load_run(pristine))  # the run left alone from epoch 1
    assert json.loads((run / "metrics.json").read_text())["history"] == \
        json.loads((pristine / "metrics.json").read_text())["history"]


# ---- faults that end in one line and an exit code, nothing changed

def _record(run: Path, edit) -> None:
    record = json.loads((run / "run.json").read_text())
    edit(record)
    (run / "run.json").write_text(json.dumps(record))


def _hidden_16(record):
    record["args"]["hidden"] = [16]
    record["model"]["options"]["hidden"] = [16]


def _gpt_record_over(run: Path) -> None:
    shutil.copy(DATA / "run_gpt_v1" / "run.json", run / "run.json")


def _all_damaged(run: Path) -> None:
    for step in ("1", "2"):
        _cut(_data_file(run / "checkpoints" / step))


def _model_damaged(run: Path) -> None:
    for p in (run / "model").rglob("*"):
        if p.parent.name == "d":  # the data files of the array store
            _cut(p)


def _checkpoints_a_file(run: Path) -> None:
    shutil.rmtree(run / "checkpoints")
    (run / "checkpoints").write_text("not a folder")


FAULTS = [  # (name, unfinished copy?, fault, argv after the run folder's place, exit code, text in the one line)
    ("every checkpoint damaged", True, _all_damaged, ["train", "--resume", "{run}", "--no-progress"], 1,
     "fit: no checkpoint in {run}/checkpoints can be restored (newest, epoch 2: cannot be read"),
    ("record names an unknown model", True, lambda r: _record(r, lambda d: d["model"].update(builder="resnet")),
     ["train", "--resume", "{run}", "--no-progress"], 2, "is not a funcnn run record (ValueError: model 'resnet' is not one of"),
    ("record cut", True, lambda r: _cut(r / "run.json"), ["train", "--resume", "{run}", "--no-progress"], 2,
     "is not a funcnn run record (JSONDecodeError"),
    ("record emptied", True, lambda r: (r / "run.json").write_text(""), ["train", "--resume", "{run}", "--no-progress"], 2,
     "is not a funcnn run record"),
    ("record is a list", True, lambda r: (r / "run.json").write_text("[]"), ["train", "--resume", "{run}", "--no-progress"], 2,
     "is not a funcnn run record (TypeError: expected a JSON object"),
    ("record and checkpoints disagree on a shape", True, lambda r: _record(r, _hidden_16),
     ["train", "--resume", "{run}", "--no-progress"], 1, "array 0 is float32[4], the model and optimizer expect float32[16]"),
    ("gpt record over an mlp's checkpoints", True, _gpt_record_over, ["train", "--resume", "{run}", "--no-progress"], 1,
     "train_lm: no checkpoint in {run}/checkpoints can be restored"),
    ("complete run resumed", False, None, ["train", "--resume", "{run}", "--no-progress"], 2, "--resume: the run in"),
    ("checkpoint folder is a file", True, _checkpoints_a_file, ["train", "--resume", "{run}", "--no-progress"], 2,
     "--resume: checkpoint folder '{run}/checkpoints' cannot be created: '{run}/checkpoints' is a file"),
    ("evaluate a gpt run", None, None, ["evaluate", DATA / "run_gpt_v1"], 2, "holds a gpt run, expected a mlp or cnn"),
    ("sample an mlp run", False, None, ["sample", "{run}"], 2, "RUN_DIR: '{run}' holds a mlp run, expected a gpt run"),
    ("evaluate: record and model disagree on a shape", False, lambda r: _record(r, _hidden_16),
     ["evaluate", "{run}"], 2, "/model: array 0 is float32[4], the model's params and state expect float32[16]"),
    ("evaluate: model/ damaged", False, _model_damaged, ["evaluate", "{run}"], 1, "/model: cannot be read ("),
    ("evaluate: metrics cut", False, lambda r: _cut(r / "metrics.json"), ["evaluate", "{run}"], 2,
     "metrics.json' is not a funcnn metrics file"),
    ("evaluate: nothing restorable", True, _all_damaged, ["evaluate", "{run}"], 1,
     "load_run: no checkpoint of '{run}' can be read (checkpoint {run}/checkpoints/2: cannot be read"),
    ("evaluate: no record", True, lambda r: (r / "run.json").unlink(), ["evaluate", "{run}"], 2,
     "DIR: expected a run folder written by funcnn train (with run.json), got '{run}'"),
]


@pytest.mark.slow
@pytest.mark.parametrize("name,unfinished,fault,argv,code,expected", FAULTS, ids=[f[0] for f in FAULTS])
def test_fault_is_one_line_and_its_exit_code_and_nothing_changes(copy, capsys, name, unfinished, fault, argv,
                                                                 code, expected):
    run = copy(unfinished=bool(unfinished)) if unfinished is not None else None
    if fault is not None:
        fault(run)
    before = _digest(run) if run is not None else None
    got, out, err = _call([str(a).replace("{run}", str(run)) for a in argv], capsys)
    where = str(run.resolve()) if run is not None else ""
    assert got == code and len(err) == 1, (got, err)
    assert expected.replace("{run}", where) in err[0] or expected.replace("{run}", str(run)) in err[0], err
    assert "Traceback" not in err[0] and out == ""
    if run is not None:
        assert _digest(run) == before  # nothing renamed, written or deleted


def test_a_run_without_its_final_files_loads_from_its_last_checkpoint_and_resume_writes_them(
        pristine, copy, capsys):
    run = copy(unfinished=True)
    loaded = fn.load_run(run)
    assert not loaded.complete and loaded.source.endswith("checkpoints/2") and len(loaded.history["loss"]) == 2
    assert _bitwise(loaded, fn.load_run(pristine))  # the last checkpoint is the trained model
    code, out, err = _call(["evaluate", run], capsys)
    assert code == 0 and "(unfinished run: its newest checkpoint" in out and err == []
    before = _digest(run / "checkpoints")
    code, out, err = _call(["train", "--resume", run, "--no-progress"], capsys)
    assert code == 0 and err == [] and "wrote" in out
    assert _digest(run / "checkpoints") == before  # nothing trained again
    assert fn.load_run(run).complete and _bitwise(fn.load_run(run), fn.load_run(pristine))
    assert sorted(os.listdir(run)) == sorted(os.listdir(pristine))


def test_load_run_refuses_params_of_another_shape_in_one_line(copy):
    run = copy()
    _record(run, _hidden_16)
    with pytest.raises(ValueError) as e:
        fn.load_run(run)
    assert "\n" not in str(e.value) and "array 0 is float32[4], the model's params and state expect float32[16]" \
        in str(e.value)


# ---- writes that fail at run time: one line, exit 1, no half-written file, the run resumable

def _no_space(*args, **kwargs):
    raise OSError(28, "No space left on device")


@pytest.mark.slow
@pytest.mark.parametrize("where", ["checkpoint", "metrics.json", "model/"])
def test_a_write_that_fails_is_one_line_exit_1_and_the_run_resumes(pristine, tmp_path, capsys, monkeypatch, where):
    import orbax.checkpoint as ocp

    from funcnn.training import runs

    run = tmp_path / "run"
    if where == "checkpoint":
        monkeypatch.setattr(ocp.CheckpointManager, "save", _no_space)
        expected = f"checkpoint {run.resolve()}/checkpoints/1: cannot be written (OSError: No space left on device)"
    elif where == "metrics.json":
        real = runs.write_atomically
        monkeypatch.setattr(runs, "write_atomically", lambda path, write: real(
            path, _no_space if Path(path).name == "metrics.json" else write))
        expected = f"{run}/metrics.json: cannot be written (OSError: No space left on device)"
    else:
        monkeypatch.setattr(ocp.StandardCheckpointer, "save", _no_space)
        expected = f"{run.resolve()}/model: cannot be written (OSError: No space left on device)"
    code, out, err = _call([*RUN, "--out", run], capsys)
    assert code == 1 and len(err) == 1 and err[0] == f"funcnn train: {expected}", err
    assert not list(run.rglob("*tmp*"))  # nothing half-written
    assert not (run / "model").exists()
    monkeypatch.undo()
    code, out, err = _call(["train", "--resume", run, "--no-progress"], capsys)
    assert code == 0 and err == [], err
    assert _bitwise(fn.load_run(run), fn.load_run(pristine))


@pytest.mark.skipif(ROOT, reason="root writes into read-only folders; the file-in-the-way cases cover it")
def test_read_only_run_folder_is_refused_before_training(copy, capsys):
    run = copy(unfinished=True)
    before = _digest(run)
    for p in [run, *run.rglob("*")]:
        if p.is_dir():
            os.chmod(p, 0o500)
    try:
        code, out, err = _call(["train", "--resume", run, "--no-progress"], capsys)
    finally:
        for p in [run, *run.rglob("*")]:
            if p.is_dir():
                os.chmod(p, 0o700)
    assert code == 2 and len(err) == 1 and "is not writable" in err[0], err
    assert _digest(run) == before


# ---- kills: a real SIGKILL during every kind of write, then resume

KILL = r"""
import os, signal, sys
from pathlib import Path
target = sys.argv[1]
import funcnn.training.runs as runs
from orbax.checkpoint._src.path import atomicity

finalize = atomicity.AtomicRenameTemporaryPath.finalize
async def killing_finalize(self, *a, **k):
    if self.get_final().name == target:  # the data is written, the rename that commits it is not
        os.kill(os.getpid(), signal.SIGKILL)
    return await finalize(self, *a, **k)
atomicity.AtomicRenameTemporaryPath.finalize = killing_finalize

replace = os.replace
def killing_replace(src, dst, *a, **k):
    if Path(dst).name == target:
        os.kill(os.getpid(), signal.SIGKILL)
    return replace(src, dst, *a, **k)
runs.os.replace = killing_replace

save_tree = runs.save_tree
def killing_save_tree(path, tree):
    if target == "between metrics and model":
        os.kill(os.getpid(), signal.SIGKILL)
    return save_tree(path, tree)
runs.save_tree = killing_save_tree

from funcnn.cli import main
sys.exit(main(sys.argv[2:]))
"""

KILLS = {  # target: what the folder holds after the kill
    "2": "checkpoint 2 half-written (orbax's temporary folder), checkpoint 1 intact",
    "run.json": "no run.json",
    "metrics.json": "the last checkpoint, no final files",
    "between metrics and model": "metrics.json and curves.png, no model/",
    "model": "model/ half-written (orbax's temporary folder)",
}


@pytest.fixture(scope="module")
def killed(tmp_path_factory):
    """Every kill's subprocess, started together (they compile and train the same tiny run);
    requested before ``pristine``, so that they train while it does."""
    root = tmp_path_factory.mktemp("killed")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(Path(__file__).parents[1]),
                                                                     os.environ.get("PYTHONPATH")])))
    procs = {target: (subprocess.Popen([sys.executable, "-c", KILL, target, *RUN, "--out", str(root / str(i))],
                                       env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
                      root / str(i)) for i, target in enumerate(KILLS)}
    yield procs
    for proc, _ in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.mark.slow
@pytest.mark.parametrize("target", list(KILLS))
def test_sigkill_during_a_write_then_resume_ends_bitwise_as_the_run_left_alone(killed, pristine, capsys, target):
    proc, run = killed[target]
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == -signal.SIGKILL, stderr[-2000:]
    assert not (run / "model").exists()
    if target == "run.json":  # killed before the record was renamed into place: not a run yet
        code, out, err = _call(["train", "--resume", run, "--no-progress"], capsys)
        assert code == 2 and len(err) == 1 and "expected a run folder written by funcnn train" in err[0]
        assert not (run / "run.json").exists()
        return
    steps = sorted(p.name for p in (run / "checkpoints").iterdir())
    if target == "2":
        assert steps[0] == "1" and any("tmp" in s for s in steps), steps
    else:
        assert steps == ["1", "2"]
        assert fn.load_run(run).source.endswith("checkpoints/2")  # loads, from its last checkpoint
    code, out, err = _call(["train", "--resume", run, "--no-progress"], capsys)
    assert code == 0 and err == [], err
    assert sorted(os.listdir(run)) == sorted(os.listdir(pristine))  # no temporary file or folder left
    assert sorted(os.listdir(run / "checkpoints")) == ["1", "2"]
    assert _bitwise(fn.load_run(run), fn.load_run(pristine))


# ---- flags out of range: one line, exit 2, nothing written

FLAGS = [
    (["sample", DATA / "run_gpt_v1", "--temperature", "0"], "argument --temperature: expected a number in (0, 1e+06]"),
    (["sample", DATA / "run_gpt_v1", "--temperature", "-1"], "argument --temperature: expected a number"),
    (["sample", DATA / "run_gpt_v1", "--temperature", "nan"], "argument --temperature: expected a number"),
    (["sample", DATA / "run_gpt_v1", "--temperature", "inf"], "argument --temperature: expected a number"),
    (["sample", DATA / "run_gpt_v1", "--temperature", "1e7"], "argument --temperature: expected a number"),
    (["sample", DATA / "run_gpt_v1", "--length", "0"], "argument --length: expected an integer in [1, 100000]"),
    (["sample", DATA / "run_gpt_v1", "--length", str(10**20)], "argument --length: expected an integer in [1, "),
    (["sample", DATA / "run_gpt_v1", "--length", "x"], "argument --length: expected an integer"),
    (["sample", DATA / "run_gpt_v1", "--seed", str(2**64)], "argument --seed: expected an integer seed in [0, "),
    (["sample", DATA / "run_gpt_v1", "--seed", "-1"], "argument --seed: expected an integer seed"),
    (["sample", DATA / "run_gpt_v1", "--prompt", ""], "--prompt: expected at least one character"),
    (["sample", DATA / "run_gpt_v1", "--prompt", "\u2603"], "--prompt: character '\u2603' is not in the run's"),
    (["train", "--coordinator", "nohost"], "argument --coordinator: expected HOST:PORT with a port in [1, 65535]"),
    (["train", "--coordinator", "h:0"], "argument --coordinator: expected HOST:PORT"),
    (["train", "--coordinator", "h:70000"], "argument --coordinator: expected HOST:PORT"),
    (["train", "--devices", "0"], "argument --devices: expected a positive integer"),
    (["train", "--devices", "100000"], "--devices: expected at most 4096, got 100000"),
    (["train", "--coordinator", "h:1", "--num-processes", "2", "--process-id", "2"],
     "--process-id: expected 0..1, got 2"),
    (["train", "--num-processes", "0"], "argument --num-processes: expected a positive integer"),
    (["train", "--model", "gpt", "--data", "pydoc", "--context", "100000"], "--context: expected at most 65536"),
    (["train", "--model", "gpt", "--data", "pydoc", "--steps", "0"], "argument --steps: expected a positive integer"),
    (["train", "--model", "gpt", "--data", "pydoc", "--eval-windows", "0"], "argument --eval-windows: expected a"),
    (["train", "--resume", DATA / "run_mlp_v1"], "--resume: the run in"),
    (["perceptron", "--epochs", str(10**9)], "argument --epochs: expected an integer in [1, 100000]"),
    (["bench", "--out", "afile"], "--out: expected a new or empty folder, 'afile' is an existing file"),
    (["bench", "--out", "afile/sub"], "--out: cannot create 'afile/sub': "),
    (["evaluate", "nowhere", "--data", "pydoc"], "--data: pydoc is text"),
]


@pytest.mark.parametrize("argv,expected", FLAGS)
def test_flag_out_of_range_is_one_line_exit_2_nothing_written(tmp_path, monkeypatch, capsys, argv, expected):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    before = _digest(tmp_path)
    if argv[0] == "train" and "--resume" not in argv:
        argv = [*argv, "--out", "never"]
    code, out, err = _call(argv, capsys)
    assert code == 2 and len(err) == 1 and expected in err[0] and err[0].startswith("funcnn"), (code, err)
    assert out == "" and _digest(tmp_path) == before and not (tmp_path / "never").exists()


@pytest.mark.slow
def test_tiny_temperatures_are_greedy_decoding(capsys):
    """Below 1e-6 the sampler takes the arg max: the same text for every tiny temperature and
    seed, and each character the most likely one given the text before it."""
    texts = set()
    for t, seed in (("1e-40", "0"), ("1e-7", "3"), ("5e-324", "1")):
        code, out, err = _call(["sample", DATA / "run_gpt_v1", "--prompt", "def ", "--length", "6",
                                "--temperature", t, "--seed", seed], capsys)
        assert code == 0 and err == []
        texts.add(out)
    assert len(texts) == 1
    text = texts.pop().rstrip("\n")
    run = fn.load_run(DATA / "run_gpt_v1")
    ids = [run.vocab.index(c) for c in text]
    context = run.input_shape[0]
    for n in range(len("def "), len(ids)):
        window = np.zeros(context, np.int32)
        k = min(n, context)
        window[:k] = ids[n - k:n]
        logits, _ = run.model.apply(run.params, run.state, window[None], train=False)
        assert int(np.argmax(np.asarray(logits[0, k - 1]))) == ids[n]


@pytest.mark.slow
def test_runs_written_by_the_first_format_load_evaluate_and_sample(tmp_path, capsys):
    mlp = fn.load_run(DATA / "run_mlp_v1")
    assert mlp.complete and mlp.kind == "mlp" and mlp.input_shape == (2,) and mlp.vocab is None
    metrics = json.loads((DATA / "run_mlp_v1" / "metrics.json").read_text())
    code, out, err = _call(["evaluate", DATA / "run_mlp_v1"], capsys)
    assert code == 0 and f"test loss {metrics['final']['test_loss']:.4f}" in out
    gpt = fn.load_run(DATA / "run_gpt_v1")
    assert gpt.complete and gpt.kind == "gpt" and gpt.input_shape == (8,) and len(gpt.vocab) == 103
    fresh = gpt.model.init(jax.random.key(0), (8,))[0]
    assert jax.tree_util.tree_structure(fresh) == jax.tree_util.tree_structure(gpt.params)
    code, out, err = _call(["sample", DATA / "run_gpt_v1", "--prompt", "def ", "--length", "5"], capsys)
    assert code == 0 and out.startswith("def ") and len(out) == len("def ") + 5 + 1
    # a first-format run whose final files are missing loads from its checkpoint, and resumes
    run = tmp_path / "old"
    shutil.copytree(DATA / "run_mlp_v1", run)
    shutil.rmtree(run / "model")
    assert not fn.load_run(run).complete and _bitwise(fn.load_run(run), mlp)
    code, out, err = _call(["train", "--resume", run, "--no-progress"], capsys)
    assert code == 0 and err == [] and fn.load_run(run).complete and _bitwise(fn.load_run(run), mlp)
