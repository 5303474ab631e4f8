"""Differentiable fit and the ``funcnn neuron`` command line."""
import os

import pytest

from funcnn.cli import neuron
from funcnn.cli.args import Parser, UsageError
from funcnn.science.neurons import PRESETS, fit_parameters, simulate


@pytest.mark.slow
def test_fit_recovers_parameters_from_voltage_trace():
    true = PRESETS["hopf"]
    tgt = simulate(true, 100.0, 200.0, dt=0.5, y0=true.cycle_seed())
    guess = true._replace(gCa=4.4 * 1.1, gK=8.0 * 0.9, phi=0.04 * 1.15)
    res = fit_parameters(guess, tgt["V"], ["gCa", "gK", "phi"], 100.0, 200.0, dt=0.5,
                         y0=true.cycle_seed(), steps=100, learning_rate=0.02)
    assert res.losses[-1] < 1e-2 * res.losses[0]
    for k in ("gCa", "gK", "phi"):
        assert getattr(res.params, k) == pytest.approx(getattr(true, k), rel=0.02)


def _run(argv):
    p = Parser(prog="funcnn")
    neuron.register(p.add_subparsers(dest="command", required=True, parser_class=Parser))
    args = p.parse_args(argv)
    try:
        return args.func(args)
    except UsageError as e:
        print(f"funcnn {args.command}: error: {e}")
        return 2


@pytest.mark.slow
def test_cli_simulate_and_phase_write_outputs(tmp_path, capsys):
    out = tmp_path / "sim"
    assert _run(["neuron", "simulate", "--model", "hh", "--current", "10", "--t-max", "30",
                 "--dt", "0.025", "--out", str(out)]) == 0
    assert (out / "trace.csv").exists() and (out / "trace.png").exists()
    assert open(out / "trace.csv").readline().strip() == "t,V,m,h,n"
    out = tmp_path / "ph"
    assert _run(["neuron", "phase", "--model", "ml", "--preset", "snlc", "--current", "30",
                 "--t-max", "300", "--dt", "0.5", "--out", str(out)]) == 0
    assert (out / "phase.png").exists()
    assert capsys.readouterr().out.count("equilibrium V=") == 3


@pytest.mark.slow
def test_cli_fi_prints_onset_line(tmp_path, capsys):
    out = tmp_path / "fi"
    assert _run(["neuron", "fi", "--model", "ml", "--currents", "80:110:4", "--t-max", "1000",
                 "--dt", "1", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    onset = [ln for ln in lines if ln.startswith("onset")]
    assert len(onset) == 1 and "from_rest=" in onset[0] and "lowest_on_cycle=" in onset[0]
    assert (out / "fi.csv").exists() and (out / "fi.png").exists()


@pytest.mark.parametrize("argv,msg", [
    (["simulate", "--model", "ml", "--current", "100", "--param", "gK=-1"], "gK must be >= 0"),
    (["simulate", "--model", "hh", "--current", "10", "--t-max", "5"], "too short"),
    (["fi", "--model", "ml", "--currents", "80:100:5", "--t-max", "300"], "too short"),
    (["simulate", "--model", "hh", "--current", "10", "--dt", "0.2"], "--dt"),
])
def test_cli_bad_parameters_error_and_write_nothing(tmp_path, capsys, argv, msg):
    out = tmp_path / "bad"
    assert _run(["neuron", *argv, "--out", str(out)]) == 2
    assert msg in capsys.readouterr().out
    assert not os.path.exists(out)


@pytest.mark.parametrize("argv", [["simulate", "--current", "1", "--dt", "0"],
                                  ["fi", "--currents", "5:3:10"],
                                  ["simulate", "--current", "1", "--param", "gK"]])
def test_cli_bad_flags_exit_2(tmp_path, argv):
    with pytest.raises(SystemExit) as e:
        _run(["neuron", *argv, "--out", str(tmp_path / "x")])
    assert e.value.code == 2
    assert not os.path.exists(tmp_path / "x")
