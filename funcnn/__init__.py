"""funcnn: neural networks as pure functions over parameter pytrees, every layer with
its own hand-written backward, checked against autodiff and finite differences."""
from funcnn import bayes, check, data, debug, initializers, losses, models, neurons, perceptron, regularization, train
from funcnn import parallel  # the data-parallel module; calling it is the combinator (funcnn/parallel.py, end)
from funcnn.bayes import BayesDense
from funcnn.check import check_backward, check_custom_jvp, check_custom_vjp, check_layer, check_loss, check_model
from funcnn.combinators import fan_in_concat, fan_in_sum, fan_out, residual
from funcnn.gradients import per_example_grads, value_and_grad
from funcnn.layer import Layer, serial
from funcnn.layers import (
    GRU, LSTM, AvgPool1D, AvgPool2D, BatchNorm, Conv1D, Conv2D, Dense, Dropout, Flatten, GlobalAvgPool,
    Identity, MaxPool1D, MaxPool2D, ReLU, Sigmoid, SimpleRNN, Softmax, Step, Tanh,
)
from funcnn.layers import (
    GELU, Embedding, GroupNorm, LayerNorm, MultiHeadAttention, PositionalEmbedding, RMSNorm,
)
from funcnn.manual_vjp import with_manual_vjp
from funcnn.precision import Policy, with_policy
from funcnn.regularization import Penalty
from funcnn.runs import load_run

__version__ = "0.1.0"

__all__ = [
    "AvgPool1D", "AvgPool2D", "BatchNorm", "BayesDense", "Conv1D", "Conv2D", "Dense", "Dropout", "Flatten",
    "GRU", "GlobalAvgPool", "Identity", "LSTM", "Layer", "MaxPool1D", "MaxPool2D", "Penalty", "Policy", "ReLU",
    "Sigmoid", "SimpleRNN", "Softmax", "Step", "Tanh", "bayes", "check", "check_backward", "check_layer",
    "check_loss", "data", "initializers", "load_run", "losses", "models", "neurons", "per_example_grads", "perceptron",
    "regularization", "serial", "train", "value_and_grad", "with_manual_vjp", "with_policy",
]
__all__ += ["check_custom_jvp", "check_custom_vjp", "check_model", "debug"]  # the checker (issue 10)
__all__ += ["Embedding", "GELU", "GroupNorm", "LayerNorm", "MultiHeadAttention", "PositionalEmbedding", "RMSNorm",
            "fan_in_concat", "fan_in_sum", "fan_out", "parallel", "residual"]  # transformers (issue 12)
