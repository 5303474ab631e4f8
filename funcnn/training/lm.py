r"""Language modelling with a funcnn model over character ids: training, validation, sampling.

**Loss.** For logits $z$ of shape `(B, T, V)` and next-character ids $y$ of shape `(B, T)`, the
loss is the mean negative log-likelihood per character (nats/char),

$$
L = \frac{1}{BT} \sum_{b,t} \Bigl[\log \sum_v e^{z_{btv}} - z_{bt y_{bt}}\Bigr], \qquad
\frac{\partial L}{\partial z_{bt}} = \frac{\mathrm{softmax}(z_{bt}) - e_{y_{bt}}}{BT},
$$

which is ``funcnn.losses.softmax_cross_entropy`` itself: it takes logits `(..., V)` with ids
`(...)` and averages over every position.

**Training** (``train_lm``): Adam on random windows (``funcnn.data.text.random_windows``, a
NumPy generator seeded by ``seed``, so another framework can replay the same batches with
``batches``), the one training step (``funcnn.training.step.make_step``) jit-compiled and
called per batch, the validation loss over fixed non-overlapping windows every
``eval_every`` steps and after the last. The outer loop is ``fit``'s
(``funcnn.training.loop``): a unit is ``eval_every`` steps; the guard, the checkpoints, the
interrupts and the progress bar work per unit.

**Data parallelism** (``mesh=``, ``funcnn.training.distributed``): the same batches, drawn on
the host whatever the number of devices, each sharded over the mesh's ``"data"`` axis (every
process puts only its own rows on its devices); params and optimizer state replicated. The
loss is a mean over the $BT$ positions, so with $D$ shards of $B/D$ windows
$L = \frac{1}{D}\sum_d L_d$ and the gradient is the mean of the shards' gradients: the batch
contractions of the backward (``funcnn.core.sharding``) are where it is all-reduced.

**Sampling**: ``funcnn.training.sampling.sample`` (with a key/value cache).

**Runs**: a GPT run folder has the format of every run (``funcnn.training.runs``).
"""
from __future__ import annotations

import itertools
import time
from typing import Any, Callable, Iterator, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from funcnn.core.layer import Layer
from funcnn.data import text
from funcnn.losses import softmax_cross_entropy
from funcnn.training import interrupt, loop, precision
from funcnn.training.epoch import Placement
from funcnn.training.step import PyTree, guard_names, make_step


class LMResult(NamedTuple):
    """What ``train_lm`` returns: the trained `params` and the `history`, a dict of lists, one
    entry per evaluation: ``step``, ``train_loss`` (the mean training loss since the last
    evaluation), ``val_loss`` (nats/char) and ``seconds`` (since the start of the run)."""

    params: dict
    history: dict


def batches(corpus_ids: np.ndarray, *, context: int, batch_size: int, steps: int,
            seed: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The ``steps`` training batches that ``train_lm`` uses with this ``seed``.

    **Arguments:**

    - `corpus_ids`: the training text as ids `(L,)`.
    - `context`: `T`, the window length; `batch_size`: `B`; `steps`: how many batches.
    - `seed`: the NumPy generator's seed.

    **Returns:**

    An iterator of `(x, y)`, both int `(B, T)`: windows of the text and the ids that follow
    each position.
    """
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        yield text.random_windows(corpus_ids, context, batch_size, rng)


def _state(model, context):
    """The model's (array-free) state: a GPT has no running statistics."""
    state = jax.eval_shape(lambda k: model.init(k, (context,)), jax.random.key(0))[1]
    if jax.tree_util.tree_leaves(state):
        raise ValueError("lm: expected a model without state (e.g. no BatchNorm)")
    return state


def evaluator(model: Layer, x: np.ndarray, y: np.ndarray, *, chunk: int = 64) -> Callable[[PyTree], float]:
    """The validation loss of ``model`` over fixed windows.

    **Arguments:**

    - `model`: ids `(B, T)` to logits `(B, T, V)`, without state.
    - `x`, `y`: the windows and their next ids, both int `(N, T)`.
    - `chunk`: windows per compiled call.

    **Returns:**

    ``loss(params) -> float``: the mean nats/char over all `N T` positions.
    """
    state = _state(model, x.shape[1])

    @jax.jit
    def total(params, xb, yb):
        logits, _ = model.apply(params, state, xb, train=False)
        return softmax_cross_entropy.value(logits, yb) * yb.size

    def loss(params):
        s = sum(float(total(params, jnp.asarray(x[i:i + chunk]), jnp.asarray(y[i:i + chunk])))
                for i in range(0, len(x), chunk))
        return s / y.size

    return loss


def _check(context, steps, batch_size, eval_every, resume, checkpoint_dir) -> None:
    for value, arg in ((context, "context"), (steps, "steps"), (batch_size, "batch_size"),
                       (eval_every, "eval_every")):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"train_lm: {arg} must be a positive integer, got {value!r}")
    if resume and checkpoint_dir is None:
        raise ValueError("train_lm: resume=True needs checkpoint_dir (the folder of the run to continue)")


