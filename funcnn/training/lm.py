"""Language modelling with a funcnn model over character ids: training, validation, sampling.

Loss. For logits z of shape (B, T, V) and next-character ids y (B, T), the loss is the
mean negative log-likelihood per character (nats/char),

    L = 1/(B T) sum_{b,t} [logsumexp_v z_btv - z_bt,y_bt],   dL/dz_bt = (softmax(z_bt) - e_y_bt) / (B T),

i.e. ``losses.softmax_cross_entropy`` over the B*T positions as one batch.

Training (``train_lm``): Adam on random windows (``funcnn.data.text.random_windows``, a
NumPy generator seeded by ``seed``, so another framework can replay the same batches
with ``batches``), one jit-compiled step per batch, the validation loss over fixed
non-overlapping windows every ``eval_every`` steps and after the last.

Data parallelism (``mesh=``, ``funcnn.training.distributed``): the same batches, drawn on the host
whatever the number of devices, each sharded over the mesh's ``"data"`` axis (every
process puts only its own rows on its devices); params and optimizer state replicated.
The loss is a mean over the B*T positions, so with D shards of B/D windows
L = (1/D) sum_d L_d and the gradient is the mean of the shards' gradients: the batch
contractions of the backward (``funcnn.core.sharding``) are where it is all-reduced.

Sampling (``sample``): autoregressive. The model sees a window of ``context`` ids;
while the text is shorter than the window it sits at positions 0..n-1 and the rest of
the window is padding that causal attention keeps out of positions < n; afterwards the
window is the last ``context`` ids. The next id is drawn from softmax(z / temperature).

Runs (``save_run``/``load_run``): ``run.json`` (model, its sizes, the vocabulary, the
training arguments and history) and the final params as an orbax checkpoint in
``params/``.
"""
from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from funcnn import losses, models
from funcnn.data import text
from funcnn.training import distributed
from funcnn.losses import Loss


def _flatten(logits, ids):
    if logits.ndim != 3 or jnp.shape(ids) != logits.shape[:2]:
        raise ValueError(f"next_char_cross_entropy: expected logits (B, T, V) and ids (B, T), "
                         f"got {logits.shape} and {jnp.shape(ids)}")
    return logits.reshape(-1, logits.shape[-1]), jnp.reshape(ids, -1)


def _value(logits, ids):
    return losses.softmax_cross_entropy.value(*_flatten(logits, ids))


def _grad(logits, ids):
    return losses.softmax_cross_entropy.grad(*_flatten(logits, ids)).reshape(logits.shape)


next_char_cross_entropy = Loss("next_char_cross_entropy", _value, _grad)


class LMResult(NamedTuple):
    params: dict
    history: dict   # step, train_loss (mean since the last evaluation), val_loss, seconds


def batches(corpus_ids, *, context, batch_size, steps, seed):
    """The ``steps`` training batches ``(x, y)`` that ``train_lm`` uses with this ``seed``."""
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        yield text.random_windows(corpus_ids, context, batch_size, rng)


def _state(model, context):
    """The model's (array-free) state: a GPT has no running statistics."""
    state = jax.eval_shape(lambda k: model.init(k, (context,)), jax.random.key(0))[1]
    if jax.tree_util.tree_leaves(state):
        raise ValueError("lm: expected a model without state (e.g. no BatchNorm)")
    return state


def evaluator(model, x, y, *, chunk=64):
    """``loss(params) -> float``: mean nats/char over the windows ``(x, y)``, in chunks."""
    state = _state(model, x.shape[1])

    @jax.jit
    def total(params, xb, yb):
        logits, _ = model.apply(params, state, xb, train=False)
        return next_char_cross_entropy.value(logits, yb) * yb.size

    def loss(params):
        s = sum(float(total(params, jnp.asarray(x[i:i + chunk]), jnp.asarray(y[i:i + chunk])))
                for i in range(0, len(x), chunk))
        return s / y.size

    return loss


