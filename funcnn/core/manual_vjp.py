"""Bridge a model's hand-written backward into JAX's autodiff with `jax.custom_vjp`.

`with_manual_vjp(model)` returns a layer with the same init/forward/backward whose
`apply` is a custom-VJP function: its primal is `forward`, and its VJP rule is the
model's `backward`. So `jax.grad` of any function built on it (a loss, a
regulariser, another network around it) runs the hand-derived formulas for this
part, and composes with `jit` and `vmap` like any JAX function.

The cotangent of the returned state is ignored (state is threaded, never
differentiated), and the state and key inputs get zero cotangents.
"""
from __future__ import annotations

import dataclasses

import jax

from funcnn.core.layer import Layer


def with_manual_vjp(model: Layer) -> Layer:
    """`model` whose `apply` differentiates by `model.backward` under `jax.grad` (module docstring).

    **Arguments:**

    - `model`: any `Layer` (a whole model or one layer).

    **Returns:**

    The same `Layer` (same `init`, `forward`, `backward`, shapes) with a custom-VJP `apply`:
    `apply(params, state, x, *, key=None, train=False) -> (y, state)`, `y` of shape
    `(N, *output_shape)`; the VJP returns `(dparams, None, dx, None)` for
    `(params, state, x, key)`.
    """
    def make(train):
        @jax.custom_vjp
        def run(params, state, x, key):
            y, new_state, _ = model.forward(params, state, x, key=key, train=train)
            return y, new_state

        def run_fwd(params, state, x, key):
            y, new_state, cache = model.forward(params, state, x, key=key, train=train)
            return (y, new_state), (params, cache)

        def run_bwd(residuals, cotangents):
            params, cache = residuals
            dy, _ = cotangents
            dparams, dx = model.backward(params, cache, dy)
            return dparams, None, dx, None

        run.defvjp(run_fwd, run_bwd)
        return run

    runs = {True: make(True), False: make(False)}

    def apply(params, state, x, *, key=None, train=False):
        return runs[bool(train)](params, state, x, key)

    return dataclasses.replace(model, apply_fn=apply)
