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


def cnn(input_shape, outputs: int, hidden=(128,), activation: str = "relu") -> Layer:
    """[Conv2D(f, 3x3, SAME) -> activation -> MaxPool2D(2)] for f in (32, 64), then
    Flatten -> [Dense(h) -> activation] for h in hidden -> Dense(outputs).

    For NHWC images (28x28 -> 7x7x64, 8x8 -> 2x2x64); a pool is skipped once the image is
    down to 1 pixel, so tiny inputs still build. ReLU layers get He initialisation."""
    w_init = "he_normal" if activation == "relu" else "glorot_uniform"
    shape, stack = tuple(input_shape), []
    for features in (32, 64):
        stack += [L.Conv2D(features, 3, w_init=w_init), activations.get(activation)]
        if min(shape[:2]) >= 2:
            stack.append(L.MaxPool2D(2))
            shape = (shape[0] // 2, shape[1] // 2)
    stack.append(L.Flatten())
    for h in hidden:
        stack += [L.Dense(h, w_init=w_init), activations.get(activation)]
    return serial(*stack, L.Dense(outputs))


MODELS = {
    "mlp": mlp,
    "cnn": cnn,
}


def build(name: str, input_shape, outputs: int, **kwargs) -> Layer:
    if name not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}, got {name!r}")
    return MODELS[name](tuple(input_shape), outputs, **kwargs)
