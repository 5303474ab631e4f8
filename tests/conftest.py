import sys
from pathlib import Path

import jax
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/helpers.py: the tolerance rule


@pytest.fixture
def key():
    return jax.random.key(0)
