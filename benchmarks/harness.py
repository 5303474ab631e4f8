"""Interleaved wall-clock timing of training steps, and the markdown table they go to.

Every contender is a zero-argument callable running one training step and returning
something to block on. Rounds run every contender once, in a fresh random order each
round, so drifts in machine load hit all of them alike; each call is timed with
``block_until_ready`` (JAX) before the clock is read. We report medians, the spread
(interquartile range) and ratios to a reference, all from the same run.
"""
from __future__ import annotations

import datetime
import re
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from funcnn.core.autotune import time_rounds
from funcnn.core.machine import machine, versions_line as versions


def _block(out):
    jax.block_until_ready(out) if out is not None else None


def time_interleaved(contenders: dict, *, rounds: int = 30, warmup: int = 3, seed: int = 0) -> dict:
    """Per-contender lists of seconds per step, measured in interleaved rounds."""
    for f in contenders.values():
        for _ in range(warmup):
            _block(f())
    return time_rounds(contenders, rounds=rounds, min_rounds=rounds, seed=seed)


def load() -> str:
    """The 1-minute load average against the core count: how busy the machine was."""
    import os

    try:
        return f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores at the end"
    except OSError:
        return "load average unknown"


def table(times: dict, reference: str, title: str, command: str, notes: str = "") -> str:
    """A markdown section: median ms/step, IQR and ratio to ``reference``."""
    ref = np.median(times[reference])
    rows = sorted(times.items(), key=lambda kv: np.median(kv[1]))
    lines = [
        f"### {title}",
        "",
        f"Measured {datetime.date.today().isoformat()} on {machine()} ({load()}); {versions()}.",
        f"Reproduce: `{command}`. {len(next(iter(times.values())))} interleaved rounds; "
        f"ratio = median / median of {reference} (lower is faster).",
        "",
        "| contender | median ms/step | IQR ms | ratio |",
        "|---|---:|---:|---:|",
    ]
    for name, t in rows:
        q1, q3 = np.percentile(t, [25, 75])
        lines.append(f"| {name} | {1e3 * np.median(t):.3f} | {1e3 * (q3 - q1):.3f} | {np.median(t) / ref:.2f} |")
    if notes:
        lines += ["", notes]
    return "\n".join(lines) + "\n"


def table_runs(runs: list, reference: str, title: str, command: str, notes: str = "") -> str:
    """A markdown section over several separate runs: each run's median ms/step and ratio to
    ``reference``, side by side, and the two targets per run (funcnn manual / autodiff, and
    funcnn manual / the fastest other contender)."""
    names = sorted(runs[0], key=lambda n: np.mean([np.median(r[n]) for r in runs]))
    meds = {n: [np.median(r[n]) for r in runs] for n in names}
    ratios = {n: [m / ref for m, ref in zip(meds[n], meds[reference])] for n in names}
    k = len(runs)
    lines = [
        f"### {title}",
        "",
        f"Measured {datetime.date.today().isoformat()} on {machine()} ({load()}); {versions()}.",
        f"Reproduce: `{command}`. {k} separate runs (processes), each {len(runs[0][reference])} interleaved rounds; "
        f"per run: median ms/step and ratio = median / median of {reference} in that run (lower is faster).",
        "",
        "| contender | " + " | ".join(f"run {i + 1} ms" for i in range(k)) + " | "
        + " | ".join(f"run {i + 1} ratio" for i in range(k)) + " |",
        "|---|" + "---:|" * (2 * k),
    ]
    for n in names:
        lines.append(f"| {n} | " + " | ".join(f"{1e3 * m:.2f}" for m in meds[n]) + " | "
                     + " | ".join(f"{r:.2f}" for r in ratios[n]) + " |")
    if "funcnn manual" in meds:
        others = [n for n in names if not n.startswith("funcnn")]
        targets = []
        if "funcnn autodiff" in meds:
            targets.append("funcnn manual / funcnn autodiff per run: " + ", ".join(
                f"{a / b:.2f}" for a, b in zip(meds["funcnn manual"], meds["funcnn autodiff"])))
        if others:
            targets.append("funcnn manual / fastest other contender per run: " + ", ".join(
                f"{meds['funcnn manual'][i] / min(meds[n][i] for n in others):.2f} "
                f"({min(others, key=lambda n: meds[n][i])})" for i in range(k)))
        lines += ["", "; ".join(targets) + "."]
    if notes:
        lines += ["", notes]
    return "\n".join(lines) + "\n"


