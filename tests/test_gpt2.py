"""GPT-2's choices in funcnn: tied head, no biases, GPT-2 initialisation; each variant's
hand-written backward checked; the nanoGPT state_dict conversion both ways; the AdamW decay
mask; check_model naming a broken layer of the GPT-2-shaped model; the GPT-2 comparison
against PyTorch at a small size (experiments/gpt2_small.py)."""
import importlib.util
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnn as fn
from funcnn import models
from funcnn.core.layer import Layer
from funcnn.regularization import decays_weights, weight_decay_mask
from layer_checks import perturbed

VOCAB, CONTEXT = 7, 4
IDS = np.array([[1, 6, 0, 3], [5, 2, 4, 1]], np.int32)


def gpt2_shaped(layers: int = 2) -> Layer:
    """The GPT-2 architecture (tied head, biases, GPT-2 init, tanh GELU) at a width the checker runs fast."""
    return models.gpt2(VOCAB, context=CONTEXT, layers=layers, heads=2, width=8)


VARIANTS = {
    "tied": dict(tie_embeddings=True),
    "untied, no bias": dict(bias=False),
    "tied, no bias, gpt2 init, tanh GELU": dict(tie_embeddings=True, bias=False, init="gpt2", gelu="tanh"),
}


def perturbed_params(model: Layer) -> dict:
    """Float64 initial params moved off their special values (gains 1, zero biases), so no term hides."""
    with jax.enable_x64(True):
        return perturbed(model.init(jax.random.key(0), (CONTEXT,))[0], jax.random.key(1), dtype=np.float64)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_each_variant_passes_the_checker(name):
    model = models.gpt(VOCAB, context=CONTEXT, layers=1, heads=2, width=8, **VARIANTS[name])
    fn.check_layer(model, (CONTEXT,), x=IDS, params=perturbed_params(model), max_fd=64).assert_ok()


@pytest.mark.slow
def test_the_gpt2_shaped_model_passes_check_model():
    model = gpt2_shaped(layers=1)
    report = fn.check_model(model, (CONTEXT,), x=IDS, params=perturbed_params(model), max_fd=64)
    assert report.ok, str(report)
    assert "1_first/0_body/1_residual/0_serial/1_attention" in [r.path for r in report.rows]


@pytest.mark.slow
def test_check_model_names_the_broken_layer_of_the_gpt2_model(monkeypatch):
    calls = []
    real = models.token_dense

    def broken_second_block_fc(features, *args, **kwargs):  # the 3rd token_dense built: block 1's c_fc
        layer = real(features, *args, **kwargs)
        calls.append(layer)
        if len(calls) != 3:
            return layer

        def backward(params, cache, dy):
            grads, dx = layer.backward(params, cache, dy)
            return {**grads, "w": 1.01 * grads["w"]}, dx  # off by 1% in dW only

        return Layer(layer.name, layer.init, layer.forward, backward, layer.output_shape)

    monkeypatch.setattr(models, "token_dense", broken_second_block_fc)
    report = fn.check_model(gpt2_shaped(), (CONTEXT,), x=IDS, random=False, fd=False)
    assert report.first_wrong == "1_first/0_body/4_residual/0_serial/1_token_dense", str(report)
    assert report["1_first/0_body/2_residual/0_serial/1_token_dense"].ok  # block 0's is fine


@pytest.mark.slow
def test_tied_head_adds_its_gradient_into_the_embedding():
    model = gpt2_shaped(layers=1)
    (k0, emb), (k1, body), (k2, head) = model.children
    passes = {}  # what the body hands on, seen while the program below is traced

    @jax.jit  # one program (op by op, each primitive would compile alone)
    def pieces(key):
        params, state = model.init(key, (CONTEXT,))
        params = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), params)
        y, _, cache = model.forward(params, state, IDS)
        dy = jax.random.normal(jax.random.key(1), y.shape, jnp.float64)
        grads, _ = model.backward(params, cache, dy)
        (e, w), _, c0 = emb.forward(params[k0], state[k0], IDS)
        (h, w_passed), _, c1 = body.forward(params[k1], state[k1], (e, w))
        _, _, c2 = head.forward(params[k2], state[k2], (h, w_passed))
        _, (dh, dw_head) = head.backward(params[k2], c2, dy)
        _, (de, dw_back) = body.backward(params[k1], c1, (dh, dw_head))
        passes.update(table=w_passed is w, gradient=dw_back is dw_head)
        lookup = jnp.zeros_like(w).at[IDS.reshape(-1)].add(de.reshape(-1, w.shape[1]))
        return params, grads, dy, h, dw_head, lookup

    with jax.enable_x64(True):
        params, grads, dy, h, dw_head, lookup = pieces(jax.random.key(0))
    assert (k0, k1, k2) == ("0_tied_embedding", "1_first", "2_tied_readout") and params[k2] == {}
    assert passes == {"table": True, "gradient": True}  # the table and its head gradient pass the body untouched
    np.testing.assert_allclose(dw_head, np.einsum("btv,btd->vd", dy, h), rtol=1e-12)
    lookup, dw_head = np.asarray(lookup), np.asarray(dw_head)  # float64 arrays: host numpy
    np.testing.assert_allclose(grads[k0]["w"], lookup + dw_head, rtol=1e-12, atol=1e-15)
    assert np.max(np.abs(lookup)) > 0 and np.max(np.abs(dw_head)) > 0


