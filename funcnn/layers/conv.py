"""Convolution (cross-correlation, as in every deep-learning library) over 1 or 2 spatial axes.

With a kernel W of shape (*K, C, O) (HWIO for 2-D), input X of shape (N, *S, C), stride s,
dilation d and the input zero-padded, output position o of example n is

    Y[n, o, :] = sum_t sum_c X_pad[n, o s + t d, c] W[t, c, :] + b          (t over the taps)

Backward, given dY = dL/dY of shape (N, *M, O):

    dW[t, c, :] = sum_n sum_o X_pad[n, o s + t d, c] dY[n, o, :]   (correlate the input with dY)
    db          = sum_n sum_o dY[n, o, :]
    dX_pad[n, i, c] = sum_{(o, t): o s + t d = i} sum_k dY[n, o, k] W[t, c, k]

and dX is dX_pad with the padding cropped: the transposed convolution, i.e. dY dilated by
the stride, correlated with the spatially flipped kernel, in and out channels swapped.

Two formulations of the same formulas, each over the whole batch or over chunks of
examples (the forward and dX chunk by chunk, dW summed over the chunks: the formulas are
sums over n):

* ``"gemm"``: im2col. P = the stacked tap slices of X_pad, shape (N, *M, T C). Then
  Y = P W2 + b with W2 = W reshaped (T C, O); dW2 = P^T dY; dP = dY W2^T, and
  dX = col2im(dP) adds every tap's slice back where it came from.
* ``"xla"``: three ``lax.conv_general_dilated`` calls used as forward primitives: the
  forward, the input gradient (lhs_dilation = stride, flipped kernel, I and O exchanged)
  and the kernel gradient (batch and channel axes exchanged, rhs_dilation = stride).

Which is fastest depends on the machine, not only on the shapes: on one 2-core EPYC,
im2col won for 1 input channel and XLA from ~8 up, and chunks of 8 examples made XLA:CPU's
single-threaded convolutions ~25% faster (cache); on another machine of the same kind the
same constants made the manual step slower than autodiff. So ``impl=None`` *measures*:
the first time a layer is traced at a shape, ``funcnn.core.autotune.choose`` compiles
forward + backward of every candidate ("gemm/all", "xla/all" and, on CPU, chunks of 8:
"gemm/8", "xla/8") on dummy inputs of that shape, times them and keeps the fastest for the
process (cached on disk with ``FUNCNN_AUTOTUNE_CACHE``). ``impl="gemm"``/``"xla"`` or
``FUNCNN_IMPL=conv:xla`` restricts the candidates. Without measuring (a layer under
~2e7 FLOPs, or ``FUNCNN_AUTOTUNE=0``) the rule of that first machine applies
(``default_impl``, ``batch_chunks``). All candidates compute the same sums, in different
orders: the results agree to float rounding.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

from funcnn.core import autotune, initializers
from funcnn.core.sharding import batch_conv_general_dilated, batch_dot_general
from funcnn.core.dtypes import available, initialise, layer_dtypes, with_compute_dtype
from funcnn.core.validate import input_rank, positive_int
from funcnn.core.layer import Layer
from funcnn.layers._conv_windows import (SPATIAL_NAMES, as_tuple, check_padding, geometry, pad_to_used,
                                         scatter_windows, window_slices)

IMPLS = ("gemm", "xla")
_SPATIAL_CHARS = {1: "W", 2: "HW", 3: "DHW"}


# The unmeasured fallback (autotuning off, or a layer too small to be worth timing)
GEMM_MAX_CHANNELS = 4  # on CPU, im2col + GEMM up to this many input channels
CPU_BATCH_CHUNK = 8  # on CPU, convolutions run over chunks of this many examples
MAX_CHUNKS = 16  # larger batches (evaluation) use larger chunks, to bound the program size
CPU_CHUNK_CANDIDATES = (8,)  # chunk sizes measured on CPU besides the whole batch


def default_impl(in_channels: int) -> str:
    """The fallback formulation for this backend and number of input channels."""
    return "gemm" if jax.default_backend() == "cpu" and in_channels <= GEMM_MAX_CHANNELS else "xla"


def _check_x(x, ndim, channels, where):
    shape = jnp.shape(x)
    if len(shape) != ndim + 2 or shape[-1] != channels:
        raise ValueError(f"{where}: x must have shape {SPATIAL_NAMES[ndim]} with {channels} channels, got {shape}")
    if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
        raise TypeError(f"{where}: x must be a floating-point array, got dtype {jnp.result_type(x)}")


def _gemm_forward(x, w, g):
    patches = jnp.concatenate(window_slices(pad_to_used(x, g), g), axis=-1)  # (N, *M, T C)
    return patches, patches @ w.reshape(-1, w.shape[-1])


def _gemm_backward(x, w, g, dy):
    patches, _ = _gemm_forward(x, w, g)  # same ops as the forward: XLA shares them under jit
    axes = tuple(range(dy.ndim - 1))
    dw = batch_dot_general(patches, dy, ((axes, axes), ((), ())))  # P^T dY: (T C, O)
    dpatches = dy @ w.reshape(-1, w.shape[-1]).T  # (N, *M, T C)
    c = x.shape[-1]
    parts = [dpatches[..., i * c:(i + 1) * c] for i in range(len(g.taps))]
    return dw.reshape(w.shape), scatter_windows(parts, g)


def batch_chunks(n: int, size: int | None = None) -> list:
    """Static (start, stop) pairs covering a batch of n in chunks of ``size`` examples (at most
    ``MAX_CHUNKS`` chunks); ``size=None``: the fallback, one chunk off CPU, else ``CPU_BATCH_CHUNK``."""
    if size is None:
        if jax.default_backend() != "cpu":
            return [(0, n)]
        size = CPU_BATCH_CHUNK
    size = max(size, -(-n // MAX_CHUNKS))
    return [(a, min(a + size, n)) for a in range(0, n, size)]


def _xla_forward(x, w, g):
    sp = _SPATIAL_CHARS[len(g.kernel)]
    return lax.conv_general_dilated(x, w, g.stride, g.pads, rhs_dilation=g.dilation,
                                    dimension_numbers=(f"N{sp}C", f"{sp}IO", f"N{sp}C"))


def _xla_backward(x, w, g, dy):
    sp = _SPATIAL_CHARS[len(g.kernel)]
    spatial = tuple(range(len(g.kernel)))
    # kernel gradient: batch axis N becomes the contracted feature axis, C the "batch"
    dw = batch_conv_general_dilated(pad_to_used(x, g), dy, g.dilation, "VALID", rhs_dilation=g.stride,
                                  dimension_numbers=(f"C{sp}N", f"I{sp}O", f"{sp}NC"))
    # input gradient: dy dilated by the stride, correlated with the flipped kernel (O -> C)
    pads = [(e - 1 - lo, n + lo - (m - 1) * s - 1)
            for e, (lo, _), n, m, s in zip(g.extent, g.pads, g.in_spatial, g.out_spatial, g.stride)]
    dx = lax.conv_general_dilated(dy, lax.rev(w, spatial), (1,) * len(spatial), pads, lhs_dilation=g.stride,
                                  rhs_dilation=g.dilation, dimension_numbers=(f"N{sp}C", f"{sp}OI", f"N{sp}C"))
    return dw, dx


def _chunked_forward(forward, size):
    def run(x, w, g):
        parts = [forward(x[a:b], w, g) for a, b in batch_chunks(x.shape[0], size)]
        return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=0)
    return run


def _chunked_backward(backward, size):
    def run(x, w, g, dy):
        parts = [backward(x[a:b], w, g, dy[a:b]) for a, b in batch_chunks(x.shape[0], size)]
        if len(parts) == 1:
            return parts[0]
        dws, dxs = zip(*parts)
        return sum(dws[1:], dws[0]), jnp.concatenate(dxs, axis=0)
    return run


_KERNELS = {"gemm": (lambda x, w, g: _gemm_forward(x, w, g)[1], _gemm_backward), "xla": (_xla_forward, _xla_backward)}


def formulation(name: str):
    """``(forward(x, w, g), backward(x, w, g, dy))`` of a candidate name "impl/chunk" (chunk:
    examples per chunk, or "all" for the whole batch)."""
    impl, _, chunk = name.partition("/")
    size = None if chunk == "" else (1 << 62 if chunk == "all" else int(chunk))
    forward, backward = _KERNELS[impl]
    return _chunked_forward(forward, size), _chunked_backward(backward, size)


def _valid_impl(impl) -> bool:
    name, _, chunk = impl.partition("/") if isinstance(impl, str) else ("", "", "")
    return name in IMPLS and (chunk in ("", "all") or (chunk.isdigit() and int(chunk) > 0))


def candidates(n: int) -> list:
    """Candidate names for a batch of n: each formulation over the whole batch and, on CPU,
    over each chunk size in ``CPU_CHUNK_CANDIDATES`` that splits the batch differently."""
    sizes = {"all": 1}
    if jax.default_backend() == "cpu":
        for size in CPU_CHUNK_CANDIDATES:
            chunks = batch_chunks(n, size)
            if len(chunks) > 1 and len(chunks) not in sizes.values():
                sizes[str(size)] = len(chunks)
    return [f"{impl}/{size}" for impl in IMPLS for size in sizes]


def choose(x_shape, w_shape, dtype, g, impl=None) -> str:
    """The candidate name used at these shapes (measured once per process, see the module doc)."""
    n, out = x_shape[0], math.prod(g.out_spatial)
    fallback_size = batch_chunks(n)[0][1]
    fallback = f"{default_impl(w_shape[-2])}/{'all' if fallback_size >= n else fallback_size}"
    names = candidates(n)
    for extra in (fallback, impl):
        if extra and "/" in extra and extra not in names:
            names.append(extra)
    fns = {name: (lambda x, w, dy, f=formulation(name): (f[0](x, w, g), f[1](x, w, g, dy))) for name in names}

    def args():
        return (autotune.dummy(x_shape, dtype, 1), autotune.dummy(w_shape, dtype, 2),
                autotune.dummy((n, *g.out_spatial, w_shape[-1]), dtype, 3))

    work = 3 * 2 * n * out * math.prod(w_shape)  # forward, dW and dX: 2 N M T C O FLOPs each
    key = (jax.default_backend(), tuple(x_shape), tuple(w_shape), str(jnp.dtype(dtype)), g)
    return autotune.choose("conv", key, fns, args, fallback=fallback, impl=impl, work=work)


def _conv(ndim, features, kernel_size, stride, padding, dilation, use_bias, w_init, b_init, impl,
          param_dtype="float32", dtype=None) -> Layer:
    """The N-d convolution layer behind ``Conv1D`` and ``Conv2D``."""
    where = f"Conv{ndim}D"
    positive_int(features, "features", where)
    kernel = as_tuple(kernel_size, ndim, "kernel_size", where)
    stride = as_tuple(stride, ndim, "stride", where)
    dilation = as_tuple(dilation, ndim, "dilation", where)
    padding = check_padding(padding, ndim, where)
    if impl is not None and not _valid_impl(impl):
        raise ValueError(f"{where}: impl must be None (measured), one of {IMPLS}, or 'impl/chunk' with chunk "
                         f"'all' or a positive int (e.g. 'xla/8'), got {impl!r}")
    w_init = initializers.get(w_init, "w_init")
    b_init = initializers.get(b_init, "b_init")
    param_dtype, dtype = layer_dtypes(param_dtype, dtype, where)
    what = SPATIAL_NAMES[ndim][len("(batch, "):-1]

    def geom(spatial):
        return geometry(spatial, kernel, stride, dilation, padding, where)

    def init(key, input_shape):
        shape = input_rank(input_shape, ndim + 1, where, what)
        geom(shape[:-1])
        fan_in, fan_out = math.prod(kernel) * shape[-1], math.prod(kernel) * features
        kw, kb = jax.random.split(key)
        params = {"w": initialise(w_init, kw, (*kernel, shape[-1], features), fan_in, fan_out,
                                  available(param_dtype, where))}
        if use_bias:
            params["b"] = initialise(b_init, kb, (features,), fan_in, fan_out, param_dtype)
        return params, {}

    def output_shape(input_shape):
        shape = input_rank(input_shape, ndim + 1, where, what)
        return (*geom(shape[:-1]).out_spatial, features)

    def forward(params, state, x, *, key=None, train=False):
        w = params["w"]
        _check_x(x, ndim, w.shape[-2], where)
        g = geom(x.shape[1:-1])
        y = formulation(choose(x.shape, w.shape, x.dtype, g, impl))[0](x, w, g)
        if use_bias:
            y = y + params["b"]
        return y, state, x

    def backward(params, x, dy):
        w = params["w"]
        g = geom(x.shape[1:-1])
        dw, dx = formulation(choose(x.shape, w.shape, x.dtype, g, impl))[1](x, w, g, dy)
        grads = {"w": dw}
        if use_bias:
            grads["b"] = dy.sum(axis=tuple(range(dy.ndim - 1)))
        return grads, dx

    return with_compute_dtype(Layer(f"conv{ndim}d", init, forward, backward, output_shape), dtype)


def Conv2D(features: int, kernel_size, *, stride=1, padding="SAME", dilation=1, use_bias: bool = True,
           w_init="glorot_uniform", b_init="zeros", impl: str | None = None, param_dtype="float32",
           dtype=None) -> Layer:
    """2-D convolution over NHWC images: params ``{"w": (kh, kw, in, features), "b": (features,)}``.

    ``kernel_size``, ``stride`` and ``dilation`` are an int or an (h, w) pair; ``padding`` is
    "SAME" (output ceil(n / stride), as ``lax``), "VALID", an int, or ((top, bottom), (left,
    right)). ``impl`` forces the "gemm" or "xla" formulation, or one chunking of it ("xla/8":
    chunks of 8 examples, "gemm/all": the whole batch); default: measured per shape and
    backend (``funcnn.core.autotune``, see the module docstring). ``param_dtype``: the params' dtype; ``dtype``:
    the computation's (None: the input's), see ``funcnn.core.dtypes``.
    Raises ``ValueError`` for a non-4-D input, a channel count other than the kernel's, or a
    window larger than the padded input.
    """
    return _conv(2, features, kernel_size, stride, padding, dilation, use_bias, w_init, b_init, impl,
                 param_dtype, dtype)


def Conv1D(features: int, kernel_size, *, stride=1, padding="SAME", dilation=1, use_bias: bool = True,
           w_init="glorot_uniform", b_init="zeros", impl: str | None = None, param_dtype="float32",
           dtype=None) -> Layer:
    """1-D convolution over (batch, length, channels): params ``{"w": (k, in, features), "b": (features,)}``.

    Same arguments and errors as ``Conv2D`` with one spatial axis (``padding`` pairs: ((lo, hi),)).
    """
    return _conv(1, features, kernel_size, stride, padding, dilation, use_bias, w_init, b_init, impl,
                 param_dtype, dtype)
