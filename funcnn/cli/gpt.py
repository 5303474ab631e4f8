"""``funcnn train --model gpt --data pydoc``: a character-level GPT on the pydoc corpus.

Called from ``funcnn train`` (which owns the shared flags); adds the GPT flags. Trains
for ``--steps`` steps (or ``--epochs`` passes' worth of windows), prints the
validation loss per evaluation, and writes the run into ``--out``: ``run.json`` (first,
with every argument: ``funcnn train --resume DIR`` continues from it),
``checkpoints/`` (orbax, at every evaluation), ``params/`` (read by ``funcnn sample``),
``metrics.json`` and ``curves.png``. ``--precision`` works as for the other models, and so do
``--devices``/``--coordinator``/``--num-processes``/``--process-id`` (data parallelism:
``funcnn.training.lm.train_lm(mesh=)``).
"""
from __future__ import annotations

import json

from funcnn.cli.args import UsageError, positive_int

GPT_ARGS = ("steps", "context", "layers", "heads", "width", "eval_every", "eval_windows")


def add_arguments(p) -> None:
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


def _validate(args):
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


def run(args, mesh=None) -> int:
    """Train and write the run; ``mesh``: data parallelism (``funcnn.training.distributed.setup``, from
    ``--devices``/``--coordinator``): every process trains and checkpoints, process 0 writes
    and prints."""
    _validate(args)
    import jax

    from funcnn import models
    from funcnn.data import text
    from funcnn.training import lm
    from funcnn.training.checkpoint import json_safe
    from funcnn.cli.train import RUN_ARGS, _versions, first_step_gradient_gap, make_optimizer
    from funcnn.training.precision import Policy, prepare

    corpus = text.load_pydoc(args.seed)
    if args.context >= len(corpus.validation):
        raise UsageError(f"--context: expected below {len(corpus.validation)} (the validation text), "
                         f"got {args.context}")
    steps = args.steps or args.epochs * (len(corpus.train) // (args.batch_size * args.context))
    config = {"context": args.context, "layers": args.layers, "heads": args.heads, "width": args.width}
    model = models.gpt(corpus.vocab_size, **config)
    optimizer = make_optimizer(args.optimizer, args.lr, args.schedule, steps)
    policy = Policy.parse(args.precision)
    policy_model, policy_loss, _ = prepare(model, lm.next_char_cross_entropy, optimizer, policy)
    params, state = policy_model.init(jax.random.key(args.seed), (args.context,))
    x, y = next(lm.batches(corpus.train, context=args.context, batch_size=args.batch_size, steps=1,
                           seed=args.seed))
    gap = first_step_gradient_gap(policy_model, policy_loss, params, state, x, y, None, 0.0)

    out = args.out
    primary = jax.process_index() == 0
    arg_dict = {**{k: getattr(args, k) for k in (*RUN_ARGS, *GPT_ARGS)}, "devices": args.devices}
    if args.resume is None and primary:
        out.mkdir(parents=True, exist_ok=True)
        record = {"command": "train", "model": "gpt", "config": config, "vocab": corpus.vocab, "args": arg_dict,
                  "data": {"name": "pydoc", "seed": args.seed, "train": len(corpus.train),
                           "validation": len(corpus.validation)}, "versions": _versions()}
        (out / "run.json").write_text(json.dumps(json_safe(record), indent=2, allow_nan=False))
    result = lm.train_lm(model, corpus, context=args.context, steps=steps, batch_size=args.batch_size,
                         optimizer=optimizer, grad=args.grad, eval_every=args.eval_every,
                         eval_windows=args.eval_windows, seed=args.seed, params=params,
                         progress=not args.no_progress and primary, policy=policy,
                         checkpoint_dir=out / "checkpoints", resume=args.resume is not None, mesh=mesh)
    h = result.history
    extra = {"command": "train", "data": "pydoc", "seed": args.seed, "args": arg_dict, "history": h,
             "versions": _versions()}
    lm.save_run(out, config=config, vocab=corpus.vocab, params=result.params, extra=extra)  # every process calls
    if not primary:
        return 0
    print(f"data pydoc: {len(corpus.train)} train / {len(corpus.validation)} validation characters, "
          f"vocabulary {corpus.vocab_size}; model gpt {args.layers} layers x {args.heads} heads, width "
          f"{args.width}, context {args.context}; {args.grad} gradients, {steps} steps of {args.batch_size}, "
          f"precision {args.precision}")
    for s, tr, va in zip(h["step"], h["train_loss"], h["val_loss"]):
        print(f"step {s:6d}  train loss {tr:.4f}  validation loss {va:.4f} nats/char")
    print(f"first-step gradients, manual vs autodiff ({policy.compute.name}): max relative difference {gap:.2e}")
    metrics = {"args": arg_dict, "first_step_grad_rel_diff": gap, "history": h,
               "final": {k: v[-1] for k, v in h.items()}}
    (out / "metrics.json").write_text(json.dumps(json_safe(metrics), indent=2, allow_nan=False))
    _plot(h, out / "curves.png", f"gpt on pydoc ({args.grad} backward)")
    print(f"wrote {out / 'run.json'}, {out / 'params'}, {out / 'metrics.json'} and {out / 'curves.png'}")
    return 0


def _plot(h, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(h["step"], h["train_loss"], label="train (mean since last evaluation)")
    ax.plot(h["step"], h["val_loss"], label="validation")
    ax.set(xlabel="step", ylabel="nats/char", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
