"""Where a NaN or inf first appears: ``first_nonfinite(model, params, state, x, y, loss)``.

Runs one training-style pass layer by layer, eagerly, and checks every value in the
order it is computed:

    x -> y_1 = f_1(x) -> ... -> y_L -> loss(y_L, y) -> dL/dy_L
      -> (dtheta_L, dy_{L-1}) = backward_L -> ... -> (dtheta_1, dx) = backward_1,

returning a description of the first non-finite one (``None`` when all are finite), e.g.
``"forward: output of ['2_relu']"`` or ``"backward: grads['1_dense']['w']"``. A ``serial``
is walked through its ``children`` (nested ones too), named as in the params dict. It is
exported as ``funcnn.check.debug.first_nonfinite``; ``fit``'s guard (``NonFiniteError``) says
which step went wrong, this says which layer.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp

if TYPE_CHECKING:
    from funcnn.core.layer import Layer
    from funcnn.losses import Loss


def _finite(tree) -> bool:
    return all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree_util.tree_leaves(tree))


def _leaves(model, params, state, path=""):
    """(path, layer, params, state) of every non-serial layer, in forward order."""
    if not (model.children and model.sequential):
        return [(path or "[model]", model, params, state)]
    out = []
    for name, layer in model.children:
        out += _leaves(layer, params[name], state[name], f"{path}[{name!r}]")
    return out


def first_nonfinite(model: Layer, params: Any, state: Any, x: jax.typing.ArrayLike, y: jax.typing.ArrayLike,
                    loss: Loss, *, key: jax.Array | None = None, train: bool = False) -> str | None:
    """The first non-finite value of a forward and backward pass, described; ``None`` if none.

    ``key``/``train`` are passed to the layers (one key split per layer, so dropout masks
    differ from ``serial``'s own split)."""
    if not _finite(x):
        return "the input x"
    layers = _leaves(model, params, state)
    keys = [None] * len(layers) if key is None else list(jax.random.split(key, len(layers)))
    caches = []
    for (path, layer, p, s), k in zip(layers, keys):
        x, _, cache = layer.forward(p, s, x, key=k, train=train)
        caches.append(cache)
        if not _finite(x):
            return f"forward: output of {path}"
    if not _finite(loss.value(x, y)):
        return "loss"
    dy = loss.grad(x, y)
    if not _finite(dy):
        return "loss gradient dL/dprediction"
    for (path, layer, p, _), cache in reversed(list(zip(layers, caches))):
        dp, dy = layer.backward(p, cache, dy)
        for leaf_path, leaf in jax.tree_util.tree_flatten_with_path(dp)[0]:
            if not _finite(leaf):
                return f"backward: grads{path if path != '[model]' else ''}{jax.tree_util.keystr(leaf_path)}"
        if not _finite(dy):
            return f"backward: gradient of the input of {path}"
    return None
