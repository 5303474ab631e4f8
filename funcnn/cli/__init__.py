"""The ``funcnn`` command line: ``train``, ``evaluate``, ``check``, ``perceptron``, ``neuron``, ``sample``, ``bench``.

Each subcommand lives in its own module with ``register(subparsers)``, which adds its
parser and sets ``func`` to the function that runs it; the modules parse and check flags and
call the library. Bad input (a flag, a run folder of the wrong kind or with a damaged record)
exits with code 2 and one line (``funcnn <cmd>: error: <flag>: <what was expected>``); a file
that cannot be read or written while the command runs exits 1 with one line naming it; no
traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from funcnn.cli.args import Parser, UsageError
from funcnn.core.extras import MissingExtra
from funcnn.training.runs import RunRecordError

COMMANDS = ("train", "evaluate", "check", "perceptron", "neuron", "sample", "bench")


def build_parser() -> argparse.ArgumentParser:
    """The ``funcnn`` parser with every subcommand registered."""
    parser = Parser(prog="funcnn", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name in COMMANDS:
        importlib.import_module(f"funcnn.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``funcnn ARGV`` (default: ``sys.argv[1:]``) and return its exit code."""
    try:
        parser = build_parser()
        args = parser.parse_args(argv)

        try:
            return int(args.func(args) or 0)
        except (UsageError, RunRecordError) as e:
            print(f"funcnn {args.command}: error: {e}", file=sys.stderr)
            return 2
        except MissingExtra as e:  # an optional dependency the command needs: the extra to install
            print(f"funcnn {args.command}: {e}", file=sys.stderr)
            return 1
        except OSError as e:  # a run folder or output file that cannot be read or written
            print(f"funcnn {args.command}: {e}", file=sys.stderr)
            return 1
    except KeyboardInterrupt:  # commands without checkpoints: one line, no traceback
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
