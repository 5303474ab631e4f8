"""Multi-device checks, run in a fresh process by ``tests/test_parallel.py``.

JAX fixes the number of CPU devices when its backend starts, and the pytest workers
have started it already with one device; so each check runs here, in its own
process, after ``jax_num_cpu_devices`` is set, and prints one JSON object
``{"check name": relative error, ...}`` (``tests/helpers.rel_error``) that the test
asserts on. Usage: ``python tests/parallel_worker.py SECTION...`` with sections
``layers``, ``fit``, ``shard_map``, ``lm``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import jax

jax.config.update("jax_num_cpu_devices", 8)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import AxisType, PartitionSpec as P  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers import rel_error  # noqa: E402
from layer_checks import perturbed  # noqa: E402

import funcnn  # noqa: E402
from funcnn import layers as L  # noqa: E402
from funcnn import losses, models  # noqa: E402
from funcnn.data import text
from funcnn.training import lm, distributed
from funcnn.check import draws  # noqa: E402
from funcnn.check.catalog import LAYER_CASES, LayerCase  # noqa: E402
from funcnn.core.layer import serial  # noqa: E402

BATCH = 8
# one case of every layer with a batch contraction or batch statistics (the cost of a check is
# its compilation; the elementwise layers have nothing to shard-specific to get wrong)
CASES = ("mlp", "conv2d(3x3,SAME)", "conv2d(2x2,s(2,1),pads,dil(1,2),xla)", "maxpool2d(3,s2,SAME)",
         "avgpool2d(3,s2,SAME)", "batchnorm(NHWC)", "dropout(0.3)", "gru(T=4,h0,last)", "lstm(T=3,h0,c0)",
         "bayes_dense",
         # the GPT's layers: sums over batch and time, a gather and a scatter-add over the batch
         "layernorm(B T D)", "embedding", "gelu", "positional_embedding(T<max_len)", "attention(2 heads causal)")
AUTO_TOO = ("mlp", "lstm(T=3,h0,c0)", "embedding", "model:gpt")  # Auto axes, and the mesh against one device
VOCAB = 7  # of the catalog's embedding case and of the GPT below
EXTRA = [  # not in the catalog: token_dense (GPT's MLP) and a whole GPT
    LayerCase("token_dense", lambda: models.token_dense(5, w_init="he_normal"), (4, 3)),
    LayerCase("model:gpt", lambda: models.gpt(VOCAB, context=4, layers=1, heads=2, width=8), (4,),
              {"x": jnp.zeros((2, 4), jnp.int32), "perturb": 0.1}),  # no LayerNorm gain 1, no bias 0
]


def _mesh(n, kind):
    return jax.make_mesh((n,), ("data",), axis_types=(getattr(AxisType, kind),), devices=jax.devices()[:n])


def _layer_grads(layer, params, state, x, r, key, train):
    """(manual (dparams, dx), autodiff (dparams, dx)) of <layer(x), r>; integer ids (an
    embedding, a GPT) have no dx: (dparams,) both."""
    y, _, cache = layer.forward(params, state, x, key=key, train=train)
    manual = layer.backward(params, cache, r)
    if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.integer):
        _, vjp = jax.vjp(lambda p: layer.apply(p, state, x, key=key, train=train)[0], params)
        return manual[:1], vjp(r)
    _, vjp = jax.vjp(lambda p, xx: layer.apply(p, state, xx, key=key, train=train)[0], params, x)
    return manual, vjp(r)


def _normal(key, shape):
    """Float64 standard normals on the device, drawn by ``funcnn.check.draws`` (no program per shape)."""
    return jax.device_put(draws.normal(key, shape))


def _batch(k_x, case):
    """A batch of BATCH inputs for ``case``: normal floats, or integer ids in [0, VOCAB)."""
    if "x" not in case.options:
        return _normal(k_x, (BATCH, *case.input_shape))

    def draw(a):
        if jnp.issubdtype(a.dtype, jnp.integer):
            return jax.device_put(draws.labels(k_x, (BATCH, *a.shape[1:]), VOCAB))
        return _normal(k_x, (BATCH, *a.shape[1:]))

    return jax.tree_util.tree_map(draw, case.options["x"])


def _point(layer, case, train):
    """(params, state, x, r, forward key) of ``case``, float64: params perturbed where the case
    asks, a batch of inputs and a cotangent ``r`` shaped like the output."""
    k_init, k_x, k_r, k_fwd = jax.random.split(jax.random.key(0), 4)
    params, state = layer.init(k_init, case.input_shape)
    params, state = jax.tree_util.tree_map(lambda a: jax.device_put(np.asarray(a, np.float64)), (params, state))
    if "perturb" in case.options:
        params = perturbed(params, k_init, case.options["perturb"])
    x = _batch(k_x, case)
    y = jax.eval_shape(lambda p, s, xx: layer.apply(p, s, xx, key=k_fwd, train=train)[0], params, state, x)
    return params, state, x, _normal(k_r, y.shape), k_fwd


def check_layers():
    """The catalog layers of CASES, float64, batch sharded 4 ways, Explicit axes: manual vs
    autodiff under the mesh; for AUTO_TOO also under Auto axes, and against one device."""
    out = {}
    with jax.enable_x64(True):
        for case in [c for c in LAYER_CASES if c.name in CASES] + EXTRA:
            layer = case.make()
            train = case.options.get("train", True)
            params, state, x, r, k_fwd = _point(layer, case, train)  # eagerly: its draws compile nothing per shape
            grads = jax.jit(_layer_grads, static_argnums=(0, 6))
            more = case.name in AUTO_TOO
            ref = grads(layer, params, state, x, r, k_fwd, train)[0] if more else None
            for kind in ("Explicit", "Auto") if more else ("Explicit",):
                mesh = _mesh(4, kind)
                with jax.set_mesh(mesh):
                    xs, rs = (jax.tree_util.tree_map(lambda a: jax.device_put(a, P("data")), v) for v in (x, r))
                    ps = jax.device_put((params, state), P())
                    manual, auto = grads(layer, *ps, xs, rs, k_fwd, train)
                out[f"{case.name}/{kind}/manual_vs_autodiff"] = rel_error(manual, auto)
                if more:
                    out[f"{case.name}/{kind}/mesh_vs_one_device"] = rel_error(manual, ref)
                replicated = all(s is None for g in jax.tree_util.tree_leaves(manual[0])
                                 for s in g.sharding.spec)
                out[f"{case.name}/{kind}/param_grads_replicated"] = 0.0 if replicated else 1.0
    return out


def _mlp(axis_name=None):
    return serial(L.Dense(16), L.BatchNorm(axis_name=axis_name), L.ReLU(), L.Dropout(0.25), L.Dense(3))


def _xy(n=96, shape=(6,)):
    k_x, k_y = jax.random.split(jax.random.key(7))
    return (np.asarray(jax.random.normal(k_x, (n, *shape))),
            np.asarray(jax.random.randint(k_y, (n,), 0, 3), np.int32))


def check_fit():
    """fit(mesh=...) on 1, 2, 4, 8 devices against fit without a
    mesh, float32, the same seed: params, BatchNorm state and the loss history."""
    out = {}
    x, y = _xy()
    kw = dict(epochs=2, batch_size=16, key=jax.random.key(3), progress=False)
    opt = optax.sgd(0.05, momentum=0.9)  # (Adam would amplify rounding in near-zero gradients)
    ref = funcnn.training.fit(_mlp(), losses.softmax_cross_entropy, opt, (x, y), **kw)
    for n, kind in ((1, "Explicit"), (2, "Explicit"), (4, "Explicit"), (8, "Explicit")):
        r = funcnn.training.fit(_mlp(), losses.softmax_cross_entropy, opt, (x, y), mesh=_mesh(n, kind), **kw)
        out[f"fit/{n}/{kind}/params"] = rel_error(r.params, ref.params)
        out[f"fit/{n}/{kind}/state"] = rel_error(r.state, ref.state)
        out[f"fit/{n}/{kind}/history"] = rel_error(r.history["loss"], ref.history["loss"])
        out[f"fit/{n}/{kind}/max_abs_param_diff"] = max(
            float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
            for a, b in zip(jax.tree_util.tree_leaves(r.params), jax.tree_util.tree_leaves(ref.params)))
    try:
        funcnn.training.fit(_mlp(), losses.softmax_cross_entropy, opt, (x, y), mesh=_mesh(4, "Explicit"),
                         **{**kw, "batch_size": 10})
        out["fit/bad_batch_size"] = "no error"
    except ValueError as e:
        out["fit/bad_batch_size"] = str(e)
    return out


def check_shard_map():
    """shard_map_value_and_grad (BatchNorm(axis_name="data")) against value_and_grad under
    the mesh, float64: an MLP (manual and autodiff), a CNN (manual)."""
    out = {}
    models = {
        "mlp": (lambda a: serial(L.Dense(16), L.BatchNorm(gamma_init="he_normal", beta_init="glorot_normal",
                                                          axis_name=a), L.Tanh(), L.Dense(3)), (6,)),
        "cnn": (lambda a: serial(L.Conv2D(3, 3), L.BatchNorm(axis_name=a), L.ReLU(), L.MaxPool2D(2),
                                 L.Flatten(), L.Dense(3)), (6, 6, 1)),
    }
    mesh = _mesh(4, "Explicit")
    with jax.enable_x64(True):
        for name, (make, shape) in models.items():
            x, y = _xy(16, shape)
            params, state = make(None).init(jax.random.key(1), shape)
            params, state = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), (params, state))
            x = x.astype(np.float64)
            with jax.set_mesh(mesh):
                args = (*distributed.replicate((params, state), mesh), *distributed.shard_batch((x, y), mesh))
                ref = jax.jit(funcnn.value_and_grad(make(None), losses.softmax_cross_entropy))(*args)
                for mode in ("manual", "autodiff") if name == "mlp" else ("manual",):
                    f = distributed.shard_map_value_and_grad(make("data"), losses.softmax_cross_entropy, mesh, mode=mode)
                    got = jax.jit(f)(*args)
                    out[f"shard_map/{name}/{mode}"] = rel_error(got, ref)
    return out


def _max_abs_diff(a, b):
    return max(float(np.max(np.abs(np.asarray(u) - np.asarray(v))))
               for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def _without_key_bias(params):
    """The GPT's params less each attention's key bias b_in[D:2D], whose gradient is zero up to
    rounding (softmax is unchanged by adding q . b_k to a whole row of scores)."""
    def drop(path, a):
        if jax.tree_util.keystr(path).endswith("['b_in']"):
            d = a.shape[0] // 3
            return np.concatenate([np.asarray(a)[:d], np.asarray(a)[2 * d:]])
        return a

    return jax.tree_util.tree_map_with_path(drop, params)


def check_lm():
    """train_lm(mesh=...) on 1, 2, 4 devices against train_lm without a mesh, float32, the
    same seed (the same batches): params and the loss history; SGD with momentum, and Adam
    (all params but the key biases, see ``_without_key_bias``)."""
    out = {}
    corpus = text.load_pydoc(0)
    model = models.gpt(corpus.vocab_size, context=8, layers=1, heads=2, width=16)
    kw = dict(context=8, steps=6, batch_size=8, eval_every=3, eval_windows=4, seed=0)
    for name, opt in (("sgd", optax.sgd(0.1, momentum=0.9)), ("adam", optax.adam(1e-2))):
        ref = lm.train_lm(model, corpus, optimizer=opt, **kw)
        for n in (1, 2, 4) if name == "sgd" else (4,):
            r = lm.train_lm(model, corpus, optimizer=opt, mesh=_mesh(n, "Explicit"), **kw)
            if name == "sgd":
                out[f"lm/{name}/{n}/params"] = rel_error(r.params, ref.params)
            else:
                out[f"lm/{name}/{n}/params_but_key_bias"] = rel_error(_without_key_bias(r.params),
                                                                     _without_key_bias(ref.params))
            out[f"lm/{name}/{n}/history"] = rel_error([*r.history["train_loss"], *r.history["val_loss"]],
                                                      [*ref.history["train_loss"], *ref.history["val_loss"]])
            out[f"lm/{name}/{n}/max_abs_param_diff"] = _max_abs_diff(r.params, ref.params)
            out[f"lm/{name}/{n}/steps"] = r.history["step"]
    try:
        lm.train_lm(model, corpus, mesh=_mesh(4, "Explicit"), **{**kw, "batch_size": 6})
        out["lm/bad_batch_size"] = "no error"
    except ValueError as e:
        out["lm/bad_batch_size"] = str(e)
    return out


SECTIONS = {"layers": check_layers, "fit": check_fit, "shard_map": check_shard_map, "lm": check_lm}

if __name__ == "__main__":
    results = {}
    for section in sys.argv[1:]:
        results.update(SECTIONS[section]())
    print(json.dumps(results))
