r"""Autoregressive sampling from a language model, with a key/value cache.

**The model's view.** To draw the id at position $m$ the model sees a window of at most
`context` ids: while the text is short the window is the whole text at positions
$0, \dots, m - 1$; afterwards it is the last `context` ids, at positions $0, \dots,$ `context` $- 1$.
The next id is drawn from $\operatorname{softmax}(z / \tau)$, $z$ the logits at the window's last
position and $\tau$ the temperature, with one key of `jax.random.split(key, length)` per id.

**Without the cache** (`cache=False`) every id runs the model on its whole window, padded to
`context` (causal attention keeps the padding out of the positions that matter): each id costs
a full forward pass over `context` positions.

**With the cache** (`cache=True`) the model runs once over the prompt (the prefill), keeping
every attention layer's keys and values (`funcnn.layers.attention.decode_state`), then once
per new id, on that id alone at its position: its query attends over the cached keys and
values, so each id costs one position's projections and MLP and one row of attention over
a buffer of `context` rows, whatever the length so far. Once the text is longer than
`context`, the window slides: every position of it changes, so the cached keys are stale and
each further id costs a full window (as without the cache). The two paths draw the same ids
for the same key (the logits agree to rounding; a test checks the ids are equal).

**Temperature.** $\tau \to 0$ puts all the probability on the largest logit: below
`GREEDY_BELOW` (including 0) the id is the argmax of the logits (ties: the first), which is that
limit. A positive $\tau$ above it samples.

The cache works for models whose only position-dependent layers are causal
`MultiHeadAttention` and `PositionalEmbedding` (the models of `funcnn.models.gpt`): every other
layer acts on each position alone.
"""
from __future__ import annotations

import functools
import math
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from funcnn.core.layer import Layer
from funcnn.core.validate import positive_int
from funcnn.layers import attention, positional

GREEDY_BELOW = 1e-5
"""Temperatures below this (0 included) draw the argmax of the logits: the temperature -> 0 limit."""


def decode_state(model: Layer, params: dict, batch: int, context: int) -> dict:
    """The state tree that makes `model` decode: a key/value cache `(batch, context, D)` for every
    attention layer and a position counter for every positional embedding; `{}` elsewhere."""
    if model.children:
        return {k: decode_state(child, params[k], batch, context) for k, child in model.children}
    if model.name == "attention":
        w = params["w_out"]
        return attention.decode_state(batch, context, w.shape[0], w.dtype)
    if model.name == "positional_embedding":
        return positional.decode_state()
    return {}


def pick(logits: jax.Array, key: jax.Array, temperature: float) -> jax.Array:
    """One id from `logits` `(V,)`: the argmax below `GREEDY_BELOW`, else a draw from softmax(logits / temperature)."""
    if temperature < GREEDY_BELOW:
        return jnp.argmax(logits).astype(jnp.int32)
    return jax.random.categorical(key, logits / temperature).astype(jnp.int32)


def _window_steps(model: Layer, params: dict, buf: jax.Array, m0: int, keys: jax.Array, context: int,
                  temperature: float) -> jax.Array:
    """Ids `m0, m0 + 1, ...` (one per key), each from a full forward over its window of `buf`."""
    state = state_of(model)

    def step(carry, key):
        buf, m = carry
        start = jnp.maximum(m - context, 0)
        window = jax.lax.dynamic_slice_in_dim(buf, start, context)
        logits, _ = model.apply(params, state, window[None])
        tok = pick(logits[0, m - start - 1], key, temperature)
        return (buf.at[m].set(tok), m + 1), None

    (buf, _), _ = jax.lax.scan(step, (buf, jnp.asarray(m0, jnp.int32)), keys)
    return buf


def state_of(model: Layer) -> dict:
    """The `{}`-filled state tree of a model without float state (the GPT's)."""
    return {k: state_of(child) for k, child in model.children} if model.children else {}


