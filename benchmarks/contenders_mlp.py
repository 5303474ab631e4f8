"""784-512-512-10 ReLU MLP, batch 128, AdamW, softmax cross-entropy.

Every contender starts from funcnn's initial weights (He normal, key 0), and
``harness.check_equivalence`` compares the losses and every gradient tensor (named ``w1``,
``b1``, ..., ``w3``, ``b3``, each ``w`` of shape (out, in)) before anything is timed.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

import funcnn as fn
from harness import (equinox_stepper, flax_stepper, funcnn_stepper, in_layer_order, jax_stepper, made, path_names,
                     torch_adamw, torch_stepper)

TITLE = "MLP 784-512-512-10 ReLU, batch 128, AdamW"
REFERENCE = "pytorch"
SIZES = (784, 512, 512, 10)
BATCH = 128
NAMES = ("w1", "b1", "w2", "b2", "w3", "b3")


def data(seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((BATCH, SIZES[0])).astype(np.float32), rng.integers(0, 10, BATCH).astype(np.int32)


def funcnn_model():
    return fn.serial(fn.Dense(512, w_init="he_normal"), fn.ReLU(), fn.Dense(512, w_init="he_normal"), fn.ReLU(),
                     fn.Dense(10))


def initial_params():
    """funcnn's initial params (key 0), the weights every contender starts from."""
    return funcnn_model().init(jax.random.key(0), (SIZES[0],))[0]


def weights(params):
    """funcnn's params as the named arrays every contender's gradients are compared by."""
    dense = [p for p in in_layer_order(params) if "w" in p]
    return {name: d[leaf] for i, d in enumerate(dense) for name, leaf in ((f"w{i + 1}", "w"), (f"b{i + 1}", "b"))}


def funcnn_step(mode, params):
    x, y = data()
    return funcnn_stepper(funcnn_model(), x, y, mode, params=params).named(weights)


def raw_jax_step(w):
    def loss(p, x, y):
        x = jax.nn.relu(x @ p["w1"].T + p["b1"])
        x = jax.nn.relu(x @ p["w2"].T + p["b2"])
        return optax.softmax_cross_entropy_with_integer_labels(x @ p["w3"].T + p["b3"], y).mean()

    x, y = data()
    return jax_stepper(loss, {k: jnp.asarray(v) for k, v in w.items()}, x, y).named(dict)


FLAX_NAMES = {f"l{i}.{leaf}": f"{name}{i}" for i in (1, 2, 3) for leaf, name in (("kernel", "w"), ("bias", "b"))}


def flax_step(w):
    from flax import nnx

    class MLP(nnx.Module):
        def __init__(self, rngs):
            self.l1 = nnx.Linear(784, 512, rngs=rngs)
            self.l2 = nnx.Linear(512, 512, rngs=rngs)
            self.l3 = nnx.Linear(512, 10, rngs=rngs)

        def __call__(self, x):
            return self.l3(jax.nn.relu(self.l2(jax.nn.relu(self.l1(x)))))

    model = MLP(nnx.Rngs(0))
    for i, layer in enumerate((model.l1, model.l2, model.l3), 1):
        layer.kernel[...] = jnp.asarray(w[f"w{i}"]).T
        layer.bias[...] = jnp.asarray(w[f"b{i}"])
    x, y = map(jnp.asarray, data())

    def named(grads):
        return {FLAX_NAMES[k]: (g.T if k.endswith("kernel") else g) for k, g in path_names(grads).items()}

    return flax_stepper(model, x, y, lambda m: m.l3.kernel[...]).named(named)


EQUINOX_NAMES = {f"layers.{i - 1}.{leaf}": f"{leaf[0]}{i}" for i in (1, 2, 3) for leaf in ("weight", "bias")}


def equinox_step(w):
    import equinox as eqx

    model = eqx.nn.MLP(784, 10, 512, 2, activation=jax.nn.relu, key=jax.random.key(0))
    model = eqx.tree_at(lambda m: [leaf for layer in m.layers for leaf in (layer.weight, layer.bias)], model,
                        [jnp.asarray(w[name]) for name in NAMES])
    x, y = data()
    return equinox_stepper(model, jnp.asarray(x), jnp.asarray(y)).named(
        lambda g: {EQUINOX_NAMES[k]: v for k, v in path_names(g).items()})


TORCH_NAMES = {f"{2 * (i - 1)}.{leaf}": f"{leaf[0]}{i}" for i in (1, 2, 3) for leaf in ("weight", "bias")}


def torch_step(w, threads=None):
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(784, 512), torch.nn.ReLU(), torch.nn.Linear(512, 512),
                                torch.nn.ReLU(), torch.nn.Linear(512, 10))
    model.load_state_dict({k: torch.from_numpy(np.array(w[v])) for k, v in TORCH_NAMES.items()})
    x, y = data()
    return torch_stepper(model, torch.nn.functional.cross_entropy, torch_adamw(model),
                         torch.from_numpy(x), torch.from_numpy(y).long(), threads).named(
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
