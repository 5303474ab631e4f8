r"""``fit``: minibatch training of a funcnn model with an optax optimizer, epoch by epoch.

Each epoch shuffles the training set with its own key and runs every full batch through the
one training step (``funcnn.training.step``, the schedule of ``funcnn.training.epoch``):

$$
g_t = \nabla_\theta L_t(\theta_{t-1}) \text{ (manual backward or autodiff)}, \quad
(u_t, s_t) = \mathrm{update}(g_t, s_{t-1}), \quad \theta_t = \theta_{t-1} + u_t.
$$

Gradient descent, momentum, Adam and learning-rate schedules are optax's
(``optax.sgd(lr, momentum=0.9)``, ``optax.adam(optax.cosine_decay_schedule(...))``).
The epoch is one compiled ``lax.scan``, or the compiled step per batch where that measured
faster (``scan_is_slow``), or sharded over a mesh's ``"data"`` axis (``mesh=``); all three
train on the same batches with the same keys.

After every epoch the model is evaluated in eval mode (``train=False``) on the training and
the test set. The outer loop (``funcnn.training.loop``) checks the non-finite guard once per
epoch, checkpoints every ``checkpoint_every`` epochs (``resume=True`` continues bitwise),
and turns SIGINT/SIGTERM into a checkpoint and ``Interrupted``.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from funcnn import losses
from funcnn.core.layer import Layer
from funcnn.gradients import MODES
from funcnn.losses import Loss
from funcnn.regularization import Penalty
from funcnn.training import loop, precision
from funcnn.training.epoch import make_epoch, scan_is_slow
from funcnn.training.loop import NonFiniteError
from funcnn.training.step import PyTree, guard_names

__all__ = ["FitResult", "NonFiniteError", "accuracy", "evaluate", "fit", "predictor"]

HISTORY = ("loss", "train_loss", "train_acc", "test_loss", "test_acc")
EVAL_ROWS = 1000  # rows per prediction chunk when evaluating


class FitResult(NamedTuple):
    """What ``fit`` returns: the trained `params` and `state` (the model's trees) and the
    `history`, a dict of per-epoch lists keyed ``loss`` (mean training minibatch loss),
    ``train_loss``, ``train_acc``, ``test_loss``, ``test_acc`` (eval mode; ``nan`` without a
    test set or for a task that is not a classification)."""

    params: dict
    state: dict
    history: dict


def accuracy(pred: jax.Array, y: jax.Array) -> jax.Array:
    """Fraction of correct predictions, a scalar.

    **Arguments:**

    - `pred`: logits `(N, C)` (argmax), or `(N, 1)`/`(N,)` scores (sign) for 0/1 labels.
    - `y`: integer labels `(N,)`, or one-hot targets `(N, C)`.

    **Returns:**

    The accuracy in `[0, 1]`, or ``nan`` when the task is not a classification.
    """
    if not jnp.issubdtype(jnp.result_type(y), jnp.integer):
        if pred.ndim == 2 and pred.shape[1] > 1 and jnp.shape(y) == pred.shape:  # one-hot targets
            one_hot = jnp.all((y == 0) | (y == 1)) & jnp.all(y.sum(axis=1) == 1)
            return jnp.where(one_hot, jnp.mean(jnp.argmax(pred, -1) == jnp.argmax(y, -1)), jnp.nan)
        return jnp.nan
    if pred.ndim == 2 and pred.shape[1] > 1:
        return jnp.mean(jnp.argmax(pred, axis=-1) == y)
    return jnp.mean((pred.reshape(y.shape) > 0) == (y > 0))


def predictor(model: Layer) -> Callable[[PyTree, PyTree, jax.Array], jax.Array]:
    """A jit-compiled ``predict(params, state, x) -> y`` in eval mode: `x` `(N, ...)` to the
    model's output `(N, ...)`."""
    return jax.jit(lambda params, state, x: model.apply(params, state, x, train=False)[0])


def evaluate(model: Layer, loss: Loss, params: PyTree, state: PyTree, x: Any, y: Any, *, batch_size: int = EVAL_ROWS,
             predict: Callable | None = None) -> tuple[float, float]:
    """Mean loss and accuracy in eval mode (``train=False``), predicting in chunks.

    **Arguments:**

    - `model`, `loss`, `params`, `state`: the model, its loss and trees.
    - `x`: inputs `(N, ...)`; `y`: targets `(N, ...)`.
    - `batch_size`: rows per prediction chunk.
    - `predict`: ``predictor(model)``, to compile once when evaluating repeatedly.

    **Returns:**

    `(loss, accuracy)` as floats (accuracy ``nan`` for a task that is not a classification).
    """
    pred = _predictions(predict or predictor(model), params, state, x, batch_size)
    return float(loss.value(pred, jnp.asarray(y))), float(accuracy(pred, jnp.asarray(y)))


def _predictions(predict, params, state, x, batch_size) -> jax.Array:
    """``predict`` over `x` `(N, ...)` in chunks of `batch_size` rows, concatenated."""
    preds = [predict(params, state, x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
    return preds[0] if len(preds) == 1 else jnp.concatenate(preds)


def _as_arrays(data) -> tuple:
    if hasattr(data, "x_train"):
        return data.x_train, data.y_train, data.x_test, data.y_test
    if len(data) == 2:
        return data[0], data[1], None, None
    if len(data) == 4:
        return tuple(data)
    raise ValueError("fit: data must be a Dataset, (x, y) or (x_train, y_train, x_test, y_test)")


def _check_args(model, loss, optimizer, key, epochs, checkpoint_every, keep, grad) -> None:
    """One-line ``TypeError``/``ValueError`` for arguments of ``fit`` of the wrong kind."""
    if grad not in MODES:
        raise ValueError(f"fit: grad must be one of {MODES}, got {grad!r}")
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


def _check_data(model, loss, x, y, split) -> None:
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


def _checked_data(model, loss, data, batch_size) -> tuple:
    """``(x_train, y_train, x_test, y_test)`` of ``data``, checked (``None`` test set when absent)."""
    x_tr, y_tr, x_te, y_te = _as_arrays(data)
    _check_data(model, loss, x_tr, y_tr, "train")
    if x_te is not None:
        _check_data(model, loss, x_te, y_te, "test")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= len(x_tr):
        raise ValueError(f"fit: batch_size must be an integer in [1, {len(x_tr)}], got {batch_size!r}")
    return x_tr, y_tr, x_te, y_te


def _check_key(saved_key, key, directory) -> None:
    """A resumed run must have the key of the run that wrote its checkpoints."""
    if saved_key is not key and not np.array_equal(jax.random.key_data(saved_key), jax.random.key_data(key)):
        raise ValueError(f"fit: resume: the checkpoints in {directory} were written by a run with a "
                         f"different key; pass the key of that run")


def _recorder(model, loss, history, x_tr, y_tr, x_te, y_te):
    """``record(carry, mean_loss, epoch) -> postfix``: the epoch's history, in eval mode."""
    predict = predictor(model)
    # evaluate's loss and accuracy as one compiled program (op by op, each would compile its
    # own): the targets were checked once, up front, by fit
    score = jax.jit(lambda pred, y: (loss.value(pred, y), accuracy(pred, y)))
    y_tr, y_te = jnp.asarray(y_tr), None if y_te is None else jnp.asarray(y_te)

    def scores(params, state, x, y):
        return tuple(float(v) for v in score(_predictions(predict, params, state, x, EVAL_ROWS), y))

    def record(carry, mean_loss, epoch):
        params, state, _ = carry
        history["loss"].append(float(mean_loss))
        tr = scores(params, state, x_tr, y_tr)
        te = scores(params, state, x_te, y_te) if x_te is not None else (np.nan,) * 2
        for name, v in zip(HISTORY[1:], (*tr, *te)):
            history[name].append(v)
        return {"loss": f"{mean_loss:.4f}", "train_acc": f"{tr[1]:.3f}", "test_acc": f"{te[1]:.3f}"}

    return record


def fit(model: Layer, loss: Loss, optimizer: optax.GradientTransformation, data: Any, *, epochs: int,
        batch_size: int, key: jax.Array, grad: str = "manual", l2: float = 0.0, penalty: Penalty | None = None,
        progress: bool = True, params: PyTree | None = None, state: PyTree | None = None, scan: bool | None = None,
        checkpoint_dir: Any = None, checkpoint_every: int = 1, keep: int = 2, resume: bool = False,
        mesh: jax.sharding.Mesh | None = None, policy: Any = None) -> FitResult:
    """Train ``model`` on ``data`` for ``epochs`` epochs (module docstring).

    **Arguments:**

    - `model`, `loss`: a funcnn ``Layer`` and a ``funcnn.losses.Loss``.
    - `optimizer`: an optax ``GradientTransformation``.
    - `data`: a ``funcnn.data.Dataset``, `(x, y)` or `(x_train, y_train, x_test, y_test)`;
      inputs `(N, ...)`, targets `(N, ...)` (labels `(N,)` for softmax cross-entropy).
    - `epochs`, `batch_size`: `n // batch_size` steps per epoch; `key`: the run's PRNG key.
    - `grad`: ``"manual"`` (hand-written backward) or ``"autodiff"``; `l2`, `penalty`: extra
      terms of the objective (``funcnn.gradients.value_and_grad``).
    - `progress`: a tqdm bar; `params`, `state`: start from these instead of ``model.init``.
    - `scan`: one ``lax.scan`` per epoch (``True``), the compiled step per batch (``False``),
      ``None``: whichever measured faster (``scan_is_slow``).
    - `checkpoint_dir`: an orbax checkpoint every `checkpoint_every` epochs and at the end,
      the newest `keep` kept; `resume=True` continues the run there (same `key` and `epochs`:
      bitwise the same result).
    - `mesh`: a ``jax.sharding.Mesh`` with a ``"data"`` axis: data-parallel training, batches
      sharded, params/state/optimizer state replicated (`batch_size` divisible by its shards).
    - `policy`: a ``funcnn.Policy`` (or its string, e.g. ``"bf16-mixed"``) to train under
      (``funcnn.training.precision``; float16 compute adds dynamic loss scaling).

    **Returns:**

    ``FitResult(params, state, history)``. Raises ``ValueError``/``TypeError`` for bad
    arguments or data (x and y of different lengths, non-finite values, labels outside
    [0, classes)), ``NonFiniteError`` when a step produces a non-finite value,
    ``Interrupted`` on SIGINT/SIGTERM (after checkpointing).
    """
    _check_args(model, loss, optimizer, key, epochs, checkpoint_every, keep, grad)
    if resume and checkpoint_dir is None:
        raise ValueError("fit: resume=True needs checkpoint_dir (the folder of the run to continue)")
    x_tr, y_tr, x_te, y_te = _checked_data(model, loss, data, batch_size)
    if policy is not None:
        model, loss, optimizer = precision.prepare(model, loss, optimizer, policy)
    key, k_init = jax.random.split(key)
    if params is None:
        shape = tuple(np.shape(x_tr)[1:])
        params, state = jax.jit(lambda k: model.init(k, shape))(k_init)  # one program, not op by op
    checkpoints, (params, state, opt_state, saved_key), done, history = loop.open_checkpoints(
        checkpoint_dir, (params, state, jax.jit(optimizer.init)(params), key), {k: [] for k in HISTORY}, keep=keep,
        resume=resume, who="fit", unit="epoch", total=epochs)
    _check_key(saved_key, key, checkpoint_dir)
    if scan is None and mesh is None:
        scan = not scan_is_slow(model, loss, params, state, x_tr, y_tr, batch_size=batch_size, grad=grad,
                                optimizer=optimizer)
    epoch = make_epoch(model, loss, optimizer, batch_size=batch_size, grad=grad, l2=l2, penalty=penalty,
                       scan=bool(scan), mesh=mesh)
    x_dev, y_dev, keys = jnp.asarray(x_tr), jnp.asarray(y_tr), jax.random.split(key, epochs)

    def run_epoch(carry, start, stop, tick):
        *carry, mean_loss, flags = epoch(*carry, x_dev, y_dev, keys[start])
        return tuple(carry), mean_loss, flags

    plan = loop.Plan("fit", "epoch", range(1, epochs + 1), checkpoint_every, guard_names(params))
    params, state, _ = loop.train_loop(
        (params, state, opt_state), plan, run_unit=run_epoch, record=_recorder(model, loss, history, x_tr, y_tr,
                                                                                x_te, y_te),
        snapshot=lambda carry: (*carry, key), history=history, checkpoints=checkpoints, done=done, progress=progress)
    return FitResult(params, state, history)
