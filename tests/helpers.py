"""The tolerance rule of every float comparison in the test suite (the checker's rule).

Two arrays (or pytrees) a and b agree when, elementwise,

    |a - b| <= rtol * max(|a|, |b|, floor),   floor = floor_frac * max(max|a|, max|b|),

i.e. relative error, with a floor proportional to the largest magnitude compared, so
that entries that are zero up to rounding (a bias before a BatchNorm, an output element
much smaller than its neighbours) are judged against the scale of the whole result,
not against themselves. ``rtol`` follows from the precision of the computation, never
from what one machine happened to produce:

* float64 (gradient checks, manual vs autodiff): ``RTOL_F64 = 1e-10``;
* float32, the same math by two formulations (reassociated sums, fused kernels; the
  rounding differs across CPUs with AVX2 or AVX-512): ``RTOL_F32 = 1e-4``, a few
  hundred ulps of the largest entry, still ~100x below a 1% derivation error;
* bfloat16 / float16 computations against a float32 reference: ``RTOL_BF16 = 3e-2``
  and ``RTOL_F16 = 5e-3`` (a few ulps of 8 and 11 mantissa bits).
"""
from __future__ import annotations

import jax
import numpy as np

RTOL_F64 = 1e-10
RTOL_F32 = 1e-4
RTOL_F16 = 5e-3
RTOL_BF16 = 3e-2
FLOOR_FRAC = 1e-3


def _leaves(tree):
    """The float64 leaves of a pytree; a flat list of numbers is one array."""
    if isinstance(tree, (list, tuple)) and tree and all(isinstance(v, (int, float)) for v in tree):
        return [np.asarray(tree, np.float64)]
    return [np.asarray(x, np.float64) for x in jax.tree_util.tree_leaves(tree)]


def rel_error(a, b, *, floor_frac: float = FLOOR_FRAC) -> float:
    """max_j |a_j - b_j| / max(|a_j|, |b_j|, floor) over every leaf of two pytrees;
    the floor is ``floor_frac`` times the largest magnitude over all leaves of both.
    A scalar leaf is compared with every element of the other (``x`` vs ``1.0``)."""
    la, lb = _leaves(a), _leaves(b)
    if len(la) != len(lb):
        raise AssertionError(f"trees differ: {len(la)} leaves vs {len(lb)}")
    for i, (x, y) in enumerate(zip(la, lb)):
        if x.shape != y.shape:
            if x.ndim and y.ndim:
                raise AssertionError(f"shapes differ: {x.shape} vs {y.shape}")
            la[i], lb[i] = np.broadcast_arrays(x, y)
    scale = max([float(np.max(np.abs(x))) for x in la + lb if x.size] + [0.0])
    floor = max(floor_frac * scale, 1e-300)
    worst = 0.0
    for x, y in zip(la, lb):
        if x.size:
            if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
                if not np.array_equal(x, y, equal_nan=True):
                    return float("inf")
                continue
            worst = max(worst, float(np.max(np.abs(x - y) / np.maximum(np.maximum(np.abs(x), np.abs(y)), floor))))
    return worst


def assert_close(actual, expected, rtol: float, *, floor_frac: float = FLOOR_FRAC, what: str = ""):
    """Assert ``rel_error(actual, expected) <= rtol`` (module docstring)."""
    err = rel_error(actual, expected, floor_frac=floor_frac)
    assert err <= rtol, f"{what + ': ' if what else ''}relative error {err:.3e} > {rtol:.0e}"
