"""The checker's own coverage, proven by mutation of the built-in backward code.

Every function of the layer modules (``funcnn/layers/``, ``funcnn/core/combinators.py``,
``funcnn/core/layer.py``) whose name says it computes a gradient (it contains
"backward", "reverse" or "grad"; nested closures such as a factory's ``backward``
included) is found with ``ast`` on the source text, so renames and moves of the layer
code are followed. Each mutant changes one node of such a function:

* sign:      ``-a -> a``, ``a - b -> a + b``
* operator:  ``a + b -> a - b``, ``a * b -> a / b``, ``a / b -> a * b``
* drop term: ``a + b -> a``, ``a - b -> a``, ``a * b -> a``, ``_add(a, b) -> a``,
  ``reduce(add, terms) -> terms[0]``
* order:     ``reversed(x) -> x`` (counted with the operators)
* transpose: ``x.T -> x``, ``swapaxes(x, ...)``/``transpose(x, ...) -> x``
* constant:  an int ``c -> c + 1``, a float ``c -> 2 c`` (``0.0 -> 1.0``)

and is installed by replacing the code object of the module-level function that holds
it (so every reference to it, ``funcnn.Dense`` included, runs the mutant). Which
catalog cases (``funcnn.check.catalog``) run the mutated function is found by tracing
every case's backward in every formulation under ``sys.setprofile``. A mutant is then

* flagged:    a catalog case's ``check_layer`` fails;
* raised:     the check raised (a shape or type error: loud, not silent);
* equivalent: no check fails and the mutant's backward returns exactly what the
  original returns at every point and formulation of every case that runs it, so no
  check could tell them apart (listed with the mutation);
* missed:     no check fails but the numbers differ -- a hole in the checker: the test fails;
* unreached:  no catalog case runs the function -- a hole in the catalog: the test fails.

Every mutant is run, a chunk of one module's mutants per test (``slow``: the GRU's 48 mutants
take ~30 s of one core). Checks run without finite differences
(``fd=False``): a backward that disagrees with autodiff is flagged by it.

The checks run op by op (``jax.disable_jit()``, which the checker honours): the same Python,
draws and comparisons as a compiled check, each primitive's kernel compiled once for every
mutant, where compiling each mutant's whole program would be most of the sweep (the GRU's 48
mutants: 83 s compiled, 28 s op by op, the same outcomes). A case is checked first in the
formulation the autotuner picks alone, then in all of them unless that flagged it. Each
check computes its case's references (the forward's output and autodiff) once per worker
(``funcnn.check.core.reusing_references``), which is sound because no mutated function runs
in a forward (asserted: the forwards are traced too); only the mutated backward and the
comparison run again (the whole sweep in one process: 153 s -> 141 s, GRU's and LSTM's
flagged mutants ~40 % faster, the same outcomes: 241 flagged, 79 raised, 14 equivalent).
"""
from __future__ import annotations

import ast
import contextlib
import copy
import dataclasses
import functools
import importlib
import inspect
import pkgutil
import sys
import types
from pathlib import Path

import jax
import numpy as np
import pytest

import funcnn.layers
from funcnn.check import catalog, core
from funcnn.check.core import _layer_fns, _normal_like, _points, _to64, draws, formulations
from funcnn.core import autotune

NAME_PARTS = ("backward", "reverse", "grad")


def layer_modules() -> list[types.ModuleType]:
    names = sorted(m.name for m in pkgutil.walk_packages(funcnn.layers.__path__, "funcnn.layers."))
    return [importlib.import_module(n) for n in names] + [importlib.import_module("funcnn.core.combinators"),
                                                         importlib.import_module("funcnn.core.layer")]


# ---- finding the backward functions and their mutants -----------------------------------

def _is_gradient_code(name: str) -> bool:
    return any(part in name.lower() for part in NAME_PARTS)


def _children(node):
    for field, value in ast.iter_fields(node):
        if isinstance(value, list):
            for i, v in enumerate(value):
                if isinstance(v, ast.AST):
                    yield (field, i), v
        elif isinstance(value, ast.AST):
            yield (field, None), value


