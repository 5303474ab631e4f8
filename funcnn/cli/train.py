"""``funcnn train``: train a network with the hand-written backward (or autodiff).

Prints the final train/test accuracy (a GPT: the validation loss per evaluation) and the
largest relative difference between the manual and autodiff gradients at the first step.
The run folder ``--out`` (default ``runs/<timestamp>``), checked before any work, is written
by ``funcnn.training.recipes.train_run`` in the format of ``funcnn.training.runs``:
``run.json``, ``checkpoints/``, ``metrics.json``, ``curves.png`` and ``model/`` (last).
``--resume DIR`` continues an unfinished run with its recorded arguments, from its newest
checkpoint that restores (a damaged newer one is set aside with one line), and writes the
final files of a run killed between them. Ctrl-C or SIGTERM checkpoints, prints one line
and exits 130 / 143; a non-finite step or a file that cannot be written exits 1.
``--precision`` picks a ``funcnn.Policy`` preset; ``fp64`` runs under ``jax.enable_x64``.
``--devices``/``--coordinator`` train data-parallel (``funcnn.training.distributed``);
with several processes every one trains and takes part in each orbax save, and only
process 0 prints and writes ``run.json``, ``metrics.json`` and the plot.
"""
from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

from funcnn.cli import gpt
from funcnn.cli.args import (
    UsageError,
    check_out_dir,
    coordinator,
    int_list,
    nonnegative_float,
    nonnegative_int,
    positive_float,
    positive_int,
    seed,
)
from funcnn.training import distributed
from funcnn.training.checkpoint import CheckpointError
from funcnn.training.fit import NonFiniteError
from funcnn.training.interrupt import Interrupted
from funcnn.training.recipes import (
    OptionError,
    check_run_folder,
    resume_options,
    train_run,
)
from funcnn.training.runs import RunRecordError

DATASETS = ("digits", "mnist5k", "mnist1d", "xor", "blobs", "moons", "pydoc")
MODELS = ("cnn", "gpt", "mlp")
ACTIVATIONS = ("relu", "tanh", "sigmoid")
LOSSES = ("softmax_cross_entropy", "mse")
OPTIMIZERS = ("sgd", "momentum", "adam")
SCHEDULES = ("constant", "exponential", "step", "cosine")
PRECISIONS = ("fp32", "fp64", "bf16-mixed", "fp16-mixed", "fp16")
RUN_ARGS = ("data", "model", "hidden", "activation", "loss", "optimizer", "lr", "schedule", "epochs",
            "batch_size", "grad", "l2", "seed", "precision")
