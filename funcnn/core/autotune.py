"""Measured choice between formulations of the same computation (cuDNN's benchmark mode, for funcnn).

Where a computation has several formulations that agree up to float rounding (a
convolution as im2col + GEMM or as XLA's convolution, over the whole batch or in
chunks; an epoch as one ``lax.scan`` or as a compiled step per batch), the fastest one
depends on the shapes, the backend, the CPU and the library versions, so a constant
tuned on one machine does not hold on another. ``choose`` picks one the first time a
shape is traced:

0. forced in code: inside ``with forcing({"conv": "gemm/8"})`` that candidate, wherever it is
   one of the candidates (how ``funcnn.check.check_layer`` checks every formulation);
   ``recording()`` lists the candidate sets offered (the formulations a computation has);
1. forced: the caller's ``impl=`` or the environment, ``FUNCNN_IMPL="conv:xla,fit:step"``
   (``op:prefix`` pairs; a prefix keeps the candidates whose name starts with it);
2. remembered: the first choice made for ``(op, key)`` in this process (so the choice is
   deterministic within a process), or, when ``FUNCNN_AUTOTUNE_CACHE`` names a folder
   (``1`` = the user's cache folder, ``~/.cache/funcnn``), one stored there in a file
   keyed by the machine and the versions of jax, jaxlib and funcnn;
3. not worth measuring: ``FUNCNN_AUTOTUNE=0``, a single candidate, or ``work`` (the
   caller's FLOP estimate) below ``MIN_WORK``: the caller's ``fallback`` rule;
4. measured: every candidate is compiled on its own (``jax.jit``) on concrete dummy
   inputs of the traced shapes, called once (compile time, reported apart), then timed
   in interleaved rounds with ``block_until_ready``; the smallest time wins (the fastest
   round of each: other work on the machine only ever adds time, so the minimum is the
   most load-independent estimate of a candidate's cost).

Measurement runs under ``jax.ensure_compile_time_eval`` so it also works while an
enclosing ``jit``/``grad``/``vmap`` is tracing: the traced program only sees the name
that was chosen. Every decision is recorded (``decisions()``) with its source and times.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import time
from pathlib import Path
from typing import Any, Callable, Hashable, Iterator, Sequence

import jax
import numpy as np

from funcnn.core.machine import machine, versions

MIN_WORK = 2e7  # FLOPs: below this (~0.2 ms on one core) measuring costs more than any choice saves
ROUNDS = 7
BUDGET_S = 1.5  # stop timing after this many seconds (at least MIN_ROUNDS rounds)
MIN_ROUNDS = 3

_MEMORY: dict = {}  # (op, key) -> name: the process's first choice
_DECISIONS: dict = {}  # (op, key) -> {"choice", "source", "times_ms", "compile_ms"}
_FORCING: list = []  # stack of {op: candidate name}, innermost last
_RECORDING: list = []  # stack of {op: [candidate names, ...]}


@contextlib.contextmanager
def forcing(choices: dict[str, str]) -> Iterator[None]:
    """Inside the ``with`` block, ``choose(op, ...)`` returns ``choices[op]`` wherever that name
    is one of its candidates (after ``impl=`` and ``FUNCNN_IMPL`` have narrowed them), ahead of
    anything measured or remembered, and remembers nothing.

    **Arguments:**

    - `choices`: `{op: candidate name}`, e.g. `{"conv": "gemm/8", "recurrent": "unroll2"}`.

    **Returns:**

    A context manager; nested ones override the outer for the ops they name.
    """
    if not isinstance(choices, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                for k, v in choices.items()):
        raise ValueError(f"autotune.forcing: choices must be a dict of op name -> candidate name, got {choices!r}")
    _FORCING.append(dict(choices))
    try:
        yield
    finally:
        _FORCING.pop()


@contextlib.contextmanager
def recording() -> Iterator[dict[str, list[str]]]:
    """Record the candidates every ``choose`` call inside the ``with`` block offers.

    **Returns:**

    A context manager yielding a dict `{op: [candidate name, ...]}`, filled as choices are
    made: every name offered for that op, in the order first offered.
    """
    seen: dict = {}
    _RECORDING.append(seen)
    try:
        yield seen
    finally:
        _RECORDING.remove(seen)


def forcing_state() -> tuple:
    """The choices forced by the active ``forcing`` blocks, as a sorted tuple of (op, name)
    (part of the identity of a program compiled under them)."""
    merged: dict = {}
    for choices in _FORCING:
        merged.update(choices)
    return tuple(sorted(merged.items()))


def forced(op: str) -> str | None:
    """The prefix ``FUNCNN_IMPL`` forces for ``op`` (``"conv:xla,fit:step"``), or None."""
    spec = os.environ.get("FUNCNN_IMPL", "")
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, sep, prefix = item.partition(":")
        if not sep or not prefix:
            raise ValueError(f"FUNCNN_IMPL: expected comma-separated op:impl pairs (e.g. conv:xla), got {spec!r}")
        if name.strip() == op:
            return prefix.strip()
    return None


def enabled() -> bool:
    """False when ``FUNCNN_AUTOTUNE=0``: no measurement, every choice is the caller's fallback."""
    return os.environ.get("FUNCNN_AUTOTUNE", "1").strip().lower() not in ("0", "false", "off", "no")


