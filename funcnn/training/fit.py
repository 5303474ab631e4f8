"""Training: minibatch optimisation with an optax optimiser, one compiled epoch at a time.

Each epoch shuffles the training set with its own key, cuts it into
``n // batch_size`` full batches (the remainder is dropped, a different remainder
each epoch), and runs the steps inside one ``lax.scan``, so the whole epoch is one
jit-compiled call (with one exception, below):

    g_t = dL/dtheta (manual backward or autodiff),  (u_t, s_t) = opt.update(g_t, s_{t-1}),
    theta_t = theta_{t-1} + u_t.

Gradient descent, momentum, Adam and learning-rate schedules are optax's
(``optax.sgd(lr, momentum=0.9)``, ``optax.adam(optax.cosine_decay_schedule(...))``).

The exception: XLA:CPU compiles a convolution inside a loop body to a generic path
that is ~7x slower than the same convolution at the top level of a program (an
mnist5k CNN epoch: 11.3 s scanned vs 1.6 s stepped, measured on one machine). Which
is faster is measured, not guessed (``scan_is_slow``, through ``funcnn.core.autotune``):
when it is the step, ``fit`` runs the same compiled step from a Python loop over the
batches (``scan=None``, the default; force either with ``scan=True``/``False``). Both
orders of work use the same permutation and keys, so they train to the same parameters.

Runs you can trust (``checkpoint_dir``, ``resume``, the guard, interrupts):

* every ``checkpoint_every`` epochs the params, state, optimizer state, run key, epoch and
  history go into an orbax checkpoint (``funcnn.training.checkpoint``); ``resume=True`` continues
  from the newest complete one with the same epoch keys, so a killed and resumed run ends
  bitwise equal to the run left alone;
* the non-finite guard: every step reports one flag per watched value (the input batch,
  the loss, each gradient leaf, each parameter after the update); the flags of a whole
  epoch come back with it, and are looked at once per epoch (no host round-trip per
  step). The first flagged step raises ``NonFiniteError`` naming the epoch, the step and
  the value; the params of that epoch are dropped and the last checkpoint kept.
  With float16 loss scaling a skipped step (non-finite gradients, scale halved) is not a
  failure and reports no flag, until the scale has fallen to 1 (``make_step``);
* SIGINT/SIGTERM are recorded (``funcnn.training.interrupt``) and acted on between epochs (between
  steps when stepping): a checkpoint of the last full epoch is written, then
  ``Interrupted`` (a ``KeyboardInterrupt``) is raised.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from funcnn import losses
from funcnn.training import interrupt, precision
from funcnn.training.interrupt import Interrupted
from funcnn.gradients import MODES, value_and_grad


class NonFiniteError(FloatingPointError):
    """A training step produced a non-finite value: ``epoch`` (``None`` for a run counted in steps),
    ``step`` (1-based), ``where``."""

    def __init__(self, epoch: int | None, step: int, where: str, *, who: str = "fit"):
        self.epoch, self.step, self.where = epoch, step, where
        at = f"step {step}" if epoch is None else f"epoch {epoch}, step {step}"
        super().__init__(f"{who}: non-finite value at {at}: {where} "
                         f"(training stopped; the last good checkpoint is kept)")


class FitResult(NamedTuple):
    params: dict
    state: dict
    history: dict


def accuracy(pred, y):
    """Fraction correct: argmax for (N, C) logits with integer labels, sign for (N, 1)
    logits with 0/1 labels; ``nan`` when the task is not a classification."""
    if not jnp.issubdtype(jnp.result_type(y), jnp.integer):
        if pred.ndim == 2 and pred.shape[1] > 1 and jnp.shape(y) == pred.shape:  # one-hot targets
            one_hot = jnp.all((y == 0) | (y == 1)) & jnp.all(y.sum(axis=1) == 1)
            return jnp.where(one_hot, jnp.mean(jnp.argmax(pred, -1) == jnp.argmax(y, -1)), jnp.nan)
        return jnp.nan
    if pred.ndim == 2 and pred.shape[1] > 1:
        return jnp.mean(jnp.argmax(pred, axis=-1) == y)
    return jnp.mean((pred.reshape(y.shape) > 0) == (y > 0))


def predictor(model):
    """A jit-compiled ``predict(params, state, x) -> y`` in eval mode."""
    return jax.jit(lambda params, state, x: model.apply(params, state, x, train=False)[0])


def evaluate(model, loss, params, state, x, y, *, batch_size=1000, predict=None):
    """Mean loss and accuracy in eval mode (``train=False``), in chunks of ``batch_size``.

    Pass ``predict=predictor(model)`` when evaluating repeatedly, to compile once."""
    predict = predict or predictor(model)
    preds = [predict(params, state, x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
    pred = jnp.concatenate(preds)
    return float(loss.value(pred, jnp.asarray(y))), float(accuracy(pred, jnp.asarray(y)))


def _as_arrays(data):
    if hasattr(data, "x_train"):
        return data.x_train, data.y_train, data.x_test, data.y_test
    if len(data) == 2:
        return data[0], data[1], None, None
    if len(data) == 4:
        return tuple(data)
    raise ValueError("fit: data must be a Dataset, (x, y) or (x_train, y_train, x_test, y_test)")


def guard_names(params) -> list[str]:
    """What each flag of the non-finite guard watches, in order (see ``make_epoch``)."""
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    return (["the input batch", "loss"] + [f"grads{p}" for p in paths]
            + [f"params{p} after the update" for p in paths])


def _nonfinite_flags(xb, value, grads, new_params):
    watched = [xb, value, *jax.tree_util.tree_leaves(grads), *jax.tree_util.tree_leaves(new_params)]
    return jnp.stack([~jnp.all(jnp.isfinite(v)) for v in watched])


def make_step(model, loss, optimizer, *, grad="manual", l2=0.0, penalty=None):
    """One training step, ``step((params, state, opt_state), (x, y, key)) -> (carry, (loss,
    nonfinite))``: the gradient (manual or autodiff), the optax update, and the guard's flags
    (``guard_names``). For a ``precision.loss_scaling`` optimiser (float16) it is the
    loss-scaled step: a step skipped for non-finite gradients changed nothing and reports no
    flag, unless the scale has already fallen to 1 (then nothing is left to try and the guard
    fires)."""
    if isinstance(optimizer, precision.LossScaled):
        scaled = precision.loss_scaled_step(model, loss, optimizer, grad=grad, l2=l2, penalty=penalty)

        def scaled_step(carry, batch):
            carry, value = scaled(carry, batch)
            params, _, opt_state = carry
            watch = opt_state.finite | (opt_state.scale <= 1.0)
            no_grads = jax.tree_util.tree_map(jnp.zeros_like, params)  # finite whenever applied
            return carry, (value, _nonfinite_flags(batch[0], value, no_grads, params) & watch)

        return scaled_step
    vg = value_and_grad(model, loss, mode=grad, l2=l2, penalty=penalty)

    def step(carry, batch):
        params, state, opt_state = carry
        xb, yb, kb = batch
        value, grads, state = vg(params, state, xb, yb, key=kb, train=True)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return (params, state, opt_state), (value, _nonfinite_flags(xb, value, grads, params))

    return step


def make_epoch(model, loss, optimizer, *, batch_size, grad="manual", l2=0.0, penalty=None, scan=True):
    """An ``epoch(params, state, opt_state, x, y, key) -> (params, state, opt_state,
    mean_loss, nonfinite)`` running every full batch of a shuffled pass: one jit-compiled
    ``lax.scan`` (``scan=True``), or one jit-compiled step called per batch (``scan=False``).
    ``nonfinite``: bool (n_batches, len(guard_names(params))), which watched values of which
    step were non-finite (the guard: see the module docstring)."""
    step = make_step(model, loss, optimizer, grad=grad, l2=l2, penalty=penalty)

    def schedule(n, key):
        n_batches = n // batch_size
        k_perm, k_steps = jax.random.split(key)
        idx = jax.random.permutation(k_perm, n)[: n_batches * batch_size]
        return idx.reshape(n_batches, batch_size), jax.random.split(k_steps, n_batches)

    if scan:
        @jax.jit
        def epoch(params, state, opt_state, x, y, key):
            idx, keys = schedule(x.shape[0], key)
            carry, (losses, flags) = jax.lax.scan(step, (params, state, opt_state), (x[idx], y[idx], keys))
            return (*carry, losses.mean(), flags)

        return epoch

    schedule_jit = jax.jit(schedule, static_argnums=0)

    @jax.jit
    def indexed_step(carry, x, y, idx, keys, i):
        return step(carry, (x[idx[i]], y[idx[i]], keys[i]))

    def epoch(params, state, opt_state, x, y, key):
        idx, keys = schedule_jit(x.shape[0], key)
        carry, losses, flags = (params, state, opt_state), [], []
        for i in range(idx.shape[0]):
            interrupt.check()  # a signal stops between steps; the epoch is dropped
            carry, (value, bad) = indexed_step(carry, x, y, idx, keys, i)
            losses.append(value)
            flags.append(bad)
        return (*carry, jnp.mean(jnp.stack(losses)), jnp.stack(flags))

    return epoch


def scan_is_slow(model, loss, params, state, x, y, *, batch_size, grad="manual", optimizer=None,
                 steps: int = 4) -> bool:
    """Whether an epoch should run as the compiled step per batch rather than one ``lax.scan``.

    Measured, not guessed (``funcnn.core.autotune``, op ``"fit"``: force with
    ``FUNCNN_IMPL=fit:scan`` or ``fit:step``): ``steps`` training steps on rows of ``x`` and
    ``y`` are compiled and timed both ways, once per step program (keyed by its jaxpr) and
    process. A step of fewer than ``autotune.MIN_WORK`` FLOPs, or ``FUNCNN_AUTOTUNE=0``, scans.
    """
    import hashlib

    from funcnn.core import autotune

    optimizer = optimizer or optax.sgd(1e-3)
    step = make_step(model, loss, optimizer, grad=grad)

    idx = np.arange(steps * batch_size) % len(x)
    xs, ys = (jnp.asarray(np.asarray(a)[idx]).reshape(steps, batch_size, *np.shape(a)[1:]) for a in (x, y))
    keys = jax.random.split(jax.random.key(0), steps)
    carry = (params, state, optimizer.init(params))
    batch0 = (xs[0], ys[0], keys[0])
    jaxpr = str(jax.make_jaxpr(step)(carry, batch0))
    key = (jax.default_backend(), hashlib.sha256(jaxpr.encode()).hexdigest()[:16])
    cost = jax.jit(step).lower(carry, batch0).cost_analysis() or {}
    work = steps * float((cost[0] if isinstance(cost, list) else cost).get("flops", 0.0))
    scanned = jax.jit(lambda c, b: jax.lax.scan(step, c, b)[1])
    stepped = jax.jit(step)

    def run_stepped(c, b):
        values = []
        for i in range(steps):
            c, v = stepped(c, jax.tree_util.tree_map(lambda a: a[i], b))
            values.append(v)
        return values

    choice = autotune.choose("fit", key, {"scan": scanned, "step": run_stepped}, lambda: (carry, (xs, ys, keys)),
                             fallback="scan", work=work, jit=False)
    return choice == "step"


def _check_args(model, loss, optimizer, key, epochs, checkpoint_every, keep):
    from funcnn.core.layer import Layer

    if not isinstance(model, Layer):
        raise TypeError(f"fit: model must be a funcnn Layer (e.g. funcnn.serial(...)), got {type(model).__name__}")
    if isinstance(loss, str):
        raise TypeError(f"fit: loss must be a Loss such as funcnn.losses.{loss}, not the string {loss!r} "
                        f"(funcnn.losses.get({loss!r}) looks one up by name)")
    if not (callable(getattr(loss, "value", None)) and callable(getattr(loss, "grad", None))):
        raise TypeError(f"fit: loss must be a Loss with value and grad (funcnn.losses), got {type(loss).__name__}")
    if not (callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update", None))):
        raise TypeError(f"fit: optimizer must be an optax GradientTransformation, got {type(optimizer).__name__}")
    if not (isinstance(key, jax.Array) and (jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
                                            or (key.dtype == jnp.uint32 and key.shape == (2,)))):
        raise TypeError(f"fit: key must be a PRNG key such as jax.random.key(0), got {key!r}")
    for name, v in (("epochs", epochs), ("checkpoint_every", checkpoint_every), ("keep", keep)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"fit: {name} must be a positive integer, got {v!r}")


def _check_data(model, loss, x, y, split):
    """Lengths match, values finite, class labels in range (softmax cross-entropy)."""
    n_x, n_y = np.shape(x)[0] if np.ndim(x) else None, np.shape(y)[0] if np.ndim(y) else None
    if n_x is None or n_y is None or n_x != n_y:
        raise ValueError(f"fit: x_{split} and y_{split} must have the same number of examples, "
                         f"got {np.shape(x)} and {np.shape(y)}")
    for name, a in ((f"x_{split}", x), (f"y_{split}", y)):
        a = np.asarray(a)
        if np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a)):
            bad = np.argwhere(~np.isfinite(a))[0]
            raise ValueError(f"fit: {name} must be finite, got {a[tuple(bad)]} at index {tuple(int(i) for i in bad)}")
    if getattr(loss, "name", None) == "softmax_cross_entropy" and np.issubdtype(np.asarray(y).dtype, np.integer):
        classes = model.output_shape(tuple(np.shape(x)[1:]))[-1]
        lo, hi = int(np.min(y)), int(np.max(y))
        if lo < 0 or hi >= classes:
            raise ValueError(f"fit: y_{split} must hold class labels in [0, {classes}) (the model has {classes} "
                             f"outputs), got labels from {lo} to {hi}")
    try:  # the loss's own target checks (BCE targets in [0, 1], shapes, ...)
        losses.validate_targets(loss, model.output_shape(tuple(np.shape(x)[1:])), y)
    except ValueError as e:
        raise ValueError(f"fit: y_{split}: {e}") from None


def fit(model, loss, optimizer, data, *, epochs, batch_size, key, grad="manual", l2=0.0,
        penalty=None, progress=True, params=None, state=None, scan=None,
        checkpoint_dir=None, checkpoint_every=1, keep=2, resume=False, mesh=None,
        policy=None) -> FitResult:
    """Train ``model`` on ``data``; returns trained params, state and a history.

    ``data``: a ``funcnn.data.Dataset``, ``(x, y)`` or ``(x_train, y_train, x_test, y_test)``.
    ``optimizer``: an optax ``GradientTransformation``. ``l2``/``penalty``: extra terms of
    the objective (see ``value_and_grad``). ``grad``: ``"manual"`` (hand-written
    backward) or ``"autodiff"``. Evaluation (accuracy, test loss) runs in eval mode.
    The history holds, per epoch, ``loss`` (mean training minibatch loss), and
    ``train_loss``/``train_acc``/``test_loss``/``test_acc`` in eval mode.
    ``scan``: run each epoch as one compiled ``lax.scan`` (True) or its compiled step per
    batch (False); ``None``: whichever measured faster (``scan_is_slow``).
    ``checkpoint_dir``: write an orbax checkpoint every ``checkpoint_every`` epochs (and at
    the end), keeping the newest ``keep``; ``resume=True`` continues from the newest one
    (same ``key`` and ``epochs`` as the first call: bitwise the same result).

    Raises ``ValueError``/``TypeError`` for bad arguments or data (x and y of different
    lengths, non-finite values, labels outside [0, classes)), ``NonFiniteError`` when a step
    produces a non-finite value, ``Interrupted`` on SIGINT/SIGTERM (after checkpointing).
    ``mesh``: a ``jax.sharding.Mesh`` with a ``"data"`` axis: data-parallel training, each
    batch sharded over it, params/state/optimizer state replicated (``funcnn.training.distributed``;
    ``batch_size`` must divide by the number of data shards).
    ``policy``: a ``funcnn.Policy`` (or its string) to train under, e.g. "bf16-mixed"
    (``funcnn.training.precision``; float16 compute adds dynamic loss scaling).
    """
    if grad not in MODES:
        raise ValueError(f"fit: grad must be one of {MODES}, got {grad!r}")
    _check_args(model, loss, optimizer, key, epochs, checkpoint_every, keep)
    if resume and checkpoint_dir is None:
        raise ValueError("fit: resume=True needs checkpoint_dir (the folder of the run to continue)")
    x_tr, y_tr, x_te, y_te = _as_arrays(data)
    _check_data(model, loss, x_tr, y_tr, "train")
    if x_te is not None:
        _check_data(model, loss, x_te, y_te, "test")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= len(x_tr):
        raise ValueError(f"fit: batch_size must be an integer in [1, {len(x_tr)}], got {batch_size!r}")
    if policy is not None:  # issue 13: the model, loss and optimiser under the policy
        model, loss, optimizer = precision.prepare(model, loss, optimizer, policy)
    key, k_init = jax.random.split(key)
    if params is None:
        params, state = model.init(k_init, tuple(np.shape(x_tr)[1:]))
    opt_state = optimizer.init(params)
    history = {k: [] for k in ("loss", "train_loss", "train_acc", "test_loss", "test_acc")}
    done, checkpoints = 0, None
    if checkpoint_dir is not None:
        from funcnn.training.checkpoint import open_run

        checkpoints, restored = open_run(checkpoint_dir, (params, state, opt_state, key), keep=keep, resume=resume,
                                         who="fit", unit="epoch")
        if restored is not None:
            (params, state, opt_state, saved_key), done, history = restored
            if not np.array_equal(jax.random.key_data(saved_key), jax.random.key_data(key)):
                raise ValueError(f"fit: resume: the checkpoints in {checkpoint_dir} were written by a run with a "
                                 f"different key; pass the key of that run")
            if done > epochs:
                raise ValueError(f"fit: resume: {checkpoint_dir} is at epoch {done}, past epochs={epochs}")
    if mesh is not None:  # data parallelism: the same schedule and step, batches sharded over "data"
        from funcnn.training.distributed import make_sharded_epoch

        epoch = make_sharded_epoch(model, loss, optimizer, mesh, batch_size=batch_size, grad=grad, l2=l2,
                                   penalty=penalty)
    else:
        if scan is None:
            scan = not scan_is_slow(model, loss, params, state, x_tr, y_tr, batch_size=batch_size, grad=grad,
                                    optimizer=optimizer)
        epoch = make_epoch(model, loss, optimizer, batch_size=batch_size, grad=grad, l2=l2, penalty=penalty,
                           scan=scan)
    predict = predictor(model)
    x_dev, y_dev = jnp.asarray(x_tr), jnp.asarray(y_tr)
    names = guard_names(params)
    saved = checkpoints.latest() if checkpoints else None

    def save(e):
        nonlocal saved
        if checkpoints is not None and saved != e:
            checkpoints.save(e, (params, state, opt_state, key), history)
            saved = e

    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs, initial=done, desc="train", unit="epoch")
    try:
        with interrupt.catching_signals():
            for e, k_epoch in enumerate(jax.random.split(key, epochs)[done:], start=done):
                try:
                    interrupt.check(e)
                    out = epoch(params, state, opt_state, x_dev, y_dev, k_epoch)
                except Interrupted as stop:
                    save(e)
                    raise Interrupted(stop.signum, e) from None
                bad = np.asarray(out[4])  # the guard: one transfer per epoch
                if bad.any():
                    step, which = np.argwhere(bad)[0]
                    save(e)
                    raise NonFiniteError(e + 1, int(step) + 1, names[which])
                params, state, opt_state, mean_loss = out[:4]
                history["loss"].append(float(mean_loss))
                tr = evaluate(model, loss, params, state, x_tr, y_tr, predict=predict)
                te = (evaluate(model, loss, params, state, x_te, y_te, predict=predict)
                      if x_te is not None else (np.nan, np.nan))
                for name, v in zip(("train_loss", "train_acc", "test_loss", "test_acc"), (*tr, *te)):
                    history[name].append(v)
                if (e + 1) % checkpoint_every == 0 or e + 1 == epochs:
                    save(e + 1)
                if progress:
                    bar.update(1)
                    bar.set_postfix(loss=f"{mean_loss:.4f}", train_acc=f"{tr[1]:.3f}", test_acc=f"{te[1]:.3f}")
                if interrupt.pending() is not None:
                    save(e + 1)
                    interrupt.check(e + 1)
    finally:
        if progress:
            bar.close()
        if checkpoints is not None:
            checkpoints.close()
    return FitResult(params, state, history)