def _get(node, path):
    for field, i in path:
        node = getattr(node, field) if i is None else getattr(node, field)[i]
    return node


def _set(node, path, new):
    parent = _get(node, path[:-1])
    field, i = path[-1]
    if i is None:
        setattr(parent, field, new)
    else:
        getattr(parent, field)[i] = new


def _replacements(node):
    """[(kind, new node)] for one AST node."""
    out = []
    if isinstance(node, ast.BinOp):
        op = type(node.op)
        if op is ast.Add:
            out += [("operator", ast.BinOp(node.left, ast.Sub(), node.right)), ("drop term", node.left)]
        elif op is ast.Sub:
            out += [("sign", ast.BinOp(node.left, ast.Add(), node.right)), ("drop term", node.left)]
        elif op is ast.Mult:
            out += [("operator", ast.BinOp(node.left, ast.Div(), node.right)), ("drop term", node.left)]
        elif op is ast.Div:
            out += [("operator", ast.BinOp(node.left, ast.Mult(), node.right))]
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        out.append(("sign", node.operand))
    elif isinstance(node, ast.Attribute) and node.attr == "T" and isinstance(node.ctx, ast.Load):
        out.append(("transpose", node.value))
    elif isinstance(node, ast.Call) and node.args:
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if "add" in name.lower() and len(node.args) >= 2:  # _add(dy, dx) -> dy
            out.append(("drop term", node.args[0]))
        elif name == "reduce" and len(node.args) >= 2:  # reduce(add, terms) -> terms[0]
            out.append(("drop term", ast.Subscript(node.args[1], ast.Constant(0), ast.Load())))
        elif name == "reversed":  # the chain rule walked in the wrong order
            out.append(("operator", node.args[0]))
        if name in ("swapaxes", "transpose"):
            base = node.args[0] if isinstance(func, ast.Name) or getattr(func.value, "id", "") in ("jnp", "np", "lax") \
                else func.value
            out.append(("transpose", base))
    elif isinstance(node, ast.Constant) and type(node.value) in (int, float):
        new = node.value + 1 if type(node.value) is int else (2 * node.value if node.value else 1.0)
        out.append(("constant", ast.Constant(new)))
    return out


@dataclasses.dataclass(frozen=True)
class Mutant:
    module: str
    top: str  # the module-level function whose code object is replaced
    qualname: str  # the innermost function holding the node (what must run)
    path: tuple  # from the module-level function's FunctionDef to the node
    kind: str
    text: str
    line: int

    def __str__(self) -> str:
        return f"{self.module.rsplit('.', 1)[-1]}.py:{self.line} {self.qualname}: {self.kind}: {self.text}"


def _qual(stack):
    return ".<locals>.".join(stack)


def find_mutants(module) -> tuple[list, list]:
    """(functions found as "module:qualname", mutants) of one module, in source order."""
    tree = ast.parse(Path(module.__file__).read_text())
    found, mutants = [], []
    for top in tree.body:
        if not isinstance(top, ast.FunctionDef):
            continue

        def walk(node, path, stack, inside):
            is_def = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            if is_def:
                stack = stack + [node.name]
                if not inside and _is_gradient_code(node.name):
                    inside = True
                    found.append(f"{module.__name__}:{_qual(stack)}")
            if inside and not is_def and not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)):
                for kind, new in _replacements(node):
                    text = f"{ast.unparse(node)} -> {ast.unparse(new)}"
                    mutants.append(Mutant(module.__name__, top.name, _qual(stack), path, kind,
                                          text if len(text) <= 90 else text[:87] + "...", node.lineno))
            for step, child in _children(node):
                if is_def and step[0] in ("args", "decorator_list", "returns"):
                    continue  # default values and annotations are not the gradient's code
                walk(child, path + (step,), stack, inside)

        walk(top, (), [], False)
    return found, mutants


