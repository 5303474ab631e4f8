r"""Convolution (cross-correlation, as in every deep-learning library) over 1 or 2 spatial axes.

**Forward.** A kernel $W$ of shape `(*K, C, O)` (HWIO for 2-D: `(kh, kw, C, O)`), a bias
$b$ of shape `(O,)` and an input $X$ of shape `(N, *S, C)` (NHWC for 2-D). With stride $s$,
dilation $d$ and $X_p$ the input zero-padded (`_conv_windows`), output position $o$ of
example $n$ reads the taps $t$ of the window at $o s + t d$:

$$
Y_{n,o,k} = \sum_{t} \sum_{c} X_{p;\,n,\,o s + t d,\,c}\; W_{t,c,k} + b_k
\qquad Y: (N, *M, O),
$$

with $M$ the output spatial sizes (`Geometry.out_spatial`) and $T = \prod K$ taps.
`conv_forward(x, w, b, g, formulation) -> (y, cache)`; the cache (`ConvCache`) holds
$X$ `(N, *S, C)`, $W$ `(*K, C, O)`, and, static, the geometry, the formulation and
whether there is a bias.

**Backward.** Given $\delta = \partial L / \partial Y$ of shape `(N, *M, O)`. $Y_{n,o,k}$
is linear in each of $W$, $b$ and $X_p$, with local derivatives

$$
\frac{\partial Y_{n,o,k}}{\partial W_{t,c,k}} = X_{p;\,n,\,o s + t d,\,c}, \qquad
\frac{\partial Y_{n,o,k}}{\partial b_k} = 1, \qquad
\frac{\partial Y_{n,o,k}}{\partial X_{p;\,n,\,o s + t d,\,c}} = W_{t,c,k}.
$$

The chain rule sums each over every output that used the variable:

$$
\frac{\partial L}{\partial W_{t,c,k}} = \sum_n \sum_o X_{p;\,n,\,o s + t d,\,c}\; \delta_{n,o,k}
\quad (*K, C, O),
\qquad
\frac{\partial L}{\partial b_k} = \sum_n \sum_o \delta_{n,o,k} \quad (O,),
$$

$$
\frac{\partial L}{\partial X_{p;\,n,i,c}} = \sum_{(o, t):\; o s + t d = i} \sum_k \delta_{n,o,k}\, W_{t,c,k}
\quad (N, *S_p, C),
$$

and $\partial L / \partial X$ `(N, *S, C)` is that with the padding cropped: the transposed
convolution, i.e. $\delta$ dilated by the stride, correlated with the spatially flipped
kernel, in and out channels swapped. The kernel gradient correlates the input with
$\delta$. `conv_backward(dy, cache) -> (dx, dw, db)`.

**Two formulations** of the same sums (`formulation(name)`), each over the whole batch or
over chunks of examples (the forward and $dX$ chunk by chunk, $dW$ summed over the chunks:
the formulas are sums over $n$):

`"gemm"` (im2col): $P$ = the stacked tap slices of $X_p$, shape `(N, *M, T C)`, and
$W_2$ = $W$ reshaped to `(T C, O)`. Then

$$
Y = P W_2 + b, \qquad
\frac{\partial L}{\partial W_2} = P^\top \delta \;\; (T C, O), \qquad
\frac{\partial L}{\partial P} = \delta\, W_2^\top \;\; (N, M, T C),
$$

where $P^\top \delta$ contracts $N$ and $M$, and col2im (`scatter_windows`) adds every tap's
`(N, *M, C)` slice of $\partial L / \partial P$ back where it came from, giving
$\partial L / \partial X$.

`"xla"`: three `lax.conv_general_dilated` calls used as forward primitives: the forward,
the input gradient (`lhs_dilation` = stride, flipped kernel, I and O exchanged) and the
kernel gradient (batch and channel axes exchanged, `rhs_dilation` = stride).

**Measured, not guessed.** Which is fastest depends on the machine, not only on the shapes:
on one 2-core EPYC, im2col won for 1 input channel and XLA from ~8 up, and chunks of 8
examples made XLA:CPU's single-threaded convolutions ~25% faster (cache); on another machine
of the same kind the same constants made the manual step slower than autodiff. So
`impl=None` *measures*: the first time a layer is traced at a shape,
`funcnn.core.autotune.choose` compiles forward + backward of every candidate (`"gemm/all"`,
`"xla/all"` and, on CPU, chunks of 8: `"gemm/8"`, `"xla/8"`) on dummy inputs of that shape,
times them and keeps the fastest for the process (cached on disk with
`FUNCNN_AUTOTUNE_CACHE`). `impl="gemm"`/`"xla"` or `FUNCNN_IMPL=conv:xla` restricts the
candidates. Without measuring (a layer under ~2e7 FLOPs, or `FUNCNN_AUTOTUNE=0`) the rule of
that first machine applies (`default_impl`, `batch_chunks`). All candidates compute the same
sums, in different orders: the results agree to float rounding.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import lax

from funcnn.core import autotune, initializers
from funcnn.core.dtypes import available, initialise, layer_dtypes, with_compute_dtype
from funcnn.core.layer import Layer, Params, Shape
from funcnn.core.sharding import batch_conv_general_dilated, batch_dot_general
from funcnn.core.validate import input_rank, positive_int
from funcnn.layers._conv_windows import (SPATIAL_NAMES, Geometry, as_tuple, check_padding, geometry, pad_to_used,
                                         scatter_windows, window_slices)

IMPLS = ("gemm", "xla")
_SPATIAL_CHARS = {1: "W", 2: "HW", 3: "DHW"}


# The unmeasured fallback (autotuning off, or a layer too small to be worth timing)
GEMM_MAX_CHANNELS = 4  # on CPU, im2col + GEMM up to this many input channels
CPU_BATCH_CHUNK = 8  # on CPU, convolutions run over chunks of this many examples
MAX_CHUNKS = 16  # larger batches (evaluation) use larger chunks, to bound the program size
CPU_CHUNK_CANDIDATES = (8,)  # chunk sizes measured on CPU besides the whole batch

KernelForward = Callable[[jax.Array, jax.Array, Geometry], jax.Array]
KernelBackward = Callable[[jax.Array, jax.Array, Geometry, jax.Array], tuple[jax.Array, jax.Array]]


def default_impl(in_channels: int) -> str:
    """The fallback formulation for this backend and number of input channels.

    **Returns:**

    `"gemm"` on CPU up to `GEMM_MAX_CHANNELS` input channels, else `"xla"`.
    """
    return "gemm" if jax.default_backend() == "cpu" and in_channels <= GEMM_MAX_CHANNELS else "xla"


def _check_x(x, ndim, channels, where):
    shape = jnp.shape(x)
    if len(shape) != ndim + 2 or shape[-1] != channels:
        raise ValueError(f"{where}: x must have shape {SPATIAL_NAMES[ndim]} with {channels} channels, got {shape}")
    if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
        raise TypeError(f"{where}: x must be a floating-point array, got dtype {jnp.result_type(x)}")


def gemm_forward(x: jax.Array, w: jax.Array, g: Geometry) -> tuple[jax.Array, jax.Array]:
    """im2col: the patches $P$ and $P W_2$ (no bias).

    **Arguments:**

    - `x`: input, shape `(N, *S, C)`.
    - `w`: kernel, shape `(*K, C, O)`.
    - `g`: the window geometry of `x`'s spatial axes.

    **Returns:**

    `(patches, y)`: `patches` of shape `(N, *M, T C)` (the T tap slices stacked on the last
    axis, tap-major), `y = patches @ w.reshape(T C, O)` of shape `(N, *M, O)`.
    """
    patches = jnp.concatenate(window_slices(pad_to_used(x, g), g), axis=-1)  # (N, *M, T C)
    return patches, patches @ w.reshape(-1, w.shape[-1])


def gemm_backward(x: jax.Array, w: jax.Array, g: Geometry, dy: jax.Array) -> tuple[jax.Array, jax.Array]:
    r"""im2col's backward: $dW_2 = P^\top \delta$ and $dX$ = col2im($\delta W_2^\top$).

    **Arguments:**

    - `x`: input, shape `(N, *S, C)`; `w`: kernel, shape `(*K, C, O)`; `g`: the geometry.
    - `dy`: the output's gradient, shape `(N, *M, O)`.

    **Returns:**

    `(dw, dx)`: `dw` of shape `(*K, C, O)`, `dx` of shape `(N, *S, C)`.
    """
    patches, _ = gemm_forward(x, w, g)  # same ops as the forward: XLA shares them under jit
    axes = tuple(range(dy.ndim - 1))
    dw = batch_dot_general(patches, dy, ((axes, axes), ((), ())))  # P^T dY: (T C, O)
    dpatches = dy @ w.reshape(-1, w.shape[-1]).T  # (N, *M, T C)
    c = x.shape[-1]
    parts = [dpatches[..., i * c:(i + 1) * c] for i in range(len(g.taps))]
    return dw.reshape(w.shape), scatter_windows(parts, g)


def xla_forward(x: jax.Array, w: jax.Array, g: Geometry) -> jax.Array:
    """The forward as one `lax.conv_general_dilated` (no bias).

    **Arguments:**

    - `x`: input, shape `(N, *S, C)`; `w`: kernel, shape `(*K, C, O)`; `g`: the geometry.

    **Returns:**

    `y` of shape `(N, *M, O)`.
    """
    sp = _SPATIAL_CHARS[len(g.kernel)]
    return lax.conv_general_dilated(x, w, g.stride, g.pads, rhs_dilation=g.dilation,
                                    dimension_numbers=(f"N{sp}C", f"{sp}IO", f"N{sp}C"))


def xla_backward(x: jax.Array, w: jax.Array, g: Geometry, dy: jax.Array) -> tuple[jax.Array, jax.Array]:
    r"""The kernel and input gradients as two `lax.conv_general_dilated` calls.

    The kernel gradient correlates $X_p$ with $\delta$ (the batch axis N becomes the
    contracted feature axis, C the "batch"); the input gradient correlates $\delta$,
    dilated by the stride, with the flipped kernel (O and I exchanged).

    **Arguments:**

    - `x`: input, shape `(N, *S, C)`; `w`: kernel, shape `(*K, C, O)`; `g`: the geometry.
    - `dy`: the output's gradient, shape `(N, *M, O)`.

    **Returns:**

    `(dw, dx)`: `dw` of shape `(*K, C, O)`, `dx` of shape `(N, *S, C)`.
    """
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


def batch_chunks(n: int, size: int | None = None) -> list[tuple[int, int]]:
    """Static `(start, stop)` pairs covering a batch of `n` in chunks of `size` examples.

    At most `MAX_CHUNKS` chunks (larger chunks for larger batches); `size=None`: the
    fallback, one chunk off CPU, else `CPU_BATCH_CHUNK` examples.

    **Returns:**

    A list of `(start, stop)` pairs, in order, covering `0..n`.
    """
    if size is None:
        if jax.default_backend() != "cpu":
            return [(0, n)]
        size = CPU_BATCH_CHUNK
    size = max(size, -(-n // MAX_CHUNKS))
    return [(a, min(a + size, n)) for a in range(0, n, size)]


def _chunked_forward(forward: KernelForward, size: int | None) -> KernelForward:
    """`forward` run chunk by chunk over the batch, the outputs concatenated."""
    def run(x, w, g):
        parts = [forward(x[a:b], w, g) for a, b in batch_chunks(x.shape[0], size)]
        return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=0)
    return run


def _chunked_backward(backward: KernelBackward, size: int | None) -> KernelBackward:
    """`backward` run chunk by chunk: `dw` summed over the chunks, `dx` concatenated."""
    def run(x, w, g, dy):
        parts = [backward(x[a:b], w, g, dy[a:b]) for a, b in batch_chunks(x.shape[0], size)]
        if len(parts) == 1:
            return parts[0]
        dws, dxs = zip(*parts)
        return sum(dws[1:], dws[0]), jnp.concatenate(dxs, axis=0)
    return run


_KERNELS = {"gemm": (lambda x, w, g: gemm_forward(x, w, g)[1], gemm_backward), "xla": (xla_forward, xla_backward)}


def formulation(name: str) -> tuple[KernelForward, KernelBackward]:
    """The two functions of a candidate named `"impl/chunk"`.

    `impl` is `"gemm"` or `"xla"`; `chunk` is the number of examples per chunk, or
    `"all"` for the whole batch (no chunk: the fallback chunking, `batch_chunks`).

    **Returns:**

    `(forward(x, w, g) -> y, backward(x, w, g, dy) -> (dw, dx))` with the shapes of
    `xla_forward` and `xla_backward`.
    """
    impl, _, chunk = name.partition("/")
    size = None if chunk == "" else (1 << 62 if chunk == "all" else int(chunk))
    forward, backward = _KERNELS[impl]
    return _chunked_forward(forward, size), _chunked_backward(backward, size)


def _valid_impl(impl) -> bool:
    name, _, chunk = impl.partition("/") if isinstance(impl, str) else ("", "", "")
    return name in IMPLS and (chunk in ("", "all") or (chunk.isdigit() and int(chunk) > 0))


def candidates(n: int) -> list[str]:
    """Candidate names for a batch of `n`.

    Each formulation over the whole batch and, on CPU, over each chunk size in
    `CPU_CHUNK_CANDIDATES` that splits the batch differently.
    """
    sizes = {"all": 1}
    if jax.default_backend() == "cpu":
        for size in CPU_CHUNK_CANDIDATES:
            chunks = batch_chunks(n, size)
            if len(chunks) > 1 and len(chunks) not in sizes.values():
                sizes[str(size)] = len(chunks)
    return [f"{impl}/{size}" for impl in IMPLS for size in sizes]


def choose(x_shape: Shape, w_shape: Shape, dtype: Any, g: Geometry, impl: str | None = None) -> str:
    """The candidate name used at these shapes (measured once per process, module docstring).

    **Arguments:**

    - `x_shape`: the batched input's shape `(N, *S, C)`; `w_shape`: the kernel's `(*K, C, O)`.
    - `dtype`: the computation's dtype; `g`: the geometry; `impl`: a forced name or prefix.

    **Returns:**

    A name `"impl/chunk"` for `formulation`.
    """
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


@functools.partial(jax.tree_util.register_dataclass, data_fields=["x", "w"],
                   meta_fields=["geometry", "formulation", "bias"])
@dataclasses.dataclass(frozen=True)
class ConvCache:
    """What `conv_backward` needs: the input and the kernel, and (static) how they met.

    - `x`: input, shape `(N, *S, C)`; `w`: kernel, shape `(*K, C, O)`.
    - `geometry`: the window geometry; `formulation`: the candidate name; `bias`: whether
      the forward added a bias.
    """

    x: jax.Array
    w: jax.Array
    geometry: Geometry
    formulation: str
    bias: bool


def conv_forward(x: jax.Array, w: jax.Array, b: jax.Array | None, g: Geometry,
                 formulation_name: str) -> tuple[jax.Array, ConvCache]:
    r"""$Y = X \star W + b$ (module docstring).

    **Arguments:**

    - `x`: input, shape `(N, *S, C)`.
    - `w`: kernel, shape `(*K, C, O)`.
    - `b`: bias, shape `(O,)`, or `None` for none.
    - `g`: the window geometry of `x`'s spatial axes (`geometry(...)`).
    - `formulation_name`: a candidate name, `"impl/chunk"` (`choose`).

    **Returns:**

    `(y, cache)`: `y` of shape `(N, *M, O)`; `cache` a `ConvCache`.
    """
    y = formulation(formulation_name)[0](x, w, g)
    if b is not None:
        y = y + b
    return y, ConvCache(x, w, g, formulation_name, b is not None)


def conv_backward(dy: jax.Array, cache: ConvCache) -> tuple[jax.Array, jax.Array, jax.Array | None]:
    """The gradients of the input, the kernel and the bias (module docstring).

    **Arguments:**

    - `dy`: the output's gradient, shape `(N, *M, O)`.
    - `cache`: the forward's `ConvCache`.

    **Returns:**

    `(dx, dw, db)`: `dx` of shape `(N, *S, C)`, `dw` of shape `(*K, C, O)`, `db` of shape
    `(O,)` (`None` without a bias).
    """
    dw, dx = formulation(cache.formulation)[1](cache.x, cache.w, cache.geometry, dy)
    db = dy.sum(axis=tuple(range(dy.ndim - 1))) if cache.bias else None
    return dx, dw, db


def conv_init(key: jax.Array, kernel: Shape, in_channels: int, features: int, use_bias: bool,
              w_init: Callable, b_init: Callable, param_dtype: Any) -> Params:
    """A convolution's params, drawn in `param_dtype`.

    `fan_in = T C` and `fan_out = T O` with `T = prod(kernel)`.

    **Returns:**

    `{"w": (*kernel, in_channels, features), "b": (features,)}` (no `"b"` without a bias).
    """
    fan_in, fan_out = math.prod(kernel) * in_channels, math.prod(kernel) * features
    kw, kb = jax.random.split(key)
    params = {"w": initialise(w_init, kw, (*kernel, in_channels, features), fan_in, fan_out, param_dtype)}
    if use_bias:
        params["b"] = initialise(b_init, kb, (features,), fan_in, fan_out, param_dtype)
    return params


def _conv(ndim: int, features: int, kernel_size, stride, padding, dilation, use_bias: bool, w_init, b_init,
          impl: str | None, param_dtype="float32", dtype=None) -> Layer:
    """The N-d convolution layer behind `Conv1D` and `Conv2D`: validation and wiring."""
    where = f"Conv{ndim}D"
    positive_int(features, "features", where)
    kernel, stride, dilation = (as_tuple(v, ndim, a, where) for v, a in
                                ((kernel_size, "kernel_size"), (stride, "stride"), (dilation, "dilation")))
    padding = check_padding(padding, ndim, where)
    if impl is not None and not _valid_impl(impl):
        raise ValueError(f"{where}: impl must be None (measured), one of {IMPLS}, or 'impl/chunk' with chunk "
                         f"'all' or a positive int (e.g. 'xla/8'), got {impl!r}")
    w_init, b_init = initializers.get(w_init, "w_init"), initializers.get(b_init, "b_init")
    param_dtype, dtype = layer_dtypes(param_dtype, dtype, where)
    what = SPATIAL_NAMES[ndim][len("(batch, "):-1]

    def geom(spatial):
        return geometry(spatial, kernel, stride, dilation, padding, where)

    def init(key, input_shape):
        shape = input_rank(input_shape, ndim + 1, where, what)
        geom(shape[:-1])
        return conv_init(key, kernel, shape[-1], features, use_bias, w_init, b_init,
                         available(param_dtype, where)), {}

    def output_shape(input_shape):
        shape = input_rank(input_shape, ndim + 1, where, what)
        return (*geom(shape[:-1]).out_spatial, features)

    def forward(params, state, x, *, key=None, train=False):
        w = params["w"]
        _check_x(x, ndim, w.shape[-2], where)
        g = geom(x.shape[1:-1])
        y, cache = conv_forward(x, w, params.get("b"), g, choose(x.shape, w.shape, x.dtype, g, impl))
        return y, state, cache

    def backward(params, cache, dy):
        dx, dw, db = conv_backward(dy, cache)
        return ({"w": dw} if db is None else {"w": dw, "b": db}), dx

    return with_compute_dtype(Layer(f"conv{ndim}d", init, forward, backward, output_shape), dtype)


def Conv2D(features: int, kernel_size: int | tuple[int, int], *, stride: int | tuple[int, int] = 1,
           padding: str | int | tuple = "SAME", dilation: int | tuple[int, int] = 1, use_bias: bool = True,
           w_init: str | Callable = "glorot_uniform", b_init: str | Callable = "zeros", impl: str | None = None,
           param_dtype: Any = "float32", dtype: Any = None) -> Layer:
    """2-D convolution over NHWC images: `(N, H, W, C) -> (N, H', W', features)`.

    Params `{"w": (kh, kw, C, features), "b": (features,)}` (no `"b"` with `use_bias=False`).

    **Arguments:**

    - `features`: output channels O.
    - `kernel_size`, `stride`, `dilation`: an int or an `(h, w)` pair.
    - `padding`: `"SAME"` (output `ceil(n / stride)`, as `lax`), `"VALID"`, an int, or
      `((top, bottom), (left, right))`.
    - `w_init`, `b_init`: initialisers (a name from `funcnn.core.initializers` or a callable).
    - `impl`: force the `"gemm"` or `"xla"` formulation, or one chunking of it (`"xla/8"`:
      chunks of 8 examples, `"gemm/all"`: the whole batch); default: measured per shape and
      backend (`funcnn.core.autotune`, module docstring).
    - `param_dtype`: the params' dtype; `dtype`: the computation's (None: the input's), see
      `funcnn.core.dtypes`.

    **Returns:**

    The `Layer`. Raises `ValueError` for a non-4-D input, a channel count other than the
    kernel's, or a window larger than the padded input.
    """
    return _conv(2, features, kernel_size, stride, padding, dilation, use_bias, w_init, b_init, impl,
                 param_dtype, dtype)


def Conv1D(features: int, kernel_size: int | tuple[int], *, stride: int | tuple[int] = 1,
           padding: str | int | tuple = "SAME", dilation: int | tuple[int] = 1, use_bias: bool = True,
           w_init: str | Callable = "glorot_uniform", b_init: str | Callable = "zeros", impl: str | None = None,
           param_dtype: Any = "float32", dtype: Any = None) -> Layer:
    """1-D convolution over `(N, L, C) -> (N, L', features)`.

    Params `{"w": (k, C, features), "b": (features,)}`. Same arguments and errors as
    `Conv2D` with one spatial axis (`padding` pairs: `((lo, hi),)`).

    **Returns:**

    The `Layer`.
    """
    return _conv(1, features, kernel_size, stride, padding, dilation, use_bias, w_init, b_init, impl,
                 param_dtype, dtype)
