"""Precision as a choice: a policy of dtypes over a whole model, and loss scaling for float16.

``Policy(params, compute, output)`` (as jmp's, applied by ``with_policy(model, policy)`` or
``fit(..., policy=...)``):

* the master params (and so the optimiser's state) are stored in ``params``;
* forward and backward run in ``compute``: params and inputs are cast to it on the way
  in, and every layer computes in its input's dtype, except that BatchNorm's statistics
  and softmax's sums stay in float32 (``funcnn.core.dtypes.stat_dtype``);
* the model's output is cast to ``output`` and the loss runs in float32 at least
  (``float32_loss``): a mean over a batch in bfloat16 keeps 8 bits;
* the cast is linear, so its backward is the cast back (``funcnn.core.dtypes``): gradients
  come back in ``params``' dtype, and the hand-written backward returns what autodiff of
  the same cast forward returns.

Loss scaling (``compute=float16``: 5 exponent bits, gradients below 6e-8 flush to zero,
above 65504 overflow). The loss is multiplied by S before the backward and the gradients
(already back in the params' float32) divided by S after; S is a power of two, so both
are exact. If any gradient is not finite the step is skipped (params, optimiser state and
model state unchanged) and S halves; after ``period`` finite steps in a row S doubles:

    g = grad(S * L) / S,   finite: theta <- theta + update(g), S <- 2S every period steps
                           else:   theta unchanged,              S <- max(S / 2, 1).

``loss_scaling(optimizer)`` keeps S in the optimiser's state (``LossScaleState``, whose
``finite`` says whether the last step was applied); the training step
(``funcnn.training.step.make_step``) reads S from that state, multiplies the objective by it
and keeps the model state on a skipped step.
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from funcnn.core.dtypes import available, cast_floats, float_dtype, stat_dtype, with_compute_dtype
from funcnn.core.layer import Layer
from funcnn.losses import Loss

PRESETS = {
    "fp32": ("float32", "float32", "float32"),
    "fp64": ("float64", "float64", "float64"),
    "bf16-mixed": ("float32", "bfloat16", "float32"),
    "fp16-mixed": ("float32", "float16", "float32"),
    "fp16": ("float32", "float16", "float32"),
}
_FIELDS = ("params", "compute", "output")


@dataclasses.dataclass(frozen=True)
class Policy:
    """The dtypes of the master params, of the computation and of the model's output.

    **Arguments:**

    - `params`: the dtype the params (and so the optimizer's state) are stored in.
    - `compute`: the dtype forward and backward run in.
    - `output`: the dtype of the model's output.

    Each a name such as ``"bfloat16"`` or a NumPy/JAX floating dtype (module docstring);
    ``ValueError`` for anything else.
    """

    params: Any = "float32"
    compute: Any = "float32"
    output: Any = "float32"

    def __post_init__(self):
        for f in _FIELDS:
            object.__setattr__(self, f, float_dtype(getattr(self, f), f, "Policy"))

    @classmethod
    def parse(cls, spec: str) -> "Policy":
        """The policy named by ``spec``: a preset (``fp32``, ``fp64``, ``bf16-mixed``,
        ``fp16-mixed``, ``fp16``) or ``"params=float32,compute=bfloat16,output=float32"``
        (omitted fields: float32). ``ValueError`` for anything else."""
        if not isinstance(spec, str):
            raise TypeError(f"Policy.parse: spec must be a string, got {type(spec).__name__}")
        if spec in PRESETS:
            return cls(*PRESETS[spec])
        fields = {}
        for part in spec.split(","):
            name, eq, value = part.partition("=")
            name = name.strip()
            if not eq or name not in _FIELDS or name in fields:
                raise ValueError(f"Policy.parse: expected one of {sorted(PRESETS)} or comma-separated "
                                 f"params=, compute=, output= (each once), got {spec!r}")
            fields[name] = value.strip()
        return cls(**fields)

    @property
    def loss_scaling(self) -> bool:
        """Whether training under this policy scales the loss (float16 compute)."""
        return self.compute == np.float16

    def __str__(self) -> str:
        return ",".join(f"{f}={np.dtype(getattr(self, f)).name}" for f in _FIELDS)

    def check_available(self, where: str = "Policy") -> None:
        """Raise if a 64-bit dtype is asked for while JAX runs in 32-bit mode."""
        for f in _FIELDS:
            available(getattr(self, f), where)


def _identity_layer():
    return Layer("cast", lambda key, shape: ({}, {}), lambda p, s, x, *, key=None, train=False: (x, s, None),
                 lambda p, cache, dy: ({}, dy), tuple)


def with_policy(model: Layer, policy: Policy) -> Layer:
    """``model`` under ``policy``: same params structure, params and state stored in the
    policy's dtypes (state in float32 at least), computed in ``compute``, output in ``output``.

    ``init`` casts the model's freshly drawn params to ``policy.params``. Raises
    ``TypeError`` for a model or policy of the wrong type and, at init or trace time,
    ``ValueError`` for a 64-bit policy while JAX runs in 32-bit mode."""
    if not isinstance(model, Layer):
        raise TypeError(f"with_policy: model must be a Layer, got {type(model).__name__}")
    if not isinstance(policy, Policy):
        raise TypeError(f"with_policy: policy must be a funcnn.Policy, got {type(policy).__name__}")
    inner = with_compute_dtype(model, policy.compute)
    out = with_compute_dtype(_identity_layer(), policy.output)  # the output's cast; backward: the cast back

    def init(key, input_shape):
        policy.check_available("with_policy")
        params, state = model.init(key, input_shape)
        return cast_floats(params, policy.params), cast_floats(state, stat_dtype(policy.params))

    def forward(params, state, x, *, key=None, train=False):
        policy.check_available("with_policy")
        y, state, cache = inner.forward(params, state, x, key=key, train=train)
        y, _, out_cache = out.forward({}, {}, y)
        return y, state, (cache, out_cache)

    def backward(params, cache, dy):
        _, dy = out.backward({}, cache[1], dy)
        return inner.backward(params, cache[0], dy)

    def apply(params, state, x, *, key=None, train=False):
        policy.check_available("with_policy")
        y, state = inner.apply(params, state, x, key=key, train=train)
        return cast_floats(y, policy.output), state

    return dataclasses.replace(model, init=init, forward=forward, backward=backward, apply_fn=apply,
                               sequential=False)


def _at_least_float32(pred):
    return cast_floats(pred, stat_dtype(jnp.result_type(pred)))


def float32_loss(loss: Loss) -> Loss:
    """``loss`` computed in float32 at least (its gradient returned in the prediction's dtype)."""
    return dataclasses.replace(
        loss, value=lambda pred, target: loss.value(_at_least_float32(pred), target),
        grad=lambda pred, target: loss.grad(_at_least_float32(pred), target).astype(jnp.result_type(pred)))


def scaled_loss(loss: Loss, scale: jax.Array | float) -> Loss:
    """``scale * loss``: the value (a scalar) and the gradient (the prediction's shape) both
    multiplied by the scalar ``scale``."""
    return dataclasses.replace(loss, value=lambda p, t: scale * loss.value(p, t),
                               grad=lambda p, t: scale * loss.grad(p, t))


class LossScaleState(NamedTuple):
    """The state of ``loss_scaling``: the wrapped optimiser's state, the scale S (float32),
    the finite steps since S last changed, and whether the last step was applied."""

    inner: Any
    scale: jax.Array
    good_steps: jax.Array
    finite: jax.Array


class LossScaled(optax.GradientTransformation):
    """A ``GradientTransformation`` whose ``update`` takes the gradients of S * loss."""

    __slots__ = ()


MAX_SCALE = 2.0 ** 64  # growth stops here: S itself never overflows float32


def adjust_scale(scale: jax.Array, good_steps: jax.Array, finite: jax.Array, *, period: int,
                 factor: float) -> tuple[jax.Array, jax.Array]:
    """The next ``(scale, good_steps)`` (scalars, dtypes kept): divide by ``factor`` (at least
    1) and restart the count on a non-finite step (``finite`` a bool scalar); multiply by
    ``factor`` (at most ``MAX_SCALE``) after ``period`` finite steps in a row."""
    grow = finite & (good_steps + 1 >= period)
    new_scale = jnp.where(finite, jnp.where(grow, jnp.minimum(scale * factor, MAX_SCALE), scale),
                          jnp.maximum(scale / factor, 1.0))
    return new_scale.astype(scale.dtype), jnp.where(finite & ~grow, good_steps + 1, 0).astype(good_steps.dtype)


def all_finite(tree: Any) -> jax.Array:
    """A bool scalar: every element of every leaf of ``tree`` is finite (true for no leaves)."""
    leaves = [jnp.all(jnp.isfinite(g)) for g in jax.tree_util.tree_leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def loss_scaling(optimizer: optax.GradientTransformation, *, init_scale: float = 2.0 ** 15,
                 period: int = 2000, factor: float = 2.0) -> LossScaled:
    """``optimizer`` fed with the gradients of S * loss (module docstring): ``update``
    divides them by S, skips the step (zero updates, inner state kept) when one is not
    finite, and adjusts S."""
    if not isinstance(period, int) or period < 1:
        raise ValueError(f"loss_scaling: period must be a positive integer, got {period!r}")
    if not (init_scale >= 1 and factor > 1):
        raise ValueError(f"loss_scaling: expected init_scale >= 1 and factor > 1, got {init_scale!r}, {factor!r}")

    def init(params):
        return LossScaleState(optimizer.init(params), jnp.asarray(init_scale, jnp.float32),
                              jnp.asarray(0, jnp.int32), jnp.asarray(True))

    def update(scaled_grads, state, params=None):
        grads = jax.tree_util.tree_map(lambda g: g / state.scale.astype(g.dtype), scaled_grads)
        finite = all_finite(grads)
        updates, inner = optimizer.update(grads, state.inner, params)
        updates = jax.tree_util.tree_map(lambda u: jnp.where(finite, u, jnp.zeros_like(u)), updates)
        inner = jax.tree_util.tree_map(lambda new, old: jnp.where(finite, new, old), inner, state.inner)
        scale, good = adjust_scale(state.scale, state.good_steps, finite, period=period, factor=factor)
        return updates, LossScaleState(inner, scale, good, finite)

    return LossScaled(init, update)


def step_skipped(opt_state: Any) -> jax.Array:
    """A bool scalar: true when the last step of a loss-scaled optimiser was skipped (non-finite
    gradients, S halved); always False for any other optimiser state."""
    return ~opt_state.finite if isinstance(opt_state, LossScaleState) else jnp.asarray(False)


def prepare(model: Layer, loss: Loss, optimizer: optax.GradientTransformation,
            policy: Policy | str) -> tuple[Layer, Loss, optax.GradientTransformation]:
    """``(model, loss, optimizer)`` for training under ``policy`` (a ``Policy`` or its string):
    ``with_policy(model)``, the loss in float32 at least, and the optimiser wrapped in
    ``loss_scaling`` for float16 compute (the step then scales the loss: ``make_step``)."""
    if isinstance(policy, str):
        policy = Policy.parse(policy)
    if not isinstance(policy, Policy):
        raise TypeError(f"fit: policy must be a funcnn.Policy or a string, got {type(policy).__name__}")
    if policy.loss_scaling and not isinstance(optimizer, LossScaled):
        optimizer = loss_scaling(optimizer)
    return with_policy(model, policy), float32_loss(loss), optimizer


def context(policy: Policy | str) -> contextlib.AbstractContextManager:
    """``jax.enable_x64(True)`` for a policy (or its string) with a 64-bit dtype, else a no-op
    context."""
    if isinstance(policy, str):
        policy = Policy.parse(policy)
    wide = any(np.dtype(getattr(policy, f)).itemsize == 8 for f in _FIELDS)
    return jax.enable_x64(True) if wide else contextlib.nullcontext()
