"""Flatten: (N, d1, ..., dk) -> (N, d1*...*dk). Its backward reshapes dy back."""
from __future__ import annotations

import math

from funcnn._validate import example_shape
from funcnn.layer import Layer


def Flatten() -> Layer:
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

    return Layer("flatten", init, forward, backward, output_shape)
