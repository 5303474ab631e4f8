"""``funcnn bench``: time the core kernels and the model training steps on this backend.

Prints a table (median and IQR ms, compile ms apart, achieved GFLOP/s, % of the measured
GEMM peak) and writes it as ``bench.md``, with ``bench.json`` and ``roofline.png``, into ``--out`` (default
``bench/<timestamp>``). ``--quick``: smaller models and fewer rounds (under 30 s on a
quiet 2-core CPU); the full run takes under two minutes there.
"""
from __future__ import annotations

import argparse

from funcnn import bench
from funcnn.bench import report
from funcnn.cli.args import check_out_dir


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``bench`` parser to ``sub``."""
    p = sub.add_parser("bench", help="time kernels and training steps; GFLOP/s and %% of this machine's peak",
                       description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smaller models, fewer rounds")
    p.add_argument("--no-peers", action="store_true", help="skip PyTorch even when installed")
    p.add_argument("--out", default=None, help="output folder (default bench/<timestamp>)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Check ``--out``, time everything, print the table and write the report files."""
    import datetime
    import json
    from pathlib import Path


    out = check_out_dir(args.out if args.out is not None else
                        Path("bench") / datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
    result = bench.run(bench.QUICK if args.quick else bench.FULL, peers=not args.no_peers)
    text = report.table(result)
    print()
    print(text)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.md").write_text(text)
    (out / "bench.json").write_text(json.dumps(result, indent=1))
    report.roofline(result, out / "roofline.png")
    print(f"wrote {out / 'bench.md'}, {out / 'bench.json'} and {out / 'roofline.png'}")
    return 0
