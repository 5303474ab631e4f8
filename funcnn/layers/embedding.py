r"""Embedding: integer ids -> rows of a table, a Dense layer on one-hot inputs; and its tied readout.

**Forward.** For ids of any shape (typically `(B, T)`) and a table $W$ of shape `(V, F)`,

$$
y_n = W_{\mathrm{ids}_n} \quad (\dots, F), \qquad \text{i.e. } y = \operatorname{onehot}(\mathrm{ids})\, W .
$$

**Cache.** The ids.

**Backward.** Given $dy$ of shape `(..., F)`: $dW = \operatorname{onehot}(\mathrm{ids})^\top dy$, so row
$v$ of $dW$ is the sum of the $dy$ rows whose id is $v$,

$$
dW_v = \sum_{n \,:\, \mathrm{ids}_n = v} dy_n ,
$$

computed as a scatter-add (no one-hot matrix is built). The ids are integers: there is no
gradient with respect to them, and the backward returns `dx = None`.

**Tied embeddings** (GPT-2, Press & Wolf 2017): the output head reuses the table,
$\mathrm{logits} = h W^\top$. `TiedEmbedding` outputs the pair $(y, W)$ and `TiedReadout`
takes $(h, W)$, so the table travels with the activations and its two uses meet in the
chain rule: the readout's backward returns $(dh, dW^{head})$ with
$dW^{head} = \sum_{n} d\mathrm{logits}_n^\top h_n$ `(V, F)`, and the embedding's backward adds it
to its own scatter-add:

$$
dW = \operatorname{onehot}(\mathrm{ids})^\top dy + dW^{head} .
$$
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from funcnn.core import initializers, prng
from funcnn.core.dtypes import layer_dtypes, with_compute_dtype
from funcnn.core.layer import Layer
from funcnn.core.sharding import batch_outer, batch_scatter_add, batch_take
from funcnn.core.validate import positive_int


def standard_normal(key: jax.Array, shape: tuple[int, ...], fan_in: Any = None, fan_out: Any = None,
                    dtype: Any = jnp.float32) -> jax.Array:
    """N(0, 1) entries of the given shape: `torch.nn.Embedding`'s initialisation."""
    return prng.normal(key, shape, dtype)


def normal(std: float) -> Callable[..., jax.Array]:
    """An initialiser drawing N(0, `std`^2) entries (`normal(0.02)`: GPT-2's)."""
    def init(key, shape, fan_in=None, fan_out=None, dtype=jnp.float32):
        return prng.normal(key, shape, dtype, std)

    return init


