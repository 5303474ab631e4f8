"""Mixed precision: the digits MLP, the mnist5k CNN and a character-level GPT trained in fp32,
bf16-mixed and fp16-mixed.

Each precision is a ``funcnn.Policy`` preset (float32 master params; compute in float32,
bfloat16 or float16; float32 output and loss; fp16 with dynamic loss scaling) and every run
uses the hand-written backward, Adam, batch 64, the same seed and the same batches in every
precision:

* the digits MLP and the mnist5k CNN: ``fit(..., policy=...)``, Adam(1e-3);
* the GPT: ``funcnn.models.gpt(103, context=32, layers=2, heads=4, width=64)`` on the pydoc
  corpus (``funcnn.data.text.load_pydoc(seed=0)``), ``lm.train_lm(..., policy=..., grad="manual")``
  for GPT_STEPS steps of 64 random windows, Adam(2e-3) (the learning rate of gpt_pydoc.py).

Reported per model and precision:

* accuracy and loss after training. Image models: on the test set (loss in nats/example).
  GPT: on every non-overlapping validation window of ``context`` characters; the loss is the
  mean next-character cross-entropy (nats/char), L = 1/(N T) sum_{n,t} [logsumexp_v z_ntv -
  z_nt,y_nt], and the accuracy is the fraction of positions where argmax_v z_ntv = y_nt (the
  next character), both computed by the policy's model (compute dtype, float32 logits);
* whether the accuracy is within 0.5 points of fp32 (the criterion). The image
  models are trained from SEEDS seeds (initial params and batch order) in every precision and
  compared by their mean accuracy, with the spread over seeds beside it: one seed's accuracy on
  the 1000 mnist5k test images has a binomial standard error of sqrt(p (1 - p) / 1000), about
  0.75 points at p = 0.94, more than the criterion, so one seed cannot decide it. The GPT
  (45,024 validation characters, a standard error of about 0.23 points) is trained once;
* time per training step: one compiled step, timed over TIMED_STEPS steps after a warm-up
  pass over the same steps, ``block_until_ready`` at the end (on CPU, bfloat16 and float16
  are emulated: slower, not faster);
* the largest gradient difference at the first training batch (initial params), per leaf
  max|g - g_ref| / max|g_ref|, maximised over leaves: manual vs autodiff (both computed in the
  policy's dtypes; for the GPT with the loss of integer ids above,
  ``losses.softmax_cross_entropy`` over (B, T, V)), and each of them vs the fp32 run's autodiff gradient (same
  params, same batch). A difference from fp32 holds the forward's rounding in the compute dtype,
  common to both backwards, and the backward's own; where manual-vs-fp32 is far below
  autodiff-vs-fp32 (the GPT), the manual-vs-autodiff gap is autodiff's rounding: jax.grad of
  the cast forward sums a bias's gradient over the batch (the GPT's over B*T = 2048 positions)
  with the transpose of the broadcast, a reduce_sum in the compute dtype, and the embedding's
  with a scatter-add in the compute dtype, where the hand-written backward accumulates those
  sums in float32 (``jnp.sum``, ``Embedding``'s scatter-add).

    python experiments/precision.py [--quick] [--out DIR]

``--quick``: 320 training / 200 test images and one epoch; the GPT with one layer of two heads,
width 32, GPT_STEPS_QUICK steps, GPT_WINDOWS_QUICK validation windows.

Writes precision.md (table) and precision.png (figure) into experiments/results/.
"""
from __future__ import annotations

import time
from typing import NamedTuple

import jax
import matplotlib
import numpy as np
import optax

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from _common import parse, write  # noqa: E402

from funcnn import data, models  # noqa: E402
from funcnn.data import text
from funcnn.training import lm, precision
from funcnn.gradients import value_and_grad  # noqa: E402
from funcnn.losses import softmax_cross_entropy  # noqa: E402
from funcnn.training.fit import evaluate, fit, make_epoch  # noqa: E402

