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


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def nonnegative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def int_list(text: str) -> tuple[int, ...]:
    """``"128,64"`` -> (128, 64); at least one entry, every entry a positive integer."""
    try:
        values = tuple(int(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive integers like 128,64, got {text!r}") from None
    if any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive integers like 128,64, got {text!r}")
    return values


SEED_MAX = 2**32 - 1  # numpy/scikit-learn seeds are unsigned 32-bit


def seed(text: str) -> int:
    """An integer seed in [0, 2**32 - 1]."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed in [0, {SEED_MAX}], got {text!r}") from None
    if not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"expected an integer seed in [0, {SEED_MAX}], got {text!r}")
    return value


def finite_float(text: str) -> float:
    """Any finite number (no nan, no inf)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


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