# Gradient code that no layer runs, so no check of a layer can reach it; listed with where it is
# checked instead.
REFERENCE_ONLY = {
    ("funcnn.layers.batchnorm", "batchnorm_backward_staged"):
        "CS231n's node-by-node derivation, which no layer runs: tests/test_batchnorm.py checks it "
        "against the closed form and tests/test_layer_functions.py against autodiff",
}


def all_mutants():
    functions, mutants = [], []
    for module in layer_modules():
        f, m = find_mutants(module)
        functions += f
        mutants += [x for x in m if (x.module, x.top) not in REFERENCE_ONLY]
    return functions, mutants


@contextlib.contextmanager
def installed(mutant: Mutant):
    """The module's function ``mutant.top`` runs the mutated code inside the block."""
    module = sys.modules[mutant.module]
    tree = ast.parse(Path(module.__file__).read_text())
    top = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == mutant.top)
    node = _get(top, mutant.path)
    new = dict(_replacements(node))[mutant.kind]  # one replacement of each kind per node
    _set(top, mutant.path, copy.deepcopy(new))
    ast.fix_missing_locations(tree)
    code = compile(tree, module.__file__, "exec")
    new_code = next(c for c in code.co_consts if isinstance(c, types.CodeType) and c.co_name == mutant.top)
    fn = inspect.unwrap(getattr(module, mutant.top))
    old = fn.__code__
    fn.__code__ = new_code
    core._PROGRAMS.clear()  # a program compiled from the original code must not be reused
    try:
        yield
    finally:
        fn.__code__ = old
        core._PROGRAMS.clear()


# ---- which cases run which function ----------------------------------------------------

def _case_inputs(case):
    """What check_layer checks for a catalog case: (layer fns, [(params, x)], extra, forms)."""
    layer = case.make()
    opts = dict(case.options)
    k_init, k_x, k_layer, _ = draws.split(jax.random.key(0), 4)
    with jax.enable_x64(True):
        x = opts.get("x")
        x = draws.normal(k_x, (opts.get("batch", 3), *case.input_shape)) if x is None else x
        x = _to64(x)
        points = _points(layer, case.input_shape, None, None, k_init, True)
        train = opts.get("train", True)
        forms = formulations(layer, points[0][1], points[0][2], x, k_layer, train)
    fns = _layer_fns(layer, train)
    return fns, [(p, x) for _, p, _ in points], (points[0][2], k_layer), forms


def _shapes_only(tree):
    """ShapeDtypeStructs of ``tree``, float leaves as float64 (the checker's precision)."""
    def spec(leaf):
        dtype = jax.numpy.result_type(leaf)
        return jax.ShapeDtypeStruct(np.shape(leaf), np.float64 if jax.numpy.issubdtype(dtype, np.floating) else dtype)
    return jax.tree_util.tree_map(spec, tree)


def coverage() -> tuple[dict, set]:
    """(case name -> set of (file, qualname) of the Python functions its backward runs, in any
    formulation; the set of those its forward runs, over every case), traced on shapes only:
    nothing is compiled."""
    out, forwards = {}, set()
    for case in catalog.LAYER_CASES:
        layer = case.make()
        opts = dict(case.options)
        train = opts.get("train", True)
        k_layer = jax.random.key(2)
        forward, backward = _layer_fns(layer, train)
        seen = set()

        def profile(frame, event, arg):
            if event == "call":
                seen.add((frame.f_code.co_filename, frame.f_code.co_qualname))

        def forward_profile(frame, event, arg):
            if event == "call":
                forwards.add((frame.f_code.co_filename, frame.f_code.co_qualname))

        with jax.enable_x64(True):
            params, state = jax.eval_shape(lambda k: layer.init(k, tuple(case.input_shape)), k_layer)
            params, state = _shapes_only(params), _shapes_only(state)
            x = opts.get("x")
            x = _shapes_only(jax.ShapeDtypeStruct((opts.get("batch", 3), *case.input_shape), np.float64)
                             if x is None else x)
            for form in formulations(layer, params, state, x, k_layer, train):
                with autotune.forcing(form):
                    sys.setprofile(forward_profile)
                    try:
                        y = jax.eval_shape(lambda p, s, xx: forward((s, k_layer), p, xx), params, state, x)
                    finally:
                        sys.setprofile(None)
                    sys.setprofile(profile)
                    try:
                        jax.eval_shape(lambda p, s, xx, d: backward((s, k_layer), p, xx, d), params, state, x, y)
                    finally:
                        sys.setprofile(None)
        out[case.name] = seen
    return out, forwards


