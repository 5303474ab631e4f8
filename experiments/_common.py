"""What the experiment scripts share: their command line, and writing a table and a figure.

Each script writes ``NAME.md`` (a markdown table) and ``NAME.png`` into
``experiments/results/``, or ``experiments/results/quick/`` with ``--quick``, or ``--out DIR``.
"""
from __future__ import annotations

import argparse
import pathlib

RESULTS = pathlib.Path(__file__).resolve().parent / "results"


def parse(doc: str, argv=None):
    """Parse ``--quick`` and ``--out``; returns ``(args, output folder)``."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny smoke run (few epochs, one seed)")
    p.add_argument("--out", type=pathlib.Path, default=None,
                   help="output folder (default experiments/results, or experiments/results/quick with --quick)")
    args = p.parse_args(argv)
    return args, args.out or (RESULTS / "quick" if args.quick else RESULTS)


def write(out: pathlib.Path, name: str, lines: list, fig, elapsed: float) -> None:
    """Write the table ``out/name.md`` and the figure ``out/name.png``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.md").write_text("\n".join(lines))
    fig.tight_layout()
    fig.savefig(out / f"{name}.png", dpi=120)
    print(f"wrote {out / f'{name}.md'} and .png in {elapsed:.0f} s")
