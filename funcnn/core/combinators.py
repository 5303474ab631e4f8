r"""Combinators beyond a chain: residual connections, parallel branches, fan-out and fan-in.

Each is a `Layer` (the protocol of `funcnn.core.layer`), so `value_and_grad`,
`check_layer`, `fit` and `with_manual_vjp` work on them unchanged. Sublayers' params and
state are keyed as `serial` keys them, `f"{i}_{layer.name}"`, and listed in
`Layer.children`. A tuple input is one value per branch.

The backward of each is the chain rule over a graph that is not a chain: where a value is
used twice its cotangents add, and where values are joined the cotangent is handed back to
each part.

| combinator | forward | backward |
|---|---|---|
| `residual(f)` | $y = x + f(x)$ | $dx = dy + f.\text{backward}(dy)_x$ |
| `fan_out(n)` | $(y_1, \dots, y_n) = (x, \dots, x)$ | $dx = \sum_i dy_i$ |
| `parallel(f_1, ..., f_n)` | $y_i = f_i(x_i)$ | $dx_i = f_i.\text{backward}(dy_i)_x$ |
| `fan_in_sum()` | $y = \sum_i x_i$ | $dx_i = dy$ |
| `fan_in_concat(a)` | $y = \text{concat}(x_1, \dots, x_n; a)$ | $dx_i$ = the i-th slice of $dy$ along $a$ |

stax's vocabulary: `serial(fan_out(2), parallel(f, g), fan_in_sum())` is
$y = f(x) + g(x)$, whose params' gradients come from each branch and whose input gradient
is the sum of both branches' input gradients.
"""
from __future__ import annotations

import dataclasses
import functools
import operator
from typing import Any

import jax
import jax.numpy as jnp

from funcnn.core.validate import positive_int
from funcnn.core.layer import Layer, _split


def _add(a: Any, b: Any) -> Any:
    return jax.tree_util.tree_map(operator.add, a, b)


def _no_params(key, input_shape):
    return {}, {}


def _tuple_input(x, n, where):
    if not isinstance(x, (tuple, list)) or (n is not None and len(x) != n):
        want = "a tuple" if n is None else f"a tuple of {n} values"
        got = f"a {type(x).__name__} of length {len(x)}" if isinstance(x, (tuple, list)) else type(x).__name__
        raise ValueError(f"{where}: x must be {want} (one per branch), got {got}")
    return tuple(x)


def _shapes(input_shape, n, where):
    if not isinstance(input_shape, (tuple, list)) or not all(isinstance(s, (tuple, list)) for s in input_shape) \
            or (n is not None and len(input_shape) != n):
        want = "a tuple of shapes" if n is None else f"a tuple of {n} shapes"
        raise ValueError(f"{where}: input_shape must be {want} (one per branch), got {input_shape!r}")
    return tuple(tuple(s) for s in input_shape)


def _check_layers(layers, where):
    for i, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise TypeError(f"{where}: argument {i} must be a Layer, got {type(layer).__name__}")


def residual(f: Layer, *, name: str = "residual") -> Layer:
    """$y = x + f(x)$: `(N, *S) -> (N, *S)`.

    **Arguments:**

    - `f`: a layer that maps a shape to itself.
    - `name`: the combinator's name.

    **Returns:**

    The `Layer`, params `{"0_<f.name>": f's params}`. Raises `ValueError` when `f` changes
    the shape.
    """
    _check_layers([f], "residual")
    k = f"0_{f.name}"

    def output_shape(input_shape):
        out = f.output_shape(input_shape)
        if tuple(out) != tuple(input_shape):
            raise ValueError(f"residual: f must keep the shape of its input, got {tuple(input_shape)} -> {tuple(out)}")
        return tuple(input_shape)

    def init(key, input_shape):
        output_shape(input_shape)
        params, state = f.init(key, input_shape)
        return {k: params}, {k: state}

    def forward(params, state, x, *, key=None, train=False):
        y, s, cache = f.forward(params[k], state[k], x, key=key, train=train)
        return _add(x, y), {k: s}, cache

    def backward(params, cache, dy):
        dparams, dx = f.backward(params[k], cache, dy)
        return {k: dparams}, _add(dy, dx)

    def apply(params, state, x, *, key=None, train=False):
        y, s = f.apply(params[k], state[k], x, key=key, train=train)
        return _add(x, y), {k: s}

    return Layer(name, init, forward, backward, output_shape, apply, children=((k, f),),
                 feed=lambda x, key: ((x, key),))


