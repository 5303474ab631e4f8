"""funcnn: neural networks as pure functions over parameter pytrees, every layer with
its own hand-written backward, checked against autodiff and finite differences."""
from funcnn import check, data, initializers, losses, train
from funcnn.check import check_backward, check_layer, check_loss
from funcnn.gradients import per_example_grads, value_and_grad
from funcnn.layer import Layer, serial
from funcnn.layers import Dense, Dropout, Flatten, Identity, ReLU, Sigmoid, Softmax, Step, Tanh
from funcnn.manual_vjp import with_manual_vjp

__version__ = "0.1.0"

__all__ = [
    "Dense", "Dropout", "Flatten", "Identity", "Layer", "ReLU", "Sigmoid", "Softmax", "Step", "Tanh",
    "check", "check_backward", "check_layer", "check_loss", "data", "initializers", "losses",
    "per_example_grads", "serial", "train", "value_and_grad", "with_manual_vjp",
]