def _outputs(case):
    """The backward's outputs at every point and formulation of ``case`` (float64, host)."""
    (forward, backward), prims, extra, forms = _case_inputs(case)
    outs = []
    with jax.enable_x64(True):
        for form in forms:
            with autotune.forcing(form):
                run = jax.jit(lambda pp, xx, d: backward(extra, pp, xx, d))
                for p, x in prims:
                    y = jax.eval_shape(lambda pp, xx: forward(extra, pp, xx), p, x)
                    dy = _normal_like(jax.random.key(5), y)
                    outs.append(jax.tree_util.tree_map(np.asarray, run(p, x, dy)))
    return outs


def _same(a, b) -> bool:
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    if jax.tree_util.tree_structure(a) != jax.tree_util.tree_structure(b):
        return False
    return all(np.shape(x) == np.shape(y) and np.allclose(x, y, rtol=1e-12, atol=0, equal_nan=True)
               for x, y in zip(la, lb))


# ---- the sweep -----------------------------------------------------------------------------

def _flagging_check(case):
    """The catalog case's ``check_layer`` (no finite differences), first in the formulation the
    autotuner picks alone (one formulation to run), then, unless that flags it, in every
    formulation: a row that fails in the first fails in the second, which holds it."""
    report = catalog.run_layer_case(case, fd=False, every_formulation=False)
    return report if not report.ok else catalog.run_layer_case(case, fd=False)


@functools.lru_cache(maxsize=None)
def _original_outputs(name):
    """``_outputs`` of the catalog case ``name`` with no mutant installed (call it outside ``installed``)."""
    return _outputs({c.name: c for c in catalog.LAYER_CASES}[name])


def run_mutants(mutants, cov):
    """{outcome: [(mutant, detail)]}; outcomes flagged, raised, equivalent, missed, unreached."""
    cases = {c.name: c for c in catalog.LAYER_CASES}
    result = {k: [] for k in ("flagged", "raised", "equivalent", "missed", "unreached")}
    for m in mutants:
        file = sys.modules[m.module].__file__
        reach = [name for name, seen in cov.items() if (file, m.qualname) in seen]
        if not reach:
            result["unreached"].append((m, ""))
            continue
        reach.sort(key=lambda n: (len(cov[n]), n))  # the smallest case first
        outcome, detail = None, ""
        with installed(m):
            for name in reach:
                try:
                    report = _flagging_check(cases[name])
                except Exception as e:  # noqa: BLE001 -- a mutant may break shapes or types
                    outcome, detail = "raised", f"{name}: {type(e).__name__}"
                    break
                if not report.ok:
                    outcome, detail = "flagged", name
                    break
            if outcome is None:
                mutated = {name: _outputs(cases[name]) for name in reach}
        if outcome is None:
            changed = [name for name in reach if not all(_same(a, b) for a, b in
                                                         zip(_original_outputs(name), mutated[name]))]
            outcome = "missed" if changed else "equivalent"
            detail = ", ".join(changed) if changed else "same output in " + ", ".join(reach)
        result[outcome].append((m, detail))
    return result


def _summary(functions, result) -> str:
    lines = [f"{len(functions)} gradient functions found: " + ", ".join(f.split(":", 1)[1] for f in functions)]
    lines.append(", ".join(f"{k} {len(v)}" for k, v in result.items()))
    for outcome in ("equivalent", "missed", "unreached"):
        for m, detail in result[outcome]:
            lines.append(f"  {outcome}: {m}  [{detail}]")
    return "\n".join(lines)


