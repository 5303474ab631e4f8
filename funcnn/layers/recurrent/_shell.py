"""What SimpleRNN, LSTM and GRU share: the input protocol, the hoisted products and
the layer shell around a cell's forward and reverse scans.

Every cell computes, at each step t, pre-activations that are a sum of an input
projection and a recurrent projection,

    a_t = (x_t W_ih^T + b_ih)  (+)  (h_{t-1} W_hh^T + b_hh),

combined gate by gate (a plain sum for SimpleRNN and LSTM; GRU multiplies the
n-gate's recurrent part by r). The input projection does not depend on the
recurrence, so it is one matrix product over all T steps *before* the scan:

    XP = X W_ih^T + b_ih                  (T, B, G) from (T, B, F)

Backward, a cell's reverse scan returns, for every step, the gradients of the loss
w.r.t. both projections, dA_x = dL/dXP and dA_h = dL/d(h_{t-1} W_hh^T + b_hh), each
(T, B, G). The weight gradients are then sums over time of outer products, which
are again single matrix products contracting time and batch together, *after* the
scan (autodiff would accumulate T small products inside it):

    dW_ih = sum_t dA_x,t^T x_t     = dA_x^T X          (G, F)
    dW_hh = sum_t dA_h,t^T h_{t-1} = dA_h^T H_prev     (G, H)
    dX    = dA_x W_ih                                  (T, B, F)

The scans' ``unroll`` (steps per loop iteration: fewer loop overheads against a larger
body) is measured, not guessed: the first time a layer is traced at a shape,
``funcnn.core.autotune`` times forward + backward with each of ``UNROLLS`` and keeps the
fastest (op ``"recurrent"``; force with ``FUNCNN_IMPL=recurrent:unroll1``). Every unroll
computes the same steps in the same order; XLA fuses an unrolled body differently (e.g.
contracting a multiply and an add into one FMA), so float32 results may differ in the last
bits (measured: 1e-7 of values of order 1), never by more than float rounding.

Initial state: ``x`` is either the sequence batch alone (the state starts at zero)
or a pair ``(x, state0)`` with ``state0 = h0`` (SimpleRNN, GRU) or ``(h0, c0)``
(LSTM), each (batch, hidden). The backward's input gradient has the same
structure: ``dx`` or ``(dx, dstate0)``.

Precision: every param (weights and biases) is drawn in ``param_dtype`` and the layer
computes in ``dtype`` (None: the input's), so under x64 the leaves never mix widths and
the scan's carry has one dtype (see ``funcnn.core.dtypes``).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from funcnn.core import autotune, initializers
from funcnn.core.sharding import batch_dot_general
from funcnn.core.validate import example_shape, positive_int
from funcnn.core.dtypes import available, initialise, layer_dtypes, stat_dtype, with_compute_dtype
from funcnn.core.layer import Layer


class Cell(NamedTuple):
    """One recurrent cell, as the shell needs it.

    * ``gates``: G / H, the number of gate blocks stacked in ``w_ih`` and ``w_hh``.
    * ``n_states``: 1 when the carry is ``h``, 2 when it is ``(h, c)``.
    * ``input_bias``: the params key of the bias added to the input projection.
    * ``bias_init(key, G, dtype)``: the bias leaves as a dict.
    * ``scan(params, xp, carry0, unroll) -> (hs (T, B, H), cache)``: the forward recursion.
    * ``reverse_scan(params, cache, h_prev, dys, dcarry, unroll) -> (dA_x, dA_h, dcarry0)``:
      BPTT; ``dys`` is (T, B, H) or ``None`` (only the last state is an output, its
      gradient already in ``dcarry``).
    * ``bias_grads(dA_x, dA_h) -> dict``: the gradients of the bias leaves.
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


def sequence_shape(input_shape, where: str):
    """(time, features) of one example; ``input_shape`` may also be the pair of shapes
    ``((time, features), state_shape)`` when an initial state is passed."""
    shape = example_shape(input_shape, where)
    if shape and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    if len(shape) != 2:
        raise ValueError(f"{where}: input_shape must be (time, features) per example, got {tuple(input_shape)}")
    return shape


def _check_state(s, batch, hidden, where, what):
    if jnp.shape(s) != (batch, hidden):
        raise ValueError(f"{where}: initial {what} must have shape ({batch}, {hidden}), got {jnp.shape(s)}")


def split_input(x, cell: Cell, features: int, hidden: int):
    """``x`` or ``(x, state0)`` -> (x, state0 or None), with one-line errors."""
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
    """A carry whose h part is ``h`` and whose c part (if any) is zero."""
    return h if n_states == 1 else (h, jnp.zeros_like(h))


def time_sum_product(da, v):
    """sum_t da_t^T v_t for da (T, B, G), v (T, B, K): one (G, T*B) @ (T*B, K) product.

    Written as one ``dot_general`` contracting time and batch together: on CPU XLA
    then transposes ``da`` once (shared by dW_ih and dW_hh) and runs a fast GEMM,
    about twice as fast as ``da.reshape(-1, G).T @ v.reshape(-1, K)``."""
    return batch_dot_general(da, v, (((0, 1), (0, 1)), ((), ())))


UNROLLS = (1, 2, 4)  # candidate scan unrolls (those <= T)


def stacked_orthogonal(key, gates: int, hidden: int, dtype=jnp.float32):
    """``gates`` independent orthogonal (H, H) blocks stacked into (gates*H, H) (the QR in
    float32 at least, then cast to ``dtype``)."""
    ortho = jax.nn.initializers.orthogonal()
    blocks = [ortho(k, (hidden, hidden), stat_dtype(dtype)) for k in jax.random.split(key, gates)]
    return jnp.concatenate(blocks).astype(dtype)


