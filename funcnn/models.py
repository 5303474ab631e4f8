r"""Ready-made networks for the CLI and the experiments: `build(name, ...) -> Layer`.

Each builder takes the example shape, the number of outputs, the hidden sizes and the
activation name, and returns a `serial` model that ends in raw logits.
`gpt(vocab, *, context, layers, heads, width, ...)` is the decoder-only transformer,
`gpt2(...)` the same with GPT-2's choices (tied head, GPT-2 initialisation, tanh GELU).

**GPT params and nanoGPT's `state_dict`.** `gpt_state_dict(params)` and
`gpt_params(model, state_dict)` convert both ways (NumPy arrays in and out). With $L$
layers, $D$ = width, $V$ = vocab, $C$ = context, the names and shapes are nanoGPT's
(`torch.nn.Linear` weights are `(out, in)`, as funcnn's `w`, so no array is transposed):

| nanoGPT name | shape | funcnn leaf |
|---|---|---|
| `transformer.wte.weight` | `(V, D)` | token `Embedding`'s `w` |
| `transformer.wpe.weight` | `(C, D)` | `PositionalEmbedding`'s `w` |
| `transformer.h.{i}.ln_1.weight`, `.bias` | `(D,)` | block i's first `LayerNorm` `gamma`, `beta` |
| `transformer.h.{i}.attn.c_attn.weight`, `.bias` | `(3D, D)`, `(3D,)` | attention `w_in`, `b_in` (rows q, k, v) |
| `transformer.h.{i}.attn.c_proj.weight`, `.bias` | `(D, D)`, `(D,)` | attention `w_out`, `b_out` |
| `transformer.h.{i}.ln_2.weight`, `.bias` | `(D,)` | block i's second `LayerNorm` |
| `transformer.h.{i}.mlp.c_fc.weight`, `.bias` | `(4D, D)`, `(4D,)` | first `token_dense` |
| `transformer.h.{i}.mlp.c_proj.weight`, `.bias` | `(D, 4D)`, `(D,)` | second `token_dense` |
| `transformer.ln_f.weight`, `.bias` | `(D,)` | final `LayerNorm` |
| `lm_head.weight` | `(V, D)` | the head's `w` (tied: the same array as `wte`) |
| `lm_head.bias` | `(V,)` | the untied head's bias (funcnn only: nanoGPT's head has none) |

Without biases (`bias=False`) the `.bias` entries are absent, as in nanoGPT.

**Weight decay (AdamW).** nanoGPT decays every tensor of rank 2 or more (the embeddings
included) and no bias or norm parameter: `gpt_decay_mask(params)`, which is
`regularization.weight_decay_mask(params, decays_matrices)`. For a GPT this is the same set
as the library's default filter (leaves named `w...`).
"""
from __future__ import annotations

import math
from typing import Any, Callable

import jax
import numpy as np

from funcnn.core.combinators import residual
from funcnn.core.layer import Layer, serial
from funcnn.core.validate import positive_int
from funcnn.layers import activations
from funcnn.layers.attention import MultiHeadAttention
from funcnn.layers.conv import Conv2D
from funcnn.layers.dense import Dense
from funcnn.layers.embedding import Embedding, TiedEmbedding, TiedReadout, normal, standard_normal
from funcnn.layers.flatten import Flatten
from funcnn.layers.gelu import GELU
from funcnn.layers.layernorm import LayerNorm
from funcnn.layers.pooling import MaxPool2D
from funcnn.layers.positional import PositionalEmbedding, gpt2_normal
from funcnn.layers.token_dense import token_dense as token_dense
from funcnn.regularization import weight_decay_mask

Params = dict[str, Any]


def mlp(input_shape: tuple[int, ...], outputs: int, hidden: tuple[int, ...] = (128, 64),
        activation: str = "relu") -> Layer:
    """Flatten -> [Dense(h) -> activation] for h in hidden -> Dense(outputs): `(N, *input_shape)` -> `(N, outputs)`.

    ReLU layers get He initialisation, the others Glorot."""
    w_init = "he_normal" if activation == "relu" else "glorot_uniform"
    stack = [Flatten()]
    for h in hidden:
        stack += [Dense(h, w_init=w_init), activations.get(activation)]
    return serial(*stack, Dense(outputs))


