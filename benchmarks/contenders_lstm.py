"""LSTM(128) over length-40 sequences of 1 feature, batch 64, last h -> Dense(10),
Adam(1e-3), softmax cross-entropy."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

import funcnn as fn
from funcnn.layers.recurrent import LSTM
from harness import equinox_stepper, flax_stepper, funcnn_stepper, jax_stepper, torch_stepper

TITLE = "LSTM(128), length 40, 1 feature, batch 64, last h -> Dense(10), Adam"
REFERENCE = "pytorch"
NOTES = (
    "funcnn manual runs the hand-written BPTT: the input projection is one product before "
    "the forward scan, and dW_ih, dW_hh are one product each after the reverse scan; the scans' "
    "unroll (1, 2 or 4) is measured when the layer is first traced (`funcnn.core.autotune`). "
    "funcnn autodiff is `jax.grad` of the same forward (hoisted input projection), which "
    "accumulates the weight gradients inside the reverse scan. Raw JAX is the textbook "
    "`lax.scan` over `x_t W_ih^T + h W_hh^T + b` under `jax.grad`; Flax uses "
    "`nnx.RNN(nnx.OptimizedLSTMCell)`, Equinox `vmap` of a scanned `eqx.nn.LSTMCell`, "
    "PyTorch `nn.LSTM(batch_first=True)` on CPU with its default intra-op threads (one per core), "
    "and the same restricted to one thread. Where funcnn manual's time goes: "
    "`python benchmarks/lstm_profile.py` (the recurrent products themselves run faster in XLA "
    "than in PyTorch's GEMM; the rest of each scan step is what costs)."
)
BATCH, TIME, FEATURES, HIDDEN, CLASSES = 64, 40, 1, 128, 10


def data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((BATCH, TIME, FEATURES)).astype(np.float32)
    return x, rng.integers(0, CLASSES, BATCH).astype(np.int32)


def funcnn_step(mode):
    model = fn.serial(LSTM(HIDDEN, return_sequences=False), fn.Dense(CLASSES))
    x, y = data()
    return funcnn_stepper(model, x, y, mode)


def raw_jax_step():
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    s = 1 / np.sqrt(HIDDEN)
    params = {
        "w_ih": jax.random.uniform(k1, (4 * HIDDEN, FEATURES), minval=-s, maxval=s),
        "w_hh": jax.random.uniform(k2, (4 * HIDDEN, HIDDEN), minval=-s, maxval=s),
        "b": jnp.zeros(4 * HIDDEN),
        "w_out": jax.random.uniform(k3, (CLASSES, HIDDEN), minval=-s, maxval=s),
        "b_out": jnp.zeros(CLASSES),
    }

    def loss(p, x, y):
        def step(carry, x_t):
            h, c = carry
            i, f, g, o = jnp.split(x_t @ p["w_ih"].T + h @ p["w_hh"].T + p["b"], 4, axis=-1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
            return (h, c), None

        h0 = jnp.zeros((x.shape[0], HIDDEN))
        (h, _), _ = jax.lax.scan(step, (h0, h0), jnp.swapaxes(x, 0, 1))
        return optax.softmax_cross_entropy_with_integer_labels(h @ p["w_out"].T + p["b_out"], y).mean()

    x, y = data()
    return jax_stepper(loss, params, x, y)


def flax_step():
    from flax import nnx

    class Model(nnx.Module):
        def __init__(self, rngs):
            self.rnn = nnx.RNN(nnx.OptimizedLSTMCell(FEATURES, HIDDEN, rngs=rngs))
            self.out = nnx.Linear(HIDDEN, CLASSES, rngs=rngs)

        def __call__(self, x):
            return self.out(self.rnn(x)[:, -1])

    x, y = map(jnp.asarray, data())
    return flax_stepper(Model(nnx.Rngs(0)), x, y, lambda m: m.out.kernel.value)


def equinox_step():
    import equinox as eqx

    class Model(eqx.Module):
        cell: eqx.nn.LSTMCell
        out: eqx.nn.Linear

        def __init__(self, key):
            k1, k2 = jax.random.split(key)
            self.cell = eqx.nn.LSTMCell(FEATURES, HIDDEN, key=k1)
            self.out = eqx.nn.Linear(HIDDEN, CLASSES, key=k2)

        def __call__(self, xs):
            def step(carry, x_t):
                return self.cell(x_t, carry), None

            zeros = jnp.zeros(HIDDEN)
            (h, _), _ = jax.lax.scan(step, (zeros, zeros), xs)
            return self.out(h)

    x, y = data()
    return equinox_stepper(Model(jax.random.key(0)), jnp.asarray(x), jnp.asarray(y))


def torch_step(threads=None):
    """PyTorch's step; with ``threads`` set, torch runs it on that many intra-op threads."""
    import torch

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = torch.nn.LSTM(FEATURES, HIDDEN, batch_first=True)
            self.out = torch.nn.Linear(HIDDEN, CLASSES)

        def forward(self, x):
            return self.out(self.lstm(x)[0][:, -1])

    torch.manual_seed(0)
    model = Model()
    x, y = data()
    return torch_stepper(model, torch.nn.functional.cross_entropy, torch.optim.Adam(model.parameters(), 1e-3),
                         torch.from_numpy(x), torch.from_numpy(y).long(), threads)


def contenders():
    return {
        "funcnn manual": funcnn_step("manual"),
        "funcnn autodiff": funcnn_step("autodiff"),
        "raw jax": raw_jax_step(),
        "flax nnx": flax_step(),
        "equinox": equinox_step(),
        "pytorch": torch_step(),
        "pytorch (1 thread)": torch_step(threads=1),
    }
