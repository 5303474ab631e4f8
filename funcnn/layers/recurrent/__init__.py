"""Recurrent layers over (batch, time, features) with backpropagation through time
written out: a reverse ``lax.scan`` per cell, the input projection and the weight
gradients hoisted out of the scans as single matrix products."""
from funcnn.layers.recurrent.gru import GRU
from funcnn.layers.recurrent.lstm import LSTM
from funcnn.layers.recurrent.rnn import SimpleRNN

__all__ = ["GRU", "LSTM", "SimpleRNN"]
