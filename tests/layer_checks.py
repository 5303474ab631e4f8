"""Gradient checks at perturbed (not initial) params, for the transformer layer tests."""
import jax
import jax.numpy as jnp

import funcnn as fn


@jax.jit  # one program (op by op, each leaf's shape would compile its own draw)
def perturbed(params, key, scale=0.3):
    """Params moved off their initial values (gains off one, biases off zero), so no term hides."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(key, max(len(leaves), 1))
    return jax.tree_util.tree_unflatten(
        treedef, [p + scale * jax.random.normal(k, p.shape, p.dtype) for p, k in zip(leaves, keys)])


def params64(layer, input_shape, key=jax.random.key(1)):
    """Float64 params of ``layer``, perturbed; call inside ``jax.enable_x64(True)``."""
    def draw(key):
        params, state = layer.init(key, input_shape)
        params = jax.tree_util.tree_map(lambda p: p.astype(jnp.float64), params)
        return perturbed(params, jax.random.fold_in(key, 7)), state

    return jax.jit(draw)(key)


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
