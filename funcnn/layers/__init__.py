"""Built-in layers, one family a module: its math as named pure functions, the factory wiring them."""
from funcnn.layers.activations import Identity as Identity
from funcnn.layers.activations import ReLU as ReLU
from funcnn.layers.activations import Sigmoid as Sigmoid
from funcnn.layers.activations import Softmax as Softmax
from funcnn.layers.activations import Step as Step
from funcnn.layers.activations import Tanh as Tanh
from funcnn.layers.attention import MultiHeadAttention as MultiHeadAttention
from funcnn.layers.batchnorm import BatchNorm as BatchNorm
from funcnn.layers.bayes_dense import BayesDense as BayesDense
from funcnn.layers.conv import Conv1D as Conv1D
from funcnn.layers.conv import Conv2D as Conv2D
from funcnn.layers.dense import Dense as Dense
from funcnn.layers.dropout import Dropout as Dropout
from funcnn.layers.embedding import Embedding as Embedding
from funcnn.layers.flatten import Flatten as Flatten
from funcnn.layers.gelu import GELU as GELU
from funcnn.layers.groupnorm import GroupNorm as GroupNorm
from funcnn.layers.layernorm import LayerNorm as LayerNorm
from funcnn.layers.pooling import AvgPool1D as AvgPool1D
from funcnn.layers.pooling import AvgPool2D as AvgPool2D
from funcnn.layers.pooling import GlobalAvgPool as GlobalAvgPool
from funcnn.layers.pooling import MaxPool1D as MaxPool1D
from funcnn.layers.pooling import MaxPool2D as MaxPool2D
from funcnn.layers.positional import PositionalEmbedding as PositionalEmbedding
from funcnn.layers.recurrent import GRU as GRU
from funcnn.layers.recurrent import LSTM as LSTM
from funcnn.layers.recurrent import SimpleRNN as SimpleRNN
from funcnn.layers.rmsnorm import RMSNorm as RMSNorm

__all__ = [
    "AvgPool1D", "AvgPool2D", "BatchNorm", "BayesDense", "Conv1D", "Conv2D", "Dense", "Dropout",
    "Embedding", "Flatten", "GELU", "GRU", "GlobalAvgPool", "GroupNorm", "Identity", "LSTM",
    "LayerNorm", "MaxPool1D", "MaxPool2D", "MultiHeadAttention", "PositionalEmbedding", "RMSNorm",
    "ReLU", "Sigmoid", "SimpleRNN", "Softmax", "Step", "Tanh"
]