@pytest.fixture(scope="module", autouse=True)
def _references_once_per_worker():
    """Every chunk of the sweep a worker runs shares one memo of references (see ``_sweep``)."""
    with core.reusing_references():
        yield


@functools.lru_cache(maxsize=1)
def _coverage() -> tuple[dict, set]:
    return coverage()  # once per process: it traces every catalog case


def _sweep(select):
    functions, mutants = all_mutants()
    assert len(functions) >= 20, f"too few gradient functions found: {functions}"
    cov, forwards = _coverage()
    selected = select(mutants)
    # The checks reuse each case's references (forward, autodiff) across mutants, which is
    # sound only while no mutant runs in a forward: none may.
    in_forward = [m for m in selected if (sys.modules[m.module].__file__, m.qualname) in forwards]
    assert not in_forward, "gradient code that a forward runs: " + ", ".join(map(str, in_forward))
    # op by op: a mutant costs its arithmetic, not a compile; each case's references computed once
    with jax.disable_jit(), core.reusing_references():
        result = run_mutants(selected, cov)
    summary = _summary(functions, result)
    print(summary)
    assert not result["missed"], "mutants that change the numbers passed the checker:\n" + summary
    assert not result["unreached"], "gradient code no catalog case runs:\n" + summary
    return result


def _without_mutants(functions, mutants):
    """The functions with no node to mutate (e.g. ``Flatten``'s ``dy.reshape(shape)``)."""
    with_mutants = {(m.module, m.qualname) for m in mutants}
    return [f for f in functions
            if not any(mm == f.split(":", 1)[0] and (q == f.split(":", 1)[1] or q.startswith(f.split(":", 1)[1] + "."))
                       for mm, q in with_mutants)]


def test_gradient_functions_are_found_in_every_layer_module():
    functions, mutants = all_mutants()
    print("found:", *functions, "nothing to mutate in:", *_without_mutants(functions, mutants), sep="\n  ")
    modules = {f.split(":", 1)[0] for f in functions}
    for module in layer_modules():
        source = Path(module.__file__).read_text()
        if "def backward" in source or "_backward(" in source:
            assert module.__name__ in modules, module.__name__
    # Nothing to mutate: the factories' backward closures, which only call the named math
    # functions (where the mutants are), and pure routing (Flatten's reshape, parallel's
    # dispatch, fan_in_sum's copies). Every other gradient function has mutants.
    # Dense's grads_of only builds the dict; rnn_cell_backward's own arithmetic is one product
    # (no mutant kind rewrites `@`; the activation's backward it calls is mutated in activations).
    routing = {"flatten_backward", "identity_backward", "parallel.<locals>.backward", "fan_in_sum.<locals>.backward",
               "Flatten.<locals>.backward", "grads_of", "rnn_cell_backward", "_cell.<locals>.reverse_scan"}
    bare = [f for f in _without_mutants(functions, mutants)
            if f.split(":", 1)[1] not in routing and (f.split(":", 1)[0], f.split(":", 1)[1]) not in REFERENCE_ONLY]
    assert all(f.endswith("<locals>.backward") for f in bare), bare


SWEEP_CHUNK = 12  # mutants per test of the full sweep: pytest-xdist shares the chunks out evenly


def _sweep_chunks() -> list[tuple[str, int]]:
    """(module, first mutant's index in that module) of every chunk of the full sweep."""
    counts: dict = {}
    for m in all_mutants()[1]:
        counts[m.module] = counts.get(m.module, 0) + 1
    return [(module, start) for module, n in sorted(counts.items()) for start in range(0, n, SWEEP_CHUNK)]


@pytest.mark.slow
@pytest.mark.parametrize("module,start", _sweep_chunks(), ids=lambda v: str(v).rsplit(".", 1)[-1])
def test_every_mutant_is_flagged_or_equivalent(module, start):
    _sweep(lambda ms: [m for m in ms if m.module == module][start:start + SWEEP_CHUNK])
