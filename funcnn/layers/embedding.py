"""Embedding: integer ids -> rows of a table, a Dense layer on one-hot inputs.

For ids of any shape (typically (B, T)) and a table W of shape (V, F),

    y[n] = W[ids[n]]                   (..., F),   i.e. y = onehot(ids) W.

Backward, given dy of shape (..., F): dW = onehot(ids)^T dy, so row v of dW is the
sum of the dy rows whose id is v,

    dW[v] = sum_{n : ids[n] = v} dy[n],

computed as a scatter-add (no one-hot matrix is built). The ids are integers: there
is no gradient with respect to them, and the backward returns ``dx = None``.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from funcnn.core import initializers
from funcnn.core.dtypes import layer_dtypes, with_compute_dtype
from funcnn.core.sharding import batch_scatter_add, batch_take
from funcnn.core.validate import positive_int
from funcnn.core.layer import Layer


def standard_normal(key, shape, fan_in=None, fan_out=None, dtype=jnp.float32):
    """N(0, 1) entries: ``torch.nn.Embedding``'s initialisation."""
    return jax.random.normal(key, shape, dtype)


def Embedding(vocab: int, features: int, *, w_init=standard_normal, param_dtype=jnp.float32,
              dtype=None) -> Layer:
    """Integer ids (batch, ...) in [0, vocab) -> their rows of ``w``: (batch, ..., features).

    Params ``{"w": (vocab, features)}`` (standard normal by default, as ``torch.nn.Embedding``)
    in ``param_dtype``; ``dtype`` is the compute (output) dtype, None keeping ``param_dtype``.

    Raises ``TypeError`` for non-integer ids and ``ValueError`` for ids outside [0, vocab)
    when their values are concrete (under ``jit`` they are not checked: as in ``jnp.take``,
    negative ids wrap around and ids >= vocab give rows of NaN). Under a mesh with
    ``Explicit`` axes the gather and the backward's scatter-add state their shardings
    (``funcnn.core.sharding.batch_take``, ``batch_scatter_add``).
    """
    positive_int(vocab, "vocab", "Embedding")
    positive_int(features, "features", "Embedding")
    param_dtype, dtype = layer_dtypes(param_dtype, dtype, "Embedding")
    w_init = initializers.get(w_init, "w_init")

    def init(key, input_shape):
        return {"w": w_init(key, (vocab, features), vocab, features, dtype=param_dtype)}, {}

    def output_shape(input_shape):
        return (*tuple(input_shape), features)

    def forward(params, state, ids, *, key=None, train=False):
        if not jnp.issubdtype(jnp.result_type(ids), jnp.integer):
            raise TypeError(f"Embedding: ids must be an integer array, got dtype {jnp.result_type(ids)}")
        if not isinstance(ids, jax.core.Tracer) and np.size(ids):
            concrete = np.asarray(ids)  # numpy: no op is staged even inside a jit trace
            lo, hi = int(concrete.min()), int(concrete.max())
            if lo < 0 or hi >= vocab:
                raise ValueError(f"Embedding: ids must be in [0, {vocab}), got values in [{lo}, {hi}]")
        return batch_take(params["w"], ids), state, ids

    def backward(params, ids, dy):
        w = params["w"]
        acc = jnp.promote_types(dy.dtype, jnp.float32)  # accumulate half-precision sums in float32
        dw = batch_scatter_add(jnp.zeros(w.shape, acc), ids.reshape(-1), dy.reshape(-1, w.shape[1]).astype(acc))
        return {"w": dw.astype(w.dtype)}, None

    return with_compute_dtype(Layer("embedding", init, forward, backward, output_shape), dtype)
