"""Storage and computation dtypes of a layer (Flax's ``param_dtype`` and ``dtype``).

* ``param_dtype`` (default float32): the dtype ``init`` creates the params (and float
  state) in. Params and state of one layer never mix float widths.
* ``dtype`` (default ``None``: the input's floating dtype): the dtype ``forward`` and
  ``backward`` compute in. Params and float inputs are cast to it on the way in.

``with_compute_dtype(layer, dtype)`` adds the second to a layer written for one dtype:
the cast is linear, so its backward is the cast back,

    y = f(cast_c(theta), cast_c(x))  =>  dtheta = cast_p(df/dtheta_c), dx = cast_x(df/dx_c),

which is exactly what autodiff of the same cast forward returns: gradients come back in
each param's own dtype and dx in the input's dtype. Casting to the same dtype is a no-op.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def float_dtype(value, arg: str, where: str, *, allow_none: bool = False):
    """``value`` as a numpy floating dtype (names such as "bfloat16" accepted)."""
    if value is None and allow_none:
        return None
    try:
        dt = jnp.dtype(value)
    except TypeError:
        dt = None
    if dt is None or not jnp.issubdtype(dt, jnp.floating):
        want = "a floating dtype (float16, bfloat16, float32, float64)" + (" or None" if allow_none else "")
        raise TypeError(f"{where}: {arg} must be {want}, got {value!r}")
    return dt


def _is_float(x) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.floating)


def cast_floats(tree, dtype):
    """Every floating leaf of ``tree`` cast to ``dtype`` (integer leaves untouched)."""
    if dtype is None:
        return tree
    return jax.tree_util.tree_map(lambda a: a.astype(dtype) if _is_float(a) else a, tree)


def cast_like(tree, reference):
    """Every floating leaf of ``tree`` cast to the dtype of the matching leaf of ``reference``.

    ``None`` leaves (e.g. ``dx`` of an integer input) stay ``None``."""
    return jax.tree_util.tree_map(
        lambda g, r: g if g is None or not _is_float(r) else g.astype(jnp.result_type(r)),
        tree, reference, is_leaf=lambda v: v is None)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class CastCache:
    """A layer's cache, plus (static) the compute dtype and the input's leaf dtypes."""

    inner: Any
    compute: Any = dataclasses.field(metadata=dict(static=True))
    x_dtypes: tuple = dataclasses.field(metadata=dict(static=True))
    x_treedef: Any = dataclasses.field(metadata=dict(static=True))


def compute_dtype(dtype, x):
    """The dtype a layer computes in: ``dtype``, else the first float leaf of ``x``'s."""
    if dtype is not None:
        return dtype
    for leaf in jax.tree_util.tree_leaves(x):
        if _is_float(leaf):
            return jnp.result_type(leaf)
    return None  # integer input (Embedding): params keep their own dtype


def with_compute_dtype(layer, dtype=None):
    """``layer`` computing in ``dtype`` (None: the input's float dtype); see the module doc."""
    def forward(params, state, x, *, key=None, train=False):
        c = compute_dtype(dtype, x)
        leaves, treedef = jax.tree_util.tree_flatten(x)
        y, state, cache = layer.forward(cast_floats(params, c), state, cast_floats(x, c), key=key, train=train)
        x_dtypes = tuple(np.dtype(jnp.result_type(l)).name for l in leaves)
        return y, state, CastCache(cache, None if c is None else np.dtype(c).name, x_dtypes, treedef)

    def backward(params, cache, dy):
        c = cache.compute
        dparams, dx = layer.backward(cast_floats(params, c), cache.inner, cast_floats(dy, c))
        if dx is not None:
            flat = cache.x_treedef.flatten_up_to(dx)
            flat = [d if d is None or not jnp.issubdtype(np.dtype(t), jnp.floating) else d.astype(t)
                    for d, t in zip(flat, cache.x_dtypes)]
            dx = cache.x_treedef.unflatten(flat)
        return cast_like(dparams, params), dx

    def apply(params, state, x, *, key=None, train=False):
        c = compute_dtype(dtype, x)
        return layer.apply(cast_floats(params, c), state, cast_floats(x, c), key=key, train=train)

    return dataclasses.replace(layer, forward=forward, backward=backward, apply_fn=apply)
