"""Argument types that reject bad values with one line naming what was expected."""
from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Any, Callable


class UsageError(Exception):
    """A bad value found after parsing (e.g. two flags that do not fit together)."""


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line and exit code 2, no usage dump."""

    def error(self, message: str) -> None:
        """Print ``<prog>: error: <message>`` on one line to stderr and exit with code 2.

        **Arguments:**

        - `message`: what was wrong, from ``argparse``.
        """
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


def arg_type(name: str, convert: Callable[[str], Any], ok: Callable[[Any], bool],
             expected: str) -> Callable[[str], Any]:
    """An argparse ``type``: ``convert(text)``, kept if ``ok(value)``, otherwise one line
    "expected <expected>, got '<text>'" (a ``ValueError`` or ``OverflowError`` of ``convert``
    counts as not ok)."""
    def parse(text: str):
        try:
            value = convert(text)
        except (ValueError, OverflowError):
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    parse.__name__ = name
    return parse


SEED_MAX = 2**32 - 1  # numpy/scikit-learn seeds are unsigned 32-bit

positive_float = arg_type("positive_float", float, lambda v: math.isfinite(v) and v > 0, "a positive number")
nonnegative_float = arg_type("nonnegative_float", float, lambda v: math.isfinite(v) and v >= 0, "a number >= 0")
finite_float = arg_type("finite_float", float, math.isfinite, "a finite number")
positive_int = arg_type("positive_int", int, lambda v: v > 0, "a positive integer")
nonnegative_int = arg_type("nonnegative_int", int, lambda v: v >= 0, "an integer >= 0")
seed = arg_type("seed", int, lambda v: 0 <= v <= SEED_MAX, f"an integer seed in [0, {SEED_MAX}]")
int_list = arg_type(  # "128,64" -> (128, 64): at least one entry, every one a positive integer
    "int_list", lambda text: tuple(int(t) for t in text.split(",")), lambda vs: all(v > 0 for v in vs),
    "comma-separated positive integers like 128,64")


def check_out_dir(path: str | os.PathLike | None, flag: str = "--out") -> Path:
    """The output folder must be new or empty, and creatable: checked before any work, so a
    bad ``--out`` costs nothing and nothing is written. Returns it as a ``Path``."""
    if path is None or str(path).strip() == "":
        raise UsageError(f"{flag}: expected a folder path, got {'' if path is None else str(path)!r}")
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise UsageError(f"{flag}: expected a new or empty folder, {str(path)!r} is an existing file")
        if any(path.iterdir()):
            raise UsageError(f"{flag}: expected a new or empty folder, {str(path)!r} is not empty "
                             f"(it may hold an earlier run)")
    parent = path.absolute()
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"{flag}: cannot create {str(path)!r}: {str(parent)!r} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{flag}: cannot create {str(path)!r}: folder {str(parent)!r} is not writable")
    return path


def _host_port(text: str) -> str:
    host, sep, port = text.rpartition(":")
    if not sep or not host.strip() or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(text)
    return text


coordinator = arg_type("coordinator", _host_port, lambda v: True, "HOST:PORT with a port in [1, 65535]")
