"""Ready-made networks for the CLI and the experiments: ``build(name, ...) -> Layer``.

Each builder takes the example shape, the number of outputs, the hidden sizes and
the activation name, and returns a ``serial`` model that ends in raw logits.
``gpt(vocab, *, context, layers, heads, width)`` is the decoder-only transformer
(``build("gpt", (context,), vocab, layers=..., heads=..., width=...)``).
"""
from __future__ import annotations

from funcnn.core import initializers
from funcnn import layers as L
from funcnn.core.sharding import batch_outer
from funcnn.core.validate import positive_int
from funcnn.layers import activations
from funcnn.core.layer import Layer, serial


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


def token_dense(features: int, w_init="glorot_uniform") -> Layer:
    """Dense applied at every position: (B, T, D) -> (B, T, features), params
    ``{"w": (features, D), "b": (features,)}`` as ``Dense``'s.

    Forward Y = X W^T + b over the last axis; backward, with every leading axis a batch
    axis: dW = sum_{b,t} dy_bt x_bt^T, db = sum_{b,t} dy_bt, dX = dY W."""
    positive_int(features, "features", "token_dense")
    w_init = initializers.get(w_init, "w_init")

    def init(key, input_shape):
        d = input_shape[-1]
        return {"w": w_init(key, (features, d), d, features), "b": initializers.zeros(None, (features,))}, {}

    def forward(params, state, x, *, key=None, train=False):
        if x.ndim < 2 or x.shape[-1] != params["w"].shape[1]:
            raise ValueError(f"token_dense: x must have shape (..., {params['w'].shape[1]}), got {x.shape}")
        return x @ params["w"].T + params["b"], state, x

    def backward(params, x, dy):
        return {"w": batch_outer(dy, x), "b": dy.sum(axis=tuple(range(dy.ndim - 1)))}, dy @ params["w"]

    return Layer("token_dense", init, forward, backward, lambda s: (*tuple(s)[:-1], features))


def gpt(vocab: int, *, context: int, layers: int, heads: int, width: int) -> Layer:
    """A decoder-only transformer over token ids (B, T) -> next-token logits (B, T, vocab).

    x_0 = Embedding(ids) + P[:T] (learned positions, T <= context); then ``layers``
    pre-norm blocks

        x <- x + MHA_causal(LN(x)),    x <- x + W_2 GELU(W_1 LN(x) + b_1) + b_2

    (MLP width 4 * ``width``), a final LayerNorm and a linear head to ``vocab`` logits.
    Every piece has its hand-written backward; the residual adds the skip's gradient.
    """
    import funcnn as fn

    for value, arg in ((vocab, "vocab"), (context, "context"), (layers, "layers"), (heads, "heads"),
                       (width, "width")):
        positive_int(value, arg, "gpt")
    if width % heads:
        raise ValueError(f"gpt: width must be a multiple of heads ({heads}), got {width}")

    def block():
        attention = fn.residual(serial(fn.LayerNorm(), fn.MultiHeadAttention(heads, causal=True)))
        mlp = fn.residual(serial(fn.LayerNorm(), token_dense(4 * width), fn.GELU(), token_dense(width)))
        return [attention, mlp]

    stack = [fn.Embedding(vocab, width), fn.PositionalEmbedding(context, width)]
    for _ in range(layers):
        stack += block()
    return serial(*stack, fn.LayerNorm(), token_dense(vocab), name="gpt")


def _ordered(params):
    """A ``serial``-keyed dict's children in order (keys ``f"{i}_{name}"``)."""
    return [params[k] for k in sorted(params, key=lambda k: int(k.split("_", 1)[0]))]


def gpt_weights(params) -> dict:
    """``gpt``'s params as plain named weights (for exporting, e.g. to PyTorch):
    ``tok`` (V, D), ``pos`` (context, D), ``blocks`` (a list of dicts ``ln1_g, ln1_b, w_in,
    b_in, w_out, b_out, ln2_g, ln2_b, w1, b1, w2, b2``), ``lnf_g``, ``lnf_b``, ``w_head``, ``b_head``.
    Attention's weights are in ``torch.nn.MultiheadAttention``'s layout."""
    c = _ordered(params)
    blocks = []
    for att, mlp in zip(c[2:-2:2], c[3:-2:2]):
        (ln1, mha), (ln2, fc1, _, fc2) = _ordered(_ordered(att)[0]), _ordered(_ordered(mlp)[0])
        blocks.append({"ln1_g": ln1["gamma"], "ln1_b": ln1["beta"], **{k: mha[k] for k in ("w_in", "b_in", "w_out",
                                                                                          "b_out")},
                       "ln2_g": ln2["gamma"], "ln2_b": ln2["beta"], "w1": fc1["w"], "b1": fc1["b"], "w2": fc2["w"],
                       "b2": fc2["b"]})
    return {"tok": c[0]["w"], "pos": c[1]["w"], "blocks": blocks, "lnf_g": c[-2]["gamma"], "lnf_b": c[-2]["beta"],
            "w_head": c[-1]["w"], "b_head": c[-1]["b"]}


def _gpt_builder(input_shape, outputs, *, layers=4, heads=4, width=128):
    """``build``'s signature: input_shape = (context,), outputs = vocab."""
    return gpt(outputs, context=input_shape[0], layers=layers, heads=heads, width=width)


MODELS = {
    "mlp": mlp,
    "cnn": cnn,
    "gpt": _gpt_builder,
}


def build(name: str, input_shape, outputs: int, **kwargs) -> Layer:
    if name not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}, got {name!r}")
    return MODELS[name](tuple(input_shape), outputs, **kwargs)
