"""Gradient checks at perturbed (not initial) params, for the transformer layer tests."""
import jax
import jax.numpy as jnp
import numpy as np

import funcnn as fn
from funcnn.check import draws


def perturbed(params, key, scale=0.3, dtype=None):
    """Params moved off their initial values (gains off one, biases off zero), so no term hides:
    ``scale`` times a standard normal added to every leaf, in the leaf's dtype (or ``dtype``).
    Drawn by ``funcnn.check.draws`` on the host: no program compiled per leaf shape (a threefry
    per leaf in one jitted program took ~0.07 s of compiling each)."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = draws.split(key, max(len(leaves), 1))
    with jax.enable_x64(True):
        return treedef.unflatten([
            jax.device_put((np.asarray(p, np.float64) + scale * draws.normal(k, np.shape(p))).astype(dtype or p.dtype))
            for p, k in zip(leaves, keys)])


def params64(layer, input_shape, key=jax.random.key(1)):
    """Float64 params of ``layer``, perturbed; call inside ``jax.enable_x64(True)``. ``init`` runs
    eagerly: its draws come from a few bucketed programs (``funcnn.core.prng``)."""
    params, state = layer.init(key, input_shape)
    return perturbed(params, jax.random.fold_in(key, 7), dtype=np.float64), state


def check_at(layer, input_shape, x, key=jax.random.key(0), **kwargs):
    """``check_backward`` of the layer at perturbed float64 params and the given input
    (manual vs autodiff <= 1e-10 relative, vs finite differences <= 1e-6; ``fd=False``: autodiff only)."""
    with jax.enable_x64(True):
        params, state = params64(layer, input_shape)
        x = jax.tree_util.tree_map(
            lambda a: jnp.asarray(a, jnp.float64) if jnp.issubdtype(jnp.result_type(a), jnp.floating) else a, x)

        def forward(p, xx):
            return layer.forward(p, state, xx, train=True)[0]

        def backward(p, xx, dy):
            return layer.backward(p, layer.forward(p, state, xx, train=True)[2], dy)

        return fn.check_backward(forward, backward, params, x, key=key, name=layer.name, argnames=["params", "x"],
                                 **kwargs)