def _stepper(step, place: Placement, windows: Iterator) -> Callable:
    """``run_unit(carry, start, stop, tick)`` of the loop: steps ``start+1..stop`` on the next
    batches of ``windows``, returning the steps' losses `(stop - start,)` and flags."""
    def run_unit(carry, start, stop, tick):
        since, flags = [], []
        for _ in range(start, stop):
            interrupt.check()  # a signal stops between steps; the last evaluation's checkpoint is kept
            x, y = next(windows)
            with place.context():
                carry, (value, bad) = step(carry, (*place.shard((x, y)), None))
            since.append(value)
            flags.append(bad)
            tick()
        return carry, jnp.stack(place.local(since)), jnp.stack(place.local(flags))

    return run_unit


def _params_and_opt_state(carry: tuple) -> tuple:
    """What a checkpoint of ``train_lm`` holds: ``(params, opt_state)`` (the state is empty)."""
    params, _, opt_state = carry
    return params, opt_state


def _recorder(history: dict, validation: Callable, place: Placement) -> Callable:
    """``record(carry, losses, step) -> postfix``: one evaluation's entry of the history."""
    t0 = time.perf_counter() - (history["seconds"][-1] if history["seconds"] else 0.0)

    def record(carry, since, step):
        params = place.local(carry)[0]
        history["step"].append(step)
        history["train_loss"].append(float(jnp.mean(since)))
        history["val_loss"].append(validation(params))
        history["seconds"].append(time.perf_counter() - t0)
        return {"val_loss": f"{history['val_loss'][-1]:.3f}"}

    return record


def train_lm(model: Layer, corpus: Any, *, context: int, steps: int, batch_size: int = 32,
             optimizer: optax.GradientTransformation | None = None, grad: str = "manual", eval_every: int = 100,
             eval_windows: int | None = None, seed: int = 0, params: PyTree | None = None, progress: bool = False,
             policy: Any = None, checkpoint_dir: Any = None, keep: int = 2, resume: bool = False,
             mesh: jax.sharding.Mesh | None = None) -> LMResult:
    """Train a language model on ``corpus.train``, validating on ``corpus.validation``.

    The step is ``make_step`` and the loop ``fit``'s (module docstring): ``policy`` works as in
    ``fit`` (float16 with loss scaling); ``checkpoint_dir`` keeps an orbax checkpoint at every
    evaluation (``resume=True`` continues from the newest, with the same batches: bitwise the
    same run); the non-finite guard is checked at every evaluation (``NonFiniteError`` naming
    the first bad step and value); SIGINT/SIGTERM stop between steps with ``Interrupted``,
    the last evaluation's checkpoint kept.

    **Arguments:**

    - `model`: ids `(B, T)` to logits `(B, T, V)`, without state (e.g. ``funcnn.models.gpt``).
    - `corpus`: ``funcnn.data.text`` corpus: ``train`` and ``validation`` ids `(L,)`.
    - `context`: `T`; `steps`: training steps; `batch_size`: `B` windows per step.
    - `optimizer`: optax, default ``optax.adam(1e-3)``; `grad`: ``"manual"`` or ``"autodiff"``.
    - `eval_every`: steps between evaluations; `eval_windows`: at most this many validation
      windows (all by default); `seed`: the batches' and the initial params' seed.
    - `params`: start from these instead of ``model.init``; `progress`: a tqdm bar.
    - `checkpoint_dir`, `keep`, `resume`: checkpoints (as ``fit``'s).
    - `mesh`: a ``jax.sharding.Mesh`` with a ``"data"`` axis: data parallelism, `B`
      divisible by its data shards; the same `seed` gives the same parameters on any number
      of devices, to float32 rounding. Evaluation, checkpoints and the guard use this
      process's copy of the replicated parameters (several processes: every one calls; the
      checkpoint folder must be one they all see; orbax writes from process 0).

    **Returns:**

    ``LMResult(params, history)``.
    """
    _check(context, steps, batch_size, eval_every, resume, checkpoint_dir)
    place = Placement(mesh, batch_size, "train_lm")
    optimizer = optimizer or optax.adam(1e-3)
    loss = softmax_cross_entropy
    if policy is not None:
        model, loss, optimizer = precision.prepare(model, loss, optimizer, policy)
    if params is None:
        params, _ = jax.jit(lambda k: model.init(k, (context,)))(jax.random.key(seed))  # one program, not op by op
    state = _state(model, context)
    history = {"step": [], "train_loss": [], "val_loss": [], "seconds": []}
    checkpoints, (params, opt_state), done, history = loop.open_checkpoints(
        checkpoint_dir, (params, jax.jit(optimizer.init)(params)), history, keep=keep, resume=resume, who="train_lm",
        unit="step", total=steps)
    step = jax.jit(make_step(model, loss, optimizer, grad=grad))
    windows = itertools.islice(batches(corpus.train, context=context, batch_size=batch_size, steps=steps, seed=seed),
                               done, None)  # resumed: the same batches, the first done already trained on
    validation = evaluator(model, *text.eval_windows(corpus.validation, context, eval_windows))
    plan = loop.Plan("train_lm", "step", [*range(eval_every, steps, eval_every), steps], 1, guard_names(params))
    carry = loop.train_loop(place.replicate((params, state, opt_state)), plan, run_unit=_stepper(step, place, windows),
                            record=_recorder(history, validation, place),
                            snapshot=lambda carry: _params_and_opt_state(place.local(carry)), history=history,
                            checkpoints=checkpoints, done=done, progress=progress)
    return LMResult(place.local(carry)[0], history)