PRECISIONS = ("fp32", "bf16-mixed", "fp16-mixed")
BATCH = 64
TIMED_STEPS = 5
CRITERION = 0.5  # points of accuracy from fp32
SEEDS = 3  # image models: seeds per precision (module docstring)
SETUPS = {"digits MLP": ("digits", "mlp", dict(hidden=(128, 64)), 20),
          "mnist5k CNN": ("mnist5k", "cnn", dict(hidden=(128,)), 2)}
GPT_NAME = "pydoc GPT"
GPT = dict(context=32, layers=2, heads=4, width=64)
GPT_QUICK = dict(context=32, layers=1, heads=2, width=32)
GPT_STEPS, GPT_EVAL_EVERY, GPT_LR = 1000, 100, 2e-3
GPT_STEPS_QUICK, GPT_WINDOWS_QUICK = 20, 32


def grads(model, loss, params, state, x, y):
    """``(manual, autodiff)`` gradients at ``(x, y)`` (both in the model's dtypes)."""
    key = jax.random.key(1)
    return tuple(jax.jit(value_and_grad(model, loss, mode=mode))(params, state, x, y, key=key)[1]
                 for mode in ("manual", "autodiff"))


def grad_gap(g, ref):
    """max over leaves of max|g - ref| / max|ref|."""
    gaps = []
    for a, b in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(ref)):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        if b.size:
            gaps.append(float(np.max(np.abs(a - b))) / max(float(np.max(np.abs(b))), 1e-30))
    return max(gaps)


class Row(NamedTuple):
    accuracy: float     # mean over seeds
    loss: float         # mean over seeds
    step_seconds: float
    grads: tuple        # (manual, autodiff) at the first batch, initial params
    history: dict       # of the first seed
    accuracies: tuple   # per seed