MAX_DEVICES = 4096


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``train`` parser to ``sub``."""
    p = sub.add_parser("train", help="train a network on an embedded dataset", description=__doc__.splitlines()[0])
    p.add_argument("--data", choices=DATASETS, default="digits")
    p.add_argument("--model", default="mlp", help="mlp, cnn or gpt (with --data pydoc)")
    p.add_argument("--hidden", type=int_list, default=(128, 64), help="hidden sizes, e.g. 128,64")
    p.add_argument("--activation", choices=ACTIVATIONS, default="relu")
    p.add_argument("--loss", choices=LOSSES, default="softmax_cross_entropy")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="adam")
    p.add_argument("--lr", type=positive_float, default=1e-3)
    p.add_argument("--schedule", choices=SCHEDULES, default="constant")
    p.add_argument("--epochs", type=positive_int, default=20)
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--grad", choices=("manual", "autodiff"), default="manual")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="fp32, fp64 (all float64), bf16-mixed or fp16-mixed (float32 params; fp16: loss scaling)")
    p.add_argument("--l2", type=nonnegative_float, default=0.0)
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--out", default=None, help="output folder, new or empty (default runs/<timestamp>)")
    p.add_argument("--resume", type=Path, default=None, metavar="DIR",
                   help="continue the unfinished run in DIR with its recorded arguments")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    gpt.add_arguments(p)
    p.add_argument("--devices", type=positive_int, default=None,
                   help="data-parallel over N local devices (on CPU: N virtual CPU devices)")
    p.add_argument("--coordinator", type=coordinator, default=None, help="multi-host: HOST:PORT of process 0")
    p.add_argument("--num-processes", type=positive_int, default=None, help="multi-host: number of processes")
    p.add_argument("--process-id", type=nonnegative_int, default=None, help="multi-host: this process, 0..P-1")
    p.set_defaults(func=run)


def _validate(args: argparse.Namespace) -> dict:
    """Every check that needs no data, before anything is loaded or written (and before JAX
    starts: ``--devices`` must be known by then). Returns the training options."""
    multi = (args.coordinator, args.num_processes, args.process_id)
    if any(v is not None for v in multi) and any(v is None for v in multi):
        raise UsageError("--coordinator, --num-processes and --process-id: expected all three or none")
    if args.process_id is not None and args.process_id >= args.num_processes:
        raise UsageError(f"--process-id: expected 0..{args.num_processes - 1}, got {args.process_id}")
    if args.devices is not None and args.devices > MAX_DEVICES:
        raise UsageError(f"--devices: expected at most {MAX_DEVICES}, got {args.devices}")
    if args.resume is not None:
        options = _resumed_options(args)
    else:
        if args.model not in MODELS:
            raise UsageError(f"--model: expected one of {', '.join(MODELS)}, got {args.model!r}")
        if args.model == "cnn" and args.data not in ("digits", "mnist5k"):
            raise UsageError(f"--model: cnn needs an image dataset (digits or mnist5k), got {args.data!r}")
        if args.model == "gpt" or args.data == "pydoc":
            gpt.validate(args)
        if args.out is None:
            args.out = Path("runs") / datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        args.out = check_out_dir(args.out)
        options = {k: getattr(args, k) for k in (*RUN_ARGS, *gpt.GPT_ARGS, "devices")}
    _check_writable(args.out, args.resume is not None)
    if args.devices is not None:
        _check_batch_divides(options["batch_size"], args.devices * (args.num_processes or 1),
                             f"--devices {args.devices}" + (f" x --num-processes {args.num_processes}"
                                                            if args.num_processes else ""))
    return options


def _check_writable(out: Path, resume: bool) -> None:
    try:
        check_run_folder(out, resume=resume)
    except CheckpointError as e:
        raise UsageError(f"{'--resume' if resume else '--out'}: {e}") from None


def _check_batch_divides(batch_size: int, devices: int, where: str) -> None:
    """Data parallelism splits each batch evenly over the devices of every process."""
    if batch_size % devices:
        raise UsageError(f"--batch-size: expected a multiple of the {devices} devices ({where}), got {batch_size}")


def _resumed_options(args: argparse.Namespace) -> dict:
    """The recorded options of the run in ``--resume DIR``; no other training flag allowed."""

    defaults = build_defaults()
    given = [k for k in (*RUN_ARGS, *gpt.GPT_ARGS, "out") if getattr(args, k) != defaults[k]]
    if given:
        raise UsageError(f"--resume: continues with the run's recorded arguments; drop --{given[0].replace('_', '-')}")
    try:
        options = resume_options(args.resume)
    except RunRecordError as e:
        raise UsageError(str(e)) from None
    options["devices"] = args.devices
    args.out = args.resume
    return options


def build_defaults() -> dict:
    """Every ``train`` flag's default, by its ``dest``."""
    sub = argparse.ArgumentParser().add_subparsers()
    register(sub)
    return vars(sub.choices["train"].parse_args([]))


def run(args: argparse.Namespace) -> int:
    """Check the flags, set up the devices, train (``funcnn.training.recipes.train_run``), print."""

    options = _validate(args)
    try:  # before JAX starts its backend
        mesh = distributed.setup(args.devices, args.coordinator, args.num_processes, args.process_id)
    except ValueError as e:
        raise UsageError(f"--devices: {str(e).split(': ', 1)[1]}") from None
    if mesh is not None:  # e.g. --coordinator without --devices: every local device of every process
        import jax

        _check_batch_divides(options["batch_size"], mesh.size,
                             f"{mesh.size // jax.process_count()} devices x {jax.process_count()} processes")
    try:
        report = train_run(options, args.out, resume=args.resume is not None, mesh=mesh,
                           progress=not args.no_progress)
    except OptionError as e:
        raise UsageError(f"--{e.option.replace('_', '-')}: {e.expected}") from None
    except ValueError as e:  # the library's one-line refusals, e.g. checkpoints of a run with another seed
        if not isinstance(e, FloatingPointError):
            raise UsageError(str(e)) from None
        raise
    except Interrupted as e:
        unit = "step" if options["model"] == "gpt" else "epoch"
        print(f"interrupted at {unit} {e.epoch}; resume with: funcnn train --resume {args.out}", file=sys.stderr)
        return e.exit_code
    except NonFiniteError as e:
        print(f"funcnn train: {e}", file=sys.stderr)
        return 1
    for line in report.lines:
        print(line)
    return 0
