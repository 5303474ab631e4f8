"""Prove a hand-written backward right, or show where it is wrong.

For a function y = f(p_1, ..., p_k) and a random cotangent dy, the hand-written
backward must return the vector-Jacobian products  g_i = dy^T (df/dp_i).  They are
compared, leaf by leaf, with

1. autodiff: ``jax.vjp(f, *primals)[1](dy)``, exact up to rounding;
2. central finite differences of the scalar s(p) = <dy, f(p)>, fourth order:
   ds/dp_j ~ (-s(p + 2h e_j) + 8 s(p + h e_j) - 8 s(p - h e_j) + s(p - 2h e_j)) / 12h
   with h = 1e-5 (truncation error O(h^4) ~ 1e-20, rounding ~ 1e-11 |s|), for every
   element j of each leaf, or a fixed random sample of ``max_fd`` elements of a large
   leaf. A kink (ReLU at 0, tied maxima in a max-pool window) closer than 2h to an
   input spoils the estimate there.

Kinks. Where the one-sided differences (second order, (-3 s(p) + 4 s(p + h e_j) -
s(p + 2h e_j)) / 2h and its mirror) disagree by more than ``KINK_TOL = 1e-4`` relative
(they agree to ~1e-10 where s is smooth), s is not differentiable at element j: any
value between them is a valid answer, so that element is left out of the comparison
and counted in the row's ``kinks``. Inside a network this happens for real: a max-pool after a ReLU sees
tied zeros. A leaf at a kink everywhere fails ("not differentiable here"). Without
finite differences (``fd=False``) nothing is left out.

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

Custom rules. If ``forward`` contains a ``jax.custom_vjp``/``jax.custom_jvp`` function
defined outside JAX itself, ``jax.vjp(forward)`` would run that rule, and a rule
checked against itself always passes. So autodiff here differentiates the *primal*
of every such function instead (the rule is replaced by its undecorated function;
finite differences never see rules). JAX's own rules (``jax.nn.relu``,
``jnp.logaddexp``, ...) are kept. A rule hidden inside ``scan``/``cond``/``while``
cannot be replaced and is refused with a ``ValueError``; check such rules with
``check_custom_vjp`` / ``check_custom_jvp``.

Second order (``order=2``, PyTorch's gradgradcheck): the hand-written backward is
itself differentiated by autodiff whenever something takes a derivative of a gradient
it produced -- ``jax.hessian`` of a ``with_manual_vjp`` model, a gradient penalty,
meta-learning. For a random v (shaped like the primals) the check compares

    d/dp <backward(p, dy), v>   (autodiff through the hand-written backward)
    d/dp <vjp_f(p)(dy), v>  = H_{<f, dy>} v   (autodiff's Hessian-vector product)

leaf by leaf, with the same relative error and the autodiff tolerance. A backward
that is right to first order fails here when it is not differentiable as written:
``stop_gradient`` on a term that depends on p, values read through integer casts, a
cached quantity treated as a constant although it depends on p.

Random parameters. ``check_layer`` checks by default at the initial parameters *and*
at random ones: every float leaf p gets N(0, s^2) noise with s = std(p), or 0.5 for a
leaf that starts constant, so gains are not 1, biases not 0, log-scales not 0 (a
missing gain, bias or forget-gate term cancels at the initial values). The state is
left as initialised (a BatchNorm's running variance stays positive). ``check_loss``
likewise draws predictions and targets away from special points when not given.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
from typing import TYPE_CHECKING, Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from funcnn.check import draws
from funcnn.check.diagnose import diagnose, wrong_mask
from funcnn.core import autotune
from funcnn.check.report import Report, Row

if TYPE_CHECKING:
    import jax.extend.core

    from funcnn.core.layer import Layer
    from funcnn.losses import Loss

TOL_AUTODIFF = 1e-10
TOL_FD = 1e-6
FD_STEP = 1e-5
KINK_TOL = 1e-4
CUSTOM_CALLS = ("custom_vjp_call", "custom_jvp_call")


def _to64(tree):
    def cast(x):
        if isinstance(x, jax.Array) and not isinstance(x, jax.core.Tracer) and jnp.issubdtype(x.dtype, jnp.floating):
            return x if x.dtype == jnp.float64 else jnp.asarray(np.asarray(x, np.float64))  # no program compiled
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
    with np.errstate(invalid="ignore"):  # a NaN gradient gives a NaN error (a failed row), quietly
        rel = diff / np.maximum(np.maximum(np.abs(a), np.abs(b)), floor)
    return float(diff.max()), float(rel.max())


# ---- custom rules: find the user's, and differentiate their primal instead ----------

def _sub_jaxprs(params):
    for v in params.values():
        for x in (v if isinstance(v, (tuple, list)) else (v,)):
            if hasattr(x, "jaxpr") and hasattr(x, "consts"):
                yield x.jaxpr
            elif hasattr(x, "eqns"):
                yield x


def _rule_source(eqn):
    info = getattr(eqn.params["call_jaxpr"].jaxpr, "debug_info", None)
    return getattr(info, "func_src_info", "") or ""


def _is_user_rule(eqn):
    """A custom rule not defined inside JAX's own package (those are JAX's tested rules)."""
    if eqn.primitive.name not in CUSTOM_CALLS:
        return False
    src = _rule_source(eqn).replace("\\", "/")
    return not ("/jax/_src/" in src or "/jaxlib/" in src)


def user_rules(jaxpr: jax.extend.core.Jaxpr) -> list[str]:
    """Source descriptions of the user-defined custom rules anywhere in ``jaxpr``."""
    found = []
    for eqn in jaxpr.eqns:
        if _is_user_rule(eqn):
            found.append(_rule_source(eqn))
        else:
            for sub in _sub_jaxprs(eqn.params):
                found += user_rules(sub)
    return found


def _eval_primal(jaxpr, consts, args):
    """Evaluate ``jaxpr`` with every user custom rule replaced by its primal function."""
    env = {}

    def read(v):
        return v.val if hasattr(v, "val") and not hasattr(v, "count") else env[v]

    for v, x in zip(jaxpr.constvars, consts):
        env[v] = x
    for v, x in zip(jaxpr.invars, args):
        env[v] = x
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        if _is_user_rule(eqn):
            call = eqn.params["call_jaxpr"]
            outs = _eval_primal(call.jaxpr, call.consts, invals)
        elif eqn.primitive.name in ("pjit", "jit", "closed_call") and user_rules(eqn.params["jaxpr"].jaxpr
                                                                             if "jaxpr" in eqn.params else
                                                                             eqn.params["call_jaxpr"].jaxpr):
            call = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr"))
            outs = _eval_primal(call.jaxpr, call.consts, invals)
        elif any(user_rules(sub) for sub in _sub_jaxprs(eqn.params)):
            raise ValueError(
                f"check_backward: forward has a custom_vjp/custom_jvp rule inside '{eqn.primitive.name}', so "
                "autodiff would compare the rule with itself; check the rule with "
                "funcnn.check.check_custom_vjp / check_custom_jvp")
        else:
            with eqn.ctx.manager:
                outs = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(eqn.params))
            if not eqn.primitive.multiple_results:
                outs = [outs]
        for v, x in zip(eqn.outvars, outs):
            env[v] = x
    return [read(v) for v in jaxpr.outvars]


def primal_only(forward: Callable[..., Any], *primals: Any) -> Callable[..., Any]:
    """``forward`` with every user custom rule inside replaced by its undecorated
    function (``forward`` itself when it has none): autodiff of it is the true derivative."""
    closed = jax.make_jaxpr(forward)(*primals)
    if not user_rules(closed.jaxpr):
        return forward
    out_tree = jax.tree_util.tree_structure(jax.eval_shape(forward, *primals))

    def f(*args):
        flat = jax.tree_util.tree_leaves(args)
        return jax.tree_util.tree_unflatten(out_tree, _eval_primal(closed.jaxpr, closed.consts, flat))

    return f


# ---- the check: two compiled programs per call -----------------------------------
#
# Compiling is what a check costs, not arithmetic (run op by op, a 4-wide LayerNorm
# compiled ~50 small programs: 3.4 of its 4.1 s). So everything numeric is two jitted
# functions, vmapped over the points (random and initial parameters) and compiled once
# per call: the references (the forward, autodiff, and the finite-difference stencils of
# every sampled element of every leaf) and the hand-written backward in every
# formulation; only the comparison and the diagnosis (cheap numpy) run outside them. The
# functions depend on nothing but their arguments, so they are cached by (forward,
# backward, shapes) and reused by later calls; and JAX reuses a compiled program of the
# same text, so after an edit of the backward alone only its program is compiled again.
# Random draws come from ``funcnn.check.draws`` (no program per shape), the initial
# parameters from the layer's ``init`` run eagerly (its draws bucketed: ``funcnn.core.prng``).

FD_BATCH = 256  # stencil directions evaluated side by side (vmap) per step of lax.map
FD_BATCH_ELEMENTS = 1 << 21  # ... fewer when 4 forwards of that many outputs would be larger
# XLA's cheaper backend passes: the program runs once, so compiling it fast matters more than
# running it fast (~30% less compile time on CPU); float64 arithmetic is IEEE either way. Not
# for a program with a convolution: at level 0 XLA:CPU emits convolutions as naive loops (the
# check of a small CNN's first convolution ran 543 s instead of 1.9 s), so those get XLA's
# defaults, stated here so that XLA_FLAGS asking for level 0 do not reach them. Either way the
# LLVM module is compiled whole, not split into parts compiled on threads: for programs this
# small the split costs more than it saves (`funcnn check` of 7 cases on 2 cores: CPU -10%,
# wall -6%, 3 runs each). These are XLA:CPU's options: on another backend (a GPU, whose compiler
# refuses them) the checker compiles with that backend's defaults (``compiler_options``).
COMPILER_OPTIONS = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True,
                    "xla_cpu_use_fusion_emitters": False, "xla_cpu_parallel_codegen_split_count": 1}
DEFAULT_LEVEL_PRIMITIVES = ("conv_general_dilated",)
CONV_COMPILER_OPTIONS = {"xla_backend_optimization_level": 3, "xla_llvm_disable_expensive_passes": False,
                         "xla_cpu_use_fusion_emitters": False, "xla_cpu_parallel_codegen_split_count": 1}
_PROGRAMS: dict = {}  # cache key -> jitted program
_MAX_PROGRAMS = 64


def _diff_plan(primals, max_fd):
    """[(arg, leaf index, size, sampled)] of every float leaf, in flattening order."""
    plan = []
    for i, p in enumerate(primals):
        for j, leaf in enumerate(jax.tree_util.tree_leaves(p)):
            if _is_diff(leaf) and np.size(leaf):
                n = int(np.size(leaf))
                plan.append((i, j, n, min(n, max_fd)))
    return tuple(plan)


def _fd_indices(primals, kfd, plan):
    """The sampled elements of every planned leaf, as indices into the leaves laid end to
    end (``_fd_all``): every element of a leaf of at most ``max_fd``, else a fixed random
    sample of that many."""
    parts, off = [], 0
    for i, j, n, count in plan:
        idx = np.arange(n) if count == n else draws.sample(jax.random.fold_in(kfd, 1000 * i + j), n, count)
        parts.append(idx + off)
        off += n
    return np.concatenate(parts).astype(np.int32) if parts else np.zeros(0, np.int32)


def _fd_all(forward, primals, y, dy, gidx, plan):
    """Fourth-order central and second-order one-sided differences of <dy, forward> for the
    sampled elements ``gidx`` of every float leaf of ``primals``, in one batched evaluation.

    Every float leaf is laid end to end in one vector v; a direction is an index g of v
    (element j of leaf k). The outputs are differenced elementwise before the dot product
    with dy, so outputs that an element does not touch contribute exactly zero (less
    rounding error). Returns ``(central, right, left)``, each of ``gidx``'s shape."""
    flat = [jax.tree_util.tree_flatten(p) for p in primals]
    offsets, off = [], 0
    for i, j, n, count in plan:
        offsets.append(off)
        off += n
    vec = jnp.concatenate([jnp.ravel(flat[i][0][j]) for i, j, _, _ in plan])
    dy_flat = jnp.concatenate([jnp.ravel(d) for d in jax.tree_util.tree_leaves(dy)])
    o0 = jnp.concatenate([jnp.ravel(o) for o in jax.tree_util.tree_leaves(y)])

    def rebuild(v):
        leaves = [list(ls) for ls, _ in flat]
        for (i, j, n, _), start in zip(plan, offsets):
            leaves[i][j] = v[start:start + n].reshape(jnp.shape(flat[i][0][j]))
        return [jax.tree_util.tree_unflatten(td, ls) for ls, (_, td) in zip(leaves, flat)]

    def out(v):
        return jnp.concatenate([jnp.ravel(o) for o in jax.tree_util.tree_leaves(forward(*rebuild(v)))])

    h = FD_STEP
    steps = jnp.array([h, 2 * h, -h, -2 * h])

    def directional(g):
        p1, p2, m1, m2 = jax.vmap(lambda s: out(vec.at[g].add(s)))(steps)
        central = jnp.vdot(dy_flat, (-p2 + 8 * p1) - (8 * m1 - m2)) / (12 * h)
        right = jnp.vdot(dy_flat, 4 * (p1 - o0) - (p2 - o0)) / (2 * h)  # one-sided, second order
        left = jnp.vdot(dy_flat, 4 * (o0 - m1) - (o0 - m2)) / (2 * h)
        return central, right, left

    total = int(gidx.shape[0])
    width = max(int(o0.size), int(vec.size), 1)
    batch = max(1, min(total, FD_BATCH, FD_BATCH_ELEMENTS // (4 * width)))
    if batch >= total:
        return jax.vmap(directional)(gidx)
    steps_n = -(-total // batch)  # whole batches only: a remainder would be a second copy of the program
    padded = jnp.concatenate([gidx, jnp.broadcast_to(gidx[-1:], (steps_n * batch - total,))])
    return tuple(r.reshape(-1)[:total] for r in jax.lax.map(jax.vmap(directional), padded.reshape(steps_n, batch)))


def _program(forward, backward, reference_fn, plan, with_manual, forms):
    """The jitted check, vmapped over points: ``(references(primals, extra, dy, gidx),
    manual(primals, extra, dy))`` (``manual`` None unless ``with_manual``) with
    ``forward(extra, *primals)``, ``backward(extra, *primals, dy)`` (random draws are made
    outside, ``funcnn.check.draws``: no threefry to compile in here).

    ``forms``: the formulations to check (``autotune.forcing`` dicts): the hand-written
    backward runs in each; autodiff and the finite differences (the truth, whatever the
    formulation) once, in the first. Two programs: the references (autodiff, finite
    differences, the output) and the hand-written backward, so that editing only the
    backward recompiles only its program (JAX reuses a compiled program of the same text)."""
    def references(primals, extra, dy, gidx):
        with autotune.forcing(forms[0]):
            out = {"auto": [jax.vjp(lambda *p: reference_fn(extra, *p), *primals)[1](dy)]}
            out["y"] = y = forward(extra, *primals)
            if plan:
                out["fd"] = _fd_all(lambda *p: forward(extra, *p), primals, y, dy, gidx, plan)
        return out

    def manual(primals, extra, dy):
        out = []
        for form in forms:
            with autotune.forcing(form):
                out.append(backward(extra, *primals, dy))
        return out

    return (_Program(jax.jit(jax.vmap(references, in_axes=(0, None, None, None)))),
            _Program(jax.jit(jax.vmap(manual, in_axes=(0, None, None)))) if with_manual else None)


def compiler_options(jaxpr, platform: str) -> dict | None:
    """The options a checker program compiles with on ``platform`` ("cpu", "gpu", ...):
    ``CONV_COMPILER_OPTIONS`` for a ``jaxpr`` that uses a primitive of
    ``DEFAULT_LEVEL_PRIMITIVES``, else ``COMPILER_OPTIONS``, on CPU; None (the backend's
    defaults) elsewhere."""
    if platform != "cpu":
        return None
    return CONV_COMPILER_OPTIONS if _uses(jaxpr, DEFAULT_LEVEL_PRIMITIVES) else COMPILER_OPTIONS


def _uses(jaxpr, names) -> bool:
    """True when a primitive named in ``names`` occurs anywhere in ``jaxpr`` (sub-jaxprs included)."""
    return any(eqn.primitive.name in names or any(_uses(sub, names) for sub in _sub_jaxprs(eqn.params))
               for eqn in jaxpr.eqns)


class _Program:
    """A jitted function compiled on its first call, with ``compiler_options`` for the default
    backend; later calls (same shapes, the cache key's promise) reuse the executable."""

    def __init__(self, jitted):
        self.jitted, self.executable = jitted, None

    def __call__(self, *args):
        if jax.config.jax_disable_jit:  # op by op, as jax.disable_jit() asks (the AOT path below refuses it)
            return self.jitted(*args)
        if self.executable is None:
            traced = self.jitted.trace(*args)
            options = compiler_options(traced.jaxpr.jaxpr, jax.default_backend())
            self.executable = traced.lower().compile(compiler_options=options)
        return self.executable(*args)


def _signature(tree):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return treedef, tuple((np.shape(l), str(jnp.result_type(l))) for l in leaves)


def _cached_program(cache_key, build):
    if cache_key is None:
        return build()
    if cache_key not in _PROGRAMS:
        if len(_PROGRAMS) >= _MAX_PROGRAMS:
            _PROGRAMS.pop(next(iter(_PROGRAMS)))
        _PROGRAMS[cache_key] = build()
    return _PROGRAMS[cache_key]


_REUSED: dict | None = None  # reusing_references(): check's memo key -> its references


@contextlib.contextmanager
def reusing_references():
    """Inside the block, a check that repeats a check made earlier in the block (same name,
    shapes, formulations and values of the points, cotangent and sampled elements) reuses
    that check's references -- the forward's output, autodiff and finite differences -- and
    computes only the hand-written backward and the comparison again.

    For sweeps that change backward code only, such as a mutation test of the backward
    functions (``tests/test_mutation.py``): the caller promises that the forward functions
    checked in the block compute what they did the first time; a check of a changed
    forward would be compared with stale references. A block inside another shares its memo.
    """
    global _REUSED
    saved = _REUSED
    _REUSED = {} if saved is None else saved
    try:
        yield
    finally:
        _REUSED = saved


def _digest(tree) -> str:
    """A hash of the values, shapes and dtypes of ``tree``'s leaves (PRNG keys by their data)."""
    h = hashlib.sha256()
    for leaf in jax.tree_util.tree_leaves(tree):
        if jnp.issubdtype(jnp.result_type(leaf), jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        a = np.asarray(leaf)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _references(program, memo, stacked, extra, dy, gidx) -> dict:
    """The references program's results (a new dict), from ``reusing_references``' memo when it holds them."""
    if memo is None:
        return program(stacked, extra, dy, gidx)
    if memo not in _REUSED:
        _REUSED[memo] = program(stacked, extra, dy, gidx)
    return dict(_REUSED[memo])


_NOT_TRACEABLE = (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError,
                  jax.errors.TracerBoolConversionError, jax.errors.TracerIntegerConversionError)


def _check_points(forward, backward, primals_list, points, *, extra=None, key=None, name="backward", fd=True,
                  max_fd=512, argnames=None, order=1, identity=None, forms=({},), outputs=None) -> Report:
    """The check of ``check_backward`` at several points of the same shapes, in one program.

    ``forward(extra, *primals)``, ``backward(extra, *primals, dy)``; ``primals_list`` holds
    one primals tuple per entry of ``points`` (their names). The rows come point by point,
    each point's first-order rows followed by its second-order ones. ``identity``: what
    makes ``forward`` and ``backward`` the same functions across calls (a cache key), or
    None when they are not. ``forms``: the formulations (``_program``); rows come formulation
    by formulation, tagged with it when there are several. ``outputs``: a list that receives
    the forward's output at every point (host arrays), computed by the same program."""
    if order not in (1, 2):
        raise ValueError(f"check_backward: order must be 1 or 2, got {order!r}")
    key = jax.random.key(0) if key is None else key
    with jax.enable_x64(True):
        primals_list = [_to64(tuple(p)) for p in primals_list]
        extra = _to64(extra)
        first = primals_list[0]
        argnames = argnames or [f"arg{i}" for i in range(len(first))]
        at_extra = lambda *p: forward(extra, *p)  # noqa: E731
        reference = primal_only(at_extra, *first)
        has_rules = reference is not at_extra
        reference_fn = (lambda e, *p: reference(*p)) if has_rules else forward
        stacked = jax.tree_util.tree_map(_stack, *primals_list)
        kdy, kfd, kv = draws.split(key, 3)
        y = jax.eval_shape(at_extra, *first)
        if not all(_is_diff(l) for l in jax.tree_util.tree_leaves(y)):
            y = jax.jit(at_extra)(*first)  # a non-float output is its own "cotangent"
        dy = _normal_like(kdy, y)
        plan = _diff_plan(first, max_fd) if fd else None
        gidx = _fd_indices(first, kfd, plan) if fd else None
        forms = tuple(forms)
        signature = (_signature(first), _signature(extra), _signature(dy), len(primals_list), plan,
                     autotune.forcing_state(), tuple(tuple(sorted(f.items())) for f in forms))
        cache_key = None if identity is None or has_rules else (identity, signature)
        memo = None if _REUSED is None else (name, signature, _digest((stacked, extra, dy, gidx)))
        manual = None
        try:
            references, manual_program = _cached_program(
                cache_key and (cache_key, True), lambda: _program(forward, backward, reference_fn, plan, True, forms))
            results = _references(references, memo, stacked, extra, dy, gidx)
            results["manual"] = manual_program(stacked, extra, dy)
        except _NOT_TRACEABLE:  # a backward that needs concrete values runs eagerly
            references, _ = _cached_program(
                cache_key and (cache_key, False), lambda: _program(forward, backward, reference_fn, plan, False, forms))
            results = _references(references, memo, stacked, extra, dy, gidx)
            results["manual"], manual = [], []
            for form in forms:
                with autotune.forcing(form):
                    manual.append([backward(extra, *p, dy) for p in primals_list])
        if outputs is not None:
            outputs += [jax.tree_util.tree_map(lambda a, k=k: np.asarray(a)[k], results["y"])
                        for k in range(len(primals_list))]
        rows = []
        for f, form in enumerate(forms):
            tag = ",".join(f"{op}={choice}" for op, choice in form.items()) if len(forms) > 1 else ""
            with autotune.forcing(form):
                form_rows = _point_rows(results, manual, f, points, primals_list, plan, gidx, fd, argnames,
                                        order, reference_fn, backward, extra, dy, kv)
            rows += [dataclasses.replace(r, formulation=tag) for r in form_rows] if tag else form_rows
    return Report(name, tuple(rows), TOL_AUTODIFF, TOL_FD)


def _point_rows(results, manual, f, points, primals_list, plan, gidx, fd, argnames, order, reference_fn,
                backward, extra, dy, kv):
    """The rows of formulation ``f`` of a ``_program``'s results, point by point."""
    rows = []
    for k, (point, primals) in enumerate(zip(points, primals_list)):
        def at(tree, k=k):
            return jax.tree_util.tree_map(lambda a: np.asarray(a)[k], tree)

        m = manual[f][k] if manual is not None else at(results["manual"][f])
        if not isinstance(m, (tuple, list)) or len(m) != len(primals):
            got = f"{type(m).__name__} of length {len(m)}" if isinstance(m, (tuple, list)) else type(m).__name__
            rows.append(Row("(all)", np.nan, np.nan, np.nan, np.nan, False,
                            f"backward must return a tuple of {len(primals)} gradients, got {got}", point))
            continue
        auto = at(results["auto"][0])
        fd_fn = None
        if fd:
            table, start = {}, 0
            central, right, left = (np.asarray(a)[k] for a in results["fd"]) if plan else ((), (), ())
            for (i, j, n, count), offset in zip(plan, _offsets(plan)):
                sl = slice(start, start + count)
                table[(i, j)] = (gidx[sl] - offset, central[sl], right[sl], left[sl])
                start += count

            def fd_fn(i, j, table=table):
                return table[(i, j)]
        host = jax.tree_util.tree_map(np.asarray, primals)
        point_rows = _compare(host, m, auto, argnames, _max_abs(auto), order=1, point=point, fd_fn=fd_fn)
        if order == 2 and all(r.ok for r in point_rows):
            point_rows += _second_order(lambda *p: reference_fn(extra, *p),
                                        lambda *a: backward(extra, *a), primals, dy, kv, argnames, point)
        rows += point_rows
    return rows


def _stack(*leaves):
    """The points' values of one leaf, stacked on a new leading axis (on the host: no program)."""
    if any(jnp.issubdtype(jnp.result_type(l), jax.dtypes.prng_key) for l in leaves):
        return jnp.stack(leaves)
    return np.stack([np.asarray(l) for l in leaves])


def _offsets(plan):
    offsets, off = [], 0
    for _, _, n, _ in plan:
        offsets.append(off)
        off += n
    return offsets


def _normal_like(key, tree):
    """Standard normal float64 leaves shaped like ``tree``'s float leaves (others kept):
    ``jax.random.normal`` of one key per leaf of ``jax.random.split(key, leaves)``."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keys = draws.split(key, max(len(leaves), 1))
    return jax.tree_util.tree_unflatten(treedef, [
        draws.normal(k, jnp.shape(l)) if _is_diff(l) else l for k, l in zip(keys, leaves)])


def _max_abs(tree):
    return max([float(np.max(np.abs(np.asarray(l)))) for l in jax.tree_util.tree_leaves(tree)
                if np.size(l) and _is_diff(l)] + [0.0])


def _compare(primals, manual, reference, argnames, scale, *, order, point, fd_fn=None, tol=TOL_AUTODIFF):
    """Rows comparing ``manual`` with ``reference`` (one gradient tree per primal)."""
    others = {}
    for i, p in enumerate(primals):
        for kp, leaf in jax.tree_util.tree_flatten_with_path(p)[0]:
            if _is_diff(leaf):
                others[argnames[i] + jax.tree_util.keystr(kp)] = leaf
    floor = max(1e-3 * scale, 1e-300)
    rows = []
    for i, (p, m, a) in enumerate(zip(primals, manual, reference)):
        p_paths = jax.tree_util.tree_flatten_with_path(p)[0]
        a_leaves = jax.tree_util.tree_leaves(a)
        m_paths = [] if m is None else jax.tree_util.tree_flatten_with_path(m)[0]
        m_map = {jax.tree_util.keystr(kp): v for kp, v in m_paths}
        expected = set()
        for j, ((kp, leaf), al) in enumerate(zip(p_paths, a_leaves)):
            if not _is_diff(leaf):
                continue
            key = jax.tree_util.keystr(kp)
            path = argnames[i] + key
            expected.add(key)

            def bad(problem, diagnosis=""):
                rows.append(Row(path, np.nan, np.nan, np.nan, np.nan, False, problem, point, order, diagnosis))

            if key not in m_map:
                bad("missing from backward")
                continue
            ml = jnp.asarray(m_map[key])
            if ml.shape != leaf.shape:
                bad(f"shape {ml.shape}, expected {leaf.shape}", diagnose(ml, al, tol=tol, floor=floor))
                continue
            ml, al = np.asarray(ml, np.float64), np.asarray(al, np.float64)
            abs_fd = rel_fd = np.nan
            kinks = np.zeros(ml.shape, bool)
            if fd_fn is not None:
                idx, fd_vals, right, left = (np.asarray(a) for a in fd_fn(i, j))
                at_kink = wrong_mask(right, left, KINK_TOL, floor)
                kinks.reshape(-1)[idx[at_kink]] = True
                if at_kink.all() and at_kink.size:
                    bad("autodiff and finite differences disagree at every element: not differentiable here")
                    continue
                abs_fd, rel_fd = _rel_error(ml.reshape(-1)[idx][~at_kink], fd_vals[~at_kink], scale)
            ml = np.where(kinks, al, ml)  # at a kink every one-sided derivative is right
            abs_ad, rel_ad = _rel_error(ml, al, scale)
            ok = rel_ad <= tol and (fd_fn is None or rel_fd <= TOL_FD)
            diagnosis = ""
            if not ok:
                if rel_ad > tol:
                    diagnosis = diagnose(ml, al, tol=tol, floor=floor, others=others)
                else:
                    diagnosis = ("agrees with autodiff but not with finite differences: a kink near the "
                                 "point, or a custom rule inside forward that is wrong")
            rows.append(Row(path, abs_ad, rel_ad, abs_fd, rel_fd, bool(ok), "", point, order, diagnosis,
                            int(kinks.sum())))
        for extra in sorted(set(m_map) - expected):
            rows.append(Row(argnames[i] + extra, np.nan, np.nan, np.nan, np.nan, False,
                            "not a differentiable leaf of the primal", point, order))
    return rows


def check_backward(forward: Callable[..., Any], backward: Callable[..., Any], *primals: Any,
                   key: jax.Array | None = None, name: str = "backward", fd: bool = True, max_fd: int = 512,
                   argnames: Sequence[str] | None = None, order: int = 1, point: str = "") -> Report:
    """Compare ``backward(*primals, dy)`` with autodiff and finite differences of ``forward``.

    ``forward(*primals) -> y`` (a pytree of arrays); ``backward(*primals, dy)`` returns a
    tuple of gradients, one per primal, each with that primal's structure (``None`` or
    an empty dict for a primal without float leaves). Integer leaves (labels) are not
    differentiated. ``order=2`` also checks the backward differentiated once more
    (module docstring). Returns a ``Report``; call ``.assert_ok()`` to raise on mismatch.
    """
    return _check_points(lambda extra, *p: forward(*p), lambda extra, *a: backward(*a), [primals], [point],
                         key=key, name=name, fd=fd, max_fd=max_fd, argnames=argnames, order=order,
                         identity=("function", forward, backward))


def _float_part(tree):
    return jax.tree_util.tree_map(lambda l: l if _is_diff(l) else None, tree)


def _second_order(forward, backward, primals, dy, key, argnames, point):
    """Rows comparing d/dp <backward(p, dy), v> with autodiff's Hessian-vector product."""
    v = _normal_like(key, primals)

    def inner(grads):
        total = 0.0
        for g, vi, p in zip(grads, v, primals):
            for gl, vl, pl in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(vi),
                                  jax.tree_util.tree_leaves(p)):
                if _is_diff(pl):
                    total = total + jnp.vdot(gl, vl)
        return total

    def manual_s(*p):
        return inner(backward(*p, dy))

    def auto_s(*p):
        return inner(jax.vjp(forward, *p)[1](dy))

    argnums = tuple(range(len(primals)))
    both = jax.jit(lambda *p: (jax.grad(manual_s, argnums=argnums, allow_int=True)(*p),
                               jax.grad(auto_s, argnums=argnums, allow_int=True)(*p)))
    with_manual, with_auto = jax.tree_util.tree_map(np.asarray, both(*primals))
    return _compare(primals, with_manual, with_auto, argnames, _max_abs(with_auto), order=2, point=point)


# ---- layers and losses ---------------------------------------------------------------

def _layer_fns(layer, train):
    """``forward(extra, params, x)`` and ``backward(extra, params, x, dy)`` of ``layer``, with
    ``extra = (state, key)``: the state and the key are arguments of the compiled check, so
    that one program serves every point and every call at the same shapes."""
    def forward(extra, params, x):
        state, key = extra
        return layer.forward(params, state, x, key=key, train=train)[0]

    def backward(extra, params, x, dy):
        state, key = extra
        _, _, cache = layer.forward(params, state, x, key=key, train=train)
        return layer.backward(params, cache, dy)

    return forward, backward


def _layer_identity(layer, train):
    return ("layer", layer.forward, layer.backward, bool(train))


def random_params(params: Any, key: jax.Array) -> Any:
    """Every float leaf moved away from its value: p + N(0, s^2), s = std(p), or 0.5
    for a leaf that is constant (gains of 1, biases of 0). The noise is
    ``jax.random.normal`` of one key per leaf, drawn in float64 (``funcnn.check.draws``).

    **Arguments:**

    - `params`: a pytree of arrays (integer leaves are left alone).
    - `key`: a JAX PRNG key.

    **Returns:**

    A pytree of `params`' structure, shapes and dtypes.
    """
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = draws.split(key, max(len(leaves), 1))
    out = []
    with jax.enable_x64(True):
        for k, leaf in zip(keys, leaves):
            if _is_diff(leaf) and np.size(leaf):
                a = np.asarray(leaf, np.float64)
                s = float(np.std(a))
                s = s if s > 1e-8 * max(float(np.max(np.abs(a))), 1.0) else 0.5
                leaf = jnp.asarray((a + s * draws.normal(k, a.shape)).astype(jnp.result_type(leaf)))
            out.append(leaf)
    return jax.tree_util.tree_unflatten(treedef, out)


def _initial(layer, key, input_shape):
    """``layer.init(key, input_shape)``, run eagerly: the built-in initialisers draw from a few
    programs shared by every check (``funcnn.core.prng``), where a compiled ``init`` compiles a
    threefry per parameter (``funcnn check`` of 18 cases in one process: 8 % less CPU, 2 runs)."""
    return layer.init(key, input_shape)


def _points(layer, input_shape, params, state, key, random):
    """[(point, params, state)]: the given values, or random and initial parameters."""
    k_init, k_rand = draws.split(key, 2)
    if params is not None:
        if state is None:
            state = _initial(layer, k_init, tuple(input_shape))[1]
        return [("given", _to64(params), _to64(state))]
    p0, s0 = _initial(layer, k_init, tuple(input_shape))
    p0, s0 = _to64(p0), _to64(s0 if state is None else state)
    has_float = any(_is_diff(l) and jnp.size(l) for l in jax.tree_util.tree_leaves(p0))
    points = [("random", random_params(p0, k_rand), s0)] if random and has_float else []
    return points + [("init", p0, s0)]


def formulations(layer: Layer, params: Any, state: Any, x: Any, key: jax.Array | None = None,
                 train: bool = True) -> list[dict[str, str]]:
    """The formulations ``layer`` can run at these shapes: one ``{op: candidate}`` per
    candidate of every autotuned computation with several (``funcnn.core.autotune``),
    found by tracing the forward once; ``[{}]`` when it has one.

    **Arguments:**

    - `layer`: a `Layer`; `params`, `state`: its values; `x`: a batch, shape `(N, ...)`.
    - `key`, `train`: as for the layer's forward.

    **Returns:**

    A list of dicts for ``autotune.forcing``, e.g. `[{"conv": "gemm/all"}, {"conv": "xla/all"}]`.
    """
    with autotune.recording() as seen:
        jax.eval_shape(lambda p, s, xx: layer.forward(p, s, xx, key=key, train=train)[0], params, state, x)
    found = [{op: name} for op, names in seen.items() if len(names) > 1 for name in names]
    return found or [{}]


def check_layer(layer: Layer, input_shape: Sequence[int], *, params: Any = None, state: Any = None,
                x: Any = None, key: jax.Array | None = None, batch: int = 3, train: bool = True,
                name: str | None = None, random: bool = True, every_formulation: bool = True,
                **kwargs: Any) -> Report:
    """Check a layer's ``backward`` (params and input), at random *and* initial params.

    ``params=``/``state=`` check at given values instead (``state`` alone replaces the
    initial state); ``random=False`` checks only at the initial params. ``key`` fixes
    the params, the input and any randomness inside the layer (dropout's mask). Inputs
    are standard normal, which puts ReLU's kink at 0 with probability 0. Other keyword
    arguments (``order=2``, ``fd``, ``max_fd``) go to ``check_backward``.

    A layer with several formulations of its computation (the autotuner's candidates: a
    convolution as GEMM or XLA, over the whole batch or in chunks; a recurrence unrolled
    1, 2 or 4 steps) is checked in each of them (``every_formulation=False``: only in the
    one the autotuner picks), its rows tagged with the formulation. The candidates depend
    on the shapes: chunks of 8 examples exist only for a batch above 8.
    """
    key = jax.random.key(0) if key is None else key
    k_init, k_x, k_layer, k_check = draws.split(key, 4)
    with jax.enable_x64(True):
        if x is None:
            x = draws.normal(k_x, (batch, *input_shape))
        points = _points(layer, input_shape, params, state, k_init, random)
        forward, backward = _layer_fns(layer, train)
        state0 = points[0][2]
        x = _to64(x)
        found = formulations(layer, points[0][1], state0, x, k_layer, train) if every_formulation else [{}]
        return _check_points(forward, backward, [(p, x) for _, p, _ in points], [pt for pt, _, _ in points],
                             extra=(state0, k_layer), key=k_check, name=name or layer.name,
                             argnames=["params", "x"], identity=_layer_identity(layer, train), forms=found, **kwargs)


def check_loss(loss: Loss, pred: jax.typing.ArrayLike | None = None, target: jax.typing.ArrayLike | None = None,
               *, key: jax.Array | None = None, name: str | None = None, shape: Sequence[int] | None = None,
               weights: jax.typing.ArrayLike | None = None, **kwargs: Any) -> Report:
    """Check a loss's ``grad`` at ``pred`` (the target is held fixed).

    ``pred`` and ``target`` default to random values away from special points: logits
    N(0, 1) scaled by 2 (never exactly 0), labels uniform over the classes, BCE targets
    in (0.1, 0.9); give ``shape`` (pred's shape) then. ``weights`` (softmax cross-entropy)
    is passed to both ``value`` and ``grad``.
    """
    key = jax.random.key(0) if key is None else key
    k_pred, k_target, k_check = draws.split(key, 3)
    with jax.enable_x64(True):
        if pred is None:
            if shape is None:
                raise ValueError("check_loss: give pred (and target) or shape, got neither")
            pred = 2.0 * draws.normal(k_pred, shape)
        if target is None:
            target = default_target(loss, jnp.shape(pred), k_target)
        target = _to64(target)
        extra = {} if weights is None else {"weights": _to64(weights)}

        def forward(p):
            return loss.value(p, target, **extra)

        def backward(p, dy):
            return (dy * loss.grad(p, target, **extra),)

        return check_backward(forward, backward, pred, key=k_check, name=name or loss.name,
                              argnames=["pred"], **kwargs)


def default_target(loss: Loss, pred_shape: Sequence[int], key: jax.Array) -> jax.Array:
    """A random target that fits ``loss`` for predictions of ``pred_shape``."""
    if loss.name in ("softmax_cross_entropy", "multiclass_hinge"):
        return jnp.asarray(draws.labels(key, pred_shape[:-1], pred_shape[-1]))
    if loss.name == "binary_cross_entropy":
        return jnp.asarray(0.5 + 0.4 * np.tanh(draws.normal(key, pred_shape)))  # in (0.1, 0.9)
    if loss.name == "gaussian_nll":
        return jnp.asarray(draws.normal(key, (pred_shape[0], pred_shape[1] // 2)))
    return jnp.asarray(draws.normal(key, pred_shape))
