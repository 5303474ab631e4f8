"""Every Python example in README.md and docs/ runs, and shows what it prints.

Conventions of the pages (what this file enforces):

- Every ```` ```python ```` block runs. The blocks of one page run in order in one
  namespace (a page reads like a notebook), in a temporary working folder.
- A block not meant to run has the line ``<!-- no-run -->`` right before its fence.
- A ```` ```text ```` block whose fence opens on the line right after a python block's
  closing fence is that block's output: the printed text must match it, words exactly
  (runs of spaces aside) and numbers up to noise (relative 5 %, or both below 1e-6 in
  magnitude: rounding-level values such as a float64 relative error). ``...`` in the
  expected text matches anything within its line.
- Every file the experiment and benchmark scripts write is shown on a results page, and
  README.md's test command is the one ``.ci/run`` runs.
"""
from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```(?P<info>[^\n`]*)\n(?P<body>.*?)^```[ \t]*$", re.S | re.M)
NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")
REL_NOISE, ABS_FLOOR = 0.05, 1e-6


def blocks(text: str) -> list[tuple[str, str | None]]:
    """The page's runnable python blocks in order, each with its expected output (or None)."""
    found = []
    fences = list(FENCE.finditer(text))
    for i, fence in enumerate(fences):
        if fence.group("info").strip() != "python":
            continue
        before = text[: fence.start()].rstrip("\n").rsplit("\n", 1)[-1]
        if before.strip() == "<!-- no-run -->":
            continue
        expected = None
        if i + 1 < len(fences):
            nxt = fences[i + 1]
            if nxt.start() == fence.end() + 1 and nxt.group("info").strip() == "text":
                expected = nxt.group("body")
        found.append((fence.group("body"), expected))
    return found


def pages_with_code() -> list[Path]:
    return [p for p in PAGES if blocks(p.read_text(encoding="utf-8"))]


def _tokens(line: str) -> list[str | float]:
    out: list[str | float] = []
    pos = 0
    for m in NUMBER.finditer(line):
        out += line[pos: m.start()].split()
        out.append(float(m.group()))
        pos = m.end()
    return out + line[pos:].split()


def _close(a: float, b: float) -> bool:
    if abs(a) < ABS_FLOOR and abs(b) < ABS_FLOOR:
        return True
    return abs(a - b) <= REL_NOISE * max(abs(a), abs(b))


def _line_matches(expected: str, actual: str) -> bool:
    if "..." in expected:  # words around the ellipsis exactly, anything in between
        pattern = ".*".join(re.escape(" ".join(part.split())) for part in expected.split("..."))
        return re.fullmatch(pattern, " ".join(actual.split())) is not None
    exp, act = _tokens(expected), _tokens(actual)
    if len(exp) != len(act):
        return False
    for e, a in zip(exp, act):
        if isinstance(e, float) != isinstance(a, float):
            return False
        if isinstance(e, float) and not _close(e, a):
            return False
        if isinstance(e, str) and e != a:
            return False
    return True


def outputs_match(expected: str, actual: str) -> bool:
    """Whether ``actual`` printed text is ``expected`` up to numbers' noise (see the module docstring)."""
    exp = [l for l in expected.strip("\n").splitlines() if l.strip()]
    act = [l for l in actual.strip("\n").splitlines() if l.strip()]
    return len(exp) == len(act) and all(_line_matches(e, a) for e, a in zip(exp, act))


@pytest.mark.slow
@pytest.mark.parametrize("page", pages_with_code(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_page_examples_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing an example writes lands in the checkout
    rel = page.relative_to(ROOT).as_posix()
    namespace = {"__name__": "__docs__"}
    for index, (code, expected) in enumerate(blocks(page.read_text(encoding="utf-8"))):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, f"{rel} python block {index}", "exec"), namespace)
        if expected is not None:
            assert outputs_match(expected, out.getvalue()), (
                f"{rel} python block {index} printed\n{out.getvalue()}\nbut the page shows\n{expected}")


def test_output_comparison_is_strict_about_words_and_loose_about_noise():
    assert outputs_match("loss 0.5012, rel 7.0e-12 ok", "loss 0.5003, rel 3.1e-13 ok")
    assert not outputs_match("loss 0.5012 ok", "loss 0.61 ok")
    assert not outputs_match("backward: ok", "backward: MISMATCH")
    assert not outputs_match("a\nb", "a")
    assert outputs_match("epoch ... done", "epoch 3/3 [=====] done")


def test_marked_blocks_are_skipped_and_outputs_paired():
    page = "```python\nprint(1)\n```\n```text\n1\n```\n\n<!-- no-run -->\n```python\nraise SystemExit\n```\n"
    assert blocks(page) == [("print(1)\n", "1\n")]


def test_every_result_file_has_a_page():
    """Each table the scripts write is included by a results page, so none is hand-copied or forgotten."""
    included = set()
    for page in (ROOT / "docs").rglob("*.md"):
        included |= set(re.findall(r"<!-- include: ([^ #]+)", page.read_text(encoding="utf-8")))
    written = {p.relative_to(ROOT).as_posix() for folder in ("experiments/results", "benchmarks/results")
               for p in (ROOT / folder).rglob("*.md") if "quick" not in p.parts}
    assert written - included == set()
    assert all((ROOT / path).is_file() for path in included)


def test_readme_is_short_and_its_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 150
    command = "python -m pytest -n 2 tests"
    assert command in readme
    ci = [l.strip() for l in (ROOT / ".ci/run").read_text().splitlines() if not l.lstrip().startswith("#")]
    assert command in ci
    assert 'pip install -e ".[docs]" && mkdocs serve' in readme


def test_cli_fi_default_run_is_the_excitability_experiments():
    """The neuron guide says `funcnn neuron fi` runs the simulations of experiments/excitability.py."""
    from funcnn.cli.neuron import FI_RUN

    text = (ROOT / "experiments/excitability.py").read_text()
    assert 'ML_RUN, HH_RUN = FI_RUN["ml"], FI_RUN["hh"]' in text
    assert FI_RUN["hh"] == {"t_max": 1000.0, "dt": 0.025}
