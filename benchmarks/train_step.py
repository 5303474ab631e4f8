"""Time one training step of the same model in funcnn and its peers, in one run.

    python benchmarks/train_step.py mlp [--rounds 30] [--out benchmarks/results/train_step.md]

Models: ``mlp`` (784-512-512-10 ReLU, batch 128), ``cnn``, ``lstm``, ``gpt``; each defined in
``benchmarks/contenders_<model>.py`` with a ``contenders()`` dict and a ``TITLE``.
All contenders use Adam and softmax cross-entropy on the same random data.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import table, time_interleaved, write_section  # noqa: E402

MODELS = ("mlp", "cnn", "lstm", "gpt")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", choices=MODELS)
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--only", default="", help="comma-separated contender names (default: all)")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "train_step.md"))
    args = p.parse_args(argv)
    mod = importlib.import_module(f"contenders_{args.model}")
    contenders = mod.contenders()
    if args.only:
        contenders = {k: v for k, v in contenders.items() if k in args.only.split(",")}
    times = time_interleaved(contenders, rounds=args.rounds)
    command = f"python benchmarks/train_step.py {args.model} --rounds {args.rounds}"
    import jax

    key = f"{args.model}-{jax.devices()[0].platform}"
    text = table(times, mod.REFERENCE if mod.REFERENCE in times else next(iter(times)),
                 f"{mod.TITLE} ({jax.devices()[0].platform})", command, getattr(mod, "NOTES", ""))
    print(text)
    write_section(args.out, key, text)


if __name__ == "__main__":
    main()
