"""Built-in layers. Each module holds one layer: its math, forward and backward."""
from funcnn.layers.activations import Identity, ReLU, Sigmoid, Softmax, Step, Tanh
from funcnn.layers.attention import MultiHeadAttention
from funcnn.layers.batchnorm import BatchNorm
from funcnn.layers.conv import Conv1D, Conv2D
from funcnn.layers.dense import Dense
from funcnn.layers.dropout import Dropout
from funcnn.layers.flatten import Flatten
from funcnn.layers.pooling import AvgPool1D, AvgPool2D, GlobalAvgPool, MaxPool1D, MaxPool2D
from funcnn.layers.recurrent import GRU, LSTM, SimpleRNN
from funcnn.layers.embedding import Embedding
from funcnn.layers.gelu import GELU
from funcnn.layers.groupnorm import GroupNorm
from funcnn.layers.layernorm import LayerNorm
from funcnn.layers.positional import PositionalEmbedding
from funcnn.layers.rmsnorm import RMSNorm

__all__ = [
    "AvgPool1D", "AvgPool2D", "BatchNorm", "Conv1D", "Conv2D", "Dense", "Dropout", "Flatten", "GRU",
    "GlobalAvgPool", "Identity", "LSTM", "MaxPool1D", "MaxPool2D", "ReLU", "Sigmoid", "SimpleRNN",
    "Softmax", "Step", "Tanh",
]
__all__ += ["Embedding", "GELU", "GroupNorm", "LayerNorm", "MultiHeadAttention", "PositionalEmbedding",
            "RMSNorm"]  # transformer layers (issue 12)