def write_section(path: str | Path, key: str, text: str) -> None:
    """Replace (or append) the section tagged ``key`` in the markdown file at ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.read_text() if path.exists() else "# Training-step benchmarks\n\n"
    begin, end = f"<!-- begin:{key} -->", f"<!-- end:{key} -->"
    block = f"{begin}\n{text}{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    new = pattern.sub(lambda _: block, old) if pattern.search(old) else old.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(new)


def stepper(step: Callable, carry: Any, *args: Any) -> Callable[[], Any]:
    """A contender from a step ``carry = step(carry, *args)`` (jitted, donating if it likes)."""
    box = [carry]

    def run():
        box[0] = step(box[0], *args)
        return box[0]

    return run


def funcnn_stepper(model: Any, x: Any, y: Any, mode: str, *, loss: Any = None,
                   mesh: jax.sharding.Mesh | None = None) -> Callable[[], Any]:
    """A contender running one Adam(1e-3) step of ``loss`` (default softmax cross-entropy)
    on a funcnn ``model`` with inputs ``x`` `(B, ...)` and targets ``y`` `(B, ...)`, with the hand-written backward (``mode="manual"``) or autodiff:
    the training step of ``fit`` (``funcnn.training.make_step``), jitted (the guard's
    flags, unused, are compiled away). ``mesh``: data parallel, the carry replicated and ``(x, y)`` sharded over
    ``"data"`` (``funcnn.training.distributed``), every step run under the mesh."""
    import funcnn as fn
    from funcnn.training import distributed

    params, state = model.init(jax.random.key(0), tuple(np.shape(x)[1:]))
    tx = optax.adam(1e-3)
    train_step = fn.train.make_step(model, loss or fn.losses.softmax_cross_entropy, tx, grad=mode)

    @jax.jit
    def step(carry, x, y):
        return train_step(carry, (x, y, None))[0]

    carry, batch = (params, state, tx.init(params)), (jnp.asarray(x), jnp.asarray(y))
    if mesh is None:
        return stepper(step, carry, *batch)
    with jax.set_mesh(mesh):
        run = stepper(step, distributed.replicate(carry, mesh), *distributed.shard_batch(batch, mesh))

    def run_on_mesh():
        with jax.set_mesh(mesh):
            return run()

    return run_on_mesh


def jax_stepper(loss: Callable, params: Any, x: Any, y: Any) -> Callable[[], Any]:
    """A contender running one Adam(1e-3) step of ``loss(params, x, y)`` under ``jax.grad``."""
    tx = optax.adam(1e-3)

    @jax.jit
    def step(carry, x, y):
        params, opt = carry
        u, opt = tx.update(jax.grad(loss)(params, x, y), opt, params)
        return optax.apply_updates(params, u), opt

    return stepper(step, (params, tx.init(params)), jnp.asarray(x), jnp.asarray(y))


def torch_stepper(model: Any, loss_fn: Callable, optimizer: Any, x: Any, y: Any,
                  threads: int | None = None) -> Callable[[], None]:
    """A contender running one PyTorch training step (zero_grad, forward, backward, step);
    with ``threads`` set, on that many intra-op threads (default: torch's, one per core)."""
    import torch

    def run():
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        return None

    if threads is None:
        return run

    def run_with_threads():
        default = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return run()
        finally:
            torch.set_num_threads(default)

    return run_with_threads


def flax_stepper(model: Any, x: Any, y: Any, leaf: Callable) -> Callable[[], Any]:
    """A contender running one Flax NNX Adam(1e-3) step of softmax cross-entropy on ``model``;
    ``leaf(model)`` is an array of the step's output to block on."""
    from flax import nnx

    opt = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)

    @nnx.jit
    def step(model, opt, x, y):
        def loss(m):
            return optax.softmax_cross_entropy_with_integer_labels(m(x), y).mean()

        opt.update(model, nnx.grad(loss)(model))

    def run():
        step(model, opt, x, y)
        return leaf(model)

    return run


def equinox_stepper(model: Any, x: Any, y: Any) -> Callable[[], Any]:
    """A contender running one Adam(1e-3) step of softmax cross-entropy on an Equinox
    ``model`` of one example, ``jax.vmap``-ed over the batch."""
    import equinox as eqx

    tx = optax.adam(1e-3)

    @eqx.filter_jit
    def step(carry, x, y):
        model, opt = carry

        def loss(m):
            return optax.softmax_cross_entropy_with_integer_labels(jax.vmap(m)(x), y).mean()

        u, opt = tx.update(eqx.filter_grad(loss)(model), opt, eqx.filter(model, eqx.is_array))
        return eqx.apply_updates(model, u), opt

    return stepper(step, (model, tx.init(eqx.filter(model, eqx.is_array))), x, y)
