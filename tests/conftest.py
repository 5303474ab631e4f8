import os
import sys
from pathlib import Path

import jax
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/helpers.py: the tolerance rule

# No test depends on a timing: the autotuner's measured choices (funcnn.core.autotune) are
# replaced by each op's fallback everywhere (subprocesses inherit this), except in
# tests/test_autotune.py, whose fixture clears it and drives the mechanism with a fake
# timer. Measuring conv candidates costs tens of seconds per shape on 2 loaded cores.
os.environ.setdefault("FUNCNN_AUTOTUNE", "0")


@pytest.fixture
def key():
    return jax.random.key(0)
