r"""Sliding-window geometry shared by convolution and pooling, in any number of spatial axes.

Along one spatial axis of length $n$, a window of $k$ taps with dilation $d$ spans
$e = (k - 1) d + 1$ positions (its *extent*). After padding the axis with $(lo, hi)$ the
window slides with stride $s$, giving

$$
m = \left\lfloor \frac{n + lo + hi - e}{s} \right\rfloor + 1 \quad \text{output positions},
$$

and output position $o$, tap $j$ reads padded position $o s + j d$. `window_slices` turns
this into one strided slice per tap (the im2col view, without materialising indices):
`(N, *used, C)` -> T slices `(N, *M, C)`. `scatter_windows` is its exact adjoint (col2im):
it adds each tap's slice back into the padded positions it came from and crops the
padding away, T slices `(N, *M, C)` -> `(N, *S, C)`. Being the adjoint of a linear map
(a selection of entries), it is exactly what a backward needs: each input entry collects
the gradient of every window position that read it.

Arrays are channels-last with a leading batch axis: `(N, *spatial, C)`.
"""
from __future__ import annotations

import itertools
import math
from typing import Any, NamedTuple

import jax
from jax import lax

SPATIAL_NAMES = {1: "(batch, length, channels)", 2: "(batch, height, width, channels)",
                 3: "(batch, depth, height, width, channels)"}


class Geometry(NamedTuple):
    """Static window geometry: per spatial axis, tuples of ints.

    `kernel` (taps $k$), `stride` ($s$), `dilation` ($d$), `pads` (`((lo, hi), ...)`),
    `in_spatial` ($S$, unpadded) and `out_spatial` ($M$).
    """

    kernel: tuple
    stride: tuple
    dilation: tuple
    pads: tuple  # ((lo, hi), ...)
    in_spatial: tuple
    out_spatial: tuple

    @property
    def extent(self) -> tuple:
        """Positions one window spans per axis, $(k - 1) d + 1$."""
        return tuple((k - 1) * d + 1 for k, d in zip(self.kernel, self.dilation))

    @property
    def taps(self) -> list:
        """Every tap offset, row-major (the order of an HWIO kernel's leading axes)."""
        return list(itertools.product(*(range(k) for k in self.kernel)))

    @property
    def used(self) -> tuple:
        """Padded length actually read per axis: $(m - 1) s + e$ (the floor drops the rest)."""
        return tuple((m - 1) * s + e for m, s, e in zip(self.out_spatial, self.stride, self.extent))


def as_tuple(value: Any, n: int, arg: str, where: str) -> tuple:
    """An int or a length-n sequence of positive ints, as a tuple of n ints."""
    items = (value,) * n if isinstance(value, int) and not isinstance(value, bool) else value
    try:
        items = tuple(items)
    except TypeError:
        items = None
    if items is None or len(items) != n or not all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in items):
        raise ValueError(f"{where}: {arg} must be a positive int or a sequence of {n} positive ints, got {value!r}")
    return items


def check_padding(padding: Any, n: int, where: str) -> str | tuple:
    """Validate `padding`: `"SAME"`, `"VALID"`, an int >= 0, or n `(lo, hi)` pairs of ints >= 0.

    **Returns:**

    `"SAME"`/`"VALID"` (upper case) or n `(lo, hi)` pairs.
    """
    if isinstance(padding, str):
        if padding.upper() not in ("SAME", "VALID"):
            raise ValueError(f"{where}: padding must be 'SAME', 'VALID', an int or {n} (lo, hi) pairs, got {padding!r}")
        return padding.upper()
    if isinstance(padding, int) and not isinstance(padding, bool):
        if padding < 0:
            raise ValueError(f"{where}: padding must be >= 0, got {padding}")
        return ((padding, padding),) * n
    try:
        pairs = tuple(tuple(p) for p in padding)
    except TypeError:
        pairs = None
    if pairs is None or len(pairs) != n or not all(
            len(p) == 2 and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in p) for p in pairs):
        raise ValueError(f"{where}: padding must be 'SAME', 'VALID', an int or {n} (lo, hi) pairs of ints >= 0, "
                         f"got {padding!r}")
    return pairs


