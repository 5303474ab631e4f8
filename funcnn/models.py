"""Ready-made networks for the CLI and the experiments: ``build(name, ...) -> Layer``.

Each builder takes the example shape, the number of outputs, the hidden sizes and
the activation name, and returns a ``serial`` model that ends in raw logits.
"""
from __future__ import annotations

from funcnn import layers as L
from funcnn.layers import activations
from funcnn.layer import Layer, serial


def mlp(input_shape, outputs: int, hidden=(128, 64), activation: str = "relu") -> Layer:
    """Flatten -> [Dense(h) -> activation] for h in hidden -> Dense(outputs).

    ReLU layers get He initialisation, the others Glorot."""
    w_init = "he_normal" if activation == "relu" else "glorot_uniform"
    stack = [L.Flatten()]
    for h in hidden:
        stack += [L.Dense(h, w_init=w_init), activations.get(activation)]
    return serial(*stack, L.Dense(outputs))


MODELS = {
    "mlp": mlp,
}


def build(name: str, input_shape, outputs: int, **kwargs) -> Layer:
    if name not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}, got {name!r}")
    return MODELS[name](tuple(input_shape), outputs, **kwargs)
