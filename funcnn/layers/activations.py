r"""Elementwise activations and softmax, each with its derivative written out.

**Elementwise.** For $y = f(x)$ applied elementwise to $x$ of any shape, e.g. `(N, F)`,
$y_k$ depends on $x_k$ alone: the Jacobian is diagonal, $\partial y_k / \partial x_j =
f'(x_k) [k = j]$, so the backward is one elementwise product of the shape of $x$,

$$
\frac{\partial L}{\partial x_k} = \sum_j \frac{\partial L}{\partial y_j} \frac{\partial y_j}{\partial x_k}
= \delta_k\, f'(x_k), \qquad \delta = \frac{\partial L}{\partial y},
$$

with $f'$ expressed through what the forward already computed. The cache is the pair
$(x, y)$, each of the input's shape:

| layer | forward | $f'$ |
|---|---|---|
| `Sigmoid` | $y = 1 / (1 + e^{-x})$ | $y (1 - y)$ |
| `Tanh` | $y = \tanh x$ | $1 - y^2$ |
| `ReLU` | $y = \max(x, 0)$ | $[x > 0]$ (0 at the kink $x = 0$) |
| `Step` (hardlim) | $y = [x \ge 0]$ | 0 almost everywhere |
| `Identity` | $y = x$ | 1 |

(For the sigmoid, $f'(x) = e^{-x} / (1 + e^{-x})^2 = y (1 - y)$; for tanh,
$f'(x) = 1 - \tanh^2 x$.) Each is a pair of named functions, e.g.
`relu_forward(x) -> (y, cache)` and `relu_backward(dy, cache) -> dx`.

**Softmax** over the last axis of $x$ `(..., C)`: $y_i = e^{x_i} / \sum_j e^{x_j}$
(computed max-shifted, so large logits do not overflow). Now every $y_i$ depends on every
$x_j$:

$$
\frac{\partial y_i}{\partial x_j} = y_i (\delta_{ij} - y_j) ,
$$

so its vector-Jacobian product needs no $C \times C$ matrix:

$$
\frac{\partial L}{\partial x_j} = \sum_i \delta_i\, y_i (\delta_{ij} - y_j)
= y_j \left(\delta_j - \sum_i \delta_i y_i\right) \qquad (..., C).
$$

The cache is $y$ `(..., C)`.

**Precision.** Every activation takes `dtype` (the computation's, None: the input's; no
params, so no `param_dtype`). Softmax's sums run in float32 at least
(`funcnn.core.dtypes.stat_dtype`); $y$ and $dx$ come back in $x$'s dtype.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from funcnn.core.dtypes import float_dtype, stat_dtype, with_compute_dtype
from funcnn.core.layer import Layer, Params, Shape, State

Forward = Callable[[jax.Array], tuple[jax.Array, Any]]
Backward = Callable[[jax.Array, Any], jax.Array]


def sigmoid_forward(x: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """$y = 1 / (1 + e^{-x})$ elementwise. **Returns:** `(y, cache)`: `y` of `x`'s shape; `cache` is `(x, y)`."""
    y = jax.nn.sigmoid(x)
    return y, (x, y)


def sigmoid_backward(dy: jax.Array, cache: tuple[jax.Array, jax.Array]) -> jax.Array:
    r"""$dx = dy \, y (1 - y)$. **Returns:** `dx` of `dy`'s shape; `cache` is the forward's `(x, y)`."""
    y = cache[1]
    return dy * (y * (1 - y))


