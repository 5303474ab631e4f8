"""Interleaved wall-clock timing of training steps, and the markdown table they go to.

Every contender is a zero-argument callable running one training step and returning
something to block on. Rounds run every contender once, in a fresh random order each
round, so drifts in machine load hit all of them alike; each call is timed with
``block_until_ready`` (JAX) before the clock is read. We report medians, the spread
(interquartile range) and ratios to a reference, all from the same run.
"""
from __future__ import annotations

import datetime
import functools
import re
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from funcnn.core.autotune import time_rounds
from funcnn.core.machine import machine, versions_line as versions


# The one optimizer of every contender: AdamW, decoupled weight decay on the tensors of rank >= 2
# (weights and embeddings; no bias or norm parameter), nanoGPT's rule.
LR, BETAS, EPS, WEIGHT_DECAY = 1e-3, (0.9, 0.999), 1e-8, 0.1


def decays(leaf: Any) -> bool:
    """Whether AdamW decays this tensor: rank 2 or more (``funcnn.models.decays_matrices``)."""
    return np.ndim(leaf) >= 2


def adamw() -> optax.GradientTransformation:
    """optax's AdamW with ``LR, BETAS, EPS, WEIGHT_DECAY``, decay masked by ``decays``."""
    return optax.adamw(LR, b1=BETAS[0], b2=BETAS[1], eps=EPS, weight_decay=WEIGHT_DECAY,
                       mask=lambda params: jax.tree_util.tree_map(decays, params))


def torch_adamw(model: Any) -> Any:
    """``torch.optim.AdamW`` with the same settings and decay rule as ``adamw``, ``fused=True``
    (the fused kernel runs on CPU in torch 2.13)."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": WEIGHT_DECAY},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=LR, betas=BETAS, eps=EPS, fused=True)


def in_layer_order(params: dict) -> list:
    """The params of a ``serial`` model's layers (keyed ``f"{i}_{name}"``), in layer order."""
    return [params[k] for k in sorted(params, key=lambda k: int(k.split("_", 1)[0]))]


def on_gpu() -> bool:
    """Whether the contenders run on a GPU: JAX's default backend is one. There PyTorch runs on
    CUDA too (``torch_device``) and ``full_float32`` makes both compute float32 products in float32."""
    return jax.default_backend() == "gpu"


def full_float32() -> None:
    """On a GPU, float32 products in float32 in both libraries (no TF32: JAX's
    ``jax_default_matmul_precision`` "highest", PyTorch's ``allow_tf32`` off), so the equivalence
    check compares the same arithmetic. Call before any contender compiles; nothing on CPU."""
    if not on_gpu():
        return
    jax.config.update("jax_default_matmul_precision", "highest")
    try:
        import torch
    except ImportError:
        return
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def torch_device() -> str:
    """PyTorch's device for the contenders: "cuda" when ``on_gpu`` and PyTorch sees a GPU, else "cpu"."""
    import torch

    return "cuda" if on_gpu() and torch.cuda.is_available() else "cpu"


def made(makers: dict, only: Any = None) -> dict:
    """``{name: make()}`` of the contender makers named in ``only`` (every one when None). On a GPU
    the contenders that restrict PyTorch's CPU threads ("... (1 thread)") are left out."""
    return {k: make() for k, make in makers.items()
            if (only is None or k in only) and not (on_gpu() and "(1 thread)" in k)}


class Contender:
    """One training step to time (``contender()``), and ``value_and_grads()``: the loss and the
    gradients at the contender's current weights, for ``check_equivalence``."""

    def __init__(self, run: Callable[[], Any], value_and_grads: Callable[[], tuple], comparable: bool = False):
        self.run, self.value_and_grads, self.comparable = run, value_and_grads, comparable

    def __call__(self):
        return self.run()

    def named(self, names: Callable[[Any], dict]) -> "Contender":
        """The same contender, its gradients given as ``names(grads)``: a dict name -> array."""
        def value_and_grads():
            value, grads = self.value_and_grads()
            return float(value), {k: np.asarray(v) for k, v in names(grads).items()}

        return Contender(self.run, value_and_grads, comparable=True)


def path_names(tree: Any, rename: Callable[[str], str] = lambda name: name) -> dict:
    """The array leaves of a pytree (a dict, an ``nnx.State``, an ``eqx.Module``) as
    ``{rename("a.0.b"): leaf}``, the name joined from the leaf's key path."""
    return {rename(key_path_name(path)): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
            if hasattr(leaf, "shape")}


def key_path_name(path: tuple) -> str:
    """A pytree key path as a dotted name: dict keys, attribute names and list indices
    (an ``nnx.Variable``'s ``value`` left out)."""
    keys = [getattr(k, "key", getattr(k, "name", getattr(k, "idx", None))) for k in path]
    return ".".join(str(k) for k in keys if k != "value")