def _cached_steps(model: Layer, params: dict, buf: jax.Array, prompt_len: int, keys: jax.Array, context: int,
                  temperature: float) -> jax.Array:
    """Prefill the prompt (`prompt_len <= context`), then one cached position per key, writing ids into `buf`."""
    logits, state = model.apply(params, decode_state(model, params, 1, context), buf[None, :prompt_len])
    first = pick(logits[0, -1], keys[0], temperature)
    buf = buf.at[prompt_len].set(first)

    def step(carry, key):
        buf, state, m = carry  # m: the length so far; the id at m - 1 is fed at its position
        logits, state = model.apply(params, state, jax.lax.dynamic_slice_in_dim(buf, m - 1, 1)[None])
        tok = pick(logits[0, -1], key, temperature)
        return (buf.at[m].set(tok), state, m + 1), None

    (buf, _, _), _ = jax.lax.scan(step, (buf, state, jnp.asarray(prompt_len + 1, jnp.int32)), keys[1:])
    return buf


def _validate(prompt_ids: Any, context: Any, length: Any, temperature: Any, cache: Any, vocab: int) -> np.ndarray:
    """One-line `ValueError`s for `sample`'s arguments; the prompt as int32 ids `(P,)`."""
    positive_int(context, "context", "sample")
    positive_int(length, "length", "sample")
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real) or not math.isfinite(temperature) \
            or temperature < 0:
        raise ValueError(f"sample: temperature must be a finite number >= 0, got {temperature!r}")
    if not isinstance(cache, bool):
        raise ValueError(f"sample: cache must be a bool, got {cache!r}")
    prompt = np.asarray(prompt_ids)
    if prompt.ndim != 1 or prompt.size == 0 or not np.issubdtype(prompt.dtype, np.integer):
        raise ValueError(f"sample: prompt_ids must be a non-empty 1-D sequence of integer ids, got shape "
                         f"{prompt.shape} dtype {prompt.dtype}")
    if prompt.min() < 0 or prompt.max() >= vocab:
        raise ValueError(f"sample: prompt_ids must be in [0, {vocab}), got values in [{prompt.min()}, {prompt.max()}]")
    return prompt.astype(np.int32)


def sample(model: Layer, params: dict, prompt_ids: Any, *, context: int, length: int, temperature: float = 1.0,
           key: jax.Array, cache: bool = True) -> np.ndarray:
    """`length` new ids after `prompt_ids` (module docstring), as a NumPy int32 array `(length,)`.

    **Arguments:**

    - `model`, `params`: a language model over ids `(B, T)` -> logits `(B, T, V)` (a `funcnn.models.gpt`).
    - `prompt_ids`: the prompt, a non-empty 1-D sequence of ids in `[0, V)`.
    - `context`: the longest window the model takes.
    - `length`: how many ids to draw; `temperature` >= 0 (below `GREEDY_BELOW`: greedy).
    - `key`: the PRNG key; `cache`: use the key/value cache.

    **Raises:** `ValueError` (one line, naming the argument) for a non-positive `context` or
    `length`, a negative or non-finite `temperature`, or an empty, non-integer or out-of-range prompt.
    """
    vocab = int(model.output_shape((context,) if isinstance(context, int) and context > 0 else (1,))[-1])
    prompt = _validate(prompt_ids, context, length, temperature, cache, vocab)
    p = len(prompt)
    buf = jnp.zeros(max(p + length, context), jnp.int32).at[:p].set(prompt)
    cached = min(length, context - p + 1) if cache and p <= context else 0  # ids drawn with the cache
    out = _generate(model, params, buf, jax.random.split(key, length), prompt_len=p, cached=cached,
                    context=context, temperature=float(temperature))
    return np.asarray(out)[p:p + length]


@functools.partial(jax.jit, static_argnames=("model", "prompt_len", "cached", "context", "temperature"))
def _generate(model: Layer, params: dict, buf: jax.Array, keys: jax.Array, *, prompt_len: int, cached: int,
              context: int, temperature: float) -> jax.Array:
    """`buf` `(N,)` with the ids after its first `prompt_len` drawn, one per key: the first `cached`
    with the key/value cache, the rest each from its full window. Compiled once per model and sizes."""
    if cached:
        buf = _cached_steps(model, params, buf, prompt_len, keys[:cached], context, temperature)
    if cached < keys.shape[0]:
        buf = _window_steps(model, params, buf, prompt_len + cached, keys[cached:], context, temperature)
    return buf

