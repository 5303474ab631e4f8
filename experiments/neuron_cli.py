"""The README's ``funcnn neuron fi`` example, run as written: its printed onset line, recorded.

    python experiments/neuron_cli.py

Writes experiments/results/neuron_cli.md with the command and the line it prints; the
README quotes that line (``tests/test_readme.py`` checks they agree). The command's
default run for ``fi`` (``FI_RUN`` in ``funcnn/cli/neuron.py``: HH 1000 ms at dt 0.025 ms)
is the run of ``experiments/excitability.py``; its onset from rest differs from that
table's only by where the bisection bracket starts (tolerance 1e-4).
"""
from __future__ import annotations

import contextlib
import io
import pathlib
import tempfile

from funcnn.cli import main

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
COMMAND = ["neuron", "fi", "--model", "hh", "--currents", "0:20:41"]


def run():
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()) as out:
        code = main([*COMMAND, "--out", str(pathlib.Path(tmp) / "fi")])
    assert code == 0, out.getvalue()
    return next(ln for ln in out.getvalue().splitlines() if ln.startswith("onset"))


if __name__ == "__main__":
    line = run()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "neuron_cli.md").write_text(
        "# `funcnn neuron` example, as printed\n\n```\nfuncnn " + " ".join(COMMAND) + f"\n#   -> {line}\n```\n"
        "\nReproduce: `python experiments/neuron_cli.py`.\n")
    print(line)
