"""``funcnn sample RUN_DIR``: generate text from a GPT trained by ``funcnn train --model gpt``.

Prints the prompt followed by ``--length`` generated characters, each drawn from
softmax(logits / ``--temperature``) given the (at most ``context``) characters before it.
"""
from __future__ import annotations

from pathlib import Path

from funcnn.cli.args import UsageError, positive_float, positive_int


def register(sub) -> None:
    p = sub.add_parser("sample", help="generate text from a trained gpt run", description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a folder written by funcnn train --model gpt")
    p.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    p.add_argument("--length", type=positive_int, default=200, help="characters to generate")
    p.add_argument("--temperature", type=positive_float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args) -> int:
    if not (args.run_dir / "run.json").is_file():
        raise UsageError(f"RUN_DIR: expected a folder written by funcnn train --model gpt (with run.json), "
                         f"got {str(args.run_dir)!r}")
    if args.prompt == "":
        raise UsageError("--prompt: expected at least one character, got ''")
    import jax

    from funcnn.data import text
    from funcnn.training import lm

    model, params, run_info = lm.load_run(args.run_dir)
    corpus = text.Corpus(None, None, run_info["vocab"], "sample")
    try:
        prompt = corpus.encode(args.prompt)
    except ValueError:
        bad = next(c for c in args.prompt if c not in run_info["vocab"])
        raise UsageError(f"--prompt: character {bad!r} is not in the run's vocabulary") from None
    ids = lm.sample(model, params, prompt, context=run_info["config"]["context"], length=args.length,
                    temperature=args.temperature, key=jax.random.key(args.seed))
    print(args.prompt + corpus.decode(ids))
    return 0