def fingerprint() -> str:
    """The machine and versions a stored choice is valid for."""
    v = versions(("jax", "jaxlib", "funcnn"))
    return f"{machine()}, {len(jax.devices())} devices; " + ", ".join(f"{k} {v[k]}" for k in ("jax", "jaxlib", "funcnn"))


def cache_file() -> Path | None:
    """The on-disk cache for this machine and versions, or None (``FUNCNN_AUTOTUNE_CACHE`` unset)."""
    folder = os.environ.get("FUNCNN_AUTOTUNE_CACHE", "").strip()
    if not folder or folder == "0":
        return None
    if folder == "1":
        folder = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "funcnn"
    digest = hashlib.sha256(fingerprint().encode()).hexdigest()[:16]
    return Path(folder) / f"autotune-{digest}.json"


def _disk_load(path: Path) -> dict:
    try:
        return json.loads(path.read_text()).get("choices", {})
    except (OSError, ValueError):
        return {}


def _disk_store(path: Path, op: str, key: str, name: str) -> None:
    choices = _disk_load(path)
    choices[f"{op}|{key}"] = name
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"fingerprint": fingerprint(), "choices": choices}, indent=1, sort_keys=True))
    os.replace(tmp, path)  # atomic: concurrent processes never read half a file


def measure(candidates: dict[str, Callable[..., Any]], args: tuple, *, rounds: int = ROUNDS,
            budget_s: float = BUDGET_S, jit: bool = True) -> tuple[dict[str, float], dict[str, float]]:
    """Compile each candidate ``f(*args)`` alone (``jit=False``: ``f`` compiles itself on its
    first call), then time the candidates in interleaved rounds.

    Returns ``(fastest round's seconds, compile seconds)``, two dicts keyed like ``candidates``.
    """
    compiled, compile_s = {}, {}
    for name, f in candidates.items():
        t0 = time.perf_counter()
        compiled[name] = jax.jit(f).lower(*args).compile() if jit else f
        jax.block_until_ready(compiled[name](*args))  # first call: allocations, thread pools
        compile_s[name] = time.perf_counter() - t0
    times = time_rounds(compiled, args, rounds=rounds, budget_s=budget_s)
    return {name: float(np.min(t)) for name, t in times.items()}, compile_s