@pytest.mark.slow
def test_gpt2_init_statistics():
    layers, width = 3, 64
    model = models.gpt(101, context=16, layers=layers, heads=4, width=width, tie_embeddings=True, init="gpt2")
    params, _ = model.init(jax.random.key(0), (16,))
    sd = models.gpt_state_dict(params)
    proj = 0.02 / math.sqrt(2 * layers)
    for name, value in sd.items():
        if name.endswith("bias"):
            np.testing.assert_array_equal(value, 0.0, err_msg=name)
        elif ".ln_" in name or "ln_f" in name:
            np.testing.assert_array_equal(value, 1.0, err_msg=name)
        else:
            std = proj if name.endswith("c_proj.weight") else 0.02
            assert abs(value.mean()) < 4 * std / math.sqrt(value.size), name
            assert abs(value.std() / std - 1) < 6 / math.sqrt(value.size) + 0.02, (name, value.std(), std)
    assert sd["lm_head.weight"] is sd["transformer.wte.weight"]


@pytest.mark.parametrize("name", sorted(VARIANTS) + ["untied"])
def test_state_dict_round_trip_and_names(name):
    model = models.gpt(VOCAB, context=CONTEXT, layers=2, heads=2, width=8, **VARIANTS.get(name, {}))
    params, _ = model.init(jax.random.key(3), (CONTEXT,))
    sd = models.gpt_state_dict(params)
    back = models.gpt_params(model, sd)
    assert jax.tree_util.tree_structure(back) == jax.tree_util.tree_structure(params)
    for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(back)):
        np.testing.assert_array_equal(a, b)
    bias = VARIANTS.get(name, {}).get("bias", True)
    tied = VARIANTS.get(name, {}).get("tie_embeddings", False)
    assert sd["transformer.h.1.attn.c_attn.weight"].shape == (24, 8)
    assert sd["transformer.h.0.mlp.c_proj.weight"].shape == (8, 32)
    assert ("transformer.h.0.ln_1.bias" in sd) == bias and ("lm_head.bias" in sd) == (bias and not tied)
    assert len(sd) == 2 + 2 * (12 if bias else 6) + (2 if bias else 1) + 1 + (bias and not tied)


def test_state_dict_refusals_name_the_entry():
    model = gpt2_shaped()
    sd = models.gpt_state_dict(model.init(jax.random.key(0), (CONTEXT,))[0])
    with pytest.raises(ValueError, match="gpt_params: state_dict lacks 'transformer.h.1.mlp.c_fc.bias'"):
        models.gpt_params(model, {k: v for k, v in sd.items() if k != "transformer.h.1.mlp.c_fc.bias"})
    with pytest.raises(ValueError, match=r"gpt_params: transformer.ln_f.weight must have shape \(8,\)"):
        models.gpt_params(model, {**sd, "transformer.ln_f.weight": np.ones(9)})
    with pytest.raises(ValueError, match="lm_head.weight differs from transformer.wte.weight"):
        models.gpt_params(model, {**sd, "lm_head.weight": sd["lm_head.weight"] + 1})


def test_decay_mask_is_nanogpts_rule_and_the_default_filter_agrees():
    params, _ = models.gpt(VOCAB, context=CONTEXT, layers=2, heads=2, width=8).init(jax.random.key(0), (CONTEXT,))
    mask = models.gpt_decay_mask(params)
    sd_mask = models.gpt_state_dict(mask)
    for name, decays in sd_mask.items():
        assert bool(decays) == (name.endswith("weight") and ".ln_" not in name and "ln_f" not in name), name
    assert mask == weight_decay_mask(params, decays_weights)


def test_gpt_refuses_bad_options():
    with pytest.raises(ValueError, match=r"gpt: init must be one of \['default', 'gpt2'\], got 'xavier'"):
        models.gpt(VOCAB, context=CONTEXT, layers=1, heads=2, width=8, init="xavier")
    with pytest.raises(ValueError, match="gpt: gelu must be one of"):
        models.gpt(VOCAB, context=CONTEXT, layers=1, heads=2, width=8, gelu="relu")
    with pytest.raises(TypeError, match="gpt: tie_embeddings must be a bool, got 1"):
        models.gpt(VOCAB, context=CONTEXT, layers=1, heads=2, width=8, tie_embeddings=1)


def test_gpt2_small_comparison_against_pytorch_at_a_small_size(tmp_path):
    pytest.importorskip("torch")
    # loaded from its file: experiments/ on sys.path would shadow installed packages by the
    # scripts' names (experiments/mnist1d.py is not the mnist1d package)
    path = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "gpt2_small.py"
    spec = importlib.util.spec_from_file_location("gpt2_small", path)
    gpt2_small = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpt2_small)

    assert gpt2_small.main(["--small", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "gpt2_small.md").read_text()
    assert "FAIL" not in text and text.count("PASS") == 8
    assert (tmp_path / "gpt2_small.png").stat().st_size > 1000
