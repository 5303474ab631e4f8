"""``funcnn check --only``: every case can be selected, by name or by prefix."""
import pytest

from funcnn.check import catalog
from funcnn.cli.check import select, split_names

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
