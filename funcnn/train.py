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
mnist5k CNN epoch: 11.3 s scanned vs 1.6 s stepped, measured). So on CPU, when the
training step contains a ``conv_general_dilated``, ``fit`` runs the same compiled
step from a Python loop over the batches instead (``scan=None``, the default; force
either with ``scan=True``/``False``). Both orders of work use the same permutation and
keys, so they train to the same parameters.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from funcnn import precision
from funcnn.gradients import MODES, value_and_grad


class FitResult(NamedTuple):
    params: dict
    state: dict
    history: dict


def accuracy(pred, y):
    """Fraction correct: argmax for (N, C) logits with integer labels, sign for (N, 1)
    logits with 0/1 labels; ``nan`` when the task is not a classification."""
    if not jnp.issubdtype(jnp.result_type(y), jnp.integer):
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


def make_epoch(model, loss, optimizer, *, batch_size, grad="manual", l2=0.0, penalty=None, scan=True):
    """An ``epoch(params, state, opt_state, x, y, key) -> (params, state, opt_state,
    mean_loss)`` running every full batch of a shuffled pass: one jit-compiled ``lax.scan``
    (``scan=True``), or one jit-compiled step called per batch (``scan=False``)."""
    vg = value_and_grad(model, loss, mode=grad, l2=l2, penalty=penalty)

    def step(carry, batch):
        params, state, opt_state = carry
        xb, yb, kb = batch
        value, grads, state = vg(params, state, xb, yb, key=kb, train=True)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), state, opt_state), value

    if isinstance(optimizer, precision.LossScaled):  # fp16: the loss is scaled by opt_state.scale
        step = precision.loss_scaled_step(model, loss, optimizer, grad=grad, l2=l2, penalty=penalty)

    def schedule(n, key):
        n_batches = n // batch_size
        k_perm, k_steps = jax.random.split(key)
        idx = jax.random.permutation(k_perm, n)[: n_batches * batch_size]
        return idx.reshape(n_batches, batch_size), jax.random.split(k_steps, n_batches)

    if scan:
        @jax.jit
        def epoch(params, state, opt_state, x, y, key):
            idx, keys = schedule(x.shape[0], key)
            carry, losses = jax.lax.scan(step, (params, state, opt_state), (x[idx], y[idx], keys))
            return (*carry, losses.mean())

        return epoch

    schedule_jit = jax.jit(schedule, static_argnums=0)

    @jax.jit
    def indexed_step(carry, x, y, idx, keys, i):
        return step(carry, (x[idx[i]], y[idx[i]], keys[i]))

    def epoch(params, state, opt_state, x, y, key):
        idx, keys = schedule_jit(x.shape[0], key)
        carry, losses = (params, state, opt_state), []
        for i in range(idx.shape[0]):
            carry, value = indexed_step(carry, x, y, idx, keys, i)
            losses.append(value)
        return (*carry, jnp.mean(jnp.stack(losses)))

    return epoch


def scan_is_slow(model, loss, params, state, x, y, *, batch_size, grad="manual") -> bool:
    """True on CPU when the training step contains an XLA convolution (module docstring):
    the step is traced once, on abstract batches of ``batch_size`` rows of ``x`` and ``y``."""
    if jax.default_backend() != "cpu":
        return False
    vg = value_and_grad(model, loss, mode=grad)
    xb, yb = (jax.ShapeDtypeStruct((batch_size, *np.shape(a)[1:]), np.asarray(a[:1]).dtype) for a in (x, y))
    jaxpr = jax.make_jaxpr(lambda p, s, xb, yb: vg(p, s, xb, yb, key=jax.random.key(0), train=True))(
        params, state, xb, yb)
    return "conv_general_dilated" in str(jaxpr)


def fit(model, loss, optimizer, data, *, epochs, batch_size, key, grad="manual", l2=0.0,
        penalty=None, progress=True, params=None, state=None, scan=None, policy=None) -> FitResult:
    """Train ``model`` on ``data``; returns trained params, state and a history.

    ``data``: a ``funcnn.data.Dataset``, ``(x, y)`` or ``(x_train, y_train, x_test, y_test)``.
    ``optimizer``: an optax ``GradientTransformation``. ``l2``/``penalty``: extra terms of
    the objective (see ``value_and_grad``). ``grad``: ``"manual"`` (hand-written
    backward) or ``"autodiff"``. Evaluation (accuracy, test loss) runs in eval mode.
    The history holds, per epoch, ``loss`` (mean training minibatch loss), and
    ``train_loss``/``train_acc``/``test_loss``/``test_acc`` in eval mode.
    ``scan``: run each epoch as one compiled ``lax.scan`` (True) or its compiled step per
    batch (False); ``None`` scans unless XLA:CPU would put a convolution in the loop.
    ``policy``: a ``funcnn.Policy`` (or its string) to train under, e.g. "bf16-mixed"
    (``funcnn.precision``; float16 compute adds dynamic loss scaling).
    """
    if grad not in MODES:
        raise ValueError(f"fit: grad must be one of {MODES}, got {grad!r}")
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"fit: epochs must be a positive integer, got {epochs!r}")
    x_tr, y_tr, x_te, y_te = _as_arrays(data)
    if not isinstance(batch_size, int) or not 1 <= batch_size <= len(x_tr):
        raise ValueError(f"fit: batch_size must be an integer in [1, {len(x_tr)}], got {batch_size!r}")
    if policy is not None:  # issue 13: the model, loss and optimiser under the policy
        model, loss, optimizer = precision.prepare(model, loss, optimizer, policy)
    key, k_init = jax.random.split(key)
    if params is None:
        params, state = model.init(k_init, tuple(np.shape(x_tr)[1:]))
    opt_state = optimizer.init(params)
    if scan is None:
        scan = not scan_is_slow(model, loss, params, state, x_tr, y_tr, batch_size=batch_size, grad=grad)
    epoch = make_epoch(model, loss, optimizer, batch_size=batch_size, grad=grad, l2=l2, penalty=penalty,
                       scan=scan)
    predict = predictor(model)
    x_dev, y_dev = jnp.asarray(x_tr), jnp.asarray(y_tr)

    history = {k: [] for k in ("loss", "train_loss", "train_acc", "test_loss", "test_acc")}
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs, desc="train", unit="epoch")
    for k_epoch in jax.random.split(key, epochs):
        params, state, opt_state, mean_loss = epoch(params, state, opt_state, x_dev, y_dev, k_epoch)
        history["loss"].append(float(mean_loss))
        tr = evaluate(model, loss, params, state, x_tr, y_tr, predict=predict)
        te = (evaluate(model, loss, params, state, x_te, y_te, predict=predict)
              if x_te is not None else (np.nan, np.nan))
        for name, v in zip(("train_loss", "train_acc", "test_loss", "test_acc"), (*tr, *te)):
            history[name].append(v)
        if progress:
            bar.update(1)
            bar.set_postfix(loss=f"{mean_loss:.4f}", train_acc=f"{tr[1]:.3f}", test_acc=f"{te[1]:.3f}")
    if progress:
        bar.close()
    return FitResult(params, state, history)
