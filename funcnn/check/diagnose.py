"""What is wrong with a wrong gradient leaf: the worst element, the fraction wrong, and
the simplest explanation that fits.

With m the hand-written leaf, r the reference (autodiff), and the tolerance of a fit
``FIT = 1e-6`` relative to the larger of max|m|, max|r|, the explanations tried, in
order, are exact statements about m and r:

* "all zero":                    m = 0 everywhere while r is not;
* "sign flipped":                m = -r;
* "scaled by c":                 m = c r, c = <m, r> / <r, r> (named as a fraction p/q,
                                 q <= 64, when c is one to 1e-9);
* "transposed":                  m = r^T (a square matrix, or m of r's transposed shape);
* "right up to a term k * NAME":  m - r = k v for one of the arrays v offered
                                 (the inputs, the other leaves), k fitted by least squares;
* "multiplied elementwise by NAME" / "missing a factor NAME": m = r v or r = m v for
                                 an offered v of m's shape or broadcast along m's leading axes;
* "wrong only in rows/columns/at indices ...": the wrong elements (error above the
                                 check's tolerance) lie in a proper subset of the rows
                                 (first axis) or columns (last axis).

Each fit is accepted only when the residual is below FIT; when none fits, the
diagnosis says "no simple explanation" -- it never guesses.
"""
from __future__ import annotations

from fractions import Fraction
from typing import Mapping

import numpy as np
import numpy.typing as npt

FIT = 1e-6


def _fits(a, b, scale):
    return float(np.max(np.abs(a - b))) <= FIT * scale


def _name_number(c: float) -> str:
    f = Fraction(c).limit_denominator(64)
    if abs(float(f) - c) <= 1e-9 * max(abs(c), 1e-300):
        return str(f.numerator) if f.denominator == 1 else f"{f.numerator}/{f.denominator}"
    return f"{c:.6g}"


def _index_list(idx, limit=6):
    idx = [int(i) for i in idx]
    return ", ".join(map(str, idx[:limit])) + (f", ... ({len(idx)} in all)" if len(idx) > limit else "")


def explain(m: npt.ArrayLike, r: npt.ArrayLike, *, others: Mapping[str, npt.ArrayLike] | None = None) -> str:
    """The simplest explanation of m (hand-written) against r (reference) that fits to
    FIT, or "no simple explanation". ``others``: name -> array, candidate extra terms."""
    m, r = np.asarray(m, np.float64), np.asarray(r, np.float64)
    if m.shape != r.shape:
        if m.ndim == 2 and m.shape == r.shape[::-1]:
            scale = max(float(np.max(np.abs(m))), float(np.max(np.abs(r))), 1e-300)
            if _fits(m.T, r, scale):
                return "transposed"
        return "no simple explanation"
    if m.size == 0:
        return "no simple explanation"
    scale = max(float(np.max(np.abs(m))), float(np.max(np.abs(r))), 1e-300)
    if not np.any(m) and np.any(r):
        return "all zero"
    rr = float(np.vdot(r, r))
    if rr > 0:
        c = float(np.vdot(m, r)) / rr
        if _fits(m, c * r, scale):
            if abs(c + 1) <= 1e-9:
                return "sign flipped"
            return f"scaled by {_name_number(c)}"
    if m.ndim == 2 and m.shape[0] == m.shape[1] and _fits(m, r.T, scale):
        return "transposed"
    d = m - r
    for name, v in (others or {}).items():
        v = np.asarray(v, np.float64)
        if v.shape != m.shape or not np.any(v):
            continue
        k = float(np.vdot(d, v)) / float(np.vdot(v, v))
        if _fits(d, k * v, scale):
            return f"right up to a term {_name_number(k)} * {name}"
    for name, v in (others or {}).items():
        v = np.asarray(v, np.float64)
        if v.ndim > m.ndim or v.shape != m.shape[m.ndim - v.ndim:] or not np.any(v):
            continue
        if _fits(m, r * v, scale):
            return f"multiplied elementwise by {name}"
        if _fits(r, m * v, scale):
            return f"missing a factor {name}"
    return "no simple explanation"


def wrong_mask(m: npt.ArrayLike, r: npt.ArrayLike, tol: float, floor: float) -> np.ndarray:
    """Elements whose error exceeds ``tol`` relative to max(|m|, |r|, floor)."""
    m, r = np.asarray(m, np.float64), np.asarray(r, np.float64)
    return np.abs(m - r) > tol * np.maximum(np.maximum(np.abs(m), np.abs(r)), floor)


def where_wrong(mask: npt.ArrayLike) -> str:
    """"wrong only in rows/columns/at indices ..." when the wrong elements are confined."""
    mask = np.asarray(mask)
    if mask.ndim == 0 or not mask.any() or mask.all():
        return ""
    if mask.ndim == 1:
        return f"wrong only at indices {_index_list(np.flatnonzero(mask))}"
    rows = np.flatnonzero(mask.reshape(mask.shape[0], -1).any(1))
    if len(rows) < mask.shape[0]:
        return f"wrong only in rows {_index_list(rows)}"
    cols = np.flatnonzero(mask.reshape(-1, mask.shape[-1]).any(0))
    if len(cols) < mask.shape[-1]:
        return f"wrong only in columns {_index_list(cols)}"
    return ""


def diagnose(m: npt.ArrayLike, r: npt.ArrayLike, *, tol: float, floor: float,
             others: Mapping[str, npt.ArrayLike] | None = None) -> str:
    """One line: worst element (index, hand-written and reference values), fraction of
    elements wrong, and ``explain``'s explanation (or where the errors are confined)."""
    m, r = np.asarray(m, np.float64), np.asarray(r, np.float64)
    if m.shape != r.shape:
        return explain(m, r)
    mask = wrong_mask(m, r, tol, floor)
    err = np.abs(m - r) / np.maximum(np.maximum(np.abs(m), np.abs(r)), floor)
    worst = np.unravel_index(int(np.argmax(err)), m.shape) if m.ndim else ()
    what = explain(m, r, others=others)
    if what == "no simple explanation":
        what = where_wrong(mask) or what
    at = "[" + ", ".join(map(str, worst)) + "]" if m.ndim else ""
    return (f"worst{at}: {m[worst]:.6g} vs {r[worst]:.6g}; {mask.mean():.0%} of "
            f"{m.size} elements wrong; {what}")