def step_time(model, loss, optimizer, params, state, x, y):
    """Seconds per compiled training step, over TIMED_STEPS steps after a warm-up pass."""
    x, y = x[:TIMED_STEPS * BATCH], y[:TIMED_STEPS * BATCH]
    epoch = make_epoch(model, loss, optimizer, batch_size=BATCH, scan=False)
    carry = (params, state, optimizer.init(params))
    out = epoch(*carry, x, y, jax.random.key(2))
    jax.block_until_ready(out)
    t0 = time.perf_counter()
    jax.block_until_ready(epoch(*carry, x, y, jax.random.key(3)))
    return (time.perf_counter() - t0) / (len(x) // BATCH)


def run(ds, name, kwargs, epochs, prec, seeds):
    """An image model's Row: test accuracy and loss after ``fit``, mean over ``seeds`` seeds."""
    model = models.build(name, ds.x_train.shape[1:], ds.num_classes, **kwargs)
    opt = optax.adam(1e-3)
    results = [fit(model, softmax_cross_entropy, opt, ds, epochs=epochs, batch_size=BATCH,
                   key=jax.random.key(seed), progress=False, policy=prec) for seed in range(seeds)]
    accs = tuple(r.history["test_acc"][-1] for r in results)
    pm, pl, popt = precision.prepare(model, softmax_cross_entropy, opt, prec)
    params, state = pm.init(jax.random.key(0), ds.x_train.shape[1:])
    x, y = jax.numpy.asarray(ds.x_train), jax.numpy.asarray(ds.y_train)
    return Row(float(np.mean(accs)), float(np.mean([r.history["test_loss"][-1] for r in results])),
               step_time(pm, pl, popt, params, state, x, y), grads(pm, pl, params, state, x[:BATCH], y[:BATCH]),
               results[0].history, accs)


def run_gpt(corpus, config, steps, eval_every, eval_windows, prec):
    """The GPT's Row: next-character accuracy and loss on the validation windows after ``train_lm``."""
    model, context = models.gpt(corpus.vocab_size, **config), config["context"]
    opt = optax.adam(GPT_LR)
    result = lm.train_lm(model, corpus, context=context, steps=steps, batch_size=BATCH, optimizer=opt,
                         grad="manual", eval_every=eval_every, eval_windows=eval_windows, seed=0, policy=prec)
    pm, pl, popt = precision.prepare(model, softmax_cross_entropy, opt, prec)
    params, state = pm.init(jax.random.key(0), (context,))  # train_lm's initial params (seed 0)
    # the validation windows' logits as (N T, V) rows: evaluate's loss and argmax accuracy per character
    vx, vy = text.eval_windows(corpus.validation, context, eval_windows)
    predict = jax.jit(lambda p, s, x: pm.apply(p, s, x, train=False)[0].reshape(-1, corpus.vocab_size))
    loss, acc = evaluate(pm, precision.float32_loss(softmax_cross_entropy), result.params, state, vx,
                         vy.reshape(-1), batch_size=BATCH, predict=predict)
    # train_lm's first TIMED_STEPS batches (seed 0); the first is the gradient check's
    x, y = map(np.concatenate, zip(*lm.batches(corpus.train, context=context, batch_size=BATCH,
                                               steps=TIMED_STEPS, seed=0)))
    return Row(acc, loss, step_time(pm, pl, popt, params, state, x, y),
               grads(pm, pl, params, state, x[:BATCH], y[:BATCH]), result.history, (acc,))


def gaps(rows, setup, prec):
    """(manual vs autodiff, manual vs fp32, autodiff vs fp32): fp32 = the fp32 run's autodiff gradient."""
    (g_m, g_a), ref = rows[setup, prec].grads, rows[setup, "fp32"].grads[1]
    return grad_gap(g_m, g_a), grad_gap(g_m, ref), grad_gap(g_a, ref)


def main(argv=None):
    args, out = parse(__doc__, argv)
    t_start = time.perf_counter()
    rows = {}
    for setup, (ds_name, name, kwargs, epochs) in SETUPS.items():
        ds = data.load(ds_name, seed=0)
        if args.quick:
            ds, epochs = ds._replace(x_train=ds.x_train[:320], y_train=ds.y_train[:320],
                                     x_test=ds.x_test[:200], y_test=ds.y_test[:200]), 1
        for prec in PRECISIONS:
            rows[setup, prec] = r = run(ds, name, kwargs, epochs, prec, 1 if args.quick else SEEDS)
            print(f"{setup:12s} {prec:10s} test acc {r.accuracy:.4f}  {1e3 * r.step_seconds:7.2f} ms/step  "
                  f"grad gaps {', '.join(f'{g:.1e}' for g in gaps(rows, setup, prec))}", flush=True)
    corpus = data.load("pydoc", seed=0)
    config, steps, eval_every, windows = ((GPT_QUICK, GPT_STEPS_QUICK, GPT_STEPS_QUICK, GPT_WINDOWS_QUICK)
                                          if args.quick else (GPT, GPT_STEPS, GPT_EVAL_EVERY, None))
    gpt_seconds = {}
    for prec in PRECISIONS:
        t0 = time.perf_counter()
        rows[GPT_NAME, prec] = r = run_gpt(corpus, config, steps, eval_every, windows, prec)
        gpt_seconds[prec] = time.perf_counter() - t0
        print(f"{GPT_NAME:12s} {prec:10s} val acc {r.accuracy:.4f}  val loss {r.loss:.4f}  "
              f"{1e3 * r.step_seconds:7.2f} ms/step  grad gaps "
              f"{', '.join(f'{g:.1e}' for g in gaps(rows, GPT_NAME, prec))}  ({gpt_seconds[prec]:.0f} s)", flush=True)

    n_val = text.eval_windows(corpus.validation, config["context"], windows)[1].size
    n_params = sum(a.size for a in jax.tree_util.tree_leaves(rows[GPT_NAME, "fp32"].grads[0]))
    setups = [*SETUPS, GPT_NAME]
    lines = [f"Backend: {jax.default_backend()} ({jax.devices()[0].device_kind}); batch {BATCH}; "
             + ("quick run." if args.quick else
                "Adam(1e-3), epochs: " + ", ".join(f"{k} {v[3]}" for k, v in SETUPS.items()) + "."),
             f"{GPT_NAME}: `models.gpt({corpus.vocab_size}, " + ", ".join(f"{k}={v}" for k, v in config.items())
             + f")`, {n_params:,} params, {steps} steps of {BATCH} windows, Adam({GPT_LR}); accuracy and loss "
             f"of the next character over the {n_val:,} validation characters (loss in nats/char), one seed. Image "
             f"models: test accuracy and loss (nats/example), the mean over {1 if args.quick else SEEDS} seeds "
             f"(initial params and batch order; seeds: the lowest and highest accuracy). Within: mean accuracy "
             f"within {CRITERION} points of fp32's. "
             "Gradient differences at the first batch, max over leaves of max|g - g_ref| / max|g_ref|; "
             "fp32 = the fp32 run's autodiff gradient.",
             "", "| model | precision | accuracy | seeds | vs fp32 (points) | within | loss | ms / step "
             "| manual vs autodiff | manual vs fp32 | autodiff vs fp32 |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for (setup, prec), r in rows.items():
        delta = 100 * (r.accuracy - rows[setup, "fp32"].accuracy)
        within = "-" if prec == "fp32" else ("yes" if abs(delta) <= CRITERION else "**no**")
        seeds = "-" if len(r.accuracies) == 1 else f"{min(r.accuracies):.4f}-{max(r.accuracies):.4f}"
        lines.append(f"| {setup} | {prec} | {r.accuracy:.4f} | {seeds} | {delta:+.1f} | {within} | {r.loss:.4f} "
                     f"| {1e3 * r.step_seconds:.2f} | " + " | ".join(f"{g:.1e}" for g in gaps(rows, setup, prec))
                     + " |")
    lines += ["", f"{GPT_NAME} seconds per precision (training, evaluation, timing, gradients): "
              + ", ".join(f"{p} {s:.0f}" for p, s in gpt_seconds.items()) + "."]

    fig, axes = plt.subplots(1, 5, figsize=(24, 4.2))
    width = 0.25
    for i, prec in enumerate(PRECISIONS):
        xs = np.arange(len(setups)) + (i - 1) * width
        rs = [rows[s, prec] for s in setups]
        axes[0].bar(xs, [r.accuracy for r in rs], width, label=prec)
        axes[1].bar(xs, [100 * (r.accuracy - rows[s, "fp32"].accuracy) for s, r in zip(setups, rs)], width,
                    label=prec)
        axes[2].bar(xs, [1e3 * r.step_seconds for r in rs], width, label=prec)
        g = np.array([gaps(rows, s, prec) for s in setups])
        axes[3].bar(xs, g[:, 0], width, label=prec)
        axes[3].plot(xs, g[:, 1], "kx", label="manual vs fp32" if i == 0 else None)
        if prec != "fp32":
            axes[3].plot(xs, g[:, 2], "ko", mfc="none", label="autodiff vs fp32" if i == 1 else None)
        axes[4].plot(rows[GPT_NAME, prec].history["step"], rows[GPT_NAME, prec].history["val_loss"], marker="o",
                     ms=3, label=prec)
    for ax, title in zip(axes, ("accuracy (GPT: next character, validation)", "accuracy - fp32 (points)",
                                "ms per training step (CPU: bf16/fp16 emulated)",
                                "grad diff: bars manual vs autodiff, max|g - g_ref| / max|g_ref|")):
        ax.set_xticks(np.arange(len(setups)), setups)
        ax.set_title(title, fontsize=10)
    axes[0].set_ylim(0, 1.15)
    axes[1].axhspan(-CRITERION, CRITERION, color="0.9", zorder=0, label=f"within {CRITERION}")
    axes[1].axhline(0, color="k", lw=0.8)
    axes[3].set_yscale("log")
    axes[4].set(xlabel="step", ylabel="nats/char", title=f"{GPT_NAME}: validation loss")
    axes[4].grid(alpha=0.3)
    for ax in axes[[0, 1, 3, 4]]:
        ax.legend(fontsize=8, ncol=3 if ax is axes[0] else 1)
    write(out, "precision", lines, fig, time.perf_counter() - t_start)


if __name__ == "__main__":
    main()