def time_rounds(calls: dict, args: tuple = (), *, rounds: int, budget_s: float = float("inf"),
                min_rounds: int = MIN_ROUNDS, seed: int = 0) -> dict:
    """Seconds per call of every ``f(*args)`` in ``calls``, in interleaved rounds: each round
    calls every entry once, in a fresh random order (so drifts in load hit all alike), and
    blocks on the result before reading the clock. Stops after ``rounds`` rounds, or once
    ``budget_s`` has passed after ``min_rounds``. Returns ``{name: [seconds, ...]}``."""
    times = {name: [] for name in calls}
    order = list(calls)
    rng = random.Random(seed)
    start = time.perf_counter()
    for r in range(rounds):
        rng.shuffle(order)
        for name in order:
            t0 = time.perf_counter()
            jax.block_until_ready(calls[name](*args))
            times[name].append(time.perf_counter() - t0)
        if r + 1 >= min_rounds and time.perf_counter() - start > budget_s:
            break
    return times


def dummy(shape: Sequence[int], dtype: jax.typing.DTypeLike, seed: int = 0) -> jax.Array:
    """A concrete standard-normal array of ``shape`` and ``dtype`` (a stand-in for a traced value)."""
    return jax.numpy.asarray(np.random.default_rng(seed).standard_normal(shape), dtype)


def choose(op: str, key: Hashable, candidates: dict[str, Callable[..., Any]], args: Callable[[], tuple], *,
           fallback: str,
           impl: str | None = None, work: float | Callable[[], float] | None = None, jit: bool = True) -> str:
    """The name of the candidate to use for ``op`` at ``key`` (see the module docstring).

    ``candidates``: ``{name: f}`` with ``f(*args())`` one run of that formulation;
    ``args``: builds concrete dummy inputs (only called when measuring); ``fallback``:
    the name used when not measuring; ``impl``: a forced name (exact) or name prefix;
    ``work``: FLOPs of one run, or a function returning them, called only when they decide
    (None: always worth measuring); ``jit=False``: the
    candidates are already compiled callables (e.g. a Python loop of jitted steps). ``key`` must be hashable
    and have a stable ``repr`` (it names the choice on disk).
    """
    prefix = impl if impl is not None else forced(op)
    if prefix is not None:
        kept = ({prefix: candidates[prefix]} if prefix in candidates
                else {n: f for n, f in candidates.items() if n.startswith(prefix)})
        if not kept:
            raise ValueError(f"autotune.choose: no {op} formulation matches {prefix!r}; "
                             f"candidates are {sorted(candidates)}")
        candidates = kept
        if fallback not in candidates:
            fallback = next(iter(candidates))
    for seen in _RECORDING:
        names = seen.setdefault(op, [])
        names += [n for n in candidates if n not in names]
    wanted = dict(forcing_state()).get(op)
    if wanted in candidates:
        return wanted
    if _RECORDING:  # only looking: neither measure nor remember
        return fallback
    memo = (op, key, tuple(candidates))
    if memo in _MEMORY:
        return _MEMORY[memo]
    source, times, compile_s = "fallback", {}, {}
    path = cache_file() if len(candidates) > 1 else None
    stored = _disk_load(path).get(f"{op}|{key!r}") if path else None
    if len(candidates) == 1:
        name, source = next(iter(candidates)), "forced" if prefix is not None else "only"
    elif stored in candidates:
        name, source = stored, "disk"
    elif not enabled() or (work is not None and (work() if callable(work) else work) < MIN_WORK):
        name, source = fallback, "fallback"
    else:
        with jax.ensure_compile_time_eval():
            times, compile_s = measure(candidates, args(), jit=jit)
        name, source = min(times, key=times.get), "measured"
        if path:
            _disk_store(path, op, repr(key), name)
    _MEMORY[memo] = name
    _DECISIONS[memo] = {"op": op, "key": repr(key), "choice": name, "source": source,
                        "times_ms": {n: 1e3 * t for n, t in times.items()},
                        "compile_ms": {n: 1e3 * t for n, t in compile_s.items()}}
    return name


def decisions() -> list:
    """Every choice made in this process, in order: dicts with op, key, choice, source
    ("measured", "disk", "forced", "only" or "fallback"), times_ms and compile_ms."""
    return list(_DECISIONS.values())


def clear() -> None:
    """Forget this process's choices (the next trace of each shape chooses again)."""
    _MEMORY.clear()
    _DECISIONS.clear()
