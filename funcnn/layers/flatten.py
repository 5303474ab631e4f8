"""Flatten: (N, d1, ..., dk) -> (N, d1*...*dk). Its backward reshapes dy back.
``dtype`` (None: the input's) casts x, as every layer's does."""
from __future__ import annotations

import math

from funcnn.core.validate import example_shape
from funcnn.core.dtypes import float_dtype, with_compute_dtype
from funcnn.core.layer import Layer


def Flatten(*, dtype=None) -> Layer:
    dtype = float_dtype(dtype, "dtype", "Flatten", allow_none=True)

    def init(key, input_shape):
        return {}, {}

    def output_shape(input_shape):
        return (math.prod(example_shape(input_shape, "Flatten")),)

    def forward(params, state, x, *, key=None, train=False):
        if x.ndim < 1:
            raise ValueError(f"Flatten: x must have a batch axis, got shape {x.shape}")
        return x.reshape(x.shape[0], -1), state, x.shape

    def backward(params, shape, dy):
        return {}, dy.reshape(shape)

    return with_compute_dtype(Layer("flatten", init, forward, backward, output_shape), dtype)
