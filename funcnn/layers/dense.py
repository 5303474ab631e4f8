r"""Dense (fully connected) layer: $S$ neurons over $R$ inputs.

**Forward.** For a batch $X$ of shape `(N, R)`, weights $W$ of shape `(S, R)` and a bias
$b$ of shape `(S,)` (absent when the layer is built with `use_bias=False`):

$$
Y = X W^\top + b, \qquad y_n = W x_n + b \quad \text{for every example } n .
$$

**Cache.** The input $X$ alone, `(N, R)`: the weights are passed again to the backward.

**Backward.** Given $\delta = \partial L / \partial Y$ of shape `(N, S)`, since
$\partial y_{ns} / \partial W_{sr} = x_{nr}$, $\partial y_{ns} / \partial b_s = 1$ and
$\partial y_{ns} / \partial x_{nr} = W_{sr}$:

$$
\frac{\partial L}{\partial W} = \delta^\top X = \sum_n \delta_n x_n^\top \quad (S, R), \qquad
\frac{\partial L}{\partial b} = \sum_n \delta_n \quad (S,), \qquad
\frac{\partial L}{\partial X} = \delta W \quad (N, R).
$$

`dense_forward` and `dense_backward` take any number of leading (sample) axes: the sums
over $n$ run over all of them (`token_dense` applies the same layer at every position).
"""
from __future__ import annotations

from typing import Any, Callable

import jax

from funcnn.core import initializers
from funcnn.core.dtypes import available, initialise, layer_dtypes, with_compute_dtype
from funcnn.core.layer import Layer
from funcnn.core.sharding import batch_outer
from funcnn.core.validate import batch_input, cotangent, input_rank, positive_int


def dense_forward(x: jax.Array, w: jax.Array, b: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    r"""$Y = X W^\top + b$ over the last axis of `x`.

    **Arguments:**

    - `x`: input, shape `(..., R)` (every leading axis a sample axis).
    - `w`: weights, shape `(S, R)`.
    - `b`: bias, shape `(S,)`, or `None` for none.

    **Returns:**

    `(y, cache)`: `y` of shape `(..., S)`; `cache` is `x`.
    """
    y = x @ w.T
    return (y if b is None else y + b), x


def dense_backward(dy: jax.Array, cache: jax.Array, w: jax.Array,
                   use_bias: bool = True) -> tuple[jax.Array, jax.Array | None, jax.Array]:
    r"""The gradients of `dense_forward`: $\delta^\top X$, $\sum_n \delta_n$, $\delta W$.

    **Arguments:**

    - `dy`: $\partial L / \partial Y$, shape `(..., S)`.
    - `cache`: the forward's input `x`, shape `(..., R)`.
    - `w`: weights, shape `(S, R)`.
    - `use_bias`: whether the forward added a bias.

    **Returns:**

    `(dw, db, dx)`: `dw` of shape `(S, R)`, `db` of shape `(S,)` (`None` without a bias),
    `dx` of shape `(..., R)`.
    """
    db = dy.sum(axis=tuple(range(dy.ndim - 1))) if use_bias else None
    return batch_outer(dy, cache), db, dy @ w


def dense_params(key: jax.Array, n_in: int, features: int, w_init: Callable, b_init: Callable | None,
                 dtype: Any, *, split: bool = True) -> dict[str, jax.Array]:
    """Params `{"w": (features, n_in), "b": (features,)}` (no `"b"` when `b_init` is `None`).

    `split`: draw `w` and `b` from two halves of `key` (else `w` from `key` itself, `b` from
    `fold_in(key, 1)`)."""
    kw, kb = jax.random.split(key) if split else (key, jax.random.fold_in(key, 1))
    params = {"w": initialise(w_init, kw, (features, n_in), n_in, features, dtype)}
    if b_init is not None:
        params["b"] = initialise(b_init, kb, (features,), n_in, features, dtype)
    return params


def grads_of(dw: jax.Array, db: jax.Array | None) -> dict[str, jax.Array]:
    """`{"w": dw, "b": db}`, without `"b"` when `db` is `None` (the params' structure)."""
    return {"w": dw} if db is None else {"w": dw, "b": db}


def dense_options(features: int, w_init: str | Callable, b_init: str | Callable, use_bias: bool,
                  param_dtype: Any, dtype: Any, who: str) -> tuple[Callable, Callable | None, Any, Any]:
    """Validate a dense layer's arguments (`Dense`, `token_dense`) and resolve them.

    **Returns:**

    `(w_init, b_init, param_dtype, dtype)`: the initialisers as functions (`b_init` None
    without a bias) and the dtypes. Raises `ValueError` for a non-positive `features` and
    `TypeError` for a non-bool `use_bias`, naming `who`.
    """
    positive_int(features, "features", who)
    if not isinstance(use_bias, bool):
        raise TypeError(f"{who}: use_bias must be a bool, got {use_bias!r}")
    w_init = initializers.get(w_init, "w_init")
    b_init = initializers.get(b_init, "b_init") if use_bias else None
    return (w_init, b_init, *layer_dtypes(param_dtype, dtype, who))


def Dense(features: int, w_init: str | Callable = "glorot_uniform", b_init: str | Callable = "zeros", *,
          use_bias: bool = True, param_dtype: Any = "float32", dtype: Any = None) -> Layer:
    r"""$y = x W^\top + b$ over a batch of vectors `(N, R)` -> `(N, features)`.

    Params `{"w": (features, R), "b": (features,)}`; with `use_bias=False` only `"w"`.
    `param_dtype`: the params' dtype; `dtype`: the computation's (None: the input's), see
    `funcnn.core.dtypes`. The module docstring derives the backward.

    **Raises:** `ValueError` if `features` is not a positive integer or the input is not a
    batch of vectors of the size the layer was built for; `TypeError` for a non-bool `use_bias`.
    """
    w_init, b_init, param_dtype, dtype = dense_options(features, w_init, b_init, use_bias, param_dtype, dtype,
                                                       "Dense")
    what = "features; add Flatten() before Dense"

    def init(key, input_shape):
        (n_in,) = input_rank(input_shape, 1, "Dense", what)
        return dense_params(key, n_in, features, w_init, b_init, available(param_dtype, "Dense")), {}

    def output_shape(input_shape):
        input_rank(input_shape, 1, "Dense", what)
        return (features,)

    def forward(params, state, x, *, key=None, train=False):
        batch_input(x, (params["w"].shape[1],), "Dense", "a batch of input vectors")
        y, cache = dense_forward(x, params["w"], params.get("b"))
        return y, state, cache

    def backward(params, cache, dy):
        cotangent(dy, (*cache.shape[:-1], features), "Dense")
        dw, db, dx = dense_backward(dy, cache, params["w"], "b" in params)
        return grads_of(dw, db), dx

    return with_compute_dtype(Layer("dense", init, forward, backward, output_shape), dtype)