def embedding_forward(w: jax.Array, ids: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The rows of `w` `(V, F)` at `ids` `(...)`: returns `(y, cache)`, `y` `(..., F)`, `cache` the ids."""
    return batch_take(w, ids), ids


def embedding_backward(dy: jax.Array, ids: jax.Array, w: jax.Array) -> jax.Array:
    """`dW` `(V, F)`: the scatter-add of `dy` `(..., F)` into the rows `ids` `(...)`, in `w`'s dtype
    (half-precision sums accumulate in float32)."""
    acc = jnp.promote_types(dy.dtype, jnp.float32)
    dw = batch_scatter_add(jnp.zeros(w.shape, acc), ids.reshape(-1), dy.reshape(-1, w.shape[1]).astype(acc))
    return dw.astype(w.dtype)


def _check_ids(ids: Any, vocab: int, where: str) -> None:
    """One-line errors unless `ids` are integers in [0, vocab) (values checked when concrete)."""
    if not jnp.issubdtype(jnp.result_type(ids), jnp.integer):
        raise TypeError(f"{where}: ids must be an integer array, got dtype {jnp.result_type(ids)}")
    if not isinstance(ids, jax.core.Tracer) and np.size(ids):
        concrete = np.asarray(ids)  # numpy: no op is staged even inside a jit trace
        lo, hi = int(concrete.min()), int(concrete.max())
        if lo < 0 or hi >= vocab:
            raise ValueError(f"{where}: ids must be in [0, {vocab}), got values in [{lo}, {hi}]")


def Embedding(vocab: int, features: int, *, w_init: str | Callable = standard_normal, tied: bool = False,
              param_dtype: Any = jnp.float32, dtype: Any = None) -> Layer:
    """Integer ids `(batch, ...)` in [0, vocab) -> their rows of `w`: `(batch, ..., features)`.

    Params `{"w": (vocab, features)}` (standard normal by default, as `torch.nn.Embedding`)
    in `param_dtype`; `dtype` is the compute (output) dtype, None keeping `param_dtype`.
    `tied=True` is `TiedEmbedding`: the output is the pair `(rows, w)` for a `TiedReadout`.

    **Raises:** `TypeError` for non-integer ids and `ValueError` for ids outside [0, vocab)
    when their values are concrete (under `jit` they are not checked: as in `jnp.take`,
    negative ids wrap around and ids >= vocab give rows of NaN). Under a mesh with
    `Explicit` axes the gather and the scatter-add state their shardings.
    """
    positive_int(vocab, "vocab", "Embedding")
    positive_int(features, "features", "Embedding")
    param_dtype, dtype = layer_dtypes(param_dtype, dtype, "Embedding")
    w_init = initializers.get(w_init, "w_init")

    def init(key, input_shape):
        return {"w": w_init(key, (vocab, features), vocab, features, dtype=param_dtype)}, {}

    def forward(params, state, ids, *, key=None, train=False):
        _check_ids(ids, vocab, "Embedding")
        y, cache = embedding_forward(params["w"], ids)
        return ((y, params["w"]) if tied else y), state, cache

    def backward(params, ids, dy):
        dy, dw_readout = dy if tied else (dy, None)
        dw = embedding_backward(dy, ids, params["w"])
        return {"w": dw if dw_readout is None else dw + dw_readout.astype(dw.dtype)}, None

    def output_shape(input_shape):
        shape = (*tuple(input_shape), features)
        return (shape, (vocab, features)) if tied else shape

    return with_compute_dtype(Layer("tied_embedding" if tied else "embedding", init, forward, backward,
                                    output_shape), dtype)


def TiedEmbedding(vocab: int, features: int, **kwargs: Any) -> Layer:
    """`Embedding(vocab, features, tied=True, **kwargs)`: ids -> `(rows (..., features), w (vocab, features))`;
    its backward takes `(drows, dw_readout)` and returns `{"w": scatter-add of drows + dw_readout}`."""
    return Embedding(vocab, features, tied=True, **kwargs)


def readout_forward(h: jax.Array, w: jax.Array, b: jax.Array | None = None) -> tuple[jax.Array, tuple]:
    r"""Logits $h W^\top + b$ of `h` `(..., F)` against the table `w` `(V, F)`: returns `(logits (..., V), cache)`."""
    logits = h @ w.T
    return (logits if b is None else logits + b), (h, w)


def readout_backward(dlogits: jax.Array, cache: tuple) -> tuple[jax.Array, jax.Array, jax.Array]:
    r"""`(dh (..., F), dw (V, F), db (V,))` of `readout_forward`: $dh = d\,W$, $dW = \sum_n d_n^\top h_n$."""
    h, w = cache
    return dlogits @ w, batch_outer(dlogits, h), dlogits.sum(axis=tuple(range(dlogits.ndim - 1)))


def TiedReadout(vocab: int, *, use_bias: bool = False, param_dtype: Any = jnp.float32, dtype: Any = None) -> Layer:
    r"""The tied output head: `(h (B, T, F), w (vocab, F))` -> logits $h W^\top (+ b)$ `(B, T, vocab)`.

    Params `{}`, or `{"b": (vocab,)}` (zeros) with `use_bias=True`. The backward returns
    `dx = (dh, dw)`: `dw` flows back, through whatever carried the table, to `TiedEmbedding`.

    **Raises:** `ValueError` for an input that is not a pair `(h, w)` with `w` of `vocab` rows.
    """
    positive_int(vocab, "vocab", "TiedReadout")
    param_dtype, dtype = layer_dtypes(param_dtype, dtype, "TiedReadout")

    def init(key, input_shape):
        return ({"b": jnp.zeros((vocab,), param_dtype)} if use_bias else {}), {}

    def forward(params, state, x, *, key=None, train=False):
        if not (isinstance(x, (tuple, list)) and len(x) == 2 and jnp.ndim(x[1]) == 2 and x[1].shape[0] == vocab
                and x[0].shape[-1] == x[1].shape[1]):
            shapes = jax.tree_util.tree_map(jnp.shape, x)
            raise ValueError(f"TiedReadout: x must be a pair (h (..., F), w ({vocab}, F)), got shapes {shapes}")
        logits, cache = readout_forward(x[0], x[1], params.get("b"))
        return logits, state, cache

    def backward(params, cache, dy):
        dh, dw, db = readout_backward(dy, cache)
        return ({"b": db} if "b" in params else {}), (dh, dw)

    output_shape = lambda s: (*tuple(s[0])[:-1], vocab)  # noqa: E731
    return with_compute_dtype(Layer("tied_readout", init, forward, backward, output_shape), dtype)