def parallel(*layers: Layer, name: str = "parallel") -> Layer:
    """Branch i applies `layers[i]` to `x[i]`: a tuple in, a tuple out.

    Params and state are dicts keyed `f"{i}_{layer.name}"`; the key is split into one key
    per branch; `input_shape` is a tuple of one shape per branch.

    **Arguments:**

    - `layers`: one layer per branch.
    - `name`: the combinator's name.

    **Returns:**

    The `Layer`: `((N, *S_1), ..., (N, *S_n)) -> ((N, *S_1'), ..., (N, *S_n'))`. Raises
    `ValueError` for no layers or an input that is not a tuple of n values.
    """
    if not layers:
        raise ValueError("parallel: expected at least one layer, got none")
    _check_layers(layers, "parallel")
    n = len(layers)
    names = [f"{i}_{layer.name}" for i, layer in enumerate(layers)]

    def output_shape(input_shape):
        shapes = _shapes(input_shape, n, "parallel")
        return tuple(tuple(layer.output_shape(s)) for layer, s in zip(layers, shapes))

    def init(key, input_shape):
        shapes = _shapes(input_shape, n, "parallel")
        params, state = {}, {}
        for kk, nm, layer, s in zip(jax.random.split(key, n), names, layers, shapes):
            params[nm], state[nm] = layer.init(kk, s)
        return params, state

    def forward(params, state, x, *, key=None, train=False):
        x = _tuple_input(x, n, "parallel")
        ys, new_state, caches = [], {}, []
        for kk, nm, layer, xi in zip(_split(key, n), names, layers, x):
            y, new_state[nm], c = layer.forward(params[nm], state[nm], xi, key=kk, train=train)
            ys.append(y)
            caches.append(c)
        return tuple(ys), new_state, tuple(caches)

    def backward(params, cache, dy):
        dy = _tuple_input(dy, n, "parallel.backward")
        grads, dxs = {}, []
        for nm, layer, c, d in zip(names, layers, cache, dy):
            grads[nm], dx = layer.backward(params[nm], c, d)
            dxs.append(dx)
        return grads, tuple(dxs)

    def apply(params, state, x, *, key=None, train=False):
        x = _tuple_input(x, n, "parallel")
        ys, new_state = [], {}
        for kk, nm, layer, xi in zip(_split(key, n), names, layers, x):
            y, new_state[nm] = layer.apply(params[nm], state[nm], xi, key=kk, train=train)
            ys.append(y)
        return tuple(ys), new_state

    return Layer(name, init, forward, backward, output_shape, apply, children=tuple(zip(names, layers)),
                 feed=lambda x, key: tuple(zip(_tuple_input(x, n, "parallel"), _split(key, n))))


def fan_out(n: int) -> Layer:
    """`x -> (x, ..., x)` (n copies of `(N, *S)`); backward: the sum of the n cotangents.

    **Returns:**

    The `Layer`. Raises `ValueError` for an `n` that is not a positive integer.
    """
    positive_int(n, "n", "fan_out")

    def forward(params, state, x, *, key=None, train=False):
        return (x,) * n, state, None

    def backward(params, cache, dy):
        dy = _tuple_input(dy, n, "fan_out.backward")
        return {}, functools.reduce(_add, dy)

    return Layer("fan_out", _no_params, forward, backward, lambda s: (tuple(s),) * n)