def tanh_forward(x: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    r"""$y = \tanh x$ elementwise. **Returns:** `(y, cache)`: `y` of `x`'s shape; `cache` is `(x, y)`."""
    y = jnp.tanh(x)
    return y, (x, y)


def tanh_backward(dy: jax.Array, cache: tuple[jax.Array, jax.Array]) -> jax.Array:
    r"""$dx = dy \, (1 - y^2)$. **Returns:** `dx` of `dy`'s shape; `cache` is the forward's `(x, y)`."""
    y = cache[1]
    return dy * (1 - y * y)


def relu_forward(x: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    r"""$y = \max(x, 0)$ elementwise. **Returns:** `(y, cache)`: `y` of `x`'s shape; `cache` is `(x, y)`."""
    y = jax.nn.relu(x)
    return y, (x, y)


def relu_backward(dy: jax.Array, cache: tuple[jax.Array, jax.Array]) -> jax.Array:
    r"""$dx = dy \, [x > 0]$ (0 at the kink). **Returns:** `dx` of `dy`'s shape; `cache` is `(x, y)`."""
    x = cache[0]
    return dy * (x > 0).astype(x.dtype)


def step_forward(x: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    r"""Hardlim, $y = [x \ge 0]$ elementwise. **Returns:** `(y, cache)`: `y` of `x`'s shape; `cache` is `(x, y)`."""
    y = (x >= 0).astype(x.dtype)
    return y, (x, y)


def step_backward(dy: jax.Array, cache: tuple[jax.Array, jax.Array]) -> jax.Array:
    """$dx = 0$: the derivative is zero almost everywhere. **Returns:** `dx` of `dy`'s shape."""
    return dy * jnp.zeros_like(cache[0])


def identity_forward(x: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """$y = x$. **Returns:** `(y, cache)`: `y` is `x`; `cache` is `(x, x)`."""
    return x, (x, x)


def identity_backward(dy: jax.Array, cache: tuple[jax.Array, jax.Array]) -> jax.Array:
    """$dx = dy$ (times ones of `x`'s shape). **Returns:** `dx` of `dy`'s shape."""
    return dy * jnp.ones_like(cache[0])


def softmax_forward(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    r"""$y_i = e^{x_i} / \sum_j e^{x_j}$ over the last axis, in float32 at least.

    **Arguments:**

    - `x`: logits, shape `(..., C)`.

    **Returns:**

    `(y, cache)`: `y` of shape `(..., C)` in `x`'s dtype; `cache` is `y` in the statistics
    dtype (float32 at least).
    """
    y = jax.nn.softmax(x.astype(stat_dtype(x.dtype)), axis=-1)
    return y.astype(x.dtype), y


def softmax_backward(dy: jax.Array, cache: jax.Array) -> jax.Array:
    r"""$dx_j = y_j (dy_j - \sum_i dy_i y_i)$ over the last axis.

    **Arguments:**

    - `dy`: the output's gradient, shape `(..., C)`; `cache`: the forward's `y`, `(..., C)`.

    **Returns:**

    `dx` of shape `(..., C)` in `dy`'s dtype.
    """
    y = cache
    return (y * (dy - jnp.sum(dy * y, axis=-1, keepdims=True))).astype(dy.dtype)


ELEMENTWISE: dict[str, tuple[Forward, Backward]] = {
    "sigmoid": (sigmoid_forward, sigmoid_backward),
    "tanh": (tanh_forward, tanh_backward),
    "relu": (relu_forward, relu_backward),
    "step": (step_forward, step_backward),
    "identity": (identity_forward, identity_backward),
}


def _no_params(key: jax.Array, input_shape: Shape) -> tuple[Params, State]:
    return {}, {}


def _same_shape(input_shape: Shape) -> Shape:
    return tuple(input_shape)


def _check_float(x, name):
    if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
        raise TypeError(f"{name}: x must be a floating-point array, got dtype {jnp.result_type(x)}")


def activation_layer(name: str, forward_fn: Forward, backward_fn: Backward, dtype: Any = None) -> Layer:
    """A parameter-free layer from a `(forward(x) -> (y, cache), backward(dy, cache) -> dx)` pair.

    **Arguments:**

    - `name`: the layer's name (and the name errors use).
    - `forward_fn`, `backward_fn`: the pair, e.g. `relu_forward`, `relu_backward`.
    - `dtype`: the computation's dtype (None: the input's).

    **Returns:**

    The `Layer`, input and output of one shape. Its forward raises `TypeError` for a
    non-floating-point x.
    """
    dtype = float_dtype(dtype, "dtype", name, allow_none=True)

    def forward(params, state, x, *, key=None, train=False):
        _check_float(x, name)
        y, cache = forward_fn(x)
        return y, state, cache

    def backward(params, cache, dy):
        return {}, backward_fn(dy, cache)

    return with_compute_dtype(Layer(name, _no_params, forward, backward, _same_shape), dtype)


def Sigmoid(*, dtype: Any = None) -> Layer:
    """$y = 1 / (1 + e^{-x})$ elementwise, any shape. **Returns:** the `Layer`."""
    return activation_layer("sigmoid", sigmoid_forward, sigmoid_backward, dtype)


def Tanh(*, dtype: Any = None) -> Layer:
    r"""$y = \tanh x$ elementwise, any shape. **Returns:** the `Layer`."""
    return activation_layer("tanh", tanh_forward, tanh_backward, dtype)


def ReLU(*, dtype: Any = None) -> Layer:
    r"""$y = \max(x, 0)$ elementwise, any shape. **Returns:** the `Layer`."""
    return activation_layer("relu", relu_forward, relu_backward, dtype)


def Step(*, dtype: Any = None) -> Layer:
    r"""Hardlim: 1 where $x \ge 0$, else 0, elementwise, any shape.

    Its derivative is zero almost everywhere, so no gradient flows through it (which is why
    the perceptron uses its own rule).

    **Returns:**

    The `Layer`.
    """
    return activation_layer("step", step_forward, step_backward, dtype)


def Identity(*, dtype: Any = None) -> Layer:
    """$y = x$, any shape. **Returns:** the `Layer`."""
    return activation_layer("identity", identity_forward, identity_backward, dtype)


def Softmax(*, dtype: Any = None) -> Layer:
    """Softmax over the last axis, `(..., C) -> (..., C)`, max-shifted, its sums in float32 at least.

    **Returns:**

    The `Layer`.
    """
    return activation_layer("softmax", softmax_forward, softmax_backward, dtype)


ACTIVATIONS: dict[str, Callable[..., Layer]] = {
    "sigmoid": Sigmoid,
    "tanh": Tanh,
    "relu": ReLU,
    "step": Step,
    "identity": Identity,
    "softmax": Softmax,
}


def get(name: str) -> Layer:
    """An activation layer by name (a key of `ACTIVATIONS`). Raises `ValueError` for another name.

    **Returns:**

    The `Layer`, e.g. `get("relu")` is `ReLU()`.
    """
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]()
