"""``funcnn sample``: generate text from a GPT trained by ``funcnn train --model gpt``.

Prints the prompt followed by ``--length`` generated characters, each drawn from
softmax(logits / ``--temperature``) given the (at most ``context``) characters before it.
A temperature below ``funcnn.training.sampling.GREEDY_BELOW`` is greedy decoding: each
character is the most likely one (the arg max of the logits, the limit of softmax(z / T) as
T -> 0). Keys and values are cached, so each character costs the same whatever the length.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from funcnn.cli.args import UsageError, arg_type, seed
from funcnn.data import text
from funcnn.training import sampling
from funcnn.training.runs import RunRecordError, load_run
from funcnn.training.sampling import GREEDY_BELOW

MAX_LENGTH = 100_000  # one compiled step per character
MAX_TEMPERATURE = 1e6

temperature = arg_type("temperature", float, lambda v: v == v and 0 < v <= MAX_TEMPERATURE,
                        f"a number in (0, {MAX_TEMPERATURE:g}] (below {GREEDY_BELOW:g}: greedy)")
length = arg_type("length", int, lambda v: 1 <= v <= MAX_LENGTH, f"an integer in [1, {MAX_LENGTH}]")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``sample`` parser to ``sub``."""
    p = sub.add_parser("sample", help="generate text from a trained gpt run", description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a folder written by funcnn train --model gpt")
    p.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    p.add_argument("--length", type=length, default=200, help="characters to generate")
    p.add_argument("--temperature", type=temperature, default=1.0,
                   help=f"softmax temperature; below {GREEDY_BELOW:g}: greedy decoding")
    p.add_argument("--seed", type=seed, default=0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the GPT run, encode the prompt, sample, print."""
    if args.prompt == "":
        raise UsageError("--prompt: expected at least one character, got ''")
    if not (args.run_dir / "run.json").is_file():
        raise UsageError(f"RUN_DIR: expected a folder written by funcnn train --model gpt (with run.json), "
                         f"got {str(args.run_dir)!r}")
    import jax


    try:
        r = load_run(args.run_dir, kind="gpt")
    except RunRecordError as e:
        raise UsageError(f"RUN_DIR: {str(e).removeprefix('load_run: ')}") from None
    bad = [c for c in args.prompt if c not in r.vocab]
    if bad:
        raise UsageError(f"--prompt: character {bad[0]!r} is not in the run's vocabulary")
    corpus = text.Corpus(None, None, r.vocab, "sample")
    ids = sampling.sample(r.model, r.params, corpus.encode(args.prompt), context=r.input_shape[0],
                          length=args.length, temperature=args.temperature, key=jax.random.key(args.seed))
    print(args.prompt + corpus.decode(ids))
    return 0