def fan_in_sum() -> Layer:
    """`(x_1, ..., x_n) -> x_1 + ... + x_n`, each `(N, *S)`; backward: `dy` to every input.

    **Returns:**

    The `Layer`. Raises `ValueError` for inputs of different shapes.
    """

    def output_shape(input_shape):
        shapes = _shapes(input_shape, None, "fan_in_sum")
        if not shapes or any(s != shapes[0] for s in shapes):
            raise ValueError(f"fan_in_sum: inputs must all have one shape, got {shapes}")
        return shapes[0]

    def forward(params, state, x, *, key=None, train=False):
        x = _tuple_input(x, None, "fan_in_sum")
        if not x or any(jnp.shape(xi) != jnp.shape(x[0]) for xi in x):
            raise ValueError(f"fan_in_sum: inputs must all have one shape, got {[jnp.shape(xi) for xi in x]}")
        return functools.reduce(operator.add, x), state, (None,) * len(x)  # the cache's length is n

    def backward(params, cache, dy):
        return {}, tuple(dy for _ in cache)

    def init(key, input_shape):
        output_shape(input_shape)
        return {}, {}

    return Layer("fan_in_sum", init, forward, backward, output_shape)


@functools.partial(jax.tree_util.register_dataclass, data_fields=[], meta_fields=["sizes", "axis"])
@dataclasses.dataclass(frozen=True)
class _Sizes:
    """fan_in_concat's cache: each input's size along the (non-negative) axis; static."""

    sizes: tuple
    axis: int


def fan_in_concat(axis: int = -1) -> Layer:
    """`(x_1, ..., x_n) -> concatenate(x; axis)`; backward: `dy` split back into the pieces.

    **Arguments:**

    - `axis`: an axis of the batched inputs (batch first; negative counts from the end),
      not the batch axis 0. The inputs agree on every other axis.

    **Returns:**

    The `Layer`: `((N, ..., a_1, ...), ..., (N, ..., a_n, ...)) -> (N, ..., a_1 + ... + a_n, ...)`.
    Raises `TypeError` for a non-int axis and `ValueError` for the batch axis or inputs that
    disagree off the axis.
    """
    if isinstance(axis, bool) or not isinstance(axis, int):
        raise TypeError(f"fan_in_concat: axis must be an int, got {axis!r}")

    def batched_axis(ndim):
        if not -ndim <= axis < ndim or axis % ndim == 0:
            raise ValueError(f"fan_in_concat: axis must be a non-batch axis of the {ndim}-axis inputs "
                             f"(1..{ndim - 1} or -{ndim - 1}..-1), got {axis}")
        return axis % ndim

    def output_shape(input_shape):
        shapes = _shapes(input_shape, None, "fan_in_concat")
        if not shapes:
            raise ValueError("fan_in_concat: expected at least one input shape, got none")
        a = batched_axis(len(shapes[0]) + 1) - 1
        rest = [s[:a] + s[a + 1:] for s in shapes]
        if any(len(s) != len(shapes[0]) for s in shapes) or any(r != rest[0] for r in rest):
            raise ValueError(f"fan_in_concat: inputs must agree on every axis but {axis}, got {shapes}")
        return shapes[0][:a] + (sum(s[a] for s in shapes),) + shapes[0][a + 1:]

    def init(key, input_shape):
        output_shape(input_shape)
        return {}, {}

    def forward(params, state, x, *, key=None, train=False):
        x = _tuple_input(x, None, "fan_in_concat")
        if not x:
            raise ValueError("fan_in_concat: expected at least one input, got none")
        a = batched_axis(jnp.ndim(x[0]))
        output_shape(tuple(jnp.shape(xi)[1:] for xi in x))
        return jnp.concatenate(x, axis=a), state, _Sizes(tuple(jnp.shape(xi)[a] for xi in x), a)

    def backward(params, cache, dy):
        bounds = [sum(cache.sizes[:i + 1]) for i in range(len(cache.sizes) - 1)]
        return {}, tuple(jnp.split(dy, bounds, axis=cache.axis))

    return Layer("fan_in_concat", init, forward, backward, output_shape)
