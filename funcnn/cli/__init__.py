"""The ``funcnn`` command line: ``train``, ``evaluate``, ``check``, ``perceptron``, ``neuron``, ``sample``, ``bench``.

Each subcommand lives in its own module with ``register(subparsers)``, which adds its
parser and sets ``func`` to the function that runs it. Bad input exits with code 2
and one line (``funcnn <cmd>: error: <flag>: <what was expected>``), no traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from funcnn.cli.args import Parser, UsageError

COMMANDS = ("train", "evaluate", "check", "perceptron", "neuron", "sample", "bench")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="funcnn", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name in COMMANDS:
        importlib.import_module(f"funcnn.cli.{name}").register(sub)
    return parser


def main(argv=None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        try:
            return int(args.func(args) or 0)
        except UsageError as e:
            print(f"funcnn {args.command}: error: {e}", file=sys.stderr)
            return 2
    except KeyboardInterrupt:  # commands without checkpoints: one line, no traceback
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
