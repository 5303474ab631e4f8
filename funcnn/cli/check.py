"""``funcnn check``: the three-way gradient check of every built-in layer, loss and model.

Prints one table per layer/loss (hand-written backward vs autodiff vs finite
differences, float64, at random and at initial parameters) and one row per layer of
each built-in model (``check_model``), and exits 1 on any mismatch.
"""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("check", help="check every built-in backward against autodiff and finite differences",
                       description=__doc__.splitlines()[0])
    p.add_argument("--only", default="", help="comma-separated case names (default: all)")
    p.add_argument("--quiet", action="store_true", help="one line per case instead of tables")
    p.set_defaults(func=run)


def run(args) -> int:
    from funcnn.check import catalog
    from funcnn.cli.args import UsageError

    cases = [(c, catalog.run_layer_case) for c in catalog.LAYER_CASES]
    cases += [(c, catalog.run_loss_case) for c in catalog.LOSS_CASES]
    cases += [(c, catalog.run_model_case) for c in catalog.MODEL_CASES]
    if args.only:
        wanted = args.only.split(",")
        unknown = sorted(set(wanted) - {c.name for c, _ in cases})
        if unknown:
            raise UsageError(f"--only: unknown case(s) {', '.join(unknown)}; known: {', '.join(c.name for c, _ in cases)}")
        cases = [(c, f) for c, f in cases if c.name in wanted]
    import time

    failed, start = [], time.perf_counter()
    for case, run_case in cases:
        report = run_case(case)
        if args.quiet:
            print(f"{'ok      ' if report.ok else 'MISMATCH'}  {report.name}")
        else:
            print(report, end="\n\n")
        if not report.ok:
            failed.append(report.name)
    print(f"{len(cases) - len(failed)} passed, {len(failed)} failed" + (f": {', '.join(failed)}" if failed else "")
          + f" ({time.perf_counter() - start:.0f} s)")
    return 1 if failed else 0
