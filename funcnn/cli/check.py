"""``funcnn check``: the three-way gradient check of every built-in layer, loss and model.

Prints one table per layer/loss (hand-written backward vs autodiff vs finite
differences, float64, at random and at initial parameters, in every formulation the
autotuner can pick) and one row per layer of each built-in model (``check_model``), and
exits 1 on any mismatch.

``--only`` selects cases: a comma-separated list split only at commas outside
parentheses (case names such as ``conv2d(3x3,SAME)`` hold commas, never outside
parentheses), and may be given several times. Each entry selects the case of exactly that
name, or else every case whose name starts with it (``conv2d`` selects both convolutions,
``model:`` every model).

The cases are shared out to ``--jobs`` worker processes (default 2: compiling a check,
most of its time, keeps about one core busy), the models first, and printed in catalog
order. ``--quiet`` prints one line per case with its seconds. With ``JAX_COMPILATION_CACHE_DIR``
set (JAX's persistent compilation cache) a second run reuses the compiled checks.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import os
import time

from funcnn.cli.args import UsageError, positive_int


def split_names(text: str) -> list[str]:
    """``text`` split at the commas outside parentheses, each entry stripped.

    **Arguments:**

    - `text`: e.g. `"dense,conv2d(3x3,SAME)"`.

    **Returns:**

    The entries, e.g. `["dense", "conv2d(3x3,SAME)"]`. Raises `ValueError` (one line) for an
    empty entry or unbalanced parentheses.
    """
    parts, depth, current = [], 0, ""
    for ch in text:
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth < 0:
            raise ValueError(f"--only: unbalanced ')' in {text!r}")
        current += ch
    if depth != 0:
        raise ValueError(f"--only: unbalanced '(' in {text!r}")
    parts.append(current)
    parts = [p.strip() for p in parts]
    if any(not p for p in parts):
        raise ValueError(f"--only: expected comma-separated case names (or prefixes), got an empty entry in {text!r}")
    return parts


def select(names: list[str], wanted: list[str]) -> list[str]:
    """The case names ``wanted`` selects, in catalog order (module docstring).

    **Arguments:**

    - `names`: every case name; `wanted`: the entries of ``--only``.

    **Returns:**

    The selected names. Raises `ValueError` (one line) naming the entries that select nothing.
    """
    chosen, unknown = set(), []
    for entry in wanted:
        hits = [entry] if entry in names else [n for n in names if n.startswith(entry)]
        if not hits:
            unknown.append(entry)
        chosen.update(hits)
    if unknown:
        raise ValueError(f"--only: unknown case(s) {', '.join(unknown)}; known: {', '.join(names)}")
    return [n for n in names if n in chosen]


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``check`` subcommand (``--only``, ``--quiet``, ``--jobs``) to the ``funcnn`` parser.

    **Arguments:**

    - `sub`: the subparsers of the ``funcnn`` parser (``add_subparsers()``).
    """
    p = sub.add_parser("check", help="check every built-in backward against autodiff and finite differences",
                       description=__doc__.splitlines()[0])
    p.add_argument("--only", action="append", default=[],
                   help="case names or name prefixes, comma-separated (commas inside parentheses belong to "
                        "the name); may be repeated (default: all)")
    p.add_argument("--quiet", action="store_true", help="one line per case instead of tables")
    p.add_argument("--jobs", type=positive_int, default=min(os.cpu_count() or 1, 2), metavar="N",
                   help="worker processes the cases are shared out to (default: 2, or 1 on one core); "
                        "compiling a check is mostly single-threaded")
    p.set_defaults(func=run)


def run_cases(names: list[str], quiet: bool) -> list[tuple[str, bool, str]]:
    """Run the catalog cases named ``names`` here, in order (what a worker process does).

    **Arguments:**

    - `names`: case names of ``funcnn.check.catalog``; `quiet`: one line per case.

    **Returns:**

    ``[(name, ok, printed text)]``, one per case.
    """
    from funcnn.check import catalog  # deferred: see run

    runners = {c.name: (c, catalog.run_layer_case) for c in catalog.LAYER_CASES}
    runners |= {c.name: (c, catalog.run_loss_case) for c in catalog.LOSS_CASES}
    runners |= {c.name: (c, catalog.run_model_case) for c in catalog.MODEL_CASES}
    out = []
    for name in names:
        case, run_case = runners[name]
        t = time.perf_counter()
        report = run_case(case)
        seconds = time.perf_counter() - t
        text = (f"{'ok      ' if report.ok else 'MISMATCH'}  {seconds:5.1f} s  {report.name}" if quiet
                else f"{report}\n")
        out.append((name, report.ok, text))
    return out


def share_accelerator_memory(jobs: int) -> None:
    """With ``jobs`` > 1 worker processes, every process of the check (this one and its workers)
    takes accelerator memory as it needs it (``XLA_PYTHON_CLIENT_PREALLOCATE=false``), instead
    of JAX's default of 75 % of a GPU's memory when its backend starts, which lets only the first
    process start and fails the others with out-of-memory. A value you set wins; no effect on CPU.
    Call before JAX's backend starts (the workers inherit the environment).

    **Arguments:**

    - `jobs`: the number of worker processes.
    """
    if jobs > 1:
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")


def run(args: argparse.Namespace) -> int:
    """Run the selected cases (all by default), print their reports and a summary line.

    **Arguments:**

    - `args`: the parsed arguments (`only`, `quiet`, `jobs`).

    **Returns:**

    The exit code: 0 when every case passed, 1 otherwise. Raises ``UsageError`` for an
    ``--only`` entry that selects nothing or is malformed.
    """
    # deferred: the catalog builds its cases' arrays at import, which starts JAX's backend, and
    # every command module is imported to build the parser (`funcnn train --devices N` must
    # still set the CPU device count before the backend starts)
    share_accelerator_memory(args.jobs)
    from funcnn.check import catalog

    names = [c.name for c in (*catalog.LAYER_CASES, *catalog.LOSS_CASES, *catalog.MODEL_CASES)]
    if args.only:
        try:
            names = select(names, [name for text in args.only for name in split_names(text)])
        except ValueError as e:
            raise UsageError(str(e)) from None
    jobs = min(args.jobs, len(names))
    failed, start = [], time.perf_counter()
    if jobs <= 1:
        results = (r for name in names for r in run_cases([name], args.quiet))
    else:  # the models first (the longest cases), each case a task of its own; printed in catalog order
        pool = concurrent.futures.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"))
        order = sorted(names, key=lambda n: not n.startswith("model:"))
        futures = {n: pool.submit(run_cases, [n], args.quiet) for n in order}
        results = (r for name in names for r in futures[name].result())
    try:
        for name, ok, text in results:
            print(text, flush=True)
            if not ok:
                failed.append(name)
    finally:
        if jobs > 1:
            pool.shutdown(cancel_futures=True)
    print(f"{len(names) - len(failed)} passed, {len(failed)} failed" + (f": {', '.join(failed)}" if failed else "")
          + f" ({time.perf_counter() - start:.0f} s)")
    return 1 if failed else 0
