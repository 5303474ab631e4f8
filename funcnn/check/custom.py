"""Check a ``jax.custom_vjp`` or ``jax.custom_jvp`` rule against the function it decorates.

A decorated function f carries its undecorated primal as ``f.fun`` (JAX 0.10:
``jax._src.custom_derivatives.custom_vjp.fun`` / ``custom_jvp.fun``; arguments listed
in ``f.nondiff_argnums`` are held fixed). The rule is what ``jax.vjp(f)`` /
``jax.jvp(f)`` run; the truth is autodiff of ``f.fun`` (with any user rules inside it
replaced by their own primals, as in ``check_backward``) and finite differences of
``f.fun``:

* ``check_custom_vjp``: the rule's cotangents for a random output cotangent, against
  ``jax.vjp(f.fun)`` and differences of <dy, f.fun>, every leaf of every argument
  (it is ``check_backward`` with the rule as the hand-written backward);
* ``check_custom_jvp``: for each leaf of each argument, a random tangent on that leaf
  alone; the rule's output tangent against ``jax.jvp(f.fun)`` and the fourth-order
  central difference (f(p + 2h t) ... ) / 12h of f.fun along t.

The same float64 relative errors and tolerances as ``check_backward`` apply.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from funcnn.check.core import (FD_STEP, TOL_AUTODIFF, TOL_FD, _is_diff, _max_abs, _normal_like, _rel_error,
                               _to64, check_backward, primal_only)
from funcnn.check.diagnose import diagnose
from funcnn.check.report import Report, Row


def _split(f, primals, kind):
    if not hasattr(f, "fun") or not hasattr(f, "nondiff_argnums"):
        raise TypeError(f"check_custom_{kind}: f must be a function decorated with jax.custom_{kind}, "
                        f"got {type(f).__name__}")
    fixed = set(f.nondiff_argnums)
    diff = [i for i in range(len(primals)) if i not in fixed]

    def restrict(g):
        def h(*args):
            full = list(primals)
            for i, a in zip(diff, args):
                full[i] = a
            return g(*full)
        return h

    return diff, restrict


def check_custom_vjp(f: jax.custom_vjp, *primals: Any, key: jax.Array | None = None, name: str | None = None,
                     fd: bool = True, max_fd: int = 512) -> Report:
    """Compare the VJP rule of ``jax.custom_vjp`` function ``f`` at ``primals`` with
    autodiff and finite differences of its undecorated primal ``f.fun``."""
    if not isinstance(f, jax.custom_vjp):
        raise TypeError(f"check_custom_vjp: f must be a jax.custom_vjp function, got {type(f).__name__}")
    with jax.enable_x64(True):
        primals = _to64(primals)
        diff, restrict = _split(f, primals, "vjp")
        rule, primal = restrict(f), restrict(f.fun)
        args = [primals[i] for i in diff]

        def backward(*p_and_dy):
            *p, dy = p_and_dy
            return tuple(jax.vjp(rule, *p)[1](dy))

        return check_backward(primal, backward, *args, key=key, name=name or f"custom_vjp {f.fun.__name__}",
                              fd=fd, max_fd=max_fd, argnames=[f"arg{i}" for i in diff])


def check_custom_jvp(f: jax.custom_jvp, *primals: Any, key: jax.Array | None = None, name: str | None = None,
                     fd: bool = True) -> Report:
    """Compare the JVP rule of ``jax.custom_jvp`` function ``f`` at ``primals`` with
    autodiff and finite differences of its undecorated primal ``f.fun``, one random
    tangent per leaf of every argument."""
    if not isinstance(f, jax.custom_jvp):
        raise TypeError(f"check_custom_jvp: f must be a jax.custom_jvp function, got {type(f).__name__}")
    key = jax.random.key(0) if key is None else key
    with jax.enable_x64(True):
        primals = _to64(primals)
        diff, restrict = _split(f, primals, "jvp")
        rule = restrict(f)
        args = tuple(primals[i] for i in diff)
        primal = primal_only(restrict(f.fun), *args)
        tangents = _normal_like(key, args)

        def flat(tree):
            return jnp.concatenate([jnp.ravel(l) for l in jax.tree_util.tree_leaves(tree)] or [jnp.zeros(0)])

        cases = []
        for a, arg in enumerate(args):
            for j, (kp, leaf) in enumerate(jax.tree_util.tree_flatten_with_path(arg)[0]):
                if not _is_diff(leaf):
                    continue
                t = jax.tree_util.tree_map(lambda l: jnp.zeros_like(l) if _is_diff(l) else None, args)
                t_leaves, t_def = jax.tree_util.tree_flatten(t[a])
                t_leaves[j] = jax.tree_util.tree_leaves(tangents[a])[j]
                t = tuple(jax.tree_util.tree_unflatten(t_def, t_leaves) if i == a else t[i] for i in range(len(t)))
                t = tuple(jax.tree_util.tree_map(lambda l, p: l if _is_diff(p) else np.zeros(jnp.shape(p), jax.dtypes.float0),
                                                 ti, ai) for ti, ai in zip(t, args))
                cases.append((f"arg{diff[a]}{jax.tree_util.keystr(kp)}", t))

        results = []
        for path, t in cases:
            got = flat(jax.jvp(rule, args, t)[1])
            ref = flat(jax.jvp(primal, args, t)[1])
            fdv = None
            if fd:
                def at(h):
                    return flat(restrict(f.fun)(*jax.tree_util.tree_map(
                        lambda p, ti: p + h * ti if _is_diff(p) else p, args, t)))
                h = FD_STEP
                fdv = ((-at(2 * h) + 8 * at(h)) - (8 * at(-h) - at(-2 * h))) / (12 * h)
            results.append((path, got, ref, fdv))
        scale = max([_max_abs(ref) for _, _, ref, _ in results] + [0.0])
        floor = max(1e-3 * scale, 1e-300)
        rows = []
        for path, got, ref, fdv in results:
            abs_ad, rel_ad = _rel_error(got, ref, scale)
            abs_fd, rel_fd = _rel_error(got, fdv, scale) if fdv is not None else (np.nan, np.nan)
            ok = rel_ad <= TOL_AUTODIFF and (fdv is None or rel_fd <= TOL_FD)
            diagnosis = "" if ok else "output tangent " + diagnose(got, ref, tol=TOL_AUTODIFF, floor=floor)
            rows.append(Row(path, abs_ad, rel_ad, abs_fd, rel_fd, bool(ok), "", "", 1, diagnosis))
        return Report(name or f"custom_jvp {f.fun.__name__}", tuple(rows), TOL_AUTODIFF, TOL_FD)
