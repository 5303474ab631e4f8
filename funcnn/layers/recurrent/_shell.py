r"""What SimpleRNN, LSTM and GRU share: the input protocol, the hoisted products and the
layer shell around a cell's forward and reverse scans (the derivation is in
`funcnn.layers.recurrent`'s docstring).

`recurrent_forward(cell, params, seq, state0, ...) -> (y, cache)` projects the inputs,
runs the cell's forward scan and picks the outputs; `recurrent_backward(cell, params,
cache, dy, ...) -> (dparams, dx)` runs the cell's reverse scan and forms the weight
gradients after it, as single matrix products; `recurrent_layer` validates the arguments
and wires both into a `Layer`.

The scans' `unroll` (steps per loop iteration: fewer loop overheads against a larger
body) is measured, not guessed: the first time a layer is traced at a shape,
`funcnn.core.autotune` times forward + backward with each of `UNROLLS` and keeps the
fastest (op `"recurrent"`; force with `FUNCNN_IMPL=recurrent:unroll1`). Every unroll
computes the same steps in the same order; XLA fuses an unrolled body differently (e.g.
contracting a multiply and an add into one FMA), so float32 results may differ in the last
bits (measured: 1e-7 of values of order 1), never by more than float rounding.

Precision: every param (weights and biases) is drawn in `param_dtype` and the layer
computes in `dtype` (None: the input's), so under x64 the leaves never mix widths and the
scan's carry has one dtype (see `funcnn.core.dtypes`).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from funcnn.core import autotune, initializers
from funcnn.core.dtypes import available, initialise, layer_dtypes, stat_dtype, with_compute_dtype
from funcnn.core.layer import Layer, Params, Shape
from funcnn.core.sharding import batch_dot_general
from funcnn.core.validate import example_shape, positive_int

UNROLLS = (1, 2, 4)  # candidate scan unrolls (those <= T)


class Cell(NamedTuple):
    """One recurrent cell, as the shell needs it.

    - `name`, `title`: the layer's name and the name errors use.
    - `gates`: G / H, the number of gate blocks stacked in `w_ih` and `w_hh`.
    - `n_states`: 1 when the carry is `h`, 2 when it is `(h, c)`.
    - `input_bias`: the params key of the bias added to the input projection.
    - `bias_init(key, G, dtype)`: the bias leaves as a dict.
    - `scan(params, xp, carry0, unroll) -> (hs (T, B, H), cache)`: the forward recursion.
    - `reverse_scan(params, cache, h_prev, dys, dcarry, unroll) -> (dA_x, dA_h, dcarry0)`:
      BPTT; `dys` is `(T, B, H)` or `None` (only the last state is an output, its gradient
      already in `dcarry`).
    - `bias_grads(dA_x, dA_h) -> dict`: the gradients of the bias leaves.
    """

    name: str
    title: str
    gates: int
    n_states: int
    input_bias: str
    bias_init: Callable
    scan: Callable
    reverse_scan: Callable
    bias_grads: Callable


@functools.partial(jax.tree_util.register_dataclass, data_fields=["x_tm", "state0", "h0", "hs", "cell"],
                   meta_fields=["unroll"])
@dataclasses.dataclass(frozen=True)
class RecurrentCache:
    """What `recurrent_backward` needs.

    - `x_tm`: the input, time-major, `(T, B, F)`.
    - `state0`: the initial state as given (`(B, H)`, a pair of them, or `None`: zeros).
    - `h0`: the initial hidden state, `(B, H)`; `hs`: every hidden state, `(T, B, H)`.
    - `cell`: the cell's own cache from its forward scan.
    - `unroll` (static): the scan unroll chosen in the forward.
    """

    x_tm: jax.Array
    state0: Any
    h0: jax.Array
    hs: jax.Array
    cell: Any
    unroll: int


def sequence_shape(input_shape: Any, where: str) -> Shape:
    """`(time, features)` of one example.

    `input_shape` may also be the pair of shapes `((time, features), state_shape)` when an
    initial state is passed. Raises `ValueError` for any other shape.
    """
    shape = example_shape(input_shape, where)
    if shape and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    if len(shape) != 2:
        raise ValueError(f"{where}: input_shape must be (time, features) per example, got {tuple(input_shape)}")
    return shape


def _check_state(s, batch, hidden, where, what):
    if jnp.shape(s) != (batch, hidden):
        raise ValueError(f"{where}: initial {what} must have shape ({batch}, {hidden}), got {jnp.shape(s)}")


def split_input(x: Any, cell: Cell, features: int, hidden: int) -> tuple[jax.Array, Any]:
    """`x` or `(x, state0)` -> `(x, state0 or None)`, with one-line errors.

    **Arguments:**

    - `x`: `(B, T, F)`, or a pair with the initial state: `h0` `(B, H)` for one-state cells,
      `(h0, c0)` for the LSTM.

    **Returns:**

    `(x, state0)`: `x` of shape `(B, T, F)`; `state0` as given (a pair as a tuple) or `None`.
    """
    where = cell.title
    state0 = None
    if isinstance(x, (tuple, list)):
        if len(x) != 2:
            raise ValueError(f"{where}: x must be an array or a pair (x, initial_state), got a sequence of {len(x)}")
        x, state0 = x
    shape = jnp.shape(x)
    if len(shape) != 3 or shape[2] != features:
        raise ValueError(
            f"{where}: x must have shape (batch, time, {features}) (a batch of sequences), got {shape}")
    if shape[1] < 1:
        raise ValueError(f"{where}: x must have at least one time step, got shape {shape}")
    if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
        raise TypeError(f"{where}: x must be a floating-point array, got dtype {jnp.result_type(x)}")
    if state0 is not None:
        if cell.n_states == 1:
            _check_state(state0, shape[0], hidden, where, "state h0")
        else:
            if not isinstance(state0, (tuple, list)) or len(state0) != 2:
                raise ValueError(f"{where}: the initial state must be a pair (h0, c0), got {type(state0).__name__}")
            state0 = tuple(state0)
            for s, what in zip(state0, ("state h0", "cell c0")):
                _check_state(s, shape[0], hidden, where, what)
    return x, state0


def _first(carry, n_states):
    return carry if n_states == 1 else carry[0]


def _like_carry(h, n_states):
    """A carry whose h part is `h` and whose c part (if any) is zero."""
    return h if n_states == 1 else (h, jnp.zeros_like(h))


def time_sum_product(da: jax.Array, v: jax.Array) -> jax.Array:
    r"""$\sum_t dA_t^\top v_t$ for `da` `(T, B, G)` and `v` `(T, B, K)`: a `(G, K)` array.

    Written as one `dot_general` contracting time and batch together (a `(G, T B) @ (T B, K)`
    product): on CPU XLA then transposes `da` once (shared by dW_ih and dW_hh) and runs a fast
    GEMM, about twice as fast as `da.reshape(-1, G).T @ v.reshape(-1, K)`.
    """
    return batch_dot_general(da, v, (((0, 1), (0, 1)), ((), ())))


def stacked_orthogonal(key: jax.Array, gates: int, hidden: int, dtype: Any = jnp.float32) -> jax.Array:
    """`gates` independent orthogonal `(H, H)` blocks stacked into `(gates H, H)`.

    The QR runs in float32 at least, then the result is cast to `dtype`.
    """
    ortho = jax.nn.initializers.orthogonal()
    blocks = [ortho(k, (hidden, hidden), stat_dtype(dtype)) for k in jax.random.split(key, gates)]
    return jnp.concatenate(blocks).astype(dtype)


def recurrent_forward(cell: Cell, params: Params, seq: jax.Array, state0: Any, *, hidden: int,
                      return_sequences: bool, unroll: int) -> tuple[jax.Array, RecurrentCache]:
    r"""Project the inputs once ($XP = X W_{ih}^\top + b$), scan the cell, pick the outputs.

    **Arguments:**

    - `cell`: the cell; `params`: `{"w_ih": (G, F), "w_hh": (G, H), ...biases}`.
    - `seq`: the input, `(B, T, F)`; `state0`: the initial state or `None` (zeros).
    - `hidden`: H; `return_sequences`: output every h or only the last; `unroll`: the scans'.

    **Returns:**

    `(y, cache)`: `y` of shape `(B, T, H)` (every h) or `(B, H)` (the last);
    `cache` a `RecurrentCache`.
    """
    x_tm = jnp.swapaxes(seq, 0, 1)
    xp = x_tm @ params["w_ih"].T + params[cell.input_bias]
    if state0 is None:
        h0 = jnp.zeros_like(xp[0, :, :hidden])  # (B, H), sharded like the batch under a mesh
        carry0 = _like_carry(h0, cell.n_states)
    else:
        carry0 = state0
    hs, cell_cache = cell.scan(params, xp, carry0, unroll)
    y = jnp.swapaxes(hs, 0, 1) if return_sequences else hs[-1]
    return y, RecurrentCache(x_tm, state0, _first(carry0, cell.n_states), hs, cell_cache, unroll)


def recurrent_backward(cell: Cell, params: Params, cache: RecurrentCache, dy: jax.Array, *,
                       return_sequences: bool) -> tuple[Params, Any]:
    r"""BPTT: the cell's reverse scan, then $dW_{ih} = dA_x^\top X$, $dW_{hh} = dA_h^\top H_{prev}$,
    $dX = dA_x W_{ih}$ as single products.

    **Arguments:**

    - `cell`, `params`: as `recurrent_forward`; `cache`: its `RecurrentCache`.
    - `dy`: the output's gradient, `(B, T, H)` or `(B, H)` as the output.

    **Returns:**

    `(dparams, dx)`: `dparams` shaped as `params`; `dx` of shape `(B, T, F)`, or
    `(dx, dstate0)` when an initial state was given.
    """
    h0, hs = cache.h0, cache.hs
    h_prev = jnp.concatenate([h0[None], hs[:-1]])
    if return_sequences:
        dys, dh = jnp.swapaxes(dy, 0, 1), jnp.zeros_like(h0)
    else:
        dys, dh = None, dy
    da_x, da_h, dcarry0 = cell.reverse_scan(params, cache.cell, h_prev, dys, _like_carry(dh, cell.n_states),
                                            cache.unroll)
    dparams = {
        "w_ih": time_sum_product(da_x, cache.x_tm),
        "w_hh": time_sum_product(da_h, h_prev),
        **cell.bias_grads(da_x, da_h),
    }
    dx = jnp.swapaxes(da_x @ params["w_ih"], 0, 1)
    return dparams, (dx if cache.state0 is None else (dx, dcarry0))


def choose_unroll(cell: Cell, params: Params, batch: int, time: int, features: int, dtype: Any, *,
                  hidden: int, return_sequences: bool) -> int:
    """The measured scan unroll for this shape (module docstring): one of `UNROLLS` up to `time`."""
    names = [f"unroll{u}" for u in UNROLLS if u <= time]
    shapes = {k: (jnp.shape(v), jnp.result_type(v)) for k, v in params.items()}
    options = dict(hidden=hidden, return_sequences=return_sequences)

    def candidate(u):
        def run(params, seq, dy):
            y, cache = recurrent_forward(cell, params, seq, None, unroll=u, **options)
            return y, recurrent_backward(cell, params, cache, dy, return_sequences=return_sequences)
        return run

    def args():
        dummy = {k: autotune.dummy(s, d, i) for i, (k, (s, d)) in enumerate(sorted(shapes.items()))}
        out = (batch, time, hidden) if return_sequences else (batch, hidden)
        return dummy, autotune.dummy((batch, time, features), dtype, 7), autotune.dummy(out, dtype, 8)

    work = 3 * 2 * batch * time * (features + hidden) * cell.gates * hidden  # forward and both backward products
    key = (jax.default_backend(), cell.name, (batch, time, features), hidden, str(jnp.dtype(dtype)),
           return_sequences)
    name = autotune.choose("recurrent", key, {n: candidate(int(n[6:])) for n in names}, args,
                           fallback="unroll1", work=work)
    return int(name[len("unroll"):])


def recurrent_initializer(recurrent_init: Any, cell: Cell, hidden: int) -> Callable:
    """The initialiser of `w_hh` `(G, H)`: a funcnn initialiser (name or callable), or
    `"orthogonal"`: one orthogonal `(H, H)` block per gate (`stacked_orthogonal`)."""
    if recurrent_init == "orthogonal":
        def orthogonal(key, shape, fan_in, fan_out, dtype=jnp.float32):
            return stacked_orthogonal(key, cell.gates, hidden, dtype)
        return orthogonal
    if isinstance(recurrent_init, str) and recurrent_init not in initializers.INITIALIZERS:
        raise ValueError(f"{cell.title}: recurrent_init must be a callable, 'orthogonal' or one of "
                         f"{sorted(initializers.INITIALIZERS)}, got {recurrent_init!r}")
    return initializers.get(recurrent_init, "recurrent_init")


def recurrent_layer(cell: Cell, hidden: int, return_sequences: bool, w_init: Any, recurrent_init: Any,
                    param_dtype: Any = "float32", dtype: Any = None) -> Layer:
    """Wrap a cell into a layer over `(B, T, F)` inputs (see `funcnn.layers.recurrent`).

    `w_init` and `recurrent_init` are funcnn initialisers (names or callables);
    `recurrent_init="orthogonal"` draws one orthogonal `(H, H)` block per gate.
    `param_dtype`/`dtype`: the params' and the computation's dtypes (module docstring).

    **Returns:**

    The `Layer`: `(B, T, F) -> (B, T, H)`, or `(B, H)` with `return_sequences=False`.
    """
    positive_int(hidden, "hidden", cell.title)
    if not isinstance(return_sequences, bool):
        raise TypeError(f"{cell.title}: return_sequences must be a bool, got {return_sequences!r}")
    w_init = initializers.get(w_init, "w_init")
    param_dtype, dtype = layer_dtypes(param_dtype, dtype, cell.title)
    recurrent_init = recurrent_initializer(recurrent_init, cell, hidden)
    g = cell.gates * hidden
    options = dict(hidden=hidden, return_sequences=return_sequences)

    def init(key, input_shape):
        _, features = sequence_shape(input_shape, cell.title)
        k_ih, k_hh, k_b = jax.random.split(key, 3)
        w_ih = initialise(w_init, k_ih, (g, features), features, g, available(param_dtype, cell.title))
        w_hh = initialise(recurrent_init, k_hh, (g, hidden), hidden, g, param_dtype)
        return {"w_ih": w_ih, "w_hh": w_hh, **cell.bias_init(k_b, g, param_dtype)}, {}

    def output_shape(input_shape):
        time, _ = sequence_shape(input_shape, cell.title)
        return (time, hidden) if return_sequences else (hidden,)

    def forward(params, state, x, *, key=None, train=False):
        seq, state0 = split_input(x, cell, params["w_ih"].shape[1], hidden)
        unroll = choose_unroll(cell, params, *seq.shape, jnp.result_type(seq), **options)
        y, cache = recurrent_forward(cell, params, seq, state0, unroll=unroll, **options)
        return y, state, cache

    def backward(params, cache, dy):
        return recurrent_backward(cell, params, cache, dy, return_sequences=return_sequences)

    return with_compute_dtype(Layer(cell.name, init, forward, backward, output_shape), dtype)
