"""Ctrl-C and SIGTERM as a flag checked between steps, never an exception inside JAX.

Python's default SIGINT handler raises ``KeyboardInterrupt`` wherever the main thread
happens to be; inside a JAX/XLA callback (``_xla_gc_callback``) the exception is printed
as "Exception ignored" and lost, and the run goes on. Inside ``catching_signals()`` the
handlers only record the signal; training code calls ``check()`` between epochs (and
between steps when stepping), which raises ``Interrupted`` at a point where a checkpoint
can be written. A second signal while the first is pending gets the previous handler
(a second Ctrl-C stops at once).
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}
_pending: list[int] = []
_depth = 0


class Interrupted(KeyboardInterrupt):
    """Training stopped by SIGINT/SIGTERM at a safe point.

    **Arguments:**

    - `signum`: the signal's number; `exit_code` is the shell's for it (130, 143).
    - `epoch`: the position (epoch, or step of a run counted in steps) whose state was
      checkpointed last, or ``None`` where the caller does not know it (inside a unit).
    """

    def __init__(self, signum: int, epoch: int | None = None):
        self.signum, self.epoch = signum, epoch
        self.exit_code = EXIT_CODES.get(signum, 128 + signum)
        super().__init__(f"interrupted by {signal.Signals(signum).name} at epoch {epoch}")


@contextlib.contextmanager
def catching_signals() -> Iterator[None]:
    """Record SIGINT/SIGTERM instead of raising (main thread only; nests)."""
    global _depth
    if threading.current_thread() is not threading.main_thread() or _depth:
        _depth += 1
        try:
            yield
        finally:
            _depth -= 1
        return
    previous = {s: signal.getsignal(s) for s in EXIT_CODES}

    def handler(signum, frame):
        _pending.append(signum)
        signal.signal(signum, previous[signum])

    _pending.clear()
    for s in EXIT_CODES:
        signal.signal(s, handler)
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        for s, h in previous.items():
            signal.signal(s, h)
        _pending.clear()


def pending() -> int | None:
    """The first signal received and not yet handled, or ``None``."""
    return _pending[0] if _pending else None


def check(epoch: int | None = None) -> None:
    """Raise ``Interrupted`` if a signal arrived."""
    if _pending:
        raise Interrupted(_pending[0], epoch)
