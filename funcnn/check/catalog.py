"""Every built-in layer, loss and model, at small float64 test points, for ``funcnn check``.

A case is a name, a zero-argument constructor and an input shape (one example);
``check_layer`` checks every formulation the autotuner may pick (a batch of 12 makes
the convolutions' chunks of 8 one of them; sequences of 4 steps or more the unroll by 4);
``check_layer`` draws params and a standard-normal batch from a fixed key, which
keeps inputs away from kinks (ReLU at 0, max-pool ties) with probability one, and
checks at random parameters as well as the initial ones. Models go through
``check_model``: every layer at the input it receives, then end to end.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import numpy as np

from funcnn import layers as L
from funcnn import losses, models
from funcnn.layers.bayes_dense import BayesDense
from funcnn.layers.embedding import TiedEmbedding, TiedReadout
from funcnn.check import draws
from funcnn.check.core import check_layer, check_loss
from funcnn.check.model import ModelReport, check_model
from funcnn.check.report import Report
from funcnn.core.combinators import fan_in_concat, fan_in_sum, fan_out, parallel, residual
from funcnn.core.layer import serial


class LayerCase(NamedTuple):
    """One built-in layer to check.

    **Arguments:**

    - `name`: the case's name (what ``funcnn check --only`` selects).
    - `make`: a zero-argument constructor of the layer (a fresh layer per check).
    - `input_shape`: the shape of one example, without the batch axis.
    - `options`: extra keyword arguments for ``check_layer`` (e.g. `{"batch": 12}`, `{"x": ...}`).
    """

    name: str
    make: Callable
    input_shape: tuple
    options: dict = {}


class LossCase(NamedTuple):
    """One built-in loss to check.

    **Arguments:**

    - `name`: the case's name (what ``funcnn check --only`` selects).
    - `loss`: the loss.
    - `pred_shape`: the shape of the predictions, batch axis included.
    - `target`: ``target(key)`` draws a target that fits predictions of `pred_shape`.
    """

    name: str
    loss: losses.Loss
    pred_shape: tuple
    target: Callable  # key -> target array


LAYER_CASES: list[LayerCase] = [
    # foundation
    LayerCase("dense", lambda: L.Dense(5), (4,)),
    LayerCase("sigmoid", L.Sigmoid, (6,)),
    LayerCase("tanh", L.Tanh, (6,)),
    LayerCase("relu", L.ReLU, (6,)),
    LayerCase("step", L.Step, (6,)),
    LayerCase("identity", L.Identity, (6,)),
    LayerCase("softmax", L.Softmax, (5,)),
    LayerCase("flatten", L.Flatten, (2, 3, 2)),
    LayerCase("dropout(0.3)", lambda: L.Dropout(0.3), (8,)),
    LayerCase("mlp", lambda: serial(L.Flatten(), L.Dense(8), L.Tanh(), L.Dense(6), L.ReLU(), L.Dense(3)), (2, 2, 1)),
    # convolution
    # a batch of 12: chunks of 8 examples are among the formulations (check_layer checks each)
    LayerCase("conv2d(3x3,SAME)", lambda: L.Conv2D(3, 3), (5, 5, 2), {"batch": 12}),
    LayerCase("conv2d(2x2,s(2,1),pads,dil(1,2),xla)", lambda: L.Conv2D(2, 2, stride=(2, 1), padding=((2, 1), (0, 1)), dilation=(1, 2), impl="xla"), (5, 5, 3), {"batch": 12}),
    LayerCase("conv1d(3,s2,SAME)", lambda: L.Conv1D(3, 3, stride=2), (9, 2), {"batch": 12}),
    LayerCase("maxpool2d(3,s2,SAME)", lambda: L.MaxPool2D(3, 2, "SAME"), (5, 6, 2)),
    LayerCase("avgpool2d(3,s2,SAME)", lambda: L.AvgPool2D(3, 2, "SAME"), (5, 6, 2)),
    LayerCase("global_avg_pool", L.GlobalAvgPool, (3, 4, 2)),
    # normalization
    # random gamma/beta (he_normal, glorot_normal) so that no term hides behind gamma = 1, beta = 0
    LayerCase("batchnorm(N,F)", lambda: L.BatchNorm(gamma_init="he_normal", beta_init="glorot_normal"),
              (5,), {"batch": 4}),
    LayerCase("batchnorm(NHWC)", lambda: L.BatchNorm(gamma_init="he_normal", beta_init="glorot_normal"),
              (3, 3, 2), {"batch": 2}),
    # recurrent
    LayerCase("simple_rnn(T=5)", lambda: L.SimpleRNN(4), (5, 2)),
    LayerCase("lstm(T=4,last)", lambda: L.LSTM(3, return_sequences=False), (4, 2)),
    LayerCase("gru(T=5)", lambda: L.GRU(3), (5, 2)),
    LayerCase("lstm(T=3,h0,c0)", lambda: L.LSTM(3), (3, 2), {"x": (
        jax.random.normal(jax.random.key(1), (3, 3, 2)),
        (jax.random.normal(jax.random.key(2), (3, 3)), jax.random.normal(jax.random.key(3), (3, 3))))}),
    LayerCase("gru(T=4,h0,last)", lambda: L.GRU(3, return_sequences=False), (4, 2), {"x": (
        jax.random.normal(jax.random.key(1), (3, 4, 2)), jax.random.normal(jax.random.key(2), (3, 3)))}),
    # bayes
    LayerCase("bayes_dense", lambda: BayesDense(5, sigma_init=0.3), (4,)),
    LayerCase("bayes_dense(eval)", lambda: BayesDense(5), (4,), {"train": False}),
    # transformers: random gains/biases so that no term hides behind gamma = 1, beta = 0
    LayerCase("layernorm(B T D)", lambda: L.LayerNorm(gamma_init="he_normal", beta_init="glorot_normal"), (3, 4)),
    LayerCase("rmsnorm", lambda: L.RMSNorm(gamma_init="he_normal"), (5,)),
    LayerCase("groupnorm(2 groups NHWC)", lambda: L.GroupNorm(2, gamma_init="he_normal", beta_init="glorot_normal"),
              (2, 3, 4)),
    LayerCase("embedding", lambda: L.Embedding(7, 3), (4,), {"x": jax.random.randint(jax.random.key(1), (3, 4), 0, 7)}),
    # a tied head: the readout's gradient of the table added into the embedding's
    LayerCase("tied_embedding_readout", lambda: serial(TiedEmbedding(7, 3), TiedReadout(7, use_bias=True)), (4,),
              {"x": jax.random.randint(jax.random.key(1), (3, 4), 0, 7)}),
    LayerCase("gelu", L.GELU, (6,)),
    LayerCase("gelu(tanh)", lambda: L.GELU(approximate=True), (6,)),
    LayerCase("positional_embedding(T<max_len)", lambda: L.PositionalEmbedding(6, 4, w_init="glorot_normal"), (4, 4)),
    LayerCase("attention(2 heads)", lambda: L.MultiHeadAttention(2, b_init="glorot_normal"), (4, 6), {"batch": 2}),
    LayerCase("attention(2 heads causal)", lambda: L.MultiHeadAttention(2, causal=True, b_init="glorot_normal"),
              (4, 6), {"batch": 2}),
    LayerCase("residual(layernorm+dense)", lambda: residual(serial(L.LayerNorm(beta_init="glorot_normal"),
                                                                    L.Dense(4, b_init="glorot_normal"))), (4,)),
    LayerCase("fan_out+parallel+fan_in_sum",
              lambda: serial(fan_out(2), parallel(L.Dense(3), serial(L.Dense(3), L.GELU())), fan_in_sum()), (4,)),
    # three pieces of different widths: every split bound of the backward is exercised
    LayerCase("fan_out+parallel+fan_in_concat", lambda: serial(fan_out(3), parallel(L.Dense(2), L.Tanh(), L.Dense(3)),
                                                              fan_in_concat()), (4,)),
]


# Targets from the checker's bucketed normal draw (``funcnn.check.draws``): no program per shape.
def _labels(n, c):
    shape = n if isinstance(n, tuple) else (n,)
    return lambda key: draws.labels(key, shape, c)


def _normal(shape):
    return lambda key: draws.normal(key, shape)


def _probs(shape):
    def probs(key):
        z = draws.normal(key, shape)
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)
    return probs


def _bits(shape):
    return lambda key: (draws.normal(key, shape) > 0).astype(np.float64)  # Bernoulli(1/2)


LOSS_CASES: list[LossCase] = [
    LossCase("mse", losses.mse, (4, 3), _normal((4, 3))),
    LossCase("binary_cross_entropy", losses.binary_cross_entropy, (5, 1), _bits((5, 1))),
    LossCase("softmax_cross_entropy(labels)", losses.softmax_cross_entropy, (5, 4), _labels(5, 4)),
    LossCase("softmax_cross_entropy(probs)", losses.softmax_cross_entropy, (5, 4), _probs((5, 4))),
    LossCase("gaussian_nll(sigma=0.5)", losses.gaussian_nll(0.5), (4, 2), _normal((4, 2))),
    LossCase("gaussian_nll(learned)", losses.gaussian_nll(), (4, 4), _normal((4, 2))),
    LossCase("softmax_cross_entropy(BxTxC labels)", losses.softmax_cross_entropy, (2, 3, 4), _labels((2, 3), 4)),
    LossCase("multiclass_hinge", losses.multiclass_hinge, (5, 4), _labels(5, 4)),
]


class ModelCase(NamedTuple):
    """One built-in model to check, layer by layer and end to end (``check_model``).

    **Arguments:**

    - `name`: the case's name (what ``funcnn check --only`` selects).
    - `make`: a zero-argument constructor of the model.
    - `input_shape`: the shape of one example, without the batch axis.
    - `options`: extra keyword arguments for ``check_model`` (e.g. `{"batch": 2, "max_fd": 64}`).
    """

    name: str
    make: Callable
    input_shape: tuple
    options: dict = {}


MODEL_CASES: list[ModelCase] = [
    ModelCase("model:mlp", lambda: models.build("mlp", (3, 3, 1), 3, hidden=(6, 5), activation="tanh"), (3, 3, 1)),
    ModelCase("model:cnn", lambda: models.build("cnn", (4, 4, 1), 3, hidden=(5,)), (4, 4, 1),
              {"batch": 2, "max_fd": 64}),
    ModelCase("model:gpt", lambda: models.gpt(7, context=4, layers=1, heads=2, width=8), (4,),
              {"x": np.array([[1, 6, 0, 3], [5, 2, 4, 1]], np.int32), "max_fd": 64}),
    # GPT-2's architecture (tied head, biases, GPT-2 initialisation, tanh GELU) at a small width
    ModelCase("model:gpt2", lambda: models.gpt2(7, context=4, layers=1, heads=2, width=8), (4,),
              {"x": np.array([[1, 6, 0, 3], [5, 2, 4, 1]], np.int32), "max_fd": 64}),
]


def run_layer_case(case: LayerCase, key: jax.Array | None = None, **kwargs: Any) -> Report:
    """Check one layer case with ``check_layer``.

    **Arguments:**

    - `case`: the case.
    - `key`: a JAX PRNG key (default `jax.random.key(0)`).
    - `kwargs`: further keyword arguments for ``check_layer`` (after the case's `options`).

    **Returns:**

    The ``Report`` of the check.
    """
    key = jax.random.key(0) if key is None else key
    return check_layer(case.make(), case.input_shape, key=key, name=case.name, **case.options, **kwargs)


def run_loss_case(case: LossCase, key: jax.Array | None = None, **kwargs: Any) -> Report:
    """Check one loss case with ``check_loss``, at standard-normal predictions of shape
    `case.pred_shape` and a target drawn by `case.target`.

    **Arguments:**

    - `case`: the case.
    - `key`: a JAX PRNG key (default `jax.random.key(0)`), split for the predictions, the
      target and the check.
    - `kwargs`: further keyword arguments for ``check_loss``.

    **Returns:**

    The ``Report`` of the check.
    """
    key = jax.random.key(0) if key is None else key
    k_pred, k_target, k_check = draws.split(key, 3)
    pred = draws.normal(k_pred, case.pred_shape)
    return check_loss(case.loss, pred, case.target(k_target), key=k_check, name=case.name, **kwargs)


def run_model_case(case: ModelCase, key: jax.Array | None = None, **kwargs: Any) -> ModelReport:
    """Check one model case with ``check_model``.

    **Arguments:**

    - `case`: the case.
    - `key`: a JAX PRNG key (default `jax.random.key(0)`).
    - `kwargs`: further keyword arguments for ``check_model`` (after the case's `options`).

    **Returns:**

    The ``ModelReport`` of the check.
    """
    key = jax.random.key(0) if key is None else key
    return check_model(case.make(), case.input_shape, key=key, name=case.name, **case.options, **kwargs)


def run_all(key: jax.Array | None = None) -> list[Report | ModelReport]:
    """Reports for every built-in layer, then every built-in loss, then every model.

    **Arguments:**

    - `key`: a JAX PRNG key for every case (default `jax.random.key(0)`).

    **Returns:**

    One ``Report`` per layer and loss case, then one ``ModelReport`` per model case.
    """
    return ([run_layer_case(c, key) for c in LAYER_CASES] + [run_loss_case(c, key) for c in LOSS_CASES]
            + [run_model_case(c, key) for c in MODEL_CASES])
