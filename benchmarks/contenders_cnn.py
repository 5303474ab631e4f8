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
from harness import (equinox_stepper, flax_stepper, funcnn_stepper, in_layer_order, jax_stepper, made, path_names,
                     torch_adamw, torch_stepper)

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


def funcnn_model(impl=None):
    return serial(Conv2D(32, 3, w_init="he_normal", impl=impl), ReLU(), MaxPool2D(2),
                  Conv2D(64, 3, w_init="he_normal", impl=impl), ReLU(), MaxPool2D(2), Flatten(), Dense(10))


def initial_params():
    """funcnn's initial params (key 0), the weights every contender starts from."""
    return funcnn_model().init(jax.random.key(0), (SIDE, SIDE, 1))[0]


def weights(params):
    """funcnn's params as the named arrays every contender's gradients are compared by: ``c1``,
    ``c2`` (HWIO kernels), ``c1_b``, ``c2_b``, ``d`` (10, 7*7*64: inputs in (h, w, c) order), ``d_b``."""
    c1, c2, d = [p for p in in_layer_order(params) if "w" in p]
    return {"c1": c1["w"], "c1_b": c1["b"], "c2": c2["w"], "c2_b": c2["b"], "d": d["w"], "d_b": d["b"]}


def _chw(d):
    """The dense weight (10, h*w*c) with its inputs in (c, h, w) order: a channels-first flatten's."""
    return np.asarray(d).reshape(10, 7, 7, 64).transpose(0, 3, 1, 2).reshape(10, -1)


def _hwc(d):
    """``_chw``'s inverse."""
    return np.asarray(d).reshape(10, 64, 7, 7).transpose(0, 2, 3, 1).reshape(10, -1)


def funcnn_step(mode, params, impl=None):
    x, y = data()
    return funcnn_stepper(funcnn_model(impl), x, y, mode, params=params).named(weights)


def raw_jax_step(w):
    def conv(x, k, b):
        return jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")) + b

    def pool(x):
        return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")

    def loss(p, x, y):
        x = pool(jax.nn.relu(conv(x, p["c1"], p["c1_b"])))
        x = pool(jax.nn.relu(conv(x, p["c2"], p["c2_b"])))
        logits = x.reshape(x.shape[0], -1) @ p["d"].T + p["d_b"]
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    x, y = data()
    return jax_stepper(loss, {k: jnp.asarray(v) for k, v in w.items()}, x, y).named(dict)


FLAX_NAMES = {"c1.kernel": "c1", "c1.bias": "c1_b", "c2.kernel": "c2", "c2.bias": "c2_b", "d.kernel": "d",
              "d.bias": "d_b"}  # conv kernels HWIO as funcnn's; the dense kernel (in, out)


def flax_step(w):
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

    model = CNN(nnx.Rngs(0))
    for layer, name in ((model.c1, "c1"), (model.c2, "c2"), (model.d, "d")):
        layer.kernel[...] = jnp.asarray(w[name]).T if name == "d" else jnp.asarray(w[name])
        layer.bias[...] = jnp.asarray(w[name + "_b"])
    x, y = map(jnp.asarray, data())

    def named(grads):
        return {FLAX_NAMES[k]: (g.T if k == "d.kernel" else g) for k, g in path_names(grads).items()}

    return flax_stepper(model, x, y, lambda m: m.d.kernel[...]).named(named)


def _oihw(k):
    return np.transpose(np.asarray(k), (3, 2, 0, 1))


def _from_oihw(k):
    return np.transpose(np.asarray(k), (2, 3, 1, 0))


def equinox_step(w):
    import equinox as eqx

    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    model = eqx.nn.Sequential([
        eqx.nn.Conv2d(1, 32, 3, padding="SAME", key=k1), eqx.nn.Lambda(jax.nn.relu), eqx.nn.MaxPool2d(2, 2),
        eqx.nn.Conv2d(32, 64, 3, padding="SAME", key=k2), eqx.nn.Lambda(jax.nn.relu), eqx.nn.MaxPool2d(2, 2),
        eqx.nn.Lambda(jnp.ravel), eqx.nn.Linear(7 * 7 * 64, 10, key=k3)])
    c1, c2, d = model.layers[0], model.layers[3], model.layers[7]
    model = eqx.tree_at(lambda m: [m.layers[0].weight, m.layers[0].bias, m.layers[3].weight, m.layers[3].bias,
                                   m.layers[7].weight, m.layers[7].bias], model,
                        [jnp.asarray(_oihw(w["c1"])), jnp.asarray(w["c1_b"]).reshape(c1.bias.shape),
                         jnp.asarray(_oihw(w["c2"])), jnp.asarray(w["c2_b"]).reshape(c2.bias.shape),
                         jnp.asarray(_chw(w["d"])), jnp.asarray(w["d_b"]).reshape(d.bias.shape)])
    x, y = data()
    x = np.transpose(x, (0, 3, 1, 2))  # equinox convolutions are channels-first, per example

    def named(g):
        layers = g.layers
        return {"c1": _from_oihw(layers[0].weight), "c1_b": np.ravel(layers[0].bias),
                "c2": _from_oihw(layers[3].weight), "c2_b": np.ravel(layers[3].bias),
                "d": _hwc(layers[7].weight), "d_b": np.asarray(layers[7].bias)}

    return equinox_stepper(model, jnp.asarray(x), jnp.asarray(y)).named(named)


TORCH_NAMES = {"0.weight": "c1", "0.bias": "c1_b", "3.weight": "c2", "3.bias": "c2_b", "7.weight": "d", "7.bias": "d_b"}


def torch_step(w, threads=None):
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 32, 3, padding="same"), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(32, 64, 3, padding="same"), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(7 * 7 * 64, 10))
    to_torch = {"c1": _oihw, "c2": _oihw, "d": _chw}
    from_torch = {"c1": _from_oihw, "c2": _from_oihw, "d": _hwc}
    model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(to_torch.get(v, np.asarray)(w[v])))
                           for k, v in TORCH_NAMES.items()})
    x, y = data()
    return torch_stepper(model, torch.nn.functional.cross_entropy, torch_adamw(model),
                         torch.from_numpy(np.transpose(x, (0, 3, 1, 2)).copy()), torch.from_numpy(y).long(),
                         threads).named(
        lambda g: {TORCH_NAMES[k]: from_torch.get(TORCH_NAMES[k], np.asarray)(v) for k, v in g.items()})


def contenders(only=None):
    """Every contender, each from funcnn's initial weights; ``only``: these names."""
    params = initial_params()
    w = {k: np.asarray(v) for k, v in weights(params).items()}
    makers = {
        "funcnn manual": lambda: funcnn_step("manual", params),
        "funcnn autodiff": lambda: funcnn_step("autodiff", params),
        "funcnn manual (all gemm)": lambda: funcnn_step("manual", params, "gemm"),
        "funcnn manual (all xla conv)": lambda: funcnn_step("manual", params, "xla"),
        "raw jax": lambda: raw_jax_step(w),
        "flax nnx": lambda: flax_step(w),
        "equinox": lambda: equinox_step(w),
        "pytorch": lambda: torch_step(w),
        "pytorch (1 thread)": lambda: torch_step(w, threads=1),
    }
    return made(makers, only)


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
