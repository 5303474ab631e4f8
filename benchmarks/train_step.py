"""Time one training step of the same model in funcnn and its peers, in one run.

    python benchmarks/train_step.py mlp [--rounds 30] [--runs 3] [--out benchmarks/results/train_step.md]

``--runs N`` repeats the whole measurement in N separate processes (each compiling and
autotuning afresh) and tabulates every run's medians and ratios side by side.

Models: ``mlp`` (784-512-512-10 ReLU, batch 128), ``cnn``, ``lstm``, ``gpt``, ``gpt2`` (GPT-2 small,
with tokens/s and peak memory); each defined in ``benchmarks/contenders_<model>.py`` with a
``contenders()`` dict and a ``TITLE``. All contenders use the same AdamW (``harness.adamw``) and
softmax cross-entropy on the same random data, every contender from funcnn's initial weights, and
``harness.check_equivalence`` proves them equal to funcnn's (losses, every gradient tensor) before timing.
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from harness import check_equivalence, full_float32, on_gpu, table, table_runs, time_interleaved, write_section  # noqa: E402

MODELS = ("mlp", "cnn", "lstm", "gpt", "gpt2")
DEFAULT_OUT = str(Path(__file__).resolve().parent / "results" / "train_step.md")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", choices=MODELS)
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--only", default="", help="comma-separated contender names (default: all)")
    p.add_argument("--runs", type=int, default=1, help="separate processes to repeat the measurement in")
    p.add_argument("--json", default=None, help=argparse.SUPPRESS)  # a child run writes its times here
    p.add_argument("--out", default=DEFAULT_OUT)
    args = p.parse_args(argv)
    full_float32()
    if args.runs > 1:
        return repeat(args)
    mod = importlib.import_module(f"contenders_{args.model}")
    only = args.only.split(",") if args.only else None
    contenders = mod.contenders(only=only) if "only" in inspect.signature(mod.contenders).parameters \
        else mod.contenders()
    if only:
        contenders = {k: v for k, v in contenders.items() if k in only}
    equivalence = check_equivalence(contenders, "funcnn manual")
    times = time_interleaved(contenders, rounds=args.rounds)
    if args.json:
        Path(args.json).write_text(json.dumps({"times": times, "equivalence": equivalence}))
        return
    command = f"python benchmarks/train_step.py {args.model} --rounds {args.rounds}"
    import jax

    key = f"{args.model}-{jax.devices()[0].platform}"
    text = table(times, mod.REFERENCE if mod.REFERENCE in times else next(iter(times)),
                 f"{mod.TITLE} ({jax.devices()[0].platform})", command, notes(mod, [times], [equivalence]))
    print(text)
    write_section(args.out, key, text)


def notes(mod, runs, equivalence):
    """The table's notes: the module's ``NOTES``, the equivalence check of the first run, and
    for a module with ``TOKENS`` (tokens per step) and ``peak_memory``, tokens/s and peak memory."""
    gpu = ("On the GPU, PyTorch runs on CUDA (the contenders that set its CPU threads are left out), and every "
           "float32 product runs in float32 in both libraries (no TF32)." if on_gpu() else "")
    parts = [getattr(mod, "NOTES", ""), gpu] + [e for e in equivalence[:1] if e]
    if hasattr(mod, "TOKENS"):
        names = sorted(runs[0], key=lambda n: np.mean([np.median(r[n]) for r in runs]))
        memory = mod.peak_memory(names) if hasattr(mod, "peak_memory") else {}
        rows = ["| contender | tokens/s (mean of the runs' medians) | " + mod.MEMORY_HEADER + " |", "|---|---:|---:|"]
        rows += [f"| {n} | {np.mean([mod.TOKENS / np.median(r[n]) for r in runs]):.0f} | {memory.get(n, '')} |"
                 for n in names]
        parts.append("\n".join(rows))
    return "\n\n".join(p for p in parts if p)


def repeat(args):
    """Run the measurement ``args.runs`` times, each in its own process; one table of all runs."""
    import jax

    mod = importlib.import_module(f"contenders_{args.model}")
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            out = Path(tmp) / f"run{i}.json"
            cmd = [sys.executable, __file__, args.model, "--rounds", str(args.rounds), "--json", str(out)]
            subprocess.run(cmd + (["--only", args.only] if args.only else []), check=True)
            runs.append(json.loads(out.read_text()))
    equivalence = [r["equivalence"] for r in runs]
    runs = [r["times"] for r in runs]
    command = f"python benchmarks/train_step.py {args.model} --rounds {args.rounds} --runs {args.runs}" + (
        f' --only "{args.only}"' if args.only else "") + (f" --out {args.out}" if args.out != DEFAULT_OUT else "")
    platform = jax.devices()[0].platform
    reference = mod.REFERENCE if mod.REFERENCE in runs[0] else next(iter(runs[0]))
    text = table_runs(runs, reference, f"{mod.TITLE} ({platform})", command, notes(mod, runs, equivalence))
    print(text)
    write_section(args.out, f"{args.model}-{platform}", text)


if __name__ == "__main__":
    main()
