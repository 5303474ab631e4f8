"""LSTM(128) over length-40 sequences of 1 feature, batch 64, last h -> Dense(10),
AdamW, softmax cross-entropy. Every contender starts from funcnn's initial weights and
``harness.check_equivalence`` compares losses and gradients before anything is timed."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

import funcnn as fn
from funcnn.layers.recurrent import LSTM
from harness import (equinox_stepper, flax_stepper, funcnn_stepper, in_layer_order, jax_stepper, key_path_name,
                     made, path_names, torch_adamw, torch_stepper)

TITLE = "LSTM(128), length 40, 1 feature, batch 64, last h -> Dense(10), AdamW"
REFERENCE = "pytorch"
NOTES = (
    "Every contender starts from funcnn's initial weights and runs AdamW (lr 1e-3, betas (0.9, 0.999), "
    "eps 1e-8, weight decay 0.1 on the weight matrices, none on biases). "
    "funcnn manual runs the hand-written BPTT: the input projection is one product before "
    "the forward scan, and dW_ih, dW_hh are one product each after the reverse scan; the scans' "
    "unroll (1, 2 or 4) is measured when the layer is first traced (`funcnn.core.autotune`). "
    "funcnn autodiff is `jax.grad` of the same forward (hoisted input projection), which "
    "accumulates the weight gradients inside the reverse scan. Raw JAX is the textbook "
    "`lax.scan` over `x_t W_ih^T + h W_hh^T + b` under `jax.grad`; Flax uses "
    "`nnx.RNN(nnx.OptimizedLSTMCell)` with `nnx.Optimizer`, Equinox `vmap` of a scanned "
    "`eqx.nn.LSTMCell` under `eqx.filter_jit`, PyTorch `nn.LSTM(batch_first=True)` with "
    "`torch.optim.AdamW(fused=True)` on CPU with its default intra-op threads (one per core), "
    "and the same restricted to one thread. `nn.LSTM` keeps two bias vectors (b_ih + b_hh): b_ih "
    "takes funcnn's b and b_hh is held at zero (not trained), so every contender trains the same "
    "parameters. No `torch.compile` row: TorchDynamo does not trace `nn.LSTM` by default "
    "(`torch._dynamo.config.allow_rnn` is False in torch 2.13), so the module runs eagerly and the step "
    "would be eager PyTorch's. Where funcnn manual's time goes: "
    "`python benchmarks/lstm_profile.py` (the scans' recurrent products alone, in XLA and in "
    "PyTorch, on the same machine: which GEMM is faster depends on the CPU)."
)
BATCH, TIME, FEATURES, HIDDEN, CLASSES = 64, 40, 1, 128, 10


def data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((BATCH, TIME, FEATURES)).astype(np.float32)
    return x, rng.integers(0, CLASSES, BATCH).astype(np.int32)


def funcnn_model():
    return fn.serial(LSTM(HIDDEN, return_sequences=False), fn.Dense(CLASSES))


def initial_params():
    """funcnn's initial params (key 0), the weights every contender starts from."""
    return funcnn_model().init(jax.random.key(0), (TIME, FEATURES))[0]


def weights(params):
    """funcnn's params as the named arrays every contender's gradients are compared by:
    ``w_ih`` (4H, F), ``w_hh`` (4H, H), ``b`` (4H,) with gates (i, f, g, o), ``w_out`` (10, H), ``b_out``."""
    lstm, dense = in_layer_order(params)
    return {"w_ih": lstm["w_ih"], "w_hh": lstm["w_hh"], "b": lstm["b"], "w_out": dense["w"], "b_out": dense["b"]}


def funcnn_step(mode, params=None):
    x, y = data()
    return funcnn_stepper(funcnn_model(), x, y, mode, params=params).named(weights)


def raw_jax_step(w):
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
    return jax_stepper(loss, {k: jnp.asarray(v) for k, v in w.items()}, x, y).named(dict)


FLAX_NAMES = {"rnn.cell.dense_i.kernel": "w_ih", "rnn.cell.dense_h.kernel": "w_hh", "rnn.cell.dense_h.bias": "b",
              "out.kernel": "w_out", "out.bias": "b_out"}


def flax_step(w):
    from flax import nnx

    class Model(nnx.Module):
        def __init__(self, rngs):
            self.rnn = nnx.RNN(nnx.OptimizedLSTMCell(FEATURES, HIDDEN, rngs=rngs))
            self.out = nnx.Linear(HIDDEN, CLASSES, rngs=rngs)

        def __call__(self, x):
            return self.out(self.rnn(x)[:, -1])

    def value(name):
        a = jnp.asarray(w[FLAX_NAMES[name]])
        return a.T if name.endswith("kernel") else a

    graph, params, rest = nnx.split(Model(nnx.Rngs(0)), nnx.Param, ...)
    params = jax.tree_util.tree_map_with_path(lambda path, a: value(key_path_name(path)), params)
    model = nnx.merge(graph, params, rest)
    x, y = map(jnp.asarray, data())

    def named(grads):
        return {FLAX_NAMES[k]: (g.T if k.endswith("kernel") else g) for k, g in path_names(grads).items()}

    return flax_stepper(model, x, y, lambda m: m.out.kernel[...]).named(named)


EQUINOX_NAMES = {"cell.weight_ih": "w_ih", "cell.weight_hh": "w_hh", "cell.bias": "b", "out.weight": "w_out",
                 "out.bias": "b_out"}


def equinox_step(w):
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

    model = jax.tree_util.tree_map_with_path(lambda path, a: jnp.asarray(w[EQUINOX_NAMES[key_path_name(path)]]),
                                             Model(jax.random.key(0)))
    x, y = data()
    return equinox_stepper(model, jnp.asarray(x), jnp.asarray(y)).named(
        lambda g: {EQUINOX_NAMES[k]: v for k, v in path_names(g).items()})


TORCH_NAMES = {"lstm.weight_ih_l0": "w_ih", "lstm.weight_hh_l0": "w_hh", "lstm.bias_ih_l0": "b",
               "out.weight": "w_out", "out.bias": "b_out"}


def torch_step(w, threads=None):
    """PyTorch's step; with ``threads`` set, torch runs it on that many intra-op threads.
    ``nn.LSTM`` has two bias vectors (``b_ih + b_hh``): ``bias_ih_l0`` takes funcnn's ``b`` and
    ``bias_hh_l0`` is held at zero, so the model trains the same parameters as every other."""
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
    sd = {k: torch.from_numpy(np.array(w[v])) for k, v in TORCH_NAMES.items()}
    sd["lstm.bias_hh_l0"] = torch.zeros(4 * HIDDEN)
    model.load_state_dict(sd)
    model.lstm.bias_hh_l0.requires_grad_(False)
    x, y = data()
    return torch_stepper(model, torch.nn.functional.cross_entropy, torch_adamw(model), torch.from_numpy(x),
                         torch.from_numpy(y).long(), threads).named(
        lambda g: {TORCH_NAMES[k]: v for k, v in g.items()})


def contenders(only=None):
    """Every contender, each from funcnn's initial weights; ``only``: these names."""
    params = initial_params()
    w = {k: np.asarray(v) for k, v in weights(params).items()}
    makers = {
        "funcnn manual": lambda: funcnn_step("manual", params),
        "funcnn autodiff": lambda: funcnn_step("autodiff", params),
        "raw jax": lambda: raw_jax_step(w),
        "flax nnx": lambda: flax_step(w),
        "equinox": lambda: equinox_step(w),
        "pytorch": lambda: torch_step(w),
        "pytorch (1 thread)": lambda: torch_step(w, threads=1),
    }
    return made(makers, only)
