"""The flags of ``funcnn train --model gpt --data pydoc``: a character-level GPT on the pydoc corpus.

``funcnn train`` (``funcnn.cli.train``) owns the shared flags and adds these. Trains for
``--steps`` steps (or ``--epochs`` passes' worth of windows), prints the validation loss per
evaluation (every ``--eval-every`` steps), and writes the run folder as for every model
(``funcnn.training.runs``; ``funcnn sample`` reads it). ``--precision`` and the data-parallel
flags work as for the other models.
"""
from __future__ import annotations

import argparse

from funcnn.cli.args import UsageError, positive_int

GPT_ARGS = ("steps", "context", "layers", "heads", "width", "eval_every", "eval_windows")
MAX_CONTEXT = 65536  # positions per window: far past what the corpus or memory allows anyway


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the GPT flags to ``funcnn train``'s parser ``p``."""
    g = p.add_argument_group("gpt (--model gpt --data pydoc)")
    g.add_argument("--steps", type=positive_int, default=None,
                   help="training steps (default: --epochs passes over the training characters)")
    g.add_argument("--context", type=positive_int, default=64, help="characters per window")
    g.add_argument("--layers", type=positive_int, default=4)
    g.add_argument("--heads", type=positive_int, default=4)
    g.add_argument("--width", type=positive_int, default=128)
    g.add_argument("--eval-every", type=positive_int, default=100, help="steps between validation losses")
    g.add_argument("--eval-windows", type=positive_int, default=None,
                   help="validation windows per evaluation (default: all)")


def validate(args: argparse.Namespace) -> None:
    """The GPT flags agree with each other and with the shared ones; raises ``UsageError``."""
    if args.model != "gpt":
        raise UsageError(f"--model: the pydoc corpus is text, use --model gpt, got {args.model!r}")
    if args.data != "pydoc":
        raise UsageError(f"--data: gpt trains on text, use --data pydoc, got {args.data!r}")
    if args.loss != "softmax_cross_entropy":
        raise UsageError(f"--loss: gpt trains with softmax_cross_entropy, got {args.loss!r}")
    if args.l2:
        raise UsageError(f"--l2: not supported with --model gpt, got {args.l2}")
    if args.width % args.heads:
        raise UsageError(f"--width: expected a multiple of --heads ({args.heads}), got {args.width}")
    if args.context > MAX_CONTEXT:
        raise UsageError(f"--context: expected at most {MAX_CONTEXT}, got {args.context}")
