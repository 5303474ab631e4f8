"""Validation that also works inside ``jit``, built on ``jax.experimental.checkify``.

Outside ``jit`` the losses check their targets eagerly (the values are concrete) and
raise a one-line ``ValueError``. Inside ``jit`` the values are tracers: nothing can be
inspected while tracing, so those checks are skipped -- unless the function is wrapped
with ``checked``::

    step = funcnn.check.debug.checked(train_step)   # pass the function un-jitted: checked jits it
    step(params, state, x, y)   # ValueError: softmax_cross_entropy: labels must lie in [0, C) ...

``checked(fn)`` traces ``fn`` with the library's target checks turned on (each becomes
a ``checkify.check`` in the compiled program), adds checkify's NaN/Inf and
division-by-zero checks when ``finite=True``, compiles it with ``jax.jit``, runs it,
and raises the first failure as a ``ValueError`` naming the check. Pass ``fn``
un-jitted: a function already traced by its own ``jax.jit`` may reuse a trace made
without the checks. It costs a little run time, so it is a debugging
tool: wrap a step while hunting a bad batch, drop the wrapper for speed.

``first_nonfinite(model, params, state, x, y, loss)`` (``funcnn/check/nonfinite.py``) runs one
forward and backward pass layer by layer and names the first non-finite value: ``fit``'s
guard (``funcnn.training.fit.NonFiniteError``) says which step went wrong, this says which layer.
"""
from __future__ import annotations

import contextlib
import functools
import threading
from typing import TYPE_CHECKING, Any, Callable, Sequence

from funcnn.check.nonfinite import first_nonfinite  # noqa: F401  (re-exported)

if TYPE_CHECKING:
    import jax

_local = threading.local()


def enabled() -> bool:
    """True while ``checked`` is tracing: traced checks should emit ``checkify.check``."""
    return getattr(_local, "depth", 0) > 0


@contextlib.contextmanager
def _tracing_checks():
    _local.depth = getattr(_local, "depth", 0) + 1
    try:
        yield
    finally:
        _local.depth -= 1


def require(ok: jax.Array | bool, message: str) -> None:
    """Inside ``checked``, assert the traced boolean ``ok`` (all elements) at run time."""
    if enabled():
        import jax.numpy as jnp
        from jax.experimental import checkify

        checkify.check(jnp.all(ok), message)


def checked(fn: Callable[..., Any], *, finite: bool = True,
            static_argnames: str | Sequence[str] = ()) -> Callable[..., Any]:
    """``fn`` jitted with the library's target checks (and NaN/Inf checks if ``finite``).

    Returns a function with ``fn``'s signature and outputs that raises ``ValueError``
    with the failed check's message instead of returning wrong numbers.
    ``static_argnames`` is passed to ``jax.jit`` (e.g. ``("train",)``).
    """
    import jax
    from jax.experimental import checkify

    errors = checkify.user_checks | (checkify.float_checks if finite else frozenset())

    @functools.wraps(fn)
    def traced(*args, **kwargs):
        with _tracing_checks():
            return fn(*args, **kwargs)

    checkified = jax.jit(checkify.checkify(traced, errors=errors), static_argnames=static_argnames)

    @functools.wraps(fn)
    def run(*args, **kwargs):
        err, out = checkified(*args, **kwargs)
        msg = err.get()
        if msg is not None:
            raise ValueError(msg.splitlines()[0])
        return out

    return run
