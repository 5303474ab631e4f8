"""784-512-512-10 ReLU MLP, batch 128, AdamW, softmax cross-entropy."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

import funcnn as fn
from harness import equinox_stepper, flax_stepper, funcnn_stepper, jax_stepper, torch_adamw, torch_stepper

TITLE = "MLP 784-512-512-10 ReLU, batch 128, AdamW"
REFERENCE = "pytorch"
SIZES = (784, 512, 512, 10)
BATCH = 128


def data(seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((BATCH, SIZES[0])).astype(np.float32), rng.integers(0, 10, BATCH).astype(np.int32)


def funcnn_step(mode):
    model = fn.serial(fn.Dense(512, w_init="he_normal"), fn.ReLU(), fn.Dense(512, w_init="he_normal"), fn.ReLU(), fn.Dense(10))
    x, y = data()
    return funcnn_stepper(model, x, y, mode)


def raw_jax_step():
    keys = jax.random.split(jax.random.key(0), 3)
    params = [(jax.random.normal(k, (o, i)) * np.sqrt(2 / i), jnp.zeros(o)) for k, i, o in zip(keys, SIZES[:-1], SIZES[1:])]

    def loss(params, x, y):
        for w, b in params[:-1]:
            x = jax.nn.relu(x @ w.T + b)
        w, b = params[-1]
        return optax.softmax_cross_entropy_with_integer_labels(x @ w.T + b, y).mean()

    x, y = data()
    return jax_stepper(loss, params, x, y)


def flax_step():
    from flax import nnx

    class MLP(nnx.Module):
        def __init__(self, rngs):
            self.l1 = nnx.Linear(784, 512, rngs=rngs)
            self.l2 = nnx.Linear(512, 512, rngs=rngs)
            self.l3 = nnx.Linear(512, 10, rngs=rngs)

        def __call__(self, x):
            return self.l3(jax.nn.relu(self.l2(jax.nn.relu(self.l1(x)))))

    x, y = map(jnp.asarray, data())
    return flax_stepper(MLP(nnx.Rngs(0)), x, y, lambda m: m.l3.kernel.value)


def equinox_step():
    import equinox as eqx

    model = eqx.nn.MLP(784, 10, 512, 2, activation=jax.nn.relu, key=jax.random.key(0))
    x, y = data()
    return equinox_stepper(model, jnp.asarray(x), jnp.asarray(y))


def torch_step(threads=None):
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(784, 512), torch.nn.ReLU(), torch.nn.Linear(512, 512),
                                torch.nn.ReLU(), torch.nn.Linear(512, 10))
    x, y = data()
    return torch_stepper(model, torch.nn.functional.cross_entropy, torch_adamw(model),
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
