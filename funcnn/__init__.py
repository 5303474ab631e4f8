"""funcnn: neural networks as pure functions over parameter pytrees, every layer with
its own hand-written backward, checked against autodiff and finite differences."""
from funcnn import check as check
from funcnn import data as data
from funcnn import layers as layers
from funcnn import losses as losses
from funcnn import models as models
from funcnn import regularization as regularization
from funcnn import training as training
from funcnn import training as train
from funcnn.check import check_backward as check_backward
from funcnn.check import check_custom_jvp as check_custom_jvp
from funcnn.check import check_custom_vjp as check_custom_vjp
from funcnn.check import check_layer as check_layer
from funcnn.check import check_loss as check_loss
from funcnn.check import check_model as check_model
from funcnn.check import debug as debug
from funcnn.core import initializers as initializers
from funcnn.core.combinators import fan_in_concat as fan_in_concat
from funcnn.core.combinators import fan_in_sum as fan_in_sum
from funcnn.core.combinators import fan_out as fan_out
from funcnn.core.combinators import parallel as parallel
from funcnn.core.combinators import residual as residual
from funcnn.core.layer import Layer as Layer
from funcnn.core.layer import serial as serial
from funcnn.core.manual_vjp import with_manual_vjp as with_manual_vjp
from funcnn.gradients import per_example_grads as per_example_grads
from funcnn.gradients import value_and_grad as value_and_grad
from funcnn.layers import GELU as GELU
from funcnn.layers import GRU as GRU
from funcnn.layers import LSTM as LSTM
from funcnn.layers import AvgPool1D as AvgPool1D
from funcnn.layers import AvgPool2D as AvgPool2D
from funcnn.layers import BatchNorm as BatchNorm
from funcnn.layers import BayesDense as BayesDense
from funcnn.layers import Conv1D as Conv1D
from funcnn.layers import Conv2D as Conv2D
from funcnn.layers import Dense as Dense
from funcnn.layers import Dropout as Dropout
from funcnn.layers import Embedding as Embedding
from funcnn.layers import Flatten as Flatten
from funcnn.layers import GlobalAvgPool as GlobalAvgPool
from funcnn.layers import GroupNorm as GroupNorm
from funcnn.layers import Identity as Identity
from funcnn.layers import LayerNorm as LayerNorm
from funcnn.layers import MaxPool1D as MaxPool1D
from funcnn.layers import MaxPool2D as MaxPool2D
from funcnn.layers import MultiHeadAttention as MultiHeadAttention
from funcnn.layers import PositionalEmbedding as PositionalEmbedding
from funcnn.layers import ReLU as ReLU
from funcnn.layers import RMSNorm as RMSNorm
from funcnn.layers import Sigmoid as Sigmoid
from funcnn.layers import SimpleRNN as SimpleRNN
from funcnn.layers import Softmax as Softmax
from funcnn.layers import Step as Step
from funcnn.layers import Tanh as Tanh
from funcnn.regularization import Penalty as Penalty
from funcnn.science import bayes as bayes
from funcnn.science import neurons as neurons
from funcnn.science import perceptron as perceptron
from funcnn.training import distributed as distributed
from funcnn.training.precision import Policy as Policy
from funcnn.training.precision import with_policy as with_policy
from funcnn.training.runs import load_run as load_run

__version__ = "0.1.0"

__all__ = [
    "AvgPool1D", "AvgPool2D", "BatchNorm", "BayesDense", "Conv1D", "Conv2D", "Dense", "Dropout", "Embedding",
    "Flatten", "GELU", "GRU", "GlobalAvgPool", "GroupNorm", "Identity", "LSTM", "Layer", "LayerNorm",
    "MaxPool1D", "MaxPool2D", "MultiHeadAttention", "Penalty", "Policy", "PositionalEmbedding", "RMSNorm",
    "ReLU", "Sigmoid", "SimpleRNN", "Softmax", "Step", "Tanh", "bayes", "check", "check_backward",
    "check_custom_jvp", "check_custom_vjp", "check_layer", "check_loss", "check_model", "data", "debug",
    "distributed", "fan_in_concat", "fan_in_sum", "fan_out", "initializers", "layers", "load_run", "losses",
    "models", "neurons", "parallel", "per_example_grads", "perceptron", "regularization", "residual", "serial",
    "train", "training", "value_and_grad", "with_manual_vjp", "with_policy",
]
