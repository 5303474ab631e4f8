"""``funcnn check``: every case can be selected with ``--only``, by name or by prefix; its
worker processes share an accelerator's memory."""
import os

import pytest

from funcnn.check import catalog
from funcnn.cli.check import select, share_accelerator_memory, split_names

NAMES = [c.name for c in catalog.LAYER_CASES + catalog.LOSS_CASES + catalog.MODEL_CASES]


def test_no_case_name_holds_a_comma_outside_parentheses():
    for name in NAMES:
        assert split_names(name) == [name], name


def test_every_case_is_selectable_alone_and_all_together():
    for name in NAMES:
        assert select(NAMES, split_names(name)) == [name]
    assert select(NAMES, split_names(",".join(NAMES))) == NAMES


def test_prefix_selects_every_case_starting_with_it():
    assert select(NAMES, ["conv2d"]) == [n for n in NAMES if n.startswith("conv2d")]
    assert len(select(NAMES, ["conv2d"])) >= 2
    assert select(NAMES, ["model:"]) == [n for n in NAMES if n.startswith("model:")]
    assert select(NAMES, ["softmax"]) == ["softmax"]  # an exact name is not a prefix of others


@pytest.mark.parametrize("text, message", [
    ("dense,,relu", "empty entry"),
    ("", "empty entry"),
    ("conv2d(3x3,SAME", r"unbalanced '\('"),
    ("dense)", r"unbalanced '\)'"),
])
def test_bad_only_is_one_line(text, message):
    with pytest.raises(ValueError, match=message) as e:
        split_names(text)
    assert "\n" not in str(e.value)


def test_unknown_entry_is_named():
    with pytest.raises(ValueError, match=r"--only: unknown case\(s\) nonesuch;"):
        select(NAMES, ["dense", "nonesuch"])


def test_parallel_jobs_share_the_accelerators_memory(monkeypatch):
    """Several check processes on one GPU each take memory as they need it (JAX's default
    preallocation of 75 % lets only the first start); a value set by the user is kept."""
    monkeypatch.delenv("XLA_PYTHON_CLIENT_PREALLOCATE", raising=False)
    share_accelerator_memory(1)
    assert "XLA_PYTHON_CLIENT_PREALLOCATE" not in os.environ
    share_accelerator_memory(2)
    assert os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    monkeypatch.setenv("XLA_PYTHON_CLIENT_PREALLOCATE", "true")
    share_accelerator_memory(2)
    assert os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] == "true"
