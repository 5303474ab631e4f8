"""LayerNorm, RMSNorm, GroupNorm, Embedding, GELU, PositionalEmbedding, MultiHeadAttention:
backwards checked three ways at perturbed params, values and gradients equal to PyTorch's
in float64, jit/vmap, half precision, the attention cache's size, wrong derivations
flagged, and errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import RTOL_BF16, RTOL_F32, RTOL_F64, assert_close
from layer_checks import check_at, params64

import funcnn as fn
from funcnn.layers import attention, layernorm
from funcnn.layers.embedding import TiedEmbedding, TiedReadout


def normal(key, shape, dtype=jnp.float32):
    return jax.random.normal(jax.random.key(key), shape, dtype)


def ids(key, shape, vocab):
    return jax.random.randint(jax.random.key(key), shape, 0, vocab)


# (layer, one example's shape, input) -- small shapes, every parameter perturbed in the checks
CASES = {
    "layernorm": (lambda: fn.LayerNorm(), (3, 5), lambda: normal(1, (2, 3, 5))),
    "rmsnorm": (lambda: fn.RMSNorm(), (3, 5), lambda: normal(1, (2, 3, 5))),
    "groupnorm(2)": (lambda: fn.GroupNorm(2), (2, 3, 4), lambda: normal(1, (2, 2, 3, 4))),
    "groupnorm(1)": (lambda: fn.GroupNorm(1), (3, 2), lambda: normal(1, (2, 3, 2))),
    "groupnorm(C)": (lambda: fn.GroupNorm(3), (2, 2, 3), lambda: normal(1, (2, 2, 2, 3))),
    "embedding": (lambda: fn.Embedding(7, 3), (5,), lambda: ids(1, (2, 5), 7)),
    "gelu": (lambda: fn.GELU(), (6,), lambda: 2 * normal(1, (3, 6))),
    "gelu(tanh)": (lambda: fn.GELU(approximate=True), (6,), lambda: 2 * normal(1, (3, 6))),
    "positional": (lambda: fn.PositionalEmbedding(6, 4), (4, 4), lambda: normal(1, (2, 4, 4))),
    "attention": (lambda: fn.MultiHeadAttention(2), (4, 6), lambda: normal(1, (2, 4, 6))),
    "attention(causal)": (lambda: fn.MultiHeadAttention(3, causal=True), (5, 6), lambda: normal(1, (2, 5, 6))),
    "attention(causal, no bias)": (lambda: fn.MultiHeadAttention(2, causal=True, use_bias=False), (4, 6),
                                   lambda: normal(1, (2, 4, 6))),
    "layernorm(no bias)": (lambda: fn.LayerNorm(use_bias=False), (3, 5), lambda: normal(1, (2, 3, 5))),
    "tied_embedding": (lambda: TiedEmbedding(7, 3), (5,), lambda: ids(1, (2, 5), 7)),
    "tied_readout": (lambda: TiedReadout(7), ((4, 3), (7, 3)), lambda: (normal(1, (2, 4, 3)), normal(2, (7, 3)))),
    "tied_readout(bias)": (lambda: TiedReadout(7, use_bias=True), ((4, 3), (7, 3)),
                           lambda: (normal(1, (2, 4, 3)), normal(2, (7, 3)))),
}


# every layer is also checked at random params by `funcnn check`'s catalog (tests/test_check_gallery.py);
# here the configurations it does not hold: instance norm (G = C), three causal heads
@pytest.mark.slow
@pytest.mark.parametrize("name", ["groupnorm(C)", "attention(causal)", "attention(causal, no bias)",
                                  "layernorm(no bias)", "tied_embedding", "tied_readout", "tied_readout(bias)"])
def test_backward_matches_autodiff_and_finite_differences_at_perturbed_params(name):
    make, shape, x = CASES[name]
    check_at(make(), shape, x()).assert_ok()


# ---- equal to PyTorch in float64: values and gradients (torch's autograd, same dy) ----

def _torch_grads(torch_fn, params, x, dy):
    torch = pytest.importorskip("torch")
    p = {k: torch.tensor(np.asarray(v), requires_grad=True) for k, v in params.items()}
    is_float = np.issubdtype(np.asarray(x).dtype, np.floating)
    xt = torch.tensor(np.asarray(x), requires_grad=is_float)
    y = torch_fn(torch, p, xt)
    y.backward(torch.tensor(np.asarray(dy)))
    return y.detach().numpy(), {k: v.grad.numpy() for k, v in p.items()}, xt.grad.numpy() if is_float else None


TORCH = {
    "layernorm": lambda t, p, x: t.nn.functional.layer_norm(x, (x.shape[-1],), p["gamma"], p["beta"], 1e-5),
    "rmsnorm": lambda t, p, x: t.nn.functional.rms_norm(x, (x.shape[-1],), p["gamma"], 1e-5),
    "groupnorm(2)": lambda t, p, x: t.nn.functional.group_norm(
        x.permute(0, 3, 1, 2), 2, p["gamma"], p["beta"], 1e-5).permute(0, 2, 3, 1),
    "groupnorm(1)": lambda t, p, x: t.nn.functional.group_norm(
        x.permute(0, 2, 1), 1, p["gamma"], p["beta"], 1e-5).permute(0, 2, 1),
    "groupnorm(C)": lambda t, p, x: t.nn.functional.group_norm(
        x.permute(0, 3, 1, 2), 3, p["gamma"], p["beta"], 1e-5).permute(0, 2, 3, 1),
    "embedding": lambda t, p, x: t.nn.functional.embedding(x, p["w"]),
    "gelu": lambda t, p, x: t.nn.functional.gelu(x),
    "gelu(tanh)": lambda t, p, x: t.nn.functional.gelu(x, approximate="tanh"),
    "positional": lambda t, p, x: x + p["w"][: x.shape[1]],
    "layernorm(no bias)": lambda t, p, x: t.nn.functional.layer_norm(x, (x.shape[-1],), p["gamma"], None, 1e-5),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TORCH))
def test_equal_to_pytorch_in_float64(name):
    make, shape, x = CASES[name]
    layer = make()
    with jax.enable_x64(True):
        params, state = params64(layer, shape)
        x = x()
        x = x.astype(jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x
        y, _, cache = layer.forward(params, state, x)
        dy = normal(2, y.shape, jnp.float64)
        grads, dx = layer.backward(params, cache, dy)
        y_t, grads_t, dx_t = _torch_grads(TORCH[name], params, x, dy)
    assert_close(y, y_t, RTOL_F64, what="value")
    assert_close(grads, grads_t, RTOL_F64, what="param grads")
    if dx_t is None:
        assert dx is None
    else:
        assert_close(dx, dx_t, RTOL_F64, what="dx")


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_attention_equals_torch_multihead_attention_in_float64(causal):
    torch = pytest.importorskip("torch")
    layer = fn.MultiHeadAttention(2, causal=causal)
    with jax.enable_x64(True):
        params, state = params64(layer, (5, 6))
        x = normal(1, (3, 5, 6), jnp.float64)
        y, _, cache = layer.forward(params, state, x)
        dy = normal(2, y.shape, jnp.float64)
        grads, dx = layer.backward(params, cache, dy)
    mod = torch.nn.MultiheadAttention(6, 2, batch_first=True, dtype=torch.float64)
    with torch.no_grad():  # our params into torch's layout: the same names, the same shapes
        mod.in_proj_weight.copy_(torch.tensor(np.asarray(params["w_in"])))
        mod.in_proj_bias.copy_(torch.tensor(np.asarray(params["b_in"])))
        mod.out_proj.weight.copy_(torch.tensor(np.asarray(params["w_out"])))
        mod.out_proj.bias.copy_(torch.tensor(np.asarray(params["b_out"])))
    xt = torch.tensor(np.asarray(x), requires_grad=True)
    mask = torch.triu(torch.ones(5, 5, dtype=torch.bool), 1) if causal else None  # True: may not attend
    y_t = mod(xt, xt, xt, attn_mask=mask, need_weights=False)[0]
    y_t.backward(torch.tensor(np.asarray(dy)))
    assert_close(y, y_t.detach().numpy(), RTOL_F64, what="value")
    want = {"w_in": mod.in_proj_weight.grad, "b_in": mod.in_proj_bias.grad,
            "w_out": mod.out_proj.weight.grad, "b_out": mod.out_proj.bias.grad}
    assert_close(grads, {k: v.numpy() for k, v in want.items()}, RTOL_F64, what="param grads")
    assert_close(dx, xt.grad.numpy(), RTOL_F64, what="dx")


def test_causal_attention_does_not_look_ahead():
    layer = fn.MultiHeadAttention(2, causal=True)
    params, state = layer.init(jax.random.key(0), (6, 4))
    x = normal(1, (1, 6, 4))
    apply = jax.jit(layer.apply)
    y, _ = apply(params, state, x)
    y2, _ = apply(params, state, x.at[:, 4:].set(normal(2, (1, 2, 4))))
    y, y2 = np.asarray(y), np.asarray(y2)
    assert_close(y2[:, :4], y[:, :4], RTOL_F32)
    assert np.max(np.abs(y2[:, 4:] - y[:, 4:])) > 1e-3


# ---- the attention cache: linear in T ----

@pytest.mark.parametrize("t", [64, 1024])
def test_attention_cache_is_linear_in_t(t):
    b, d, h = 1, 128, 4
    layer = fn.MultiHeadAttention(h)
    params = jax.eval_shape(lambda: layer.init(jax.random.key(0), (t, d))[0])
    x = jax.ShapeDtypeStruct((b, t, d), jnp.float32)
    cache = jax.eval_shape(lambda p, xx: layer.forward(p, {}, xx)[2], params, x)
    leaves = jax.tree_util.tree_leaves(cache)
    assert sum(leaf.size for leaf in leaves) == b * t * (5 * d + h)  # x, [Q K V], O, the row log-sum-exp
    assert all(leaf.shape.count(t) == 1 for leaf in leaves)  # no T x T array is kept


@pytest.mark.slow
@pytest.mark.parametrize("use_bias", [True, False], ids=["bias", "no bias"])
def test_attention_decoding_with_the_cache_equals_the_full_causal_forward(use_bias):
    # prefill 3 positions, then 2 single positions: the outputs are the full forward's rows
    layer = fn.MultiHeadAttention(2, causal=True, use_bias=use_bias)
    with jax.enable_x64(True):
        params, state = params64(layer, (5, 6))
        x = normal(1, (2, 5, 6), jnp.float64)
        apply = jax.jit(layer.apply)  # as a decoder runs it: compiled, once per length of the slice
        full, _ = apply(params, state, x)
        cache = attention.decode_state(2, 8, 6, jnp.float64)  # a buffer longer than the text
        parts = []
        for lo, hi in ((0, 3), (3, 4), (4, 5)):
            y, cache = apply(params, cache, x[:, lo:hi])
            parts.append(y)
    assert int(cache["pos"]) == 5
    assert_close(jnp.concatenate(parts, axis=1), full, RTOL_F64)
    with pytest.raises(ValueError, match="MultiHeadAttention: decoding with a key/value cache needs causal=True"):
        fn.MultiHeadAttention(2).apply(params, attention.decode_state(2, 8, 6), x[:, :1].astype(jnp.float32))


# ---- jit, vmap ----

@pytest.mark.slow
@pytest.mark.parametrize("name", ["groupnorm(2)", "attention(causal)"])
def test_jit_and_vmap_match_eager(name):
    make, shape, x = CASES[name]
    layer, x = make(), x()
    params, state = layer.init(jax.random.key(0), shape)
    dy = normal(3, layer.forward(params, state, x)[0].shape)

    def run(p, xx, d):
        y, _, cache = layer.forward(p, state, xx)
        return y, layer.backward(p, cache, d)

    eager = run(params, x, dy)
    assert_close(jax.jit(run)(params, x, dy), eager, RTOL_F32)
    y, (grads, dx) = jax.vmap(run, in_axes=(None, 0, 0))(params, x[:, None], dy[:, None])
    assert_close(y[:, 0], eager[0], RTOL_F32)
    assert_close(jax.tree_util.tree_map(lambda g: g.sum(0), grads), eager[1][0], RTOL_F32)
    if dx is not None:
        assert_close(dx[:, 0], eager[1][1], RTOL_F32)


# ---- half precision: statistics and softmax in float32 inside ----

def test_layernorm_statistics_run_in_float32_for_bfloat16_input():
    # a large common offset: a bfloat16 mean (8 mantissa bits) of values near 300 is off by ~1,
    # the size of the spread itself; computed in float32 the normalised values are right
    x = (300.0 + normal(1, (4, 16))).astype(jnp.bfloat16)
    layer = fn.LayerNorm()
    params, state = layer.init(jax.random.key(0), (16,))
    y, _, cache = layer.forward(params, state, x)
    assert y.dtype == jnp.bfloat16
    want, _ = layer.apply(params, state, x.astype(jnp.float32))
    assert_close(y, want, RTOL_BF16)
    grads, dx = layer.backward(params, cache, jnp.ones_like(y))
    assert dx.dtype == jnp.bfloat16 and grads["gamma"].dtype == jnp.float32


@pytest.mark.parametrize("make", [fn.RMSNorm, lambda: fn.GroupNorm(2)], ids=["rmsnorm", "groupnorm"])
def test_bfloat16_compute_dtype_against_float32(make):
    layer = make()
    params, state = layer.init(jax.random.key(0), (4, 8))
    x = (300.0 + normal(1, (2, 4, 8))).astype(jnp.bfloat16)  # the offset defeats bfloat16 statistics
    want, _ = layer.apply(params, state, x.astype(jnp.float32))
    y, _ = layer.apply(params, state, x)
    assert y.dtype == jnp.bfloat16
    assert_close(y, want, RTOL_BF16)


@pytest.mark.slow
def test_attention_softmax_runs_in_float32_for_bfloat16_input():
    layer = fn.MultiHeadAttention(2, causal=True)
    params, state = layer.init(jax.random.key(0), (4, 8))

    @jax.jit  # the dtypes are the traced program's, as a training step runs it
    def run(params, x):
        y, _, cache = layer.forward(params, state, x)
        return y, cache.inner, layer.backward(params, cache, jnp.ones_like(y))

    y, (_, qkv, o, lse), (grads, dx) = run(params, normal(1, (2, 4, 8)).astype(jnp.bfloat16))
    assert y.dtype == qkv.dtype == o.dtype == jnp.bfloat16 and lse.dtype == jnp.float32
    assert dx.dtype == jnp.bfloat16 and grads["w_in"].dtype == jnp.float32
    assert all(np.all(np.isfinite(np.asarray(g, np.float32))) for g in jax.tree_util.tree_leaves((y, grads, dx)))


def test_param_dtype_and_dtype():
    layer = fn.LayerNorm(param_dtype=jnp.bfloat16, dtype=jnp.float32)
    params, state = layer.init(jax.random.key(0), (4,))
    assert params["gamma"].dtype == jnp.bfloat16
    y, _, cache = layer.forward(params, state, normal(1, (2, 4)))
    grads, _ = layer.backward(params, cache, jnp.ones_like(y))
    assert y.dtype == jnp.float32 and grads["gamma"].dtype == jnp.bfloat16
    emb = fn.Embedding(5, 3, dtype=jnp.bfloat16)
    y, _ = emb.apply(*emb.init(jax.random.key(0), (2,)), jnp.array([[0, 4]]))
    assert y.dtype == jnp.bfloat16


# ---- forward values not covered by torch ----

def test_embedding_rows_and_scatter_add_of_repeated_ids():
    layer = fn.Embedding(4, 2)
    params, state = layer.init(jax.random.key(0), (3,))
    tokens = jnp.array([[1, 3, 1]])
    y, _, cache = layer.forward(params, state, tokens)
    assert_close(y[0], params["w"][jnp.array([1, 3, 1])], RTOL_F32)
    grads, dx = layer.backward(params, cache, jnp.array([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]]))
    assert dx is None
    assert_close(grads["w"], jnp.array([[0.0, 0.0], [6.0, 8.0], [0.0, 0.0], [3.0, 4.0]]), RTOL_F32)


# ---- the checker flags wrong derivations of these layers ----

def _wrong_norm_backward(g, xhat, inv_std, axes):  # the mean(g) term forgotten
    return inv_std * (g - xhat * jnp.mean(g * xhat, axis=axes, keepdims=True))


WRONG = {
    "layernorm: mean(g) term missing": (layernorm, "normalize_backward", _wrong_norm_backward, "layernorm"),
    "attention: Delta term missing (softmax Jacobian diagonal only)":
        (attention, "softmax_rows_backward", lambda p, dp, delta: p * dp, "attention(causal)"),
    "attention: Delta from rowsum(dP) instead of rowsum(P dP)":
        (attention, "softmax_rows_backward", lambda p, dp, delta: p * (dp - dp.sum(-1, keepdims=True)), "attention"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(WRONG))
def test_wrong_derivations_are_flagged(name, monkeypatch):
    module, attr, wrong, case = WRONG[name]
    monkeypatch.setattr(module, attr, wrong)
    make, shape, x = CASES[case]
    assert not check_at(make(), shape, x(), fd=False).ok, f"{name} passed the checker"


def test_gelu_exact_with_the_tanh_slope_is_flagged():
    # the two slopes differ by < 1e-3: the checker's 1e-10 tolerance still sees it
    exact, tanh = fn.GELU(), fn.GELU(approximate=True)
    wrong = exact.__class__(**{**exact.__dict__, "backward": tanh.backward})
    assert not check_at(wrong, (6,), 2 * normal(1, (3, 6)), fd=False).ok


# ---- errors ----

def test_errors_name_the_layer_and_the_argument():
    with pytest.raises(ValueError, match=r"Embedding: ids must be in \[0, 5\), got values in \[0, 5\]"):
        fn.Embedding(5, 2).apply({"w": jnp.zeros((5, 2))}, {}, jnp.array([[0, 5]]))
    with pytest.raises(ValueError, match="Embedding: ids must be in"):
        fn.Embedding(5, 2).apply({"w": jnp.zeros((5, 2))}, {}, jnp.array([[-1, 2]]))
    with pytest.raises(TypeError, match="Embedding: ids must be an integer array"):
        fn.Embedding(5, 2).apply({"w": jnp.zeros((5, 2))}, {}, jnp.zeros((1, 2)))
    with pytest.raises(ValueError, match="MultiHeadAttention: input must be .* divisible by heads=4"):
        fn.MultiHeadAttention(4).init(jax.random.key(0), (3, 6))
    with pytest.raises(ValueError, match=r"LayerNorm: x must have shape \(batch, ..., 4\)"):
        layer = fn.LayerNorm()
        layer.apply(layer.init(jax.random.key(0), (4,))[0], {}, jnp.ones((2, 5)))
    with pytest.raises(ValueError, match="GroupNorm: the last .* divisible by groups=4"):
        fn.GroupNorm(4).init(jax.random.key(0), (2, 2, 6))
    with pytest.raises(ValueError, match=r"PositionalEmbedding: input must be \(time <= 4, 3\)"):
        fn.PositionalEmbedding(4, 3).init(jax.random.key(0), (5, 3))
    with pytest.raises(ValueError, match="RMSNorm: eps must be a positive number"):
        fn.RMSNorm(eps=0.0)
    with pytest.raises(TypeError, match="LayerNorm: param_dtype must be a floating dtype"):
        fn.LayerNorm(param_dtype=jnp.int32)
    with pytest.raises(TypeError, match="GELU: approximate must be a bool"):
        fn.GELU("tanh")
