"""Run a Python script of ``tests/`` in a fresh process, with this checkout importable.

The multi-device tests need their own processes: the number of CPU devices is fixed
when JAX's backend starts, and the pytest process has started it with one device (the
rest of the suite keeps that single default device)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent), os.environ.get("PYTHONPATH", "")])}


def command(script, *args):
    return [sys.executable, str(TESTS / script), *map(str, args)]


def run(script, *args, timeout, **env):
    """``subprocess.run`` of ``tests/<script> args``; ``env`` adds environment variables."""
    return subprocess.run(command(script, *args), capture_output=True, text=True, timeout=timeout,
                          env={**ENV, **env})
