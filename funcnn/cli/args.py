"""Argument types that reject bad values with one line naming what was expected."""
from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path


class UsageError(Exception):
    """A bad value found after parsing (e.g. two flags that do not fit together)."""


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line and exit code 2, no usage dump."""

    def error(self, message):
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


def _arg_type(name: str, convert, ok, expected: str):
    """An argparse ``type``: ``convert(text)``, kept if ``ok(value)``, otherwise one line
    "expected <expected>, got '<text>'"."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    parse.__name__ = name
    return parse


SEED_MAX = 2**32 - 1  # numpy/scikit-learn seeds are unsigned 32-bit

positive_float = _arg_type("positive_float", float, lambda v: math.isfinite(v) and v > 0, "a positive number")
nonnegative_float = _arg_type("nonnegative_float", float, lambda v: math.isfinite(v) and v >= 0, "a number >= 0")
finite_float = _arg_type("finite_float", float, math.isfinite, "a finite number")
positive_int = _arg_type("positive_int", int, lambda v: v > 0, "a positive integer")
nonnegative_int = _arg_type("nonnegative_int", int, lambda v: v >= 0, "an integer >= 0")
seed = _arg_type("seed", int, lambda v: 0 <= v <= SEED_MAX, f"an integer seed in [0, {SEED_MAX}]")
int_list = _arg_type(  # "128,64" -> (128, 64): at least one entry, every one a positive integer
    "int_list", lambda text: tuple(int(t) for t in text.split(",")), lambda vs: all(v > 0 for v in vs),
    "comma-separated positive integers like 128,64")


def check_out_dir(path, flag: str = "--out") -> Path:
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
