"""One Adam training step (softmax cross-entropy) of funcnn's benchmark models, with the
hand-written backward ("funcnn manual") and with ``jax.grad`` ("funcnn autodiff"), and
PyTorch's step of the same model when torch is installed and the backend is the CPU.

* mlp: 784-512-512-10 ReLU; cnn: conv32-ReLU-maxpool-conv64-ReLU-maxpool-dense10 on
  28x28x1; lstm: LSTM(128) over length-T sequences of 1 feature, last h -> Dense(10).

FLOPs of a step follow the model-FLOPs convention (as in "model FLOPs utilization"):
3x the forward's matrix-product and convolution FLOPs (the forward, and the backward's
two products per layer), counted by hand in ``forward_flops``, the same for every
contender. XLA's cost analysis is not used for steps: it counts a loop body once, not
once per iteration, so a scanned LSTM would look 40x cheaper than it is. There is no
byte count either, so the steps are in the table but not on the roofline.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from funcnn import models
from funcnn.bench.kernels import time_cases
from funcnn.bench.setting import Setting
from funcnn.core.layer import Layer, serial
from funcnn.layers.dense import Dense
from funcnn.layers.recurrent import LSTM
from funcnn.losses import softmax_cross_entropy
from funcnn.training.step import make_step


def model(name: str, size: int) -> tuple[Layer, tuple[int, ...]]:
    """A benchmark model and the shape of one example.

    **Arguments:**

    - `name`: ``"mlp"`` (input `(size * size,)`), ``"cnn"`` (`(size, size, 1)`) or ``"lstm"``
      (`(size, 1)`: a sequence of `size` steps of one feature).
    - `size`: the input's side (or sequence length).

    **Returns:**

    `(model, shape)`: the funcnn model (10 outputs) and the example's shape.
    """
    if name == "mlp":
        return models.mlp((size * size,), 10, hidden=(512, 512)), (size * size,)
    if name == "cnn":
        return models.cnn((size, size, 1), 10, hidden=()), (size, size, 1)
    if name == "lstm":
        return serial(LSTM(128, return_sequences=False), Dense(10)), (size, 1)
    raise ValueError(f"funcnn.bench.steps.model: unknown model {name!r}, expected mlp, cnn or lstm")


def forward_flops(name: str, batch: int, size: int) -> int:
    """FLOPs of the forward's products (2 per multiply-add) of a benchmark model."""
    if name == "mlp":
        return 2 * batch * (size * size * 512 + 512 * 512 + 512 * 10)
    if name == "cnn":
        half, quarter = size // 2, size // 4
        return 2 * batch * (size * size * 9 * 1 * 32 + half * half * 9 * 32 * 64 + quarter * quarter * 64 * 10)
    return 2 * batch * (size * (1 + 128) * 4 * 128 + 128 * 10)  # lstm: T steps of [x_t, h] @ W, then Dense


def data(shape: tuple[int, ...], batch: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A random batch: inputs float32 `(batch, *shape)` (standard normal) and labels int32
    `(batch,)` in `[0, 10)`, from a NumPy generator seeded by ``seed``."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch, *shape)).astype(np.float32), rng.integers(0, 10, batch).astype(np.int32)


def funcnn_case(name: str, batch: int, size: int, mode: str) -> dict:
    """The timing case of funcnn's training step (``make_step``, the step of ``fit``) on a
    benchmark model, with the hand-written backward (``mode="manual"``) or autodiff.

    **Arguments:**

    - `name`: ``"mlp"``, ``"cnn"`` or ``"lstm"``; `batch`: `B`; `size`: the input side (``model``).
    - `mode`: ``"manual"`` or ``"autodiff"``.

    **Returns:**

    A case for ``funcnn.bench.kernels.time_cases``: `fn(carry, x, y) -> carry` with `x` of
    shape `(B, ...)` and `y` int `(B,)`, its arguments and the step's FLOPs.
    """
    net, shape = model(name, size)
    params, state = net.init(jax.random.key(0), shape)
    tx = optax.adam(1e-3)
    train_step = make_step(net, softmax_cross_entropy, tx, grad=mode)

    def step(carry, x, y):
        return train_step(carry, (x, y, None))[0]

    x, y = data(shape, batch)
    return dict(name=f"{name} step, funcnn {mode}", kind=f"{name} step", model=name, contender=f"funcnn {mode}",
                fn=step, args=((params, state, tx.init(params)), jnp.asarray(x), jnp.asarray(y)),
                flops=3 * forward_flops(name, batch, size), bytes=None)


def torch_case(name: str, batch: int, size: int) -> dict | None:
    """The timing case of PyTorch's eager Adam step of the same model (NCHW inputs for the
    CNN), on the batch of ``data``; ``None`` when torch is not installed."""
    try:
        import torch
    except ImportError:
        return None
    torch.manual_seed(0)
    nn = torch.nn
    if name == "mlp":
        net = nn.Sequential(nn.Linear(size * size, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
        shape = (size * size,)
    elif name == "cnn":
        side = size // 4
        net = nn.Sequential(nn.Conv2d(1, 32, 3, padding="same"), nn.ReLU(), nn.MaxPool2d(2),
                            nn.Conv2d(32, 64, 3, padding="same"), nn.ReLU(), nn.MaxPool2d(2),
                            nn.Flatten(), nn.Linear(side * side * 64, 10))
        shape = (size, size, 1)
    else:
        class Last(nn.Module):
            def __init__(self):
                super().__init__()
                self.lstm, self.out = nn.LSTM(1, 128, batch_first=True), nn.Linear(128, 10)

            def forward(self, x):
                return self.out(self.lstm(x)[0][:, -1])

        net, shape = Last(), (size, 1)
    x, y = data(shape, batch)
    x = torch.from_numpy(np.transpose(x, (0, 3, 1, 2)).copy() if name == "cnn" else x)
    y = torch.from_numpy(y).long()
    opt = torch.optim.Adam(net.parameters(), 1e-3)

    def step():
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()

    return dict(name=f"{name} step, pytorch", kind=f"{name} step", model=name, contender="pytorch", fn=step, args=(),
                jit=False, flops=3 * forward_flops(name, batch, size), bytes=None)


def run(setting: Setting, *, peers: bool = True, log: Callable[[str], None] = print) -> list[dict]:
    """Time the steps of ``setting.models`` (``(name, batch, size)`` triples): funcnn manual and
    autodiff and, with ``peers`` on the CPU, PyTorch. Returns the rows of ``time_cases``, each
    with ``ratio_to_manual`` (its median over funcnn manual's)."""
    rows = []
    for name, batch, size in setting.models:
        log(f"{name} step (batch {batch}):")
        cases = [funcnn_case(name, batch, size, mode) for mode in ("manual", "autodiff")]
        if peers and jax.default_backend() == "cpu":
            cases.append(torch_case(name, batch, size))
        found = time_cases([c for c in cases if c is not None], setting, log=log)
        manual = found[0]
        for row in found:
            row["ratio_to_manual"] = row["median_ms"] / manual["median_ms"]
            if row["contender"] == "pytorch":
                row["compile_ms"] = None  # eager: no compilation; the first call is not reported
        rows += found
    return rows