def geometry(in_spatial: tuple, kernel: tuple, stride: tuple, dilation: tuple, padding: Any,
             where: str) -> Geometry:
    """Resolve `padding` (`"SAME"` as in TensorFlow and `lax`: output `ceil(n / s)`, the odd
    pad at the end) and compute the output sizes; raise `ValueError` if a window does not fit.

    **Arguments:**

    - `in_spatial`: the input's spatial sizes $S$; `kernel`, `stride`, `dilation`: one int
      per spatial axis; `padding`: as `check_padding` returns it.

    **Returns:**

    The `Geometry`.
    """
    in_spatial = tuple(in_spatial)
    extent = tuple((k - 1) * d + 1 for k, d in zip(kernel, dilation))
    if padding == "VALID":
        pads = ((0, 0),) * len(in_spatial)
    elif padding == "SAME":
        pads = []
        for n, s, e in zip(in_spatial, stride, extent):
            total = max((math.ceil(n / s) - 1) * s + e - n, 0)
            pads.append((total // 2, total - total // 2))
        pads = tuple(pads)
    else:
        pads = tuple(padding)
    if any(n + lo + hi < e for n, (lo, hi), e in zip(in_spatial, pads, extent)):
        padded = tuple(n + lo + hi for n, (lo, hi) in zip(in_spatial, pads))
        raise ValueError(f"{where}: the window (kernel {kernel}, dilation {dilation}, extent {extent}) "
                         f"is larger than the padded input {padded} (input {in_spatial}, padding {pads})")
    out = tuple((n + lo + hi - e) // s + 1 for n, (lo, hi), e, s in zip(in_spatial, pads, extent, stride))
    return Geometry(tuple(kernel), tuple(stride), tuple(dilation), pads, in_spatial, out)


def pad_to_used(x: jax.Array, g: Geometry, value: float = 0.0) -> jax.Array:
    """Pad `(lo, hi)` with `value` and crop the tail no window reads: `(N, *S, C)` -> `(N, *used, C)`."""
    config = [(0, 0, 0)]
    for n, (lo, _), u in zip(g.in_spatial, g.pads, g.used):
        config.append((lo, u - lo - n, 0))  # hi may be negative: lax.pad crops
    config.append((0, 0, 0))
    return lax.pad(x, lax.convert_element_type(value, x.dtype), config)


def window_slices(x_used: jax.Array, g: Geometry) -> list:
    """One `(N, *M, C)` strided slice per tap: `slice[t][:, o, :] = x_used[:, o s + t d, :]`.

    **Arguments:**

    - `x_used`: the padded input, `(N, *used, C)` (`pad_to_used`); `g`: the geometry.

    **Returns:**

    A list of T arrays `(N, *M, C)`, taps in `Geometry.taps` order.
    """
    batch, channels = x_used.shape[0], x_used.shape[-1]
    slices = []
    for tap in g.taps:
        start = tuple(t * d for t, d in zip(tap, g.dilation))
        limit = tuple(st + (m - 1) * s + 1 for st, m, s in zip(start, g.out_spatial, g.stride))
        slices.append(lax.slice(x_used, (0, *start, 0), (batch, *limit, channels), (1, *g.stride, 1)))
    return slices


def scatter_windows(parts: list, g: Geometry) -> jax.Array:
    """Adjoint of `pad_to_used` then `window_slices`: sum each tap's `(N, *M, C)` part into
    the input positions it read, dropping what fell on padding: -> `(N, *S, C)`.

    Each part is placed with one `lax.pad` (interior padding s - 1 spreads it to stride s;
    negative edges crop the padding); XLA fuses the pads and the sum into one loop, as fast
    as a stack-and-reshape interleave even when windows do not overlap."""
    total = None
    for tap, part in zip(g.taps, parts):
        config = [(0, 0, 0)]
        for t, d, m, s, (lo, _), n in zip(tap, g.dilation, g.out_spatial, g.stride, g.pads, g.in_spatial):
            start = t * d - lo  # where the tap's first read lands in unpadded coordinates
            config.append((start, n - start - ((m - 1) * s + 1), s - 1))
        config.append((0, 0, 0))
        placed = lax.pad(part, lax.convert_element_type(0, part.dtype), config)
        total = placed if total is None else total + placed
    return total

