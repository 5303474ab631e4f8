"""A character-level GPT (4 pre-norm blocks, 4 heads, width 128, MLP 512, context 64,
vocabulary 103, tied head), batch 32, AdamW, next-character cross-entropy.

The same model in every contender, nanoGPT's: token + learned position embeddings; per block
x + c_proj(causal attention(c_attn(ln_1(x)))) and x + c_proj(GELU(c_fc(ln_2(x)))); final
LayerNorm; the head is the token table (tied, no bias). Every contender starts from funcnn's
initial weights (GPT-2 initialisation), loaded by nanoGPT's names (``funcnn.models.gpt_state_dict``),
and ``harness.check_equivalence`` compares losses and gradients before anything is timed.
``torch_gpt`` and ``jax_gpt_logits`` are also the outside references of ``tests/test_gpt.py``
and ``experiments/gpt_pydoc.py``.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from harness import (equinox_stepper, flax_stepper, funcnn_stepper, jax_stepper, key_path_name, made, path_names,
                     torch_adamw, torch_stepper)

SMALL = dict(vocab=103, context=64, layers=4, heads=4, width=128, batch=32, time=64, gelu="exact")
TITLE = "GPT 4 layers x 4 heads, width 128, context 64, vocab 103, tied head, batch 32, AdamW"
REFERENCE = "pytorch"
NOTES = (
    "Every contender is nanoGPT's model with funcnn's initial weights and AdamW (lr 1e-3, betas "
    "(0.9, 0.999), eps 1e-8, weight decay 0.1 on the tensors of rank >= 2, as nanoGPT). funcnn manual "
    "runs the hand-written backward of every layer (attention recomputes its probabilities from the "
    "stored per-row log-sum-exp); funcnn autodiff is `jax.grad` of the same forward. Raw JAX is a "
    "forward over nanoGPT's named arrays with `jax.nn.dot_product_attention(is_causal=True)` under "
    "`jax.grad`; Flax NNX and Equinox are the same modules (`nnx.Linear`/`eqx.nn.Linear` fused qkv, "
    "`jax.nn.dot_product_attention`, tied head through `nnx.Embed.attend` / the embedding table), "
    "`nnx.Optimizer` + `nnx.jit` and `eqx.filter_jit` (Equinox per sequence, `jax.vmap`-ed). The funcnn, raw "
    "JAX and Equinox steps donate their carry (weights and optimizer state) to XLA; Flax NNX's `nnx.jit` "
    "step does not. PyTorch is "
    "nanoGPT's `model.py` (fused qkv `nn.Linear`, `F.scaled_dot_product_attention(is_causal=True)`) with "
    "`torch.optim.AdamW(fused=True)`, eager with its default intra-op threads (one per core) and with "
    "one thread, and under `torch.compile` (default mode, inductor; compiled during the warm-up)."
)


def data(cfg=SMALL, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, cfg["vocab"], (cfg["batch"], cfg["time"] + 1)).astype(np.int32)
    return ids[:, :-1], ids[:, 1:]


def funcnn_model(cfg=SMALL):
    """funcnn's GPT with nanoGPT's choices: tied head, biases, GPT-2 initialisation."""
    import funcnn as fn

    return fn.models.gpt(cfg["vocab"], context=cfg["context"], layers=cfg["layers"], heads=cfg["heads"],
                         width=cfg["width"], tie_embeddings=True, bias=True, init="gpt2", gelu=cfg["gelu"])


def state_dict(params):
    """nanoGPT's named arrays of funcnn ``params``; the tied ``lm_head.weight`` left out
    (it is ``transformer.wte.weight``, as in ``torch``'s ``named_parameters``)."""
    import funcnn as fn

    sd = fn.models.gpt_state_dict(params)
    if sd["lm_head.weight"] is sd["transformer.wte.weight"]:
        sd.pop("lm_head.weight")
    return sd


def nanogpt_name(path):
    """A Flax/Equinox leaf path of the modules below -> nanoGPT's name."""
    parts = path.split(".")
    parts[-1] = {"kernel": "weight", "scale": "weight", "embedding": "weight"}.get(parts[-1], parts[-1])
    name = ".".join(parts)
    return name if name.startswith("lm_head") else "transformer." + name


def load(tree, sd, transpose=("kernel",)):
    """``tree`` (an ``nnx.State`` or an ``eqx.Module``) with every array replaced by ``sd``'s, by name."""
    def leaf(path, a):
        if not hasattr(a, "shape"):
            return a
        name = key_path_name(path)
        value = jnp.asarray(sd[nanogpt_name(name)])
        return value.T if name.split(".")[-1] in transpose else value

    return jax.tree_util.tree_map_with_path(leaf, tree)


def named(tree):
    """Gradients of a Flax/Equinox model as nanoGPT's named arrays (kernels transposed back)."""
    out = {}
    for name, a in path_names(tree).items():
        out[nanogpt_name(name)] = a.T if name.endswith("kernel") else a
    return out


def cross_entropy(logits, y):
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


# --------------------------------------------------------------------------- funcnn
def funcnn_step(mode, params, cfg=SMALL):
    import funcnn as fn

    x, y = data(cfg)
    return funcnn_stepper(funcnn_model(cfg), x, y, mode, loss=fn.losses.softmax_cross_entropy,
                          params=params).named(state_dict)


# --------------------------------------------------------------------------- raw JAX
def layer_norm(x, g, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) * jax.lax.rsqrt(var + eps) * g + b


def textbook_attention(q, k, v, is_causal=True):
    """softmax(Q K^T / sqrt(d), masked) V in the input's dtype, q, k, v (B, T, N, H) -> (B, T, N, H)
    (``jax.nn.dot_product_attention`` runs its softmax in float32, too coarse for a float64 reference)."""
    s = jnp.einsum("btnh,bsnh->bnts", q, k) / jnp.sqrt(q.shape[-1]).astype(q.dtype)
    if is_causal:
        t = q.shape[1]
        s = jnp.where(jnp.tril(jnp.ones((t, t), bool)), s, -jnp.inf)
    return jnp.einsum("bnts,bsnh->btnh", jax.nn.softmax(s, axis=-1), v)


def jax_gpt_logits(p, ids, heads, gelu="exact", attention=jax.nn.dot_product_attention):
    """The GPT forward over nanoGPT's named arrays ``p`` (``funcnn.models.gpt_state_dict``'s names;
    biases optional, ``lm_head.weight`` defaulting to the token table): ids (B, T) -> logits (B, T, V).
    ``attention(q, k, v, is_causal=True)`` on (B, T, heads, d)."""
    b_, t = ids.shape
    x = p["transformer.wte.weight"][ids] + p["transformer.wpe.weight"][:t]
    n = 1 + max(int(k.split(".")[2]) for k in p if k.startswith("transformer.h."))

    def linear(h, name):
        y = h @ p[name + ".weight"].T
        return y + p[name + ".bias"] if name + ".bias" in p else y

    def ln(h, name):
        return layer_norm(h, p[name + ".weight"], p.get(name + ".bias", 0.0))

    for i in range(n):
        blk = f"transformer.h.{i}."
        q, k, v = jnp.split(linear(ln(x, blk + "ln_1"), blk + "attn.c_attn"), 3, axis=-1)
        q, k, v = (a.reshape(b_, t, heads, -1) for a in (q, k, v))
        o = attention(q, k, v, is_causal=True).reshape(b_, t, -1)
        x = x + linear(o, blk + "attn.c_proj")
        h = jax.nn.gelu(linear(ln(x, blk + "ln_2"), blk + "mlp.c_fc"), approximate=gelu == "tanh")
        x = x + linear(h, blk + "mlp.c_proj")
    x = ln(x, "transformer.ln_f")
    logits = x @ p.get("lm_head.weight", p["transformer.wte.weight"]).T
    return logits + p["lm_head.bias"] if "lm_head.bias" in p else logits


def raw_jax_step(sd, cfg=SMALL):
    def loss(p, x, y):
        return cross_entropy(jax_gpt_logits(p, x, cfg["heads"], cfg["gelu"]), y)

    x, y = data(cfg)
    return jax_stepper(loss, {k: jnp.asarray(v) for k, v in sd.items()}, x, y).named(dict)


# --------------------------------------------------------------------------- Flax NNX
def flax_model(cfg=SMALL):
    from flax import nnx

    d, heads, approximate = cfg["width"], cfg["heads"], cfg["gelu"] == "tanh"

    class Attention(nnx.Module):
        def __init__(self, rngs):
            self.c_attn, self.c_proj = nnx.Linear(d, 3 * d, rngs=rngs), nnx.Linear(d, d, rngs=rngs)

        def __call__(self, x):
            b, t, _ = x.shape
            q, k, v = (a.reshape(b, t, heads, -1) for a in jnp.split(self.c_attn(x), 3, axis=-1))
            return self.c_proj(jax.nn.dot_product_attention(q, k, v, is_causal=True).reshape(b, t, d))

    class MLP(nnx.Module):
        def __init__(self, rngs):
            self.c_fc, self.c_proj = nnx.Linear(d, 4 * d, rngs=rngs), nnx.Linear(4 * d, d, rngs=rngs)

        def __call__(self, x):
            return self.c_proj(nnx.gelu(self.c_fc(x), approximate=approximate))

    class Block(nnx.Module):
        def __init__(self, rngs):
            self.ln_1, self.ln_2 = nnx.LayerNorm(d, epsilon=1e-5, rngs=rngs), nnx.LayerNorm(d, epsilon=1e-5, rngs=rngs)
            self.attn, self.mlp = Attention(rngs), MLP(rngs)

        def __call__(self, x):
            x = x + self.attn(self.ln_1(x))
            return x + self.mlp(self.ln_2(x))

    class GPT(nnx.Module):
        def __init__(self, rngs):
            self.wte, self.wpe = nnx.Embed(cfg["vocab"], d, rngs=rngs), nnx.Embed(cfg["context"], d, rngs=rngs)
            self.h = nnx.List([Block(rngs) for _ in range(cfg["layers"])])
            self.ln_f = nnx.LayerNorm(d, epsilon=1e-5, rngs=rngs)

        def __call__(self, ids):
            x = self.wte(ids) + self.wpe(jnp.arange(ids.shape[1]))
            for block in self.h:
                x = block(x)
            return self.wte.attend(self.ln_f(x))

    return GPT(nnx.Rngs(0))


def flax_step(sd, cfg=SMALL):
    from flax import nnx

    graph, params, rest = nnx.split(flax_model(cfg), nnx.Param, ...)
    model = nnx.merge(graph, load(params, sd), rest)
    x, y = map(jnp.asarray, data(cfg))
    return flax_stepper(model, x, y, lambda m: m.ln_f.scale[...]).named(named)


# --------------------------------------------------------------------------- Equinox
def equinox_model(cfg=SMALL):
    """nanoGPT in Equinox: one sequence (T,) -> logits (T, V)."""
    import equinox as eqx

    d, heads, approximate = cfg["width"], cfg["heads"], cfg["gelu"] == "tanh"

    class Attention(eqx.Module):
        c_attn: eqx.nn.Linear
        c_proj: eqx.nn.Linear

        def __init__(self, key):
            k1, k2 = jax.random.split(key)
            self.c_attn, self.c_proj = eqx.nn.Linear(d, 3 * d, key=k1), eqx.nn.Linear(d, d, key=k2)

        def __call__(self, x):
            t = x.shape[0]
            q, k, v = (a.reshape(t, heads, -1) for a in jnp.split(jax.vmap(self.c_attn)(x), 3, axis=-1))
            return jax.vmap(self.c_proj)(jax.nn.dot_product_attention(q, k, v, is_causal=True).reshape(t, d))

    class MLP(eqx.Module):
        c_fc: eqx.nn.Linear
        c_proj: eqx.nn.Linear

        def __init__(self, key):
            k1, k2 = jax.random.split(key)
            self.c_fc, self.c_proj = eqx.nn.Linear(d, 4 * d, key=k1), eqx.nn.Linear(4 * d, d, key=k2)

        def __call__(self, x):
            return jax.vmap(self.c_proj)(jax.nn.gelu(jax.vmap(self.c_fc)(x), approximate=approximate))

    class Block(eqx.Module):
        ln_1: eqx.nn.LayerNorm
        attn: Attention
        ln_2: eqx.nn.LayerNorm
        mlp: MLP

        def __init__(self, key):
            k1, k2 = jax.random.split(key)
            self.ln_1, self.ln_2 = eqx.nn.LayerNorm(d, eps=1e-5), eqx.nn.LayerNorm(d, eps=1e-5)
            self.attn, self.mlp = Attention(k1), MLP(k2)

        def __call__(self, x):
            x = x + self.attn(jax.vmap(self.ln_1)(x))
            return x + self.mlp(jax.vmap(self.ln_2)(x))

    class GPT(eqx.Module):
        wte: eqx.nn.Embedding
        wpe: eqx.nn.Embedding
        h: list
        ln_f: eqx.nn.LayerNorm

        def __init__(self, key):
            keys = jax.random.split(key, cfg["layers"] + 2)
            self.wte = eqx.nn.Embedding(cfg["vocab"], d, key=keys[0])
            self.wpe = eqx.nn.Embedding(cfg["context"], d, key=keys[1])
            self.h = [Block(k) for k in keys[2:]]
            self.ln_f = eqx.nn.LayerNorm(d, eps=1e-5)

        def __call__(self, ids):
            x = self.wte.weight[ids] + self.wpe.weight[: ids.shape[0]]
            for block in self.h:
                x = block(x)
            return jax.vmap(self.ln_f)(x) @ self.wte.weight.T

    return GPT(jax.random.key(0))


def equinox_step(sd, cfg=SMALL):
    x, y = map(jnp.asarray, data(cfg))
    return equinox_stepper(load(equinox_model(cfg), sd), x, y).named(named)


# --------------------------------------------------------------------------- PyTorch
def torch_gpt(vocab, context, layers, heads, width, *, tied=True, head_bias=False, gelu="exact"):
    """nanoGPT's ``model.py`` GPT (bias=True): ids (B, T) long -> logits (B, T, vocab). Load
    ``funcnn.models.gpt_state_dict(params)`` with ``load_state_dict`` (``torch_weights``).
    ``tied=False, head_bias=True`` is funcnn's untied head with its bias."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    approximate = "tanh" if gelu == "tanh" else "none"

    class CausalSelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_attn, self.c_proj = nn.Linear(width, 3 * width), nn.Linear(width, width)

        def forward(self, x):
            b, t, d = x.shape
            q, k, v = self.c_attn(x).split(width, dim=2)
            q, k, v = (a.view(b, t, heads, d // heads).transpose(1, 2) for a in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return self.c_proj(y.transpose(1, 2).contiguous().view(b, t, d))

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_fc, self.gelu, self.c_proj = nn.Linear(width, 4 * width), nn.GELU(approximate), \
                nn.Linear(4 * width, width)

        def forward(self, x):
            return self.c_proj(self.gelu(self.c_fc(x)))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1, self.attn, self.ln_2, self.mlp = nn.LayerNorm(width), CausalSelfAttention(), \
                nn.LayerNorm(width), MLP()

        def forward(self, x):
            x = x + self.attn(self.ln_1(x))
            return x + self.mlp(self.ln_2(x))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.transformer = nn.ModuleDict(dict(
                wte=nn.Embedding(vocab, width), wpe=nn.Embedding(context, width),
                h=nn.ModuleList([Block() for _ in range(layers)]), ln_f=nn.LayerNorm(width)))
            self.lm_head = nn.Linear(width, vocab, bias=head_bias)
            if tied:
                self.transformer.wte.weight = self.lm_head.weight

        def forward(self, idx):
            pos = torch.arange(idx.shape[1], dtype=torch.long, device=idx.device)
            x = self.transformer.wte(idx) + self.transformer.wpe(pos)
            for block in self.transformer.h:
                x = block(x)
            return self.lm_head(self.transformer.ln_f(x))

    return GPT()


def torch_weights(sd):
    """nanoGPT's named NumPy arrays as torch tensors for ``load_state_dict`` (the tied head
    given the token table)."""
    import torch

    out = {k: torch.from_numpy(np.array(v)) for k, v in sd.items()}
    out.setdefault("lm_head.weight", out["transformer.wte.weight"])
    return out


def torch_step(sd, cfg=SMALL, threads=None, compile=False):
    """PyTorch's step; ``threads``: that many intra-op threads; ``compile``: under ``torch.compile``."""
    import torch

    torch.manual_seed(0)
    model = torch_gpt(cfg["vocab"], cfg["context"], cfg["layers"], cfg["heads"], cfg["width"], gelu=cfg["gelu"])
    model.load_state_dict(torch_weights(sd))
    x, y = (torch.from_numpy(a).long() for a in data(cfg))
    vocab = cfg["vocab"]

    def loss_fn(logits, y):
        return torch.nn.functional.cross_entropy(logits.view(-1, vocab), y.view(-1))

    forward = torch.compile(model) if compile else None
    return torch_stepper(model, loss_fn, torch_adamw(model), x, y, threads=threads, forward=forward).named(dict)


def contenders(cfg=SMALL, only=None, single_thread=True, params=None):
    """Every contender, each from funcnn's initial weights ``params`` (default: key 0);
    ``only``: these names; ``single_thread``: with "pytorch (1 thread)"."""
    if params is None:
        params = funcnn_model(cfg).init(jax.random.key(0), (cfg["time"],))[0]
    sd = state_dict(params)
    makers = {
        "funcnn manual": lambda: funcnn_step("manual", params, cfg),
        "funcnn autodiff": lambda: funcnn_step("autodiff", params, cfg),
        "raw jax": lambda: raw_jax_step(sd, cfg),
        "flax nnx": lambda: flax_step(sd, cfg),
        "equinox": lambda: equinox_step(sd, cfg),
        "pytorch": lambda: torch_step(sd, cfg),
        "pytorch (1 thread)": lambda: torch_step(sd, cfg, threads=1),
        "pytorch compile": lambda: torch_step(sd, cfg, compile=True),
    }
    if not single_thread:
        makers.pop("pytorch (1 thread)")
    return made(makers, only)
