"""The outer training loop shared by ``fit`` and ``train_lm``: units of work, the guard,
checkpoints, interrupts, progress and the history.

A run is a sequence of **units**, each ending at a position counted in the run's own unit
(``fit``: one epoch per unit, positions 1, 2, ..., epochs; ``train_lm``: ``eval_every`` steps
per unit, positions eval_every, 2 eval_every, ..., steps). After each unit:

1. **the guard**: the unit returns the flags of all its steps (``funcnn.training.step``), which
   come to the host in one transfer. The first flagged step raises ``NonFiniteError`` naming
   it and the value; the unit's result is dropped and the state at the unit's start is
   checkpointed (if it was not already), so the last checkpoint is the last good state;
2. **the record**: the caller evaluates and appends to the history;
3. **the checkpoint**: every ``checkpoint_every`` units and after the last one, the caller's
   snapshot of the carry and the history go to ``funcnn.training.checkpoint`` (one orbax step
   folder per position). A run resumed from its newest checkpoint (``open_checkpoints``)
   restarts at that position with the same keys and batches: bitwise the run left alone.

**Interrupts**: SIGINT/SIGTERM are recorded (``funcnn.training.interrupt``) and acted on
between units and, inside a stepped unit, between steps: the state of the last complete unit
is checkpointed, then ``Interrupted`` (a ``KeyboardInterrupt``) is raised with that position.

**Progress** (optional dependency ``tqdm``): one bar counting positions; a unit may tick it
per step.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Sequence

import numpy as np

from funcnn.training import interrupt
from funcnn.training.checkpoint import Checkpoints, open_run
from funcnn.training.interrupt import Interrupted

PyTree = Any


class NonFiniteError(FloatingPointError):
    """A training step produced a non-finite value.

    **Arguments:**

    - `epoch`: the 1-based epoch of the step, or ``None`` for a run counted in steps.
    - `step`: the 1-based step (within the epoch, or of the whole run).
    - `where`: the value, as named by ``guard_names`` (e.g. ``"grads['1_dense']['w']"``).
    - `who`: the trainer's name, first in the message.
    """

    def __init__(self, epoch: int | None, step: int, where: str, *, who: str = "fit") -> None:
        self.epoch, self.step, self.where = epoch, step, where
        at = f"step {step}" if epoch is None else f"epoch {epoch}, step {step}"
        super().__init__(f"{who}: non-finite value at {at}: {where} "
                         f"(training stopped; the last good checkpoint is kept)")


@dataclasses.dataclass(frozen=True)
class Plan:
    """The shape of a run: who runs it, what a position counts, where each unit ends.

    **Arguments:**

    - `who`: the trainer's name (``"fit"``, ``"train_lm"``), first in its error messages.
    - `unit`: what a position counts: ``"epoch"`` (a guard error names the epoch and the step
      within it) or ``"step"`` (it names the step of the run).
    - `stops`: the increasing positions at which the units end; the last is the run's end.
    - `checkpoint_every`: checkpoint after every this many units (and after the last).
    - `names`: what each guard flag watches (``guard_names(params)``).
    """

    who: str
    unit: str
    stops: Sequence[int]
    checkpoint_every: int
    names: Sequence[str]


def open_checkpoints(directory: str | os.PathLike | None, tree: PyTree, history: dict, *, keep: int, resume: bool,
                     who: str, unit: str, total: int) -> tuple[Checkpoints | None, PyTree, int, dict]:
    """The checkpoints of a run and where it starts: fresh, or from the newest checkpoint.

    **Arguments:**

    - `directory`: the run's checkpoint folder, or ``None`` (no checkpoints).
    - `tree`: what a checkpoint holds at the start (its structure and dtypes are the template).
    - `history`: the empty history of a fresh run.
    - `keep`, `resume`, `who`, `unit`: as ``funcnn.training.checkpoint.open_run``.
    - `total`: the run's last position; a checkpoint past it is refused.

    **Returns:**

    `(checkpoints, tree, done, history)`: ``None``, `tree`, `0`, `history` for a fresh run;
    the restored ones when resuming. Raises ``ValueError`` when `directory` already holds
    checkpoints and `resume` is false, or holds one past `total`.
    """
    if directory is None:
        return None, tree, 0, history
    checkpoints, restored = open_run(directory, tree, keep=keep, resume=resume, who=who, unit=unit)
    if restored is None:
        return checkpoints, tree, 0, history
    tree, done, history = restored
    if done > total:
        checkpoints.close()
        raise ValueError(f"{who}: resume: {directory} is at {unit} {done}, past {unit}s={total}")
    return checkpoints, tree, done, history


class _Progress:
    """A tqdm bar over positions, or nothing (tqdm is imported only when shown)."""

    def __init__(self, show: bool, total: int, initial: int, unit: str) -> None:
        self.bar = None
        if show:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc="train", unit=unit)

    def tick(self, n: int = 1) -> None:
        """Advance the bar by `n` positions (nothing when not shown)."""
        if self.bar is not None:
            self.bar.update(n)

    def reach(self, position: int, postfix: dict) -> None:
        """Move the bar to `position` and show `postfix` (e.g. the latest losses) beside it.

        **Arguments:**

        - `position`: the position reached (at least the bar's current one).
        - `postfix`: what to show beside the bar, `{name: value}`.
        """
        if self.bar is not None:
            self.bar.update(position - self.bar.n)
            self.bar.set_postfix(postfix)

    def close(self) -> None:
        """Close the bar (nothing when not shown)."""
        if self.bar is not None:
            self.bar.close()


def _first_flag(flags: Any, plan: Plan, start: int, stop: int) -> NonFiniteError | None:
    """The guard's error for the first flagged step of a unit, or ``None``: one host transfer."""
    bad = np.asarray(flags)
    if not bad.any():
        return None
    step, which = (int(i) for i in np.argwhere(bad)[0])
    if plan.unit == "epoch":
        return NonFiniteError(stop, step + 1, plan.names[which], who=plan.who)
    return NonFiniteError(None, start + step + 1, plan.names[which], who=plan.who)


def train_loop(carry: PyTree, plan: Plan, *, run_unit: Callable, record: Callable[[PyTree, Any, int], dict],
               snapshot: Callable[[PyTree], PyTree], history: dict, checkpoints: Checkpoints | None = None,
               done: int = 0, progress: bool = False) -> PyTree:
    """Run the units of ``plan`` after position ``done``: guard, record, checkpoint, interrupts.

    **Arguments:**

    - `carry`: what the units thread (e.g. `(params, state, opt_state)`).
    - `plan`: the run's ``Plan``.
    - `run_unit`: ``run_unit(carry, start, stop, tick) -> (carry, summary, flags)`` trains the
      positions `start..stop`; `flags` bool `(steps of the unit, len(plan.names))`; `tick()`
      advances the progress bar by one position (a unit that does not tick is counted whole).
    - `record`: ``record(carry, summary, stop) -> postfix``: evaluates, appends to `history`,
      and returns the progress bar's postfix (a dict).
    - `snapshot`: ``snapshot(carry) -> tree``: what a checkpoint holds.
    - `history`: the run's history (the caller's dict, appended to by `record`), checkpointed.
    - `checkpoints`, `done`: from ``open_checkpoints``.
    - `progress`: show a tqdm bar.

    **Returns:**

    The carry after the last unit. Raises ``NonFiniteError`` (guard) and ``Interrupted``
    (SIGINT/SIGTERM, after the checkpoint of the last complete unit).
    """
    saved = checkpoints.latest() if checkpoints is not None else None

    def save(position: int) -> None:
        nonlocal saved
        if checkpoints is not None and saved != position:
            checkpoints.save(position, snapshot(carry), history)
            saved = position

    bar = _Progress(progress, plan.stops[-1], done, plan.unit)
    starts = [0, *plan.stops[:-1]]
    try:
        with interrupt.catching_signals():
            for i, (start, stop) in enumerate(zip(starts, plan.stops)):
                if stop <= done:
                    continue
                start = max(start, done)  # resumed inside a unit (a run checkpointed with other stops)
                try:
                    interrupt.check(start)
                    out, summary, flags = run_unit(carry, start, stop, bar.tick)
                except Interrupted as stop_signal:
                    save(start)
                    raise Interrupted(stop_signal.signum, start) from None
                error = _first_flag(flags, plan, start, stop)
                if error is not None:
                    save(start)
                    raise error
                carry = out
                postfix = record(carry, summary, stop)
                if (i + 1) % plan.checkpoint_every == 0 or stop == plan.stops[-1]:
                    save(stop)
                bar.reach(stop, postfix)
                if interrupt.pending() is not None:
                    save(stop)
                    interrupt.check(stop)
    finally:
        bar.close()
        if checkpoints is not None:
            checkpoints.close()
    return carry
