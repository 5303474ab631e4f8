"""The README's `funcnn neuron fi` output line is the one experiments/neuron_cli.py recorded."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_quotes_the_recorded_onset_line():
    recorded = re.search(r"#   -> (onset .*)", (ROOT / "experiments/results/neuron_cli.md").read_text()).group(1)
    assert f"#   -> {recorded}" in (ROOT / "README.md").read_text()


def test_cli_fi_default_run_is_the_excitability_experiments():
    from funcnn.cli.neuron import FI_RUN

    text = (ROOT / "experiments/excitability.py").read_text()
    assert 'ML_RUN, HH_RUN = FI_RUN["ml"], FI_RUN["hh"]' in text
    assert FI_RUN["hh"] == {"t_max": 1000.0, "dt": 0.025}