def cnn(input_shape: tuple[int, ...], outputs: int, hidden: tuple[int, ...] = (128,),
        activation: str = "relu") -> Layer:
    """[Conv2D(f, 3x3, SAME) -> activation -> MaxPool2D(2)] for f in (32, 64), then
    Flatten -> [Dense(h) -> activation] for h in hidden -> Dense(outputs): NHWC `(N, H, W, C)` -> `(N, outputs)`.

    For 28x28 -> 7x7x64, 8x8 -> 2x2x64; a pool is skipped once the image is down to 1 pixel,
    so tiny inputs still build. ReLU layers get He initialisation."""
    w_init = "he_normal" if activation == "relu" else "glorot_uniform"
    shape, stack = tuple(input_shape), []
    for features in (32, 64):
        stack += [Conv2D(features, 3, w_init=w_init), activations.get(activation)]
        if min(shape[:2]) >= 2:
            stack.append(MaxPool2D(2))
            shape = (shape[0] // 2, shape[1] // 2)
    stack.append(Flatten())
    for h in hidden:
        stack += [Dense(h, w_init=w_init), activations.get(activation)]
    return serial(*stack, Dense(outputs))


def first(f: Layer, *, name: str = "first") -> Layer:
    """`(x, w) -> (f(x), w)`: `f` on the first of a pair, the second passed through (a tied table).

    Backward: `(dy, dw) -> (f.backward(dy)_x, dw)`. Params `{"0_<f.name>": ...}`."""
    k = f"0_{f.name}"

    def init(key, input_shape):
        params, state = f.init(key, input_shape[0])
        return {k: params}, {k: state}

    def forward(params, state, x, *, key=None, train=False):
        y, s, cache = f.forward(params[k], state[k], x[0], key=key, train=train)
        return (y, x[1]), {k: s}, cache

    def backward(params, cache, dy):
        dparams, dx = f.backward(params[k], cache, dy[0])
        return {k: dparams}, (dx, dy[1])

    def apply(params, state, x, *, key=None, train=False):
        y, s = f.apply(params[k], state[k], x[0], key=key, train=train)
        return (y, x[1]), {k: s}

    return Layer(name, init, forward, backward, lambda s: (tuple(f.output_shape(s[0])), tuple(s[1])), apply,
                 children=((k, f),), feed=lambda x, key: ((x[0], key),))


INITS = ("default", "gpt2")
GELUS = ("exact", "tanh")


def _inits(init: str, layers: int) -> dict[str, Any]:
    """The initialisers of each GPT part: "default" (Glorot, N(0, 1) tokens) or "gpt2"."""
    if init == "default":
        return {"tok": standard_normal, "w": "glorot_uniform", "proj": "glorot_uniform", "head": "glorot_uniform"}
    std = 0.02  # GPT-2: every weight N(0, 0.02^2), the residual projections scaled by 1 / sqrt(2 L)
    return {"tok": normal(std), "w": normal(std), "proj": normal(std / math.sqrt(2 * layers)), "head": normal(std)}


def _block(width: int, heads: int, bias: bool, gelu: str, inits: dict[str, Any]) -> list[Layer]:
    """One pre-norm block: `x + MHA_causal(LN(x))`, then `x + W_2 GELU(W_1 LN(x) + b_1) + b_2`."""
    attention = MultiHeadAttention(heads, causal=True, w_init=inits["w"], out_init=inits["proj"], use_bias=bias)
    mlp_stack = (LayerNorm(use_bias=bias), token_dense(4 * width, inits["w"], use_bias=bias),
                 GELU(approximate=gelu == "tanh"), token_dense(width, inits["proj"], use_bias=bias))
    return [residual(serial(LayerNorm(use_bias=bias), attention)), residual(serial(*mlp_stack))]


def _gpt_arguments(vocab: int, context: int, layers: int, heads: int, width: int, tie_embeddings: bool,
                   bias: bool, init: str, gelu: str) -> None:
    """One-line errors for `gpt`'s arguments."""
    for value, arg in ((vocab, "vocab"), (context, "context"), (layers, "layers"), (heads, "heads"),
                       (width, "width")):
        positive_int(value, arg, "gpt")
    if width % heads:
        raise ValueError(f"gpt: width must be a multiple of heads ({heads}), got {width}")
    for value, arg in ((tie_embeddings, "tie_embeddings"), (bias, "bias")):
        if not isinstance(value, bool):
            raise TypeError(f"gpt: {arg} must be a bool, got {value!r}")
    for value, arg, allowed in ((init, "init", INITS), (gelu, "gelu", GELUS)):
        if value not in allowed:
            raise ValueError(f"gpt: {arg} must be one of {list(allowed)}, got {value!r}")


def gpt(vocab: int, *, context: int, layers: int, heads: int, width: int, tie_embeddings: bool = False,
        bias: bool = True, init: str = "default", gelu: str = "exact") -> Layer:
    r"""A decoder-only transformer over token ids `(B, T)` -> next-token logits `(B, T, vocab)`, $T \le$ `context`.

    $x_0$ = Embedding(ids) + $P_{:T}$ (learned positions); `layers` pre-norm blocks
    $x \leftarrow x + \mathrm{MHA}(\mathrm{LN}(x))$,
    $x \leftarrow x + W_2\, \mathrm{GELU}(W_1 \mathrm{LN}(x) + b_1) + b_2$
    (MLP width 4 `width`); a final LayerNorm and a linear head. Every piece has its
    hand-written backward; the residual adds the skip's gradient.

    - `tie_embeddings`: the head is the token table, logits $= h W_{tok}^\top$ (no head bias), as
      `serial(TiedEmbedding, first(body), TiedReadout)`: the table travels with the activations
      and the readout's gradient is added to the embedding's (`funcnn.layers.embedding`).
    - `bias=False`: no bias in any projection or LayerNorm (nanoGPT's `bias=False`).
    - `init="gpt2"`: weights and embeddings N(0, 0.02^2), residual projections (attention's
      `w_out`, the MLP's second layer) N(0, (0.02 / sqrt(2 layers))^2), zero biases; `"default"`:
      Glorot-uniform weights, N(0, 1) token embeddings.
    - `gelu`: `"exact"` ($x\Phi(x)$) or `"tanh"` (GPT-2's approximation).

    **Raises:** `ValueError` for a non-positive size, `width` not a multiple of `heads`, an
    unknown `init` or `gelu`; `TypeError` for a non-bool `tie_embeddings` or `bias`.
    """
    _gpt_arguments(vocab, context, layers, heads, width, tie_embeddings, bias, init, gelu)
    inits = _inits(init, layers)
    body = [PositionalEmbedding(context, width, w_init=gpt2_normal)]
    for _ in range(layers):
        body += _block(width, heads, bias, gelu, inits)
    body.append(LayerNorm(use_bias=bias))
    if tie_embeddings:
        return serial(TiedEmbedding(vocab, width, w_init=inits["tok"]), first(serial(*body, name="body")),
                      TiedReadout(vocab), name="gpt")
    return serial(Embedding(vocab, width, w_init=inits["tok"]), *body,
                  token_dense(vocab, inits["head"], use_bias=bias), name="gpt")


def gpt2(vocab: int = 50257, *, context: int = 1024, layers: int = 12, heads: int = 12, width: int = 768) -> Layer:
    """GPT-2 (small by default: 124M params): `gpt` with a tied head, biases, GPT-2's initialisation
    and tanh GELU. `gpt2(vocab=7, context=4, layers=2, heads=2, width=8)` is the same architecture
    small enough for the gradient checker. Ids `(B, T)` -> logits `(B, T, vocab)`."""
    return gpt(vocab, context=context, layers=layers, heads=heads, width=width, tie_embeddings=True, bias=True,
               init="gpt2", gelu="tanh")


def _ordered(params: Params) -> list[str]:
    """A `serial`-keyed dict's keys in order (keys `f"{i}_{name}"`)."""
    return sorted(params, key=lambda k: int(k.split("_", 1)[0]))


_BLOCK_LEAVES = (("ln_1.weight", 0, ("0_layernorm", "gamma")), ("ln_1.bias", 0, ("0_layernorm", "beta")),
                 ("attn.c_attn.weight", 0, ("1_attention", "w_in")), ("attn.c_attn.bias", 0, ("1_attention", "b_in")),
                 ("attn.c_proj.weight", 0, ("1_attention", "w_out")),
                 ("attn.c_proj.bias", 0, ("1_attention", "b_out")), ("ln_2.weight", 1, ("0_layernorm", "gamma")),
                 ("ln_2.bias", 1, ("0_layernorm", "beta")), ("mlp.c_fc.weight", 1, ("1_token_dense", "w")),
                 ("mlp.c_fc.bias", 1, ("1_token_dense", "b")), ("mlp.c_proj.weight", 1, ("3_token_dense", "w")),
                 ("mlp.c_proj.bias", 1, ("3_token_dense", "b")))


def _get(tree: Params, path: tuple[str, ...]) -> Any:
    """The leaf (or subtree) of `tree` at the key `path`."""
    for k in path:
        tree = tree[k]
    return tree


def gpt_paths(params: Params) -> dict[str, tuple[str, ...]]:
    """nanoGPT's name -> the key path of that leaf in a `gpt`'s params (module docstring's table).

    A tied model has no `lm_head.weight` path (its head is `transformer.wte.weight`); names whose
    leaf is absent (biases of a `bias=False` model) are left out.

    **Raises:** `ValueError` if `params` is not the params of a `gpt`.
    """
    top = _ordered(params)
    tied = top[0].endswith("tied_embedding")
    if not (top[0].endswith("embedding") and len(top) >= (3 if tied else 5)):
        raise ValueError(f"gpt_paths: params must be a funcnn.models.gpt's, got top-level keys {top}")
    root = (top[1], next(iter(params[top[1]]))) if tied else ()
    body = _ordered(_get(params, root)) if tied else top[1:-1]
    paths = {"transformer.wte.weight": (top[0], "w"), "transformer.wpe.weight": (*root, body[0], "w")}
    for i, (att, ff) in enumerate(zip(body[1:-1:2], body[2:-1:2])):
        for name, which, leaf in _BLOCK_LEAVES:
            paths[f"transformer.h.{i}.{name}"] = (*root, (att, ff)[which], "0_serial", *leaf)
    paths["transformer.ln_f.weight"] = (*root, body[-1], "gamma")
    paths["transformer.ln_f.bias"] = (*root, body[-1], "beta")
    head = (top[-1],)
    if not tied:
        paths["lm_head.weight"] = (*head, "w")
    paths["lm_head.bias"] = (*head, "b")
    return {name: path for name, path in paths.items() if _has(params, path)}


def _has(tree: Params, path: tuple[str, ...]) -> bool:
    """Whether `tree` has a leaf at the key `path`."""
    for k in path:
        if not isinstance(tree, dict) or k not in tree:
            return False
        tree = tree[k]
    return True


def gpt_state_dict(params: Params) -> dict[str, np.ndarray]:
    """A `gpt`'s params as a nanoGPT-style `state_dict` of NumPy arrays (module docstring's names and shapes).

    A tied model's `lm_head.weight` is the same array as `transformer.wte.weight`."""
    out = {name: np.asarray(_get(params, path)) for name, path in gpt_paths(params).items()}
    if "lm_head.weight" not in out:
        out["lm_head.weight"] = out["transformer.wte.weight"]
    return out


def gpt_params(model: Layer, state_dict: dict[str, Any]) -> Params:
    """A nanoGPT-style `state_dict` (arrays of the module docstring's shapes) as params of `model`, a `gpt`.

    The context is the rows of `transformer.wpe.weight`; every leaf of `model` must be in
    `state_dict` with its shape. A tied `model` takes `transformer.wte.weight` as its head and
    requires `lm_head.weight`, when given, to equal it. Values are NumPy arrays in the dtype given.

    **Raises:** `ValueError` naming the first missing, misshapen or untied entry.
    """
    context = int(np.shape(state_dict["transformer.wpe.weight"])[0])
    like = jax.eval_shape(lambda k: model.init(k, (context,))[0], jax.random.key(0))
    paths = gpt_paths(like)
    out = jax.tree_util.tree_map(lambda _: None, like)
    for name, path in paths.items():
        if name not in state_dict:
            raise ValueError(f"gpt_params: state_dict lacks {name!r}, shape {_get(like, path).shape}")
        value = np.asarray(state_dict[name])
        if value.shape != _get(like, path).shape:
            raise ValueError(f"gpt_params: {name} must have shape {_get(like, path).shape}, got {value.shape}")
        _get(out, path[:-1])[path[-1]] = value
    tok = np.asarray(state_dict["transformer.wte.weight"])
    if "lm_head.weight" not in paths and "lm_head.weight" in state_dict \
            and not np.array_equal(np.asarray(state_dict["lm_head.weight"]), tok):
        raise ValueError("gpt_params: lm_head.weight differs from transformer.wte.weight, but the model is tied")
    return out


def gpt_weights(params: Params) -> dict[str, Any]:
    """A `gpt`'s params as plain named weights: `tok` (V, D), `pos` (context, D), `blocks` (a list
    of dicts `ln1_g, ln1_b, w_in, b_in, w_out, b_out, ln2_g, ln2_b, w1, b1, w2, b2`), `lnf_g`,
    `lnf_b`, `w_head` (the token table when tied), `b_head`; absent biases are left out.
    Attention's weights are in `torch.nn.MultiheadAttention`'s layout."""
    short = {"ln_1.weight": "ln1_g", "ln_1.bias": "ln1_b", "attn.c_attn.weight": "w_in", "attn.c_attn.bias": "b_in",
             "attn.c_proj.weight": "w_out", "attn.c_proj.bias": "b_out", "ln_2.weight": "ln2_g",
             "ln_2.bias": "ln2_b", "mlp.c_fc.weight": "w1", "mlp.c_fc.bias": "b1", "mlp.c_proj.weight": "w2",
             "mlp.c_proj.bias": "b2"}
    paths = gpt_paths(params)
    leaf = {name: _get(params, path) for name, path in paths.items()}
    n = 1 + max(int(name.split(".")[2]) for name in paths if name.startswith("transformer.h."))
    blocks = [{s: leaf[f"transformer.h.{i}.{k}"] for k, s in short.items() if f"transformer.h.{i}.{k}" in leaf}
              for i in range(n)]
    out = {"tok": leaf["transformer.wte.weight"], "pos": leaf["transformer.wpe.weight"], "blocks": blocks,
           "lnf_g": leaf["transformer.ln_f.weight"],
           "w_head": leaf.get("lm_head.weight", leaf["transformer.wte.weight"])}
    for name, s in (("transformer.ln_f.bias", "lnf_b"), ("lm_head.bias", "b_head")):
        if name in leaf:
            out[s] = leaf[name]
    return out


def decays_matrices(path: Any, leaf: Any) -> bool:
    """nanoGPT's AdamW rule: decay every leaf of rank 2 or more (weights and embeddings), no bias or norm."""
    return np.ndim(leaf) >= 2


def gpt_decay_mask(params: Params) -> Params:
    """A tree of bools like `params`: True for the leaves AdamW decays (`decays_matrices`)."""
    return weight_decay_mask(params, decays_matrices)


def _gpt_builder(input_shape: tuple[int, ...], outputs: int, *, layers: int = 4, heads: int = 4, width: int = 128,
                 **kwargs: Any) -> Layer:
    """`build`'s signature: input_shape = (context,), outputs = vocab; `kwargs` go to `gpt`."""
    return gpt(outputs, context=input_shape[0], layers=layers, heads=heads, width=width, **kwargs)


MODELS: dict[str, Callable[..., Layer]] = {
    "mlp": mlp,
    "cnn": cnn,
    "gpt": _gpt_builder,
}


def build(name: str, input_shape: tuple[int, ...], outputs: int, **kwargs: Any) -> Layer:
    """The model `MODELS[name](input_shape, outputs, **kwargs)`.

    **Raises:** `ValueError` for an unknown `name`."""
    if name not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}, got {name!r}")
    return MODELS[name](tuple(input_shape), outputs, **kwargs)
