r"""Storage and computation dtypes of a layer (Flax's `param_dtype` and `dtype`).

- `param_dtype` (default float32): the dtype `init` creates the params (and float state)
  in. Params and state of one layer never mix float widths.
- `dtype` (default `None`: the input's floating dtype): the dtype `forward` and `backward`
  compute in. Params and float inputs are cast to it on the way in.

`with_compute_dtype(layer, dtype)` adds the second to a layer written for one dtype: the
cast is linear, so its backward is the cast back,

$$
y = f(\mathrm{cast}_c(\theta), \mathrm{cast}_c(x)) \;\Rightarrow\;
d\theta = \mathrm{cast}_p\!\left(\frac{\partial f}{\partial \theta_c}\right), \quad
dx = \mathrm{cast}_x\!\left(\frac{\partial f}{\partial x_c}\right),
$$

which is exactly what autodiff of the same cast forward returns: gradients come back in
each param's own dtype and dx in the input's dtype. Casting to the same dtype is a no-op:
when params and input already are in the compute dtype, the wrapped layer is the layer
itself (same cache, same backward).

Every built-in layer takes both (parameter-free layers only `dtype`): its constructor
validates them with `layer_dtypes`, its `init` draws each param with
`initialise(init, ..., param_dtype)` and it returns `with_compute_dtype(Layer(...), dtype)`.
Statistics that accumulate (BatchNorm's, softmax's sums) run in `stat_dtype(d)`: float32 at
least, since a bfloat16 mean of m values keeps 8 bits and an fp16 variance overflows at
$256^2$ (the fp16 BatchNorm NaN of Haiku's mixed-precision notes).
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from funcnn.core.layer import Layer


def float_dtype(value: Any, arg: str, where: str, *, allow_none: bool = False) -> np.dtype | None:
    """`value` as a numpy floating dtype (names such as `"bfloat16"` accepted).

    **Arguments:**

    - `value`: a dtype or its name; `None` only with `allow_none`.
    - `arg`, `where`: the argument's and the caller's names, for the error.

    **Returns:**

    The dtype (or `None`). Raises `TypeError` naming `arg` for anything else.
    """
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


def layer_dtypes(param_dtype: Any, dtype: Any, where: str) -> tuple[np.dtype, np.dtype | None]:
    """A layer constructor's validated `(param_dtype, dtype)`; `dtype` may be `None`."""
    return float_dtype(param_dtype, "param_dtype", where), float_dtype(dtype, "dtype", where, allow_none=True)


def available(dtype: Any, where: str) -> Any:
    """`dtype`, or a `ValueError` if it is 64-bit while JAX runs in 32-bit mode (where it
    would silently become float32)."""
    if dtype is not None and jax.dtypes.canonicalize_dtype(dtype) != dtype:
        raise ValueError(f"{where}: {np.dtype(dtype).name} needs 64-bit JAX; run under "
                         f"`with jax.enable_x64(True):` (or set jax_enable_x64)")
    return dtype


def initialise(init: Callable, key: jax.Array, shape: tuple[int, ...], fan_in: int, fan_out: int,
               dtype: Any) -> jax.Array:
    """`init(key, shape, fan_in, fan_out, dtype)`: a param of `shape` drawn in `dtype`.

    An initialiser written without the `dtype` argument draws in its own dtype, then is cast.
    """
    try:
        inspect.signature(init).bind(key, shape, fan_in, fan_out, dtype)
        takes_dtype = True
    except (TypeError, ValueError):
        takes_dtype = False
    value = init(key, shape, fan_in, fan_out, dtype) if takes_dtype else init(key, shape, fan_in, fan_out)
    return jnp.asarray(value).astype(dtype)


def stat_dtype(dtype: Any) -> np.dtype:
    """The dtype statistics are accumulated in: `dtype` or float32, whichever is wider."""
    return jnp.promote_types(dtype, jnp.float32)


def _is_float(x) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.floating)


def cast_floats(tree: Any, dtype: Any) -> Any:
    """Every floating leaf of `tree` cast to `dtype` (integer leaves untouched; `dtype`
    `None`: `tree` as is). Shapes are kept."""
    if dtype is None:
        return tree
    return jax.tree_util.tree_map(lambda a: a.astype(dtype) if _is_float(a) else a, tree)


def cast_like(tree: Any, reference: Any) -> Any:
    """Every floating leaf of `tree` cast to the dtype of the matching leaf of `reference`
    (same structure, same shapes).

    `None` leaves (e.g. `dx` of an integer input) stay `None`."""
    return jax.tree_util.tree_map(
        lambda g, r: g if g is None or not _is_float(r) else g.astype(jnp.result_type(r)),
        tree, reference, is_leaf=lambda v: v is None)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class CastCache:
    """A layer's cache (`inner`), plus (static) the wrapper it belongs to, the compute dtype
    and the input's leaf dtypes and structure."""

    inner: Any
    owner: int = dataclasses.field(metadata=dict(static=True))
    compute: Any = dataclasses.field(metadata=dict(static=True))
    x_dtypes: tuple = dataclasses.field(metadata=dict(static=True))
    x_treedef: Any = dataclasses.field(metadata=dict(static=True))


def compute_dtype(dtype: Any, x: Any) -> Any:
    """The dtype a layer computes in: `dtype`, else the first float leaf of `x`'s (`None` for
    an integer input)."""
    if dtype is not None:
        return dtype
    for leaf in jax.tree_util.tree_leaves(x):
        if _is_float(leaf):
            return jnp.result_type(leaf)
    return None  # integer input (Embedding): params keep their own dtype


def _all_in(tree, dtype) -> bool:
    return all(jnp.result_type(a) == dtype for a in jax.tree_util.tree_leaves(tree) if _is_float(a))


def with_compute_dtype(layer: Layer, dtype: Any = None) -> Layer:
    """`layer` computing in `dtype` (None: the input's float dtype); see the module docstring.

    **Arguments:**

    - `layer`: a `Layer` written for one dtype.
    - `dtype`: the compute dtype, or `None`.

    **Returns:**

    A `Layer` with the same shapes: params and float inputs cast to the compute dtype on the
    way in, `dparams` and `dx` cast back to the params' and the input's dtypes.
    """
    owner = object()

    def forward(params, state, x, *, key=None, train=False):
        c = compute_dtype(dtype, x)
        if c is None or (_all_in(params, c) and _all_in(x, c)):
            return layer.forward(params, state, x, key=key, train=train)
        leaves, treedef = jax.tree_util.tree_flatten(x)
        y, state, cache = layer.forward(cast_floats(params, c), state, cast_floats(x, c), key=key, train=train)
        x_dtypes = tuple(np.dtype(jnp.result_type(l)).name for l in leaves)
        return y, state, CastCache(cache, id(owner), np.dtype(c).name, x_dtypes, treedef)

    def backward(params, cache, dy):
        if not (isinstance(cache, CastCache) and cache.owner == id(owner)):
            return layer.backward(params, cache, dy)
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

    return dataclasses.replace(layer, forward=forward, backward=backward, apply_fn=apply, sequential=False)
