"""The layer protocol and `serial`, the chain rule over a stack of layers.

A layer is a value holding pure functions over plain dicts of arrays:

* ``init(key, input_shape) -> (params, state)``: ``input_shape`` is one example's
  shape (no batch axis); ``state`` is ``{}`` for stateless layers.
* ``output_shape(input_shape) -> shape``: the shape one example becomes.
* ``forward(params, state, x, *, key=None, train=False) -> (y, state, cache)``.
* ``backward(params, cache, dy) -> (dparams, dx)``: the hand-derived vector-Jacobian
  product. ``dparams`` has exactly the structure of ``params``.
* ``apply(params, state, x, *, key=None, train=False) -> (y, state)``.

``serial(f_1, ..., f_L)`` computes ``y = f_L(... f_1(x))``. Its backward is the
chain rule read right to left: with ``dy_L = dL/dy``,

    (dtheta_l, dy_{l-1}) = backward_l(theta_l, cache_l, dy_l),   l = L, ..., 1,

so every layer only needs the gradient of its own output (the "delta" of
Nielsen's BP2) to produce its parameter gradient (BP3/BP4) and its input's delta.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax

from funcnn.core.validate import example_shape

Params = dict[str, Any]
State = dict[str, Any]
Shape = tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Layer:
    """A layer: a named bundle of pure functions (see the module docstring).

    ``apply_fn`` is optional: when absent, ``apply`` runs ``forward`` and drops the
    cache (under ``jit`` the unused cache is removed by dead-code elimination).

    ``children`` is optional too: a combinator (``serial``, ``residual``, ``parallel``,
    ...) lists its sublayers as ``(key, child_layer)`` pairs in forward order, where
    ``key`` is the child's key in the combinator's params and state dicts
    (``params[key]``, ``state[key]``; e.g. ``"0_dense"``). A combinator other than
    ``serial`` also says what each child receives: ``feed(x, key) -> ((x_1, key_1), ...)``,
    one (input, PRNG key) pair per child (``residual``: its own input and key; ``parallel``:
    the i-th part of its tuple input and the i-th split key). ``check_model`` walks a model
    through these (``funcnn.check.model``). Leaf layers leave both empty.

    ``sequential`` is true for ``serial`` only: its children run one after another on the
    previous child's output, exactly as listed, so a walker may run them one by one. A
    wrapper that changes what the children compute (a dtype cast, a policy) sets it false.
    """

    name: str
    init: Callable[..., tuple[Params, State]]
    forward: Callable[..., tuple[Any, State, Any]]
    backward: Callable[..., tuple[Params, Any]]
    output_shape: Callable[[Shape], Shape]
    apply_fn: Callable[..., tuple[Any, State]] | None = None
    children: tuple = ()
    feed: Callable[..., tuple] | None = None
    sequential: bool = False

    def apply(self, params, state, x, *, key=None, train=False):
        """Run the layer: ``(y, new_state)``. ``x`` has a leading batch axis."""
        if self.apply_fn is not None:
            return self.apply_fn(params, state, x, key=key, train=train)
        y, state, _ = self.forward(params, state, x, key=key, train=train)
        return y, state

    def __repr__(self) -> str:
        return f"Layer({self.name})"


def _split(key, n):
    """One key per layer, or ``None`` for every layer when no key is given."""
    if key is None:
        return [None] * n
    return list(jax.random.split(key, n))


def serial(*layers: Layer, name: str = "serial") -> Layer:
    """Compose layers left to right.

    Params and state are dicts keyed ``f"{i}_{layer.name}"`` (e.g. ``"0_dense"``);
    ``train`` is passed to every layer and the key is split into one key per layer.
    """
    if not layers:
        raise ValueError("serial: expected at least one layer, got none")
    for i, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise TypeError(f"serial: argument {i} must be a Layer, got {type(layer).__name__}")
    names = [f"{i}_{layer.name}" for i, layer in enumerate(layers)]

    def init(key, input_shape):
        params, state = {}, {}
        shape = example_shape(input_shape, f"{name}.init")
        for k, n, layer in zip(jax.random.split(key, len(layers)), names, layers):
            params[n], state[n] = layer.init(k, shape)
            shape = layer.output_shape(shape)
        return params, state

    def output_shape(input_shape):
        shape = example_shape(input_shape, f"{name}.output_shape")
        for layer in layers:
            shape = layer.output_shape(shape)
        return shape

    def forward(params, state, x, *, key=None, train=False):
        new_state, caches = {}, []
        for k, n, layer in zip(_split(key, len(layers)), names, layers):
            x, new_state[n], cache = layer.forward(params[n], state[n], x, key=k, train=train)
            caches.append(cache)
        return x, new_state, tuple(caches)

    def backward(params, cache, dy):
        grads = {}
        for n, layer, c in reversed(list(zip(names, layers, cache))):
            grads[n], dy = layer.backward(params[n], c, dy)
        return grads, dy

    def apply(params, state, x, *, key=None, train=False):
        new_state = {}
        for k, n, layer in zip(_split(key, len(layers)), names, layers):
            x, new_state[n] = layer.apply(params[n], state[n], x, key=k, train=train)
        return x, new_state

    return Layer(name, init, forward, backward, output_shape, apply, children=tuple(zip(names, layers)),
                 sequential=True)
