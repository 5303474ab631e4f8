"""Dense (fully connected) layer: S neurons over R inputs.

Forward, for a batch X of shape (N, R), W of shape (S, R) and b of shape (S,):

    Y = X W^T + b                      (y_n = W x_n + b for every example n)

Backward, given dY = dL/dY of shape (N, S):

    dW = dY^T X          (S, R)   -- sum over the batch of the outer products dy_n x_n^T
    db = sum_n dY_n      (S,)
    dX = dY W            (N, R)
"""
from __future__ import annotations

import jax

from funcnn.core import initializers
from funcnn.core.sharding import batch_outer
from funcnn.core.validate import batch_input, cotangent, input_rank, positive_int
from funcnn.core.dtypes import available, initialise, layer_dtypes, with_compute_dtype
from funcnn.core.layer import Layer


def Dense(features: int, w_init="glorot_uniform", b_init="zeros", *, param_dtype="float32",
          dtype=None) -> Layer:
    """``y = x @ w.T + b`` with params ``{"w": (features, in), "b": (features,)}``.

    ``param_dtype``: the params' dtype; ``dtype``: the computation's (None: the input's),
    see ``funcnn.core.dtypes``.

    Raises ``ValueError`` if ``features`` is not a positive integer or the input is
    not a batch of vectors of the size the layer was built for.
    """
    positive_int(features, "features", "Dense")
    w_init = initializers.get(w_init, "w_init")
    b_init = initializers.get(b_init, "b_init")
    param_dtype, dtype = layer_dtypes(param_dtype, dtype, "Dense")

    def init(key, input_shape):
        (n_in,) = input_rank(input_shape, 1, "Dense", "features; add Flatten() before Dense")
        kw, kb = jax.random.split(key)
        w = initialise(w_init, kw, (features, n_in), n_in, features, available(param_dtype, "Dense"))
        b = initialise(b_init, kb, (features,), n_in, features, param_dtype)
        return {"w": w, "b": b}, {}

    def output_shape(input_shape):
        input_rank(input_shape, 1, "Dense", "features; add Flatten() before Dense")
        return (features,)

    def forward(params, state, x, *, key=None, train=False):
        batch_input(x, (params["w"].shape[1],), "Dense", "a batch of input vectors")
        return x @ params["w"].T + params["b"], state, x

    def backward(params, x, dy):
        cotangent(dy, (*x.shape[:-1], features), "Dense")
        return {"w": batch_outer(dy, x), "b": dy.sum(axis=0)}, dy @ params["w"]

    return with_compute_dtype(Layer("dense", init, forward, backward, output_shape), dtype)