def recurrent_layer(cell: Cell, hidden: int, return_sequences: bool, w_init, recurrent_init,
                    param_dtype="float32", dtype=None) -> Layer:
    """Wrap a cell into a layer over (batch, time, features) inputs (see the module doc).

    ``w_init`` and ``recurrent_init`` are funcnn initialisers (names or callables);
    ``recurrent_init="orthogonal"`` draws one orthogonal (H, H) block per gate.
    ``param_dtype``/``dtype``: the params' and the computation's dtypes (module docstring)."""
    positive_int(hidden, "hidden", cell.title)
    if not isinstance(return_sequences, bool):
        raise TypeError(f"{cell.title}: return_sequences must be a bool, got {return_sequences!r}")
    w_init = initializers.get(w_init, "w_init")
    param_dtype, dtype = layer_dtypes(param_dtype, dtype, cell.title)
    if recurrent_init == "orthogonal":
        def recurrent_init(key, shape, fan_in, fan_out, dtype=jnp.float32):
            return stacked_orthogonal(key, cell.gates, hidden, dtype)
    elif isinstance(recurrent_init, str) and recurrent_init not in initializers.INITIALIZERS:
        raise ValueError(f"{cell.title}: recurrent_init must be a callable, 'orthogonal' or one of "
                         f"{sorted(initializers.INITIALIZERS)}, got {recurrent_init!r}")
    recurrent_init = initializers.get(recurrent_init, "recurrent_init")
    g = cell.gates * hidden

    def init(key, input_shape):
        _, features = sequence_shape(input_shape, cell.title)
        k_ih, k_hh, k_b = jax.random.split(key, 3)
        w_ih = initialise(w_init, k_ih, (g, features), features, g, available(param_dtype, cell.title))
        w_hh = initialise(recurrent_init, k_hh, (g, hidden), hidden, g, param_dtype)
        return {"w_ih": w_ih, "w_hh": w_hh, **cell.bias_init(k_b, g, param_dtype)}, {}

    def output_shape(input_shape):
        time, _ = sequence_shape(input_shape, cell.title)
        return (time, hidden) if return_sequences else (hidden,)

    def run_forward(params, seq, state0, unroll):
        x_tm = jnp.swapaxes(seq, 0, 1)
        xp = x_tm @ params["w_ih"].T + params[cell.input_bias]
        if state0 is None:
            h0 = jnp.zeros_like(xp[0, :, :hidden])  # (B, H), sharded like the batch under a mesh
            carry0 = _like_carry(h0, cell.n_states)
        else:
            carry0 = state0
        hs, cell_cache = cell.scan(params, xp, carry0, unroll)
        y = jnp.swapaxes(hs, 0, 1) if return_sequences else hs[-1]
        return y, (x_tm, state0, _first(carry0, cell.n_states), hs, cell_cache)

    def run_backward(params, cache, dy, unroll):
        x_tm, state0, h0, hs, cell_cache = cache
        h_prev = jnp.concatenate([h0[None], hs[:-1]])
        if return_sequences:
            dys, dh = jnp.swapaxes(dy, 0, 1), jnp.zeros_like(h0)
        else:
            dys, dh = None, dy
        da_x, da_h, dcarry0 = cell.reverse_scan(params, cell_cache, h_prev, dys, _like_carry(dh, cell.n_states),
                                                unroll)
        dparams = {
            "w_ih": time_sum_product(da_x, x_tm),
            "w_hh": time_sum_product(da_h, h_prev),
            **cell.bias_grads(da_x, da_h),
        }
        dx = jnp.swapaxes(da_x @ params["w_ih"], 0, 1)
        return dparams, (dx if state0 is None else (dx, dcarry0))

    def choose_unroll(params, batch, time, features, dtype):
        """The measured unroll for this shape (module docstring)."""
        names = [f"unroll{u}" for u in UNROLLS if u <= time]
        shapes = {k: (jnp.shape(v), jnp.result_type(v)) for k, v in params.items()}

        def candidate(u):
            def run(params, seq, dy):
                y, cache = run_forward(params, seq, None, u)
                return y, run_backward(params, cache, dy, u)
            return run

        def args():
            dummy = {k: autotune.dummy(s, d, i) for i, (k, (s, d)) in enumerate(sorted(shapes.items()))}
            out = (batch, time, hidden) if return_sequences else (batch, hidden)
            return dummy, autotune.dummy((batch, time, features), dtype, 7), autotune.dummy(out, dtype, 8)

        work = 3 * 2 * batch * time * (features + hidden) * g  # forward and both backward products
        key = (jax.default_backend(), cell.name, (batch, time, features), hidden, str(jnp.dtype(dtype)),
               return_sequences)
        name = autotune.choose("recurrent", key, {n: candidate(int(n[6:])) for n in names}, args,
                               fallback="unroll1", work=work)
        return int(name[len("unroll"):])

    def forward(params, state, x, *, key=None, train=False):
        seq, state0 = split_input(x, cell, params["w_ih"].shape[1], hidden)
        y, cache = run_forward(params, seq, state0, choose_unroll(params, *seq.shape, jnp.result_type(seq)))
        return y, state, cache

    def backward(params, cache, dy):
        time, batch, features = cache[0].shape
        return run_backward(params, cache, dy, choose_unroll(params, batch, time, features, cache[0].dtype))

    return with_compute_dtype(Layer(cell.name, init, forward, backward, output_shape), dtype)
