"""Multi-device checks, run in a fresh process by ``tests/test_parallel.py``.

JAX fixes the number of CPU devices when its backend starts, and the pytest workers
have started it already with one device; so each check runs here, in its own
process, after ``jax_num_cpu_devices`` is set, and prints one JSON object
``{"check name": relative error, ...}`` (``tests/helpers.rel_error``) that the test
asserts on. Usage: ``python tests/parallel_worker.py SECTION`` with SECTION one of
``layers``, ``fit``, ``shard_map``.
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

import funcnn  # noqa: E402
from funcnn import layers as L  # noqa: E402
from funcnn import losses, parallel  # noqa: E402
from funcnn.check.catalog import LAYER_CASES  # noqa: E402
from funcnn.layer import serial  # noqa: E402

BATCH = 8


def _mesh(n, kind):
    return jax.make_mesh((n,), ("data",), axis_types=(getattr(AxisType, kind),), devices=jax.devices()[:n])


def _layer_grads(layer, params, state, x, r, key, train):
    """(manual (dparams, dx), autodiff (dparams, dx)) of <layer(x), r>."""
    y, _, cache = layer.forward(params, state, x, key=key, train=train)
    manual = layer.backward(params, cache, r)
    _, vjp = jax.vjp(lambda p, xx: layer.apply(p, state, xx, key=key, train=train)[0], params, x)
    return manual, vjp(r)


def check_layers():
    """Every catalog layer, float64, batch sharded 4 ways, Explicit and Auto axes:
    manual vs autodiff under the mesh, and manual under the mesh vs one device."""
    out = {}
    with jax.enable_x64(True):
        for case in LAYER_CASES:
            layer = case.make()
            train = case.options.get("train", True)
            k_init, k_x, k_r, k_fwd = jax.random.split(jax.random.key(0), 4)
            params, state = layer.init(k_init, case.input_shape)
            params, state = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), (params, state))
            if "x" in case.options:
                x = jax.tree_util.tree_map(
                    lambda a: jax.random.normal(k_x, (BATCH, *a.shape[1:]), jnp.float64), case.options["x"])
            else:
                x = jax.random.normal(k_x, (BATCH, *case.input_shape), jnp.float64)
            y, _ = layer.apply(params, state, x, key=k_fwd, train=train)
            r = jax.random.normal(k_r, y.shape, jnp.float64)
            grads = jax.jit(_layer_grads, static_argnums=(0, 6))
            ref, _ = grads(layer, params, state, x, r, k_fwd, train)
            for kind in ("Explicit", "Auto"):
                mesh = _mesh(4, kind)
                with jax.set_mesh(mesh):
                    xs, rs = (jax.tree_util.tree_map(lambda a: jax.device_put(a, P("data")), v) for v in (x, r))
                    ps = jax.device_put((params, state), P())
                    manual, auto = grads(layer, *ps, xs, rs, k_fwd, train)
                out[f"{case.name}/{kind}/manual_vs_autodiff"] = rel_error(manual, auto)
                out[f"{case.name}/{kind}/mesh_vs_one_device"] = rel_error(manual, ref)
                replicated = all(s is None for g in jax.tree_util.tree_leaves(manual[0])
                                 for s in g.sharding.spec)
                out[f"{case.name}/{kind}/param_grads_replicated"] = 0.0 if replicated else 1.0
    return out


SECTIONS = {"layers": check_layers}

if __name__ == "__main__":
    print(json.dumps(SECTIONS[sys.argv[1]]()))
