r"""The layer protocol and `serial`, the chain rule over a stack of layers.

A layer is a value holding pure functions over plain dicts of arrays:

- `init(key, input_shape) -> (params, state)`: `input_shape` is one example's shape (no
  batch axis); `state` is `{}` for stateless layers.
- `output_shape(input_shape) -> shape`: the shape one example becomes.
- `forward(params, state, x, *, key=None, train=False) -> (y, state, cache)`: `x` has a
  leading batch axis, `(N, *input_shape)`; `y` is `(N, *output_shape)`; `cache` holds what
  the backward needs.
- `backward(params, cache, dy) -> (dparams, dx)`: the hand-derived vector-Jacobian product;
  `dy` has `y`'s shape, `dx` has `x`'s, and `dparams` has exactly the structure of `params`.
- `apply(params, state, x, *, key=None, train=False) -> (y, state)`.

`serial(f_1, ..., f_L)` computes $y = f_L(\cdots f_1(x))$. Its backward is the chain rule
read right to left: with $\delta_L = \partial L / \partial y_L$,

$$
(\partial L / \partial \theta_l,\; \delta_{l-1}) = \text{backward}_l(\theta_l, \text{cache}_l, \delta_l),
\qquad l = L, \dots, 1,
$$

so every layer only needs the gradient of its own output (the "delta" of Nielsen's BP2)
to produce its parameter gradient (BP3/BP4) and its input's delta.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax

from funcnn.core.validate import example_shape

Params = dict[str, Any]  # a layer's params: a dict of arrays (nested for combinators)
State = dict[str, Any]  # a layer's state (running statistics, ...): a dict of arrays
Shape = tuple[int, ...]  # one example's shape, no batch axis


@dataclasses.dataclass(frozen=True)
class Layer:
    """A layer: a named bundle of pure functions (see the module docstring for their shapes).

    **Fields:**

    - `name`: the layer's name (`serial` keys its params `f"{i}_{name}"`).
    - `init(key, input_shape) -> (params, state)`; `output_shape(input_shape) -> shape`.
    - `forward(params, state, x, *, key=None, train=False) -> (y, state, cache)`.
    - `backward(params, cache, dy) -> (dparams, dx)`.
    - `apply_fn`: optional; when absent, `apply` runs `forward` and drops the cache (under
      `jit` the unused cache is removed by dead-code elimination).
    - `children`: optional too: a combinator (`serial`, `residual`, `parallel`, ...) lists
      its sublayers as `(key, child_layer)` pairs in forward order, where `key` is the
      child's key in the combinator's params and state dicts (`params[key]`, `state[key]`;
      e.g. `"0_dense"`). Leaf layers leave it empty.
    - `feed(x, key) -> ((x_1, key_1), ...)`: for a combinator other than `serial`, what each
      child receives, one (input, PRNG key) pair per child (`residual`: its own input and
      key; `parallel`: the i-th part of its tuple input and the i-th split key).
      `check_model` walks a model through these (`funcnn.check.model`).
    - `sequential`: true for `serial` only: its children run one after another on the
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

    def apply(self, params: Params, state: State, x: Any, *, key: jax.Array | None = None,
              train: bool = False) -> tuple[Any, State]:
        """Run the layer without keeping a cache.

        **Arguments:**

        - `params`, `state`: as `init` returned them.
        - `x`: a batch, `(N, *input_shape)` (a tuple of such for a multi-input layer).
        - `key`: a PRNG key (needed by random layers in training mode); `train`: the mode.

        **Returns:**

        `(y, new_state)`: `y` of shape `(N, *output_shape)`.
        """
        if self.apply_fn is not None:
            return self.apply_fn(params, state, x, key=key, train=train)
        y, state, _ = self.forward(params, state, x, key=key, train=train)
        return y, state

    def __repr__(self) -> str:
        return f"Layer({self.name})"


def _split(key: jax.Array | None, n: int) -> list:
    """One key per layer, or `None` for every layer when no key is given."""
    if key is None:
        return [None] * n
    return list(jax.random.split(key, n))


def serial(*layers: Layer, name: str = "serial") -> Layer:
    r"""Compose layers left to right: $y = f_L(\cdots f_1(x))$.

    Params and state are dicts keyed `f"{i}_{layer.name}"` (e.g. `"0_dense"`); `train` is
    passed to every layer and the key is split into one key per layer. The cache is the
    tuple of the layers' caches; the backward runs the layers' backwards in reverse order.

    **Arguments:**

    - `layers`: the layers, first applied first; each one's output shape is the next one's
      input shape.
    - `name`: the composite's name.

    **Returns:**

    The `Layer`: `(N, *input_shape) -> (N, *f_L's output_shape)`. Raises `ValueError` for
    no layers and `TypeError` for an argument that is not a `Layer`.
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
