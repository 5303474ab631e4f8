"""Prove a hand-written backward right, or show where it is wrong.

For a function y = f(p_1, ..., p_k) and a random cotangent dy, the hand-written
backward must return the vector-Jacobian products  g_i = dy^T (df/dp_i).  They are
compared, leaf by leaf, with

1. autodiff: ``jax.vjp(f, *primals)[1](dy)``, exact up to rounding;
2. central finite differences of the scalar s(p) = <dy, f(p)>, fourth order:
   ds/dp_j ~ (-s(p + 2h e_j) + 8 s(p + h e_j) - 8 s(p - h e_j) + s(p - 2h e_j)) / 12h
   with h = 1e-5 (truncation error O(h^4) ~ 1e-20, rounding ~ 1e-11 |s|), for every
   element j of each leaf, or a fixed random sample of ``max_fd`` elements of a large
   leaf. A kink (ReLU at 0) closer than 2h to an input spoils the estimate there.

Everything runs in float64 (``jax.enable_x64`` as a context, not globally).
The error of a leaf is the CS231n relative error, taken elementwise,

    rel = max_j |a_j - b_j| / max(|a_j|, |b_j|, floor),   floor = 1e-3 * scale,

where ``scale`` is the largest autodiff gradient entry over all arguments. The floor
only keeps entries that are zero up to rounding -- including a whole leaf whose true
gradient is zero, such as a bias just before a BatchNorm -- from dividing rounding
noise by itself; against tolerances of 1e-10 and 1e-6 it still flags a 1% error in a
leaf a million times smaller than the largest. Tolerances are fixed, independent of array size: rel <= 1e-10 against autodiff
and rel <= 1e-6 against finite differences. A wrong derivation (a factor off by 1%,
a missing term, a transpose, a sign) is off by far more than either.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from funcnn.check.report import Report, Row

TOL_AUTODIFF = 1e-10
TOL_FD = 1e-6
FD_STEP = 1e-5


def _to64(tree):
    def cast(x):
        x = jnp.asarray(x) if not isinstance(x, jax.Array) else x
        if jnp.issubdtype(x.dtype, jnp.floating):
            return x.astype(jnp.float64)
        return x

    return jax.tree_util.tree_map(cast, tree)


def _is_diff(x):
    return jnp.issubdtype(jnp.result_type(x), jnp.floating)


def _rel_error(a, b, scale):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.size == 0:
        return 0.0, 0.0
    diff = np.abs(a - b)
    floor = max(1e-3 * scale, 1e-300)
    rel = diff / np.maximum(np.maximum(np.abs(a), np.abs(b)), floor)
    return float(diff.max()), float(rel.max())


def _fd_leaf(forward, dy, primals, arg, leaf_index, key, max_fd):
    """Fourth-order central differences of <dy, forward> w.r.t. elements of one leaf.

    The outputs are differenced elementwise before the dot product with dy, so outputs
    that an element does not touch contribute exactly zero (less rounding error)."""
    leaves, treedef = jax.tree_util.tree_flatten(primals[arg])
    leaf = leaves[leaf_index]
    n = leaf.size
    idx = np.arange(n) if n <= max_fd else np.sort(
        np.asarray(jax.random.choice(key, n, (max_fd,), replace=False)))
    dy_flat = jnp.concatenate([jnp.ravel(d) for d in jax.tree_util.tree_leaves(dy)])

    def out(j, h):
        flat = leaf.reshape(-1).at[j].add(h)
        new = list(leaves)
        new[leaf_index] = flat.reshape(leaf.shape)
        args = list(primals)
        args[arg] = jax.tree_util.tree_unflatten(treedef, new)
        return jnp.concatenate([jnp.ravel(o) for o in jax.tree_util.tree_leaves(forward(*args))])

    def directional(j):
        h = FD_STEP
        diff = (-out(j, 2 * h) + 8 * out(j, h)) - (8 * out(j, -h) - out(j, -2 * h))
        return jnp.vdot(dy_flat, diff) / (12 * h)

    return idx, jax.jit(jax.vmap(directional))(jnp.asarray(idx))


def check_backward(forward, backward, *primals, key=None, name="backward", fd=True,
                   max_fd=512, argnames=None) -> Report:
    """Compare ``backward(*primals, dy)`` with autodiff and finite differences of ``forward``.

    ``forward(*primals) -> y`` (a pytree of arrays); ``backward(*primals, dy)`` returns a
    tuple of gradients, one per primal, each with that primal's structure (``None`` or
    an empty dict for a primal without float leaves). Integer leaves (labels) are not
    differentiated. Returns a ``Report``; call ``.assert_ok()`` to raise on mismatch.
    """
    key = jax.random.key(0) if key is None else key
    argnames = argnames or [f"arg{i}" for i in range(len(primals))]
    with jax.enable_x64(True):
        primals = _to64(primals)
        y = forward(*primals)
        y_leaves, y_def = jax.tree_util.tree_flatten(y)
        kdy, kfd = jax.random.split(key)
        dy = jax.tree_util.tree_unflatten(y_def, [
            jax.random.normal(k, jnp.shape(l), jnp.float64)
            for k, l in zip(jax.random.split(kdy, max(len(y_leaves), 1)), y_leaves)])
        manual = backward(*primals, dy)
        if not isinstance(manual, (tuple, list)) or len(manual) != len(primals):
            got = f"{type(manual).__name__} of length {len(manual)}" if isinstance(manual, (tuple, list)) else type(manual).__name__
            row = Row("(all)", np.nan, np.nan, np.nan, np.nan, False,
                      f"backward must return a tuple of {len(primals)} gradients, got {got}")
            return Report(name, (row,), TOL_AUTODIFF, TOL_FD)

        diff_mask = [jax.tree_util.tree_map(_is_diff, p) for p in primals]

        auto = jax.jit(lambda p, d: jax.vjp(forward, *p)[1](d))(primals, dy)

        def max_abs(tree):
            return max([float(jnp.max(jnp.abs(l))) for l in jax.tree_util.tree_leaves(tree)
                        if jnp.size(l) and _is_diff(l)] + [0.0])

        scale = max_abs(auto)
        rows = []
        for i, (p, m, a, mask) in enumerate(zip(primals, manual, auto, diff_mask)):
            p_paths = jax.tree_util.tree_flatten_with_path(p)[0]
            a_leaves = jax.tree_util.tree_leaves(a)
            m_paths = [] if m is None else jax.tree_util.tree_flatten_with_path(m)[0]
            m_map = {jax.tree_util.keystr(kp): v for kp, v in m_paths}
            expected = set()
            for j, ((kp, leaf), al, is_diff) in enumerate(zip(p_paths, a_leaves, jax.tree_util.tree_leaves(mask))):
                if not is_diff:
                    continue
                path = argnames[i] + jax.tree_util.keystr(kp)
                expected.add(jax.tree_util.keystr(kp))
                if jax.tree_util.keystr(kp) not in m_map:
                    rows.append(Row(path, np.nan, np.nan, np.nan, np.nan, False, "missing from backward"))
                    continue
                ml = jnp.asarray(m_map[jax.tree_util.keystr(kp)])
                if ml.shape != leaf.shape:
                    rows.append(Row(path, np.nan, np.nan, np.nan, np.nan, False,
                                    f"shape {ml.shape}, expected {leaf.shape}"))
                    continue
                abs_ad, rel_ad = _rel_error(ml, al, scale)
                abs_fd = rel_fd = np.nan
                if fd:
                    idx, fd_vals = _fd_leaf(forward, dy, primals, i, j, jax.random.fold_in(kfd, 1000 * i + j), max_fd)
                    abs_fd, rel_fd = _rel_error(np.asarray(ml).reshape(-1)[idx], fd_vals, scale)
                ok = rel_ad <= TOL_AUTODIFF and (not fd or rel_fd <= TOL_FD)
                rows.append(Row(path, abs_ad, rel_ad, abs_fd, rel_fd, bool(ok)))
            for extra in sorted(set(m_map) - expected):
                rows.append(Row(argnames[i] + extra, np.nan, np.nan, np.nan, np.nan, False,
                                "not a differentiable leaf of the primal"))
    return Report(name, tuple(rows), TOL_AUTODIFF, TOL_FD)


def _layer_fns(layer, state, key, train):
    def forward(params, x):
        return layer.forward(params, state, x, key=key, train=train)[0]

    def backward(params, x, dy):
        _, _, cache = layer.forward(params, state, x, key=key, train=train)
        return layer.backward(params, cache, dy)

    return forward, backward


def check_layer(layer, input_shape, *, key=None, batch=3, train=True, x=None, name=None,
                **kwargs) -> Report:
    """Check a layer's ``backward`` (params and input) at random params and inputs.

    ``key`` fixes the params, the input and any randomness inside the layer (dropout's
    mask). Inputs are standard normal, which puts ReLU's kink at 0 with probability 0.
    """
    key = jax.random.key(0) if key is None else key
    k_init, k_x, k_layer, k_check = jax.random.split(key, 4)
    with jax.enable_x64(True):
        params, state = layer.init(k_init, tuple(input_shape))
        params, state = _to64(params), _to64(state)
        if x is None:
            x = jax.random.normal(k_x, (batch, *input_shape), jnp.float64)
        forward, backward = _layer_fns(layer, state, k_layer, train)
        return check_backward(forward, backward, params, x, key=k_check,
                              name=name or layer.name, argnames=["params", "x"], **kwargs)


def check_loss(loss, pred, target, *, key=None, name=None, **kwargs) -> Report:
    """Check a loss's ``grad`` at ``pred`` (the target is held fixed)."""
    with jax.enable_x64(True):
        target = _to64(target)

        def forward(p):
            return loss.value(p, target)

        def backward(p, dy):
            return (dy * loss.grad(p, target),)

        return check_backward(forward, backward, pred, key=key, name=name or loss.name,
                              argnames=["pred"], **kwargs)