def relative_error(a: Any, b: Any, floor: float = 1e-6) -> float:
    """max |a - b| / max(max |b|, floor): an error relative to the tensor's magnitude."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), floor)) if b.size else 0.0


def check_equivalence(contenders: dict, reference: str, *, steps: int = 3, loss_rtol: float = 1e-4,
                      grad_rtol: float = 1e-4) -> str:
    """Prove every ``Contender`` computes ``reference``'s training step before any is timed.

    Compares, against ``reference``: the initial loss (relative error), every gradient tensor
    by name (``relative_error``, the worst reported), and the loss after ``steps`` optimizer
    steps of each. Prints one line per contender and returns a one-line summary; on a mismatch
    (a missing name, a loss beyond ``loss_rtol``, a gradient beyond ``grad_rtol``) exits with
    a one-line error. Only contenders whose gradients are named (``Contender.named``) are checked.
    The limits sit well above float32's disagreement between correct contenders (gradients
    ~3e-6, losses ~1e-7 at the start and ~1e-5 after the steps) and below a small change of
    architecture: nanoGPT in PyTorch with tanh GELU against funcnn's exact GELU differs by
    1.5e-4 in one gradient tensor and is stopped.
    """
    checked = {n: c for n, c in contenders.items() if isinstance(c, Contender) and c.comparable}
    if reference not in checked:
        return ""
    ref_loss, ref_grads = checked[reference].value_and_grads()
    worst, first = {}, {}
    for n, c in checked.items():  # one contender's gradients at a time: GPT-2's are 0.5 GB each
        value, grads = (ref_loss, ref_grads) if n == reference else c.value_and_grads()
        if set(grads) != set(ref_grads):
            raise SystemExit(f"equivalence: {n}'s gradients are named {sorted(set(grads) ^ set(ref_grads))} "
                             f"unlike {reference}'s")
        errs = {k: relative_error(grads[k], ref_grads[k]) for k in ref_grads}
        del grads
        k = max(errs, key=errs.get)
        worst[n], first[n] = (k, errs[k]), value
        print(f"equivalence {n}: loss {value:.6f}, worst gradient rel error {errs[k]:.1e} ({k})", flush=True)
    del ref_grads
    for c in checked.values():
        for _ in range(steps):
            _block(c())
    after = {n: c.value_and_grads()[0] for n, c in checked.items()}
    for n, (k, err) in worst.items():
        e0 = abs(first[n] - ref_loss) / abs(ref_loss)
        e3 = abs(after[n] - after[reference]) / abs(after[reference])
        print(f"equivalence {n}: initial loss rel {e0:.1e}, loss after {steps} steps {after[n]:.6f} (rel {e3:.1e})",
              flush=True)
        if e0 > loss_rtol or e3 > loss_rtol or err > grad_rtol:
            raise SystemExit(f"equivalence: {n} differs from {reference}: initial loss rel {e0:.1e}, gradient "
                             f"{k} rel {err:.1e}, loss after {steps} steps rel {e3:.1e} (limits {loss_rtol:g}, "
                             f"{grad_rtol:g})")
    return (f"Before timing, every contender started from {reference}'s weights: initial losses agree to "
            f"{loss_rtol:g} relative, every gradient tensor to {grad_rtol:g} of its largest entry (worst: "
            + ", ".join(f"{n} {e:.0e}" for n, (_, e) in worst.items() if n != reference)
            + f"), and the losses after {steps} AdamW steps to {loss_rtol:g}.")


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

    run.carry = lambda: box[0]
    return run


def funcnn_stepper(model: Any, x: Any, y: Any, mode: str, *, loss: Any = None, params: Any = None,
                   mesh: jax.sharding.Mesh | None = None) -> Callable[[], Any]:
    """A contender running one AdamW step (``adamw``) of ``loss`` (default softmax cross-entropy)
    on a funcnn ``model`` with inputs ``x`` `(B, ...)` and targets ``y`` `(B, ...)`, with the hand-written backward (``mode="manual"``) or autodiff:
    the training step of ``fit`` (``funcnn.training.make_step``), jitted (the guard's
    flags, unused, are compiled away), the carry donated. ``params``: the initial params (default:
    ``model.init`` with key 0; copied).
    ``mesh``: data parallel, the carry replicated and ``(x, y)`` sharded over
    ``"data"`` (``funcnn.training.distributed``), every step run under the mesh.
    Without a mesh the contender is a ``Contender`` whose ``value_and_grads`` gives the
    loss and the gradients at its current params (``names`` maps a params tree to named arrays)."""
    import funcnn as fn
    from funcnn.training import distributed

    loss = loss or fn.losses.softmax_cross_entropy
    state = model.init(jax.random.key(0), tuple(np.shape(x)[1:]))[1]
    if params is None:
        params = model.init(jax.random.key(0), tuple(np.shape(x)[1:]))[0]
    params = jax.tree_util.tree_map(jnp.copy, params)  # its own buffers: the step donates them
    tx = adamw()
    train_step = fn.train.make_step(model, loss, tx, grad=mode)

    @functools.partial(jax.jit, donate_argnums=0)
    def step(carry, x, y):
        return train_step(carry, (x, y, None))[0]

    carry, batch = (params, state, tx.init(params)), (jnp.asarray(x), jnp.asarray(y))
    if mesh is None:
        run = stepper(step, carry, *batch)
        grad_fn = jax.jit(fn.gradients.value_and_grad(model, loss, mode=mode))

        def value_and_grads():
            params, state, _ = run.carry()
            value, grads, _ = grad_fn(params, state, *batch)
            return value, grads

        return Contender(run, value_and_grads)
    with jax.set_mesh(mesh):
        run = stepper(step, distributed.replicate(carry, mesh), *distributed.shard_batch(batch, mesh))

    def run_on_mesh():
        with jax.set_mesh(mesh):
            return run()

    return run_on_mesh


def jax_stepper(loss: Callable, params: Any, x: Any, y: Any) -> Callable[[], Any]:
    """A contender running one AdamW step (``adamw``) of ``loss(params, x, y)`` under ``jax.grad``,
    the carry donated; its ``value_and_grads`` gives ``jax.value_and_grad(loss)`` at the current params."""
    tx = adamw()
    x, y = jnp.asarray(x), jnp.asarray(y)
    params = jax.tree_util.tree_map(jnp.copy, params)

    @functools.partial(jax.jit, donate_argnums=0)
    def step(carry, x, y):
        params, opt = carry
        u, opt = tx.update(jax.grad(loss)(params, x, y), opt, params)
        return optax.apply_updates(params, u), opt

    run = stepper(step, (params, tx.init(params)), x, y)
    grad_fn = jax.jit(jax.value_and_grad(loss))
    return Contender(run, lambda: grad_fn(run.carry()[0], x, y))


def torch_stepper(model: Any, loss_fn: Callable, optimizer: Any, x: Any, y: Any,
                  threads: int | None = None, forward: Callable | None = None) -> Callable[[], None]:
    """A contender running one PyTorch training step (zero_grad, forward, backward, step);
    with ``threads`` set, on that many intra-op threads (default: torch's, one per core).
    ``forward``: what runs the model (default ``model``; e.g. ``torch.compile(model)``).
    Its ``value_and_grads`` gives the loss and ``{name: grad}`` of ``model.named_parameters()``."""
    import torch

    device = torch_device()
    if device != "cpu":  # the same Parameter objects move, so the optimizer keeps them
        model.to(device)
        x, y = x.to(device), y.to(device)
    forward = model if forward is None else forward

    def run():
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(forward(x), y)
        loss.backward()
        optimizer.step()
        if device != "cpu":
            torch.cuda.synchronize()  # the step is done when the clock is read
        return None

    def value_and_grads():
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(forward(x), y)
        loss.backward()
        grads = {n: p.grad.detach().cpu().numpy().copy() for n, p in model.named_parameters() if p.grad is not None}
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach()), grads

    if threads is None:
        return Contender(run, value_and_grads)

    def run_with_threads():
        default = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return run()
        finally:
            torch.set_num_threads(default)

    return Contender(run_with_threads, value_and_grads)


def flax_stepper(model: Any, x: Any, y: Any, leaf: Callable) -> Callable[[], Any]:
    """A contender running one Flax NNX AdamW step (``adamw``) of softmax cross-entropy on ``model``;
    ``leaf(model)`` is an array of the step's output to block on. Its ``value_and_grads`` gives
    the loss and the ``nnx.Param`` state's gradient."""
    from flax import nnx

    opt = nnx.Optimizer(model, adamw(), wrt=nnx.Param)

    def loss(m):
        return optax.softmax_cross_entropy_with_integer_labels(m(x), y).mean()

    @nnx.jit
    def step(model, opt, x, y):
        opt.update(model, nnx.grad(loss)(model))

    def run():
        step(model, opt, x, y)
        return leaf(model)

    value_and_grads = nnx.jit(lambda m: nnx.value_and_grad(loss)(m))
    return Contender(run, lambda: value_and_grads(model))


def equinox_stepper(model: Any, x: Any, y: Any) -> Callable[[], Any]:
    """A contender running one AdamW step (``adamw``) of softmax cross-entropy on an Equinox
    ``model`` of one example, ``jax.vmap``-ed over the batch, the carry donated; its ``value_and_grads`` gives
    ``eqx.filter_value_and_grad`` at the current model."""
    import equinox as eqx

    tx = adamw()
    model = jax.tree_util.tree_map(lambda a: jnp.copy(a) if eqx.is_array(a) else a, model)

    def loss(m, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(jax.vmap(m)(x), y).mean()

    @functools.partial(eqx.filter_jit, donate="all-except-first")
    def step(batch, carry):
        (x, y), (model, opt) = batch, carry
        u, opt = tx.update(eqx.filter_grad(loss)(model, x, y), opt, eqx.filter(model, eqx.is_array))
        return eqx.apply_updates(model, u), opt

    run = stepper(lambda carry, batch: step(batch, carry), (model, tx.init(eqx.filter(model, eqx.is_array))),
                  (x, y))
    value_and_grads = eqx.filter_jit(eqx.filter_value_and_grad(loss))
    return Contender(run, lambda: value_and_grads(run.carry()[0], x, y))
