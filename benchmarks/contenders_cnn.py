"""conv(32, 3x3, SAME)-ReLU-maxpool 2-conv(64, 3x3, SAME)-ReLU-maxpool 2-dense(10) on 28x28x1,
batch 64, AdamW, softmax cross-entropy.

funcnn picks its convolution per backend and layer (``impl=None``): on CPU im2col + GEMM
for the 1-channel first layer and XLA's convolution for the second; on GPU/TPU XLA's
convolution. The "(all gemm)" / "(all xla conv)" rows force one formulation everywhere.

``python benchmarks/contenders_cnn.py [--rounds 20]`` times the pieces of this step apart
(each convolution's forward, kernel and input gradients in both formulations; the 2x2
max-pool backward against autodiff's ``select_and_scatter``) and writes
benchmarks/results/cnn_ops.md.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from funcnn.core.layer import serial
from funcnn.layers.activations import ReLU
from funcnn.layers.conv import Conv2D
from funcnn.layers.dense import Dense
from funcnn.layers.flatten import Flatten
from funcnn.layers.pooling import MaxPool2D
from harness import equinox_stepper, flax_stepper, funcnn_stepper, jax_stepper, torch_adamw, torch_stepper

TITLE = "CNN conv32-pool-conv64-pool-dense10 on 28x28x1, batch 64, AdamW"
REFERENCE = "pytorch"
BATCH, SIDE = 64, 28
NOTES = ("funcnn manual/autodiff measure the convolution per layer shape when first traced "
         "(`funcnn.core.autotune`: im2col + GEMM or `lax.conv_general_dilated`, whole batch or chunks of 8 on CPU); "
         "the `(all gemm)` / `(all xla conv)` rows restrict every layer to one formulation. "
         "funcnn's max-pool backward is a "
         "fused first-arg-max mask, not XLA's `select_and_scatter` (which the JAX peers get from autodiff).")


def data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((BATCH, SIDE, SIDE, 1)).astype(np.float32)
    return x, rng.integers(0, 10, BATCH).astype(np.int32)


def funcnn_step(mode, impl=None):
    model = serial(Conv2D(32, 3, w_init="he_normal", impl=impl), ReLU(), MaxPool2D(2),
                   Conv2D(64, 3, w_init="he_normal", impl=impl), ReLU(), MaxPool2D(2), Flatten(), Dense(10))
    x, y = data()
    return funcnn_stepper(model, x, y, mode)


def raw_jax_step():
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    params = {"c1": (jax.random.normal(k1, (3, 3, 1, 32)) * np.sqrt(2 / 9), jnp.zeros(32)),
              "c2": (jax.random.normal(k2, (3, 3, 32, 64)) * np.sqrt(2 / 288), jnp.zeros(64)),
              "d": (jax.random.normal(k3, (7 * 7 * 64, 10)) * np.sqrt(1 / 3136), jnp.zeros(10))}

    def conv(x, w, b):
        return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")) + b

    def pool(x):
        return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")

    def loss(p, x, y):
        x = pool(jax.nn.relu(conv(x, *p["c1"])))
        x = pool(jax.nn.relu(conv(x, *p["c2"])))
        logits = x.reshape(x.shape[0], -1) @ p["d"][0] + p["d"][1]
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    x, y = data()
    return jax_stepper(loss, params, x, y)


def flax_step():
    from flax import nnx

    class CNN(nnx.Module):
        def __init__(self, rngs):
            self.c1 = nnx.Conv(1, 32, (3, 3), padding="SAME", rngs=rngs)
            self.c2 = nnx.Conv(32, 64, (3, 3), padding="SAME", rngs=rngs)
            self.d = nnx.Linear(7 * 7 * 64, 10, rngs=rngs)

        def __call__(self, x):
            x = nnx.max_pool(jax.nn.relu(self.c1(x)), (2, 2), (2, 2))
            x = nnx.max_pool(jax.nn.relu(self.c2(x)), (2, 2), (2, 2))
            return self.d(x.reshape(x.shape[0], -1))

    x, y = map(jnp.asarray, data())
    return flax_stepper(CNN(nnx.Rngs(0)), x, y, lambda m: m.d.kernel.value)


def equinox_step():
    import equinox as eqx

    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    model = eqx.nn.Sequential([
        eqx.nn.Conv2d(1, 32, 3, padding="SAME", key=k1), eqx.nn.Lambda(jax.nn.relu), eqx.nn.MaxPool2d(2, 2),
        eqx.nn.Conv2d(32, 64, 3, padding="SAME", key=k2), eqx.nn.Lambda(jax.nn.relu), eqx.nn.MaxPool2d(2, 2),
        eqx.nn.Lambda(jnp.ravel), eqx.nn.Linear(7 * 7 * 64, 10, key=k3)])
    x, y = data()
    x = np.transpose(x, (0, 3, 1, 2))  # equinox convolutions are channels-first, per example
    return equinox_stepper(model, jnp.asarray(x), jnp.asarray(y))


def torch_step(threads=None):
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 32, 3, padding="same"), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(32, 64, 3, padding="same"), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(7 * 7 * 64, 10))
    x, y = data()
    return torch_stepper(model, torch.nn.functional.cross_entropy, torch_adamw(model),
                         torch.from_numpy(np.transpose(x, (0, 3, 1, 2)).copy()), torch.from_numpy(y).long(), threads)


def contenders():
    return {
        "funcnn manual": funcnn_step("manual"),
        "funcnn autodiff": funcnn_step("autodiff"),
        "funcnn manual (all gemm)": funcnn_step("manual", "gemm"),
        "funcnn manual (all xla conv)": funcnn_step("manual", "xla"),
        "raw jax": raw_jax_step(),
        "flax nnx": flax_step(),
        "equinox": equinox_step(),
        "pytorch": torch_step(),
        "pytorch (1 thread)": torch_step(threads=1),
    }


def op_contenders():
    """Per-op timings at this model's shapes: ``{(op, variant): step}``."""
    from jax import lax

    from funcnn.layers import conv as C
    from funcnn.layers import pooling as P
    from funcnn.layers._conv_windows import geometry

    rng = np.random.default_rng(0)
    normal = lambda *shape: jnp.asarray(rng.standard_normal(shape), jnp.float32)  # noqa: E731
    ops = {}
    for side, cin, cout in [(28, 1, 32), (14, 32, 64)]:
        x, w, dy = normal(BATCH, side, side, cin), normal(3, 3, cin, cout), normal(BATCH, side, side, cout)
        g = geometry((side, side), (3, 3), (1, 1), (1, 1), "SAME", "conv")
        layer = f"conv {side}x{side}x{cin}->{cout}"
        for impl in ("gemm/8", "gemm/all", "xla/8", "xla/all"):
            fwd, bwd = C.formulation(impl)
            f = jax.jit(lambda x, w, fwd=fwd, g=g: fwd(x, w, g))
            dw = jax.jit(lambda x, w, dy, bwd=bwd, g=g: bwd(x, w, g, dy)[0])
            dx = jax.jit(lambda x, w, dy, bwd=bwd, g=g: bwd(x, w, g, dy)[1])
            ops[layer, "forward", impl] = lambda f=f, x=x, w=w: f(x, w)
            ops[layer, "kernel grad", impl] = lambda f=dw, x=x, w=w, dy=dy: f(x, w, dy)
            ops[layer, "input grad", impl] = lambda f=dx, x=x, w=w, dy=dy: f(x, w, dy)
    for side, ch in [(28, 32), (14, 64)]:
        x, dy = normal(BATCH, side, side, ch), normal(BATCH, side // 2, side // 2, ch)
        g = geometry((side, side), (2, 2), (2, 2), (1, 1), "VALID", "pool")
        window = lambda v: lax.reduce_window(v, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")  # noqa: E731
        auto = jax.jit(lambda x, dy: jax.vjp(window, x)[1](dy)[0])
        manual = jax.jit(lambda x, dy, g=g: P.max_pool_backward(dy, P.max_pool_forward(x, g)[1]))
        layer = f"maxpool 2x2 {side}x{side}x{ch}"
        ops[layer, "forward + backward", "autodiff of reduce_window (select_and_scatter)"] = lambda f=auto, x=x, dy=dy: f(x, dy)
        ops[layer, "forward + backward", "funcnn (tap slices + first-max mask)"] = lambda f=manual, x=x, dy=dy: f(x, dy)
    return ops


def main(argv=None):
    import argparse
    from pathlib import Path

    from harness import machine, time_interleaved, versions

    p = argparse.ArgumentParser(description="per-op timings of the CNN step")
    p.add_argument("--rounds", type=int, default=20)
    args = p.parse_args(argv)
    ops = op_contenders()
    times = time_interleaved({" | ".join(k): f for k, f in ops.items()}, rounds=args.rounds)
    lines = ["# CNN step, op by op", "",
             f"Measured on {machine()}; {versions()}. Reproduce: `python benchmarks/contenders_cnn.py "
             f"--rounds {args.rounds}`; {args.rounds} interleaved rounds, median ms (batch {BATCH}, float32, "
             "3x3 SAME convolutions, each op jitted alone).", "",
             "| layer | op | formulation | median ms |", "|---|---|---|---:|"]
    for name, t in times.items():
        lines.append(f"| {name} | {1e3 * np.median(t):.3f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(__file__).resolve().parent / "results" / "cnn_ops.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)


if __name__ == "__main__":
    main()
