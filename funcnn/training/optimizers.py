r"""Optimisers and learning-rate schedules by name: what `funcnn train --optimizer/--schedule`
builds, and what a saved run is rebuilt with.

Schedules over `total_steps` steps from the rate $\eta$:

- `constant`: $\eta$;
- `exponential`: $\eta \cdot 0.8^{t / \max(T/10, 1)}$;
- `step`: $\eta$, then $0.1\eta$ from $T/2$, $0.01\eta$ from $3T/4$;
- `cosine`: $\eta \cdot \tfrac12 (1 + \cos(\pi t / T))$.
"""
from __future__ import annotations

import optax

OPTIMIZERS = ("sgd", "momentum", "adam")
SCHEDULES = ("constant", "exponential", "step", "cosine")


def schedule(name: str, lr: float, total_steps: int) -> optax.Schedule | float:
    """The learning rate of schedule `name` (module docstring) over `total_steps` steps.

    **Arguments:**

    - `name`: one of `SCHEDULES`.
    - `lr`: the initial rate, positive.
    - `total_steps`: the steps of the whole run.

    **Returns:**

    A float (`constant`) or an optax schedule `step -> rate`.
    """
    if name not in SCHEDULES:
        raise ValueError(f"schedule: name must be one of {', '.join(SCHEDULES)}, got {name!r}")
    if name == "constant":
        return lr
    if name == "exponential":
        return optax.exponential_decay(lr, transition_steps=max(total_steps // 10, 1), decay_rate=0.8)
    if name == "step":
        return optax.piecewise_constant_schedule(lr, {int(total_steps * 0.5): 0.1, int(total_steps * 0.75): 0.1})
    return optax.cosine_decay_schedule(lr, decay_steps=max(total_steps, 1))


def make_optimizer(name: str, lr: float, schedule_name: str, total_steps: int) -> optax.GradientTransformation:
    """An optax optimiser with a learning-rate schedule over `total_steps` steps.

    **Arguments:**

    - `name`: `sgd`, `momentum` (SGD with momentum 0.9) or `adam`.
    - `lr`: the initial learning rate.
    - `schedule_name`: one of `SCHEDULES` (module docstring).
    - `total_steps`: the steps of the whole run.

    **Returns:**

    An `optax.GradientTransformation` over any params pytree.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"make_optimizer: name must be one of {', '.join(OPTIMIZERS)}, got {name!r}")
    rate = schedule(schedule_name, lr, total_steps)
    if name == "sgd":
        return optax.sgd(rate)
    if name == "momentum":
        return optax.sgd(rate, momentum=0.9)
    return optax.adam(rate)
