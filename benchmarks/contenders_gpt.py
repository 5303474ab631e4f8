"""A character-level GPT (4 pre-norm blocks, 4 heads, width 128, MLP 512, context 64,
vocabulary 103), batch 32, Adam(1e-3), next-character cross-entropy.

The same model in every contender: token + learned position embeddings; per block
x + MHA_causal(LN(x)) and x + W2 GELU(W1 LN(x)); final LayerNorm; linear head.
``torch_gpt`` and ``jax_gpt_logits`` are also the outside references of
``experiments/gpt_pydoc.py`` (``torch_state_dict`` maps funcnn's params onto torch's).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from harness import equinox_stepper, flax_stepper, funcnn_stepper, jax_stepper, torch_stepper

TITLE = "GPT 4 layers x 4 heads, width 128, context 64, vocab 103, batch 32, Adam"
REFERENCE = "pytorch"
NOTES = (
    "funcnn manual runs the hand-written backward of every layer (attention recomputes its "
    "probabilities from the stored per-row log-sum-exp); funcnn autodiff is `jax.grad` of the "
    "same forward. Raw JAX is the textbook forward (softmax over masked scores) under "
    "`jax.grad`; Flax uses `nnx.MultiHeadAttention` with `nnx.make_causal_mask`, Equinox "
    "`eqx.nn.MultiheadAttention` per sequence, `jax.vmap`-ed over the batch; PyTorch "
    "`nn.MultiheadAttention(batch_first=True)` with a boolean causal mask, with its default intra-op "
    "threads (one per core) and restricted to one thread."
)
VOCAB, CONTEXT, LAYERS, HEADS, WIDTH, BATCH = 103, 64, 4, 4, 128, 32


def data(seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, VOCAB, (BATCH, CONTEXT + 1)).astype(np.int32)
    return ids[:, :-1], ids[:, 1:]


# --------------------------------------------------------------------------- funcnn
def funcnn_step(mode):
    import funcnn as fn

    model = fn.models.gpt(VOCAB, context=CONTEXT, layers=LAYERS, heads=HEADS, width=WIDTH)
    x, y = data()
    return funcnn_stepper(model, x, y, mode, loss=fn.losses.softmax_cross_entropy)


# --------------------------------------------------------------------------- raw JAX
def layer_norm(x, g, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / jnp.sqrt(var + eps) * g + b


def attention(x, w_in, b_in, w_out, b_out, heads):
    """Causal self-attention with torch's layout: w_in (3D, D), b_in (3D,), w_out (D, D)."""
    bsz, t, d = x.shape
    q, k, v = jnp.split(x @ w_in.T + b_in, 3, axis=-1)
    split = lambda a: a.reshape(bsz, t, heads, d // heads).transpose(0, 2, 1, 3)  # noqa: E731
    q, k, v = split(q), split(k), split(v)
    s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(d // heads)
    s = jnp.where(jnp.tril(jnp.ones((t, t), bool)), s, -jnp.inf)
    o = jax.nn.softmax(s, axis=-1) @ v
    return o.transpose(0, 2, 1, 3).reshape(bsz, t, d) @ w_out.T + b_out


def jax_gpt_logits(p, ids, heads=HEADS):
    """The GPT forward over the plain weights of ``canonical_init`` / ``canonical``."""
    x = p["tok"][ids] + p["pos"][: ids.shape[1]]
    for b in p["blocks"]:
        x = x + attention(layer_norm(x, b["ln1_g"], b["ln1_b"]), b["w_in"], b["b_in"], b["w_out"], b["b_out"], heads)
        h = jax.nn.gelu(layer_norm(x, b["ln2_g"], b["ln2_b"]) @ b["w1"].T + b["b1"], approximate=False)
        x = x + h @ b["w2"].T + b["b2"]
    return layer_norm(x, p["lnf_g"], p["lnf_b"]) @ p["w_head"].T + p["b_head"]


def canonical_init(key, vocab=VOCAB, context=CONTEXT, layers=LAYERS, width=WIDTH):
    keys = iter(jax.random.split(key, 4 + 4 * layers))
    normal = lambda shape: 0.02 * jax.random.normal(next(keys), shape)  # noqa: E731
    d = width
    blocks = [{"ln1_g": jnp.ones(d), "ln1_b": jnp.zeros(d), "w_in": normal((3 * d, d)), "b_in": jnp.zeros(3 * d),
               "w_out": normal((d, d)), "b_out": jnp.zeros(d), "ln2_g": jnp.ones(d), "ln2_b": jnp.zeros(d),
               "w1": normal((4 * d, d)), "b1": jnp.zeros(4 * d), "w2": normal((d, 4 * d)), "b2": jnp.zeros(d)}
              for _ in range(layers)]
    return {"tok": normal((vocab, d)), "pos": normal((context, d)), "blocks": blocks, "lnf_g": jnp.ones(d),
            "lnf_b": jnp.zeros(d), "w_head": normal((vocab, d)), "b_head": jnp.zeros(vocab)}


def raw_jax_step():
    def loss(p, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(jax_gpt_logits(p, x), y).mean()

    x, y = data()
    return jax_stepper(loss, canonical_init(jax.random.key(0)), x, y)


# --------------------------------------------------------------------------- Flax NNX
def flax_step():
    from flax import nnx

    class Block(nnx.Module):
        def __init__(self, rngs):
            self.ln1, self.ln2 = nnx.LayerNorm(WIDTH, epsilon=1e-5, rngs=rngs), nnx.LayerNorm(WIDTH, epsilon=1e-5,
                                                                                                 rngs=rngs)
            self.attn = nnx.MultiHeadAttention(HEADS, WIDTH, decode=False, rngs=rngs)
            self.fc1, self.fc2 = nnx.Linear(WIDTH, 4 * WIDTH, rngs=rngs), nnx.Linear(4 * WIDTH, WIDTH, rngs=rngs)

        def __call__(self, x, mask):
            x = x + self.attn(self.ln1(x), mask=mask)
            return x + self.fc2(nnx.gelu(self.fc1(self.ln2(x)), approximate=False))

    class Model(nnx.Module):
        def __init__(self, rngs):
            self.tok = nnx.Embed(VOCAB, WIDTH, rngs=rngs)
            self.pos = nnx.Param(0.02 * jax.random.normal(rngs.params(), (CONTEXT, WIDTH)))
            self.blocks = nnx.List([Block(rngs) for _ in range(LAYERS)])
            self.lnf = nnx.LayerNorm(WIDTH, epsilon=1e-5, rngs=rngs)
            self.head = nnx.Linear(WIDTH, VOCAB, rngs=rngs)

        def __call__(self, ids):
            x = self.tok(ids) + self.pos[...][: ids.shape[1]]
            mask = nnx.make_causal_mask(ids)
            for b in self.blocks:
                x = b(x, mask)
            return self.head(self.lnf(x))

    x, y = map(jnp.asarray, data())
    return flax_stepper(Model(nnx.Rngs(0)), x, y, lambda m: m.head.kernel[...])


# --------------------------------------------------------------------------- Equinox
def equinox_step():
    import equinox as eqx

    class Block(eqx.Module):
        ln1: eqx.nn.LayerNorm
        ln2: eqx.nn.LayerNorm
        attn: eqx.nn.MultiheadAttention
        fc1: eqx.nn.Linear
        fc2: eqx.nn.Linear

        def __init__(self, key):
            k1, k2, k3 = jax.random.split(key, 3)
            self.ln1, self.ln2 = eqx.nn.LayerNorm(WIDTH, eps=1e-5), eqx.nn.LayerNorm(WIDTH, eps=1e-5)
            self.attn = eqx.nn.MultiheadAttention(HEADS, WIDTH, use_query_bias=True, use_key_bias=True,
                                                  use_value_bias=True, use_output_bias=True, key=k1)
            self.fc1, self.fc2 = eqx.nn.Linear(WIDTH, 4 * WIDTH, key=k2), eqx.nn.Linear(4 * WIDTH, WIDTH, key=k3)

        def __call__(self, x, mask):
            h = jax.vmap(self.ln1)(x)
            x = x + self.attn(h, h, h, mask=mask)
            h = jax.nn.gelu(jax.vmap(self.fc1)(jax.vmap(self.ln2)(x)), approximate=False)
            return x + jax.vmap(self.fc2)(h)

    class Model(eqx.Module):
        tok: eqx.nn.Embedding
        pos: jax.Array
        blocks: list
        lnf: eqx.nn.LayerNorm
        head: eqx.nn.Linear

        def __init__(self, key):
            keys = jax.random.split(key, LAYERS + 3)
            self.tok = eqx.nn.Embedding(VOCAB, WIDTH, key=keys[0])
            self.pos = 0.02 * jax.random.normal(keys[1], (CONTEXT, WIDTH))
            self.blocks = [Block(k) for k in keys[3:]]
            self.lnf = eqx.nn.LayerNorm(WIDTH, eps=1e-5)
            self.head = eqx.nn.Linear(WIDTH, VOCAB, key=keys[2])

        def __call__(self, ids):
            t = ids.shape[0]
            x = jax.vmap(self.tok)(ids) + self.pos[:t]
            mask = jnp.tril(jnp.ones((t, t), bool))
            for b in self.blocks:
                x = b(x, mask)
            return jax.vmap(self.head)(jax.vmap(self.lnf)(x))

    x, y = map(jnp.asarray, data())
    return equinox_stepper(Model(jax.random.key(0)), x, y)


# --------------------------------------------------------------------------- PyTorch
def torch_gpt(vocab=VOCAB, context=CONTEXT, layers=LAYERS, heads=HEADS, width=WIDTH):
    """The same GPT as a ``torch.nn.Module``: ids (B, T) long -> logits (B, T, vocab)."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
            self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
            self.fc1, self.fc2 = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)

        def forward(self, x, mask):
            h = self.ln1(x)
            x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
            return x + self.fc2(nn.functional.gelu(self.fc1(self.ln2(x))))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok = nn.Embedding(vocab, width)
            self.pos = nn.Parameter(0.02 * torch.randn(context, width))
            self.blocks = nn.ModuleList([Block() for _ in range(layers)])
            self.lnf = nn.LayerNorm(width)
            self.head = nn.Linear(width, vocab)

        def forward(self, ids):
            t = ids.shape[1]
            mask = torch.triu(torch.ones(t, t, dtype=torch.bool, device=ids.device), diagonal=1)
            x = self.tok(ids) + self.pos[:t]
            for b in self.blocks:
                x = b(x, mask)
            return self.head(self.lnf(x))

    return GPT()


def torch_state_dict(p):
    """torch ``GPT.state_dict()`` entries from plain weights (``canonical``'s dict)."""
    import torch

    t = lambda a: torch.from_numpy(np.array(a))  # noqa: E731
    sd = {"tok.weight": t(p["tok"]), "pos": t(p["pos"]), "lnf.weight": t(p["lnf_g"]), "lnf.bias": t(p["lnf_b"]),
          "head.weight": t(p["w_head"]), "head.bias": t(p["b_head"])}
    names = {"ln1_g": "ln1.weight", "ln1_b": "ln1.bias", "w_in": "attn.in_proj_weight", "b_in": "attn.in_proj_bias",
             "w_out": "attn.out_proj.weight", "b_out": "attn.out_proj.bias", "ln2_g": "ln2.weight",
             "ln2_b": "ln2.bias", "w1": "fc1.weight", "b1": "fc1.bias", "w2": "fc2.weight", "b2": "fc2.bias"}
    for i, b in enumerate(p["blocks"]):
        sd.update({f"blocks.{i}.{names[k]}": t(v) for k, v in b.items()})
    return sd


def torch_step(threads=None):
    """PyTorch's step; with ``threads`` set, torch runs it on that many intra-op threads."""
    import torch

    torch.manual_seed(0)
    model = torch_gpt()
    x, y = (torch.from_numpy(a).long() for a in data())

    def loss_fn(logits, y):
        return torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1))

    return torch_stepper(model, loss_fn, torch.optim.Adam(model.parameters(), 1e-3), x, y, threads=threads)


def contenders():
    return {
        "funcnn manual": funcnn_step("manual"),
        "funcnn autodiff": funcnn_step("autodiff"),
        "raw jax": raw_jax_step(),
        "flax nnx": flax_step(),
        "equinox": equinox_step(),
        "pytorch": torch_step(),
        "pytorch (1 thread)": torch_step(threads=1),
    }
