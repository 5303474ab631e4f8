"""Built-in layers. Each module holds one layer: its math, forward and backward."""
from funcnn.layers.activations import Identity, ReLU, Sigmoid, Softmax, Step, Tanh
from funcnn.layers.dense import Dense
from funcnn.layers.dropout import Dropout
from funcnn.layers.flatten import Flatten

__all__ = ["Dense", "Dropout", "Flatten", "Identity", "ReLU", "Sigmoid", "Softmax", "Step", "Tanh"]