def train_lm(model, corpus, *, context, steps, batch_size=32, optimizer=None, grad="manual", eval_every=100,
             eval_windows=None, seed=0, params=None, progress=False, policy=None, checkpoint_dir=None, keep=2,
             resume=False, mesh=None) -> LMResult:
    """Train ``model`` (ids (B, T) -> logits (B, T, V)) on ``corpus.train`` with ``optimizer``
    (an optax transformation, default ``optax.adam(1e-3)``); validation loss on
    ``corpus.validation`` over at most ``eval_windows`` windows (module docstring).

    The step is ``funcnn.training.fit.make_step`` (so ``policy`` works as in ``fit``, float16 with
    loss scaling). As in ``fit``: ``checkpoint_dir`` keeps an orbax checkpoint at every
    evaluation (``resume=True`` continues from the newest, with the same batches: bitwise the
    same run); the non-finite guard is checked at every evaluation and raises
    ``funcnn.training.fit.NonFiniteError`` naming the first bad step and value; SIGINT/SIGTERM
    (inside ``interrupt.catching_signals``) stop between steps with ``Interrupted``, the last
    evaluation's checkpoint kept.

    ``mesh``: a ``jax.sharding.Mesh`` with a ``"data"`` axis: data-parallel training (module
    docstring), ``batch_size`` divisible by its number of data shards; the same ``seed``
    gives the same parameters on any number of devices, to float32 rounding. Evaluation,
    checkpoints and the guard run on this process's copy of the replicated parameters
    (several processes: every one calls, the checkpoint folder must be one they all see,
    orbax writes from process 0)."""
    from funcnn.training import interrupt, precision
    from funcnn.training.fit import NonFiniteError, guard_names
    from funcnn.training.fit import make_step as train_step

    for value, arg in ((context, "context"), (steps, "steps"), (batch_size, "batch_size"),
                       (eval_every, "eval_every")):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"train_lm: {arg} must be a positive integer, got {value!r}")
    if resume and checkpoint_dir is None:
        raise ValueError("train_lm: resume=True needs checkpoint_dir (the folder of the run to continue)")
    place = _Placement(mesh, batch_size)
    optimizer = optimizer or optax.adam(1e-3)
    loss = next_char_cross_entropy
    if policy is not None:
        model, loss, optimizer = precision.prepare(model, loss, optimizer, policy)
    if params is None:
        params, _ = model.init(jax.random.key(seed), (context,))
    state = _state(model, context)
    opt_state = optimizer.init(params)
    step = jax.jit(train_step(model, loss, optimizer, grad=grad))
    validation = evaluator(model, *text.eval_windows(corpus.validation, context, eval_windows))
    history = {"step": [], "train_loss": [], "val_loss": [], "seconds": []}
    names, done, checkpoints = guard_names(params), 0, None
    if checkpoint_dir is not None:
        from funcnn.training.checkpoint import open_run

        checkpoints, restored = open_run(checkpoint_dir, (params, opt_state), keep=keep, resume=resume,
                                         who="train_lm", unit="step")
        if restored is not None:
            (params, opt_state), done, history = restored
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, initial=done, desc="train", unit="step")
    t0, since, flags = time.perf_counter() - (history["seconds"][-1] if history["seconds"] else 0.0), [], []
    carry = place.replicate((params, state, opt_state))
    try:
        for i, (x, y) in enumerate(batches(corpus.train, context=context, batch_size=batch_size, steps=steps,
                                           seed=seed), start=1):
            if i <= done:  # resumed: the same batches, already trained on
                continue
            interrupt.check(done)  # a signal stops here; the last evaluation's checkpoint is kept
            with place.context():
                carry, (value, bad) = step(carry, (*place.shard((x, y)), None))
            since.append(value)
            flags.append(bad)
            if i % eval_every == 0 or i == steps:
                bad = np.asarray(jnp.stack(place.local(flags)))  # the guard: one transfer per evaluation
                if bad.any():
                    first, which = np.argwhere(bad)[0]
                    raise NonFiniteError(None, done + int(first) + 1, names[which], who="train_lm")
                params, _, opt_state = place.local(carry)
                history["step"].append(i)
                history["train_loss"].append(float(jnp.mean(jnp.stack(place.local(since)))))
                history["val_loss"].append(validation(params))
                history["seconds"].append(time.perf_counter() - t0)
                since, flags, done = [], [], i
                if checkpoints is not None:
                    checkpoints.save(i, (params, opt_state), history)
                if bar is not None:
                    bar.set_postfix(val_loss=f"{history['val_loss'][-1]:.3f}")
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        if checkpoints is not None:
            checkpoints.close()
    return LMResult(params, history)


class _Placement:
    """Where ``train_lm`` puts its arrays: nowhere special without a mesh; with one, the
    carry replicated, each batch sharded over ``"data"`` (this process's rows), and back
    to this process's single-device copies for evaluation and checkpoints."""

    def __init__(self, mesh, batch_size):
        if mesh is not None:
            distributed.data_shards(mesh, batch_size, "train_lm")
        self.mesh = mesh

    def replicate(self, tree):
        return tree if self.mesh is None else distributed.replicate(tree, self.mesh)

    def shard(self, batch):
        return batch if self.mesh is None else distributed.shard_batch(batch, self.mesh)

    def local(self, tree):
        return tree if self.mesh is None else distributed.to_local(tree)

    def context(self):
        return contextlib.nullcontext() if self.mesh is None else jax.set_mesh(self.mesh)


def sample(model, params, prompt_ids, *, context, length, temperature=1.0, key):
    """``length`` new ids after ``prompt_ids`` (module docstring); returns them as a NumPy array."""
    if not temperature > 0:
        raise ValueError(f"sample: temperature must be positive, got {temperature!r}")
    prompt_ids = np.asarray(prompt_ids, np.int32).reshape(-1)
    if prompt_ids.size == 0:
        raise ValueError("sample: prompt must hold at least one character, got an empty prompt")

    state = _state(model, context)

    @jax.jit
    def next_id(params, window, last, key):
        logits, _ = model.apply(params, state, window[None], train=False)
        return jax.random.categorical(key, logits[0, last] / temperature)

    ids = list(prompt_ids)
    for k in jax.random.split(key, length):
        n = min(len(ids), context)
        window = np.zeros(context, np.int32)
        window[:n] = ids[-n:]
        ids.append(int(next_id(params, window, n - 1, k)))
    return np.array(ids[len(prompt_ids):], np.int32)

