"""The GPT model: gradients (hand-written vs autodiff vs finite differences), forward against
PyTorch, causality, sampling, and the CLI round trip train -> sample on a tiny budget."""
import json
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnn as fn
from funcnn import models
from funcnn.training import lm, sampling
from funcnn.cli import main
from helpers import RTOL_F64, assert_close
from layer_checks import perturbed

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))

VOCAB, CONTEXT = 11, 8


def tiny(layers=1):
    return models.gpt(VOCAB, context=CONTEXT, layers=layers, heads=2, width=16)


def random_params(model, key, dtype=jnp.float32):
    """Initial params moved off their special values (LayerNorm's gamma = 1, zero biases), in
    ``dtype`` (float64: call inside ``jax.enable_x64(True)``)."""
    params, state = model.init(key, (CONTEXT,))
    return perturbed(params, jax.random.fold_in(key, 1), dtype=dtype), state


def ids(key, batch=3, t=CONTEXT):
    return jax.random.randint(key, (batch, t), 0, VOCAB)


@pytest.mark.slow
def test_gpt_manual_gradients_equal_autodiff_and_finite_differences_in_float64():
    model = tiny()
    loss = fn.losses.softmax_cross_entropy
    with jax.enable_x64(True):
        params, state = random_params(model, jax.random.key(0), jnp.float64)
        x, y = ids(jax.random.key(1)), ids(jax.random.key(2))
        v_m, g_m, _ = jax.jit(fn.value_and_grad(model, loss, mode="manual"))(params, state, x, y)
        v_a, g_a, _ = jax.jit(fn.value_and_grad(model, loss, mode="autodiff"))(params, state, x, y)
        assert_close(v_m, v_a, RTOL_F64, what="loss")
        assert_close(g_m, g_a, RTOL_F64, what="gradients")
        assert jax.tree_util.tree_structure(g_m) == jax.tree_util.tree_structure(params)
        for path, leaf in jax.tree_util.tree_leaves_with_path(g_m):
            assert np.max(np.abs(np.asarray(leaf))) > 0, f"no gradient reaches {jax.tree_util.keystr(path)}"
        # central differences along one random direction u: (L(p + eps u) - L(p - eps u)) / 2 eps = <g, u>
        leaves, tree = jax.tree_util.tree_flatten(params)
        u = jax.tree_util.tree_unflatten(tree, jax.jit(lambda key: [
            jax.random.normal(k, p.shape, jnp.float64) for p, k in zip(leaves, jax.random.split(key, len(leaves)))])(
            jax.random.key(3)))
        eps = 1e-5

        @jax.jit
        def shifted_loss(s):
            p = jax.tree_util.tree_map(lambda a, d: a + s * eps * d, params, u)
            return loss.value(model.apply(p, state, x)[0], y)

        fd = (shifted_loss(1.0) - shifted_loss(-1.0)) / (2 * eps)
        dot = sum(np.vdot(g, d) for g, d in zip(jax.tree_util.tree_leaves(g_m), jax.tree_util.tree_leaves(u)))
        # truncation eps^2 |L'''| ~ 1e-10 and rounding 1e-16 / eps ~ 1e-11, against <g, u> of order 1
        assert_close(dot, fd, 1e-6, what="directional derivative vs central differences (eps 1e-5)")


def test_token_dense_backward_passes_the_checker():
    report = fn.check_layer(models.token_dense(5), (4, 3))
    assert report.ok, str(report)
    report = fn.check_layer(models.token_dense(5, use_bias=False), (4, 3))
    assert report.ok, str(report)


@pytest.mark.slow
def test_gpt_forward_equals_the_plain_jax_reference_and_is_causal():
    from contenders_gpt import jax_gpt_logits, textbook_attention

    model = tiny(layers=2)
    with jax.enable_x64(True):
        params, state = random_params(model, jax.random.key(0), jnp.float64)
        apply = jax.jit(lambda w: model.apply(params, state, w)[0])
        x = ids(jax.random.key(1))
        y = apply(x)
        named = {k: jnp.asarray(v) for k, v in models.gpt_state_dict(params).items()}
        reference = jax.jit(lambda n, w: jax_gpt_logits(n, w, heads=2, attention=textbook_attention))
        assert_close(y, reference(named, x), RTOL_F64)
        changed = x.at[:, 5:].set((x[:, 5:] + 1) % VOCAB)  # change positions t >= 5 only
        y_changed = apply(changed)
    y, y_changed = np.asarray(y), np.asarray(y_changed)
    np.testing.assert_array_equal(y[:, :5], y_changed[:, :5])
    assert np.min(np.max(np.abs(y[:, 5:] - y_changed[:, 5:]), axis=(1, 2))) > 0


def test_gpt_forward_equals_pytorch_in_float64():
    torch = pytest.importorskip("torch")
    from contenders_gpt import torch_gpt, torch_weights

    model = tiny(layers=2)
    with jax.enable_x64(True):
        params, state = random_params(model, jax.random.key(0), jnp.float64)
        x = ids(jax.random.key(1), t=CONTEXT - 2)  # shorter than the context: positions 0..T-1
        ours = model.apply(params, state, x)[0]
    ref = torch_gpt(VOCAB, CONTEXT, 2, 2, 16, tied=False, head_bias=True).double()
    ref.load_state_dict(torch_weights(models.gpt_state_dict(params)))
    with torch.no_grad():
        theirs = ref(torch.from_numpy(np.array(x)).long()).numpy()
    assert_close(ours, theirs, RTOL_F64)


@pytest.mark.slow
def test_sample_at_low_temperature_is_greedy_decoding_on_the_last_context_characters():
    model = tiny()
    params, state = random_params(model, jax.random.key(0))
    prompt = np.asarray(ids(jax.random.key(1), batch=1, t=6))[0]
    got = [sampling.sample(model, params, prompt, context=CONTEXT, length=4, temperature=1e-6, key=jax.random.key(2),
                           cache=cache) for cache in (True, False)]
    apply = jax.jit(lambda p, w: model.apply(p, state, w)[0])
    seq = list(prompt)
    for _ in range(4):  # greedy, running the model on exactly the last <= CONTEXT ids (no padding)
        seq.append(int(np.argmax(apply(params, jnp.asarray([seq[-CONTEXT:]], jnp.int32))[0, -1])))
    np.testing.assert_array_equal(got[0], seq[6:])
    np.testing.assert_array_equal(got[1], seq[6:])


def test_sample_refuses_bad_arguments():
    model = tiny()
    params, _ = model.init(jax.random.key(0), (CONTEXT,))
    with pytest.raises(ValueError, match="sample: temperature must be a finite number >= 0"):
        sampling.sample(model, params, [1], context=CONTEXT, length=2, temperature=-1.0, key=jax.random.key(0))
    with pytest.raises(ValueError, match="sample: prompt_ids must be a non-empty 1-D sequence"):
        sampling.sample(model, params, [], context=CONTEXT, length=2, key=jax.random.key(0))


# ---- the sampler with a key/value cache (funcnn.training.sampling) ----

@pytest.mark.slow
@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("prompt_len,length", [(3, 4), (3, 12), (8, 3), (10, 4), (1, 1)],
                         ids=["inside", "slides", "full-prompt", "long-prompt", "one"])
def test_cached_sampling_draws_the_same_ids_as_uncached(tied, prompt_len, length):
    model = models.gpt(VOCAB, context=CONTEXT, layers=2, heads=2, width=16, tie_embeddings=tied)
    params, _ = random_params(model, jax.random.key(0))
    prompt = np.asarray(ids(jax.random.key(1), batch=1, t=prompt_len))[0]
    kw = dict(context=CONTEXT, length=length, temperature=4.0, key=jax.random.key(7))  # flat: varied ids
    cached = sampling.sample(model, params, prompt, cache=True, **kw)
    assert cached.shape == (length,) and cached.dtype == np.int32
    np.testing.assert_array_equal(cached, sampling.sample(model, params, prompt, cache=False, **kw))
    if length >= 12:
        assert len(set(cached.tolist())) > 2  # a real draw, not a constant


@pytest.mark.slow
def test_sampling_at_tiny_temperature_is_greedy_decoding_on_the_last_context_ids():
    model = tiny()
    params, state = random_params(model, jax.random.key(0))
    prompt = np.asarray(ids(jax.random.key(1), batch=1, t=6))[0]
    apply = jax.jit(lambda p, w: model.apply(p, state, w)[0])
    seq = list(prompt)
    for _ in range(5):  # greedy, running the model on exactly the last <= CONTEXT ids (no padding)
        seq.append(int(np.argmax(apply(params, jnp.asarray([seq[-CONTEXT:]], jnp.int32))[0, -1])))
    for temperature in (0.0, 0.5 * sampling.GREEDY_BELOW):
        for cache in (True, False):
            got = sampling.sample(model, params, prompt, context=CONTEXT, length=5, temperature=temperature,
                                  key=jax.random.key(2), cache=cache)
            np.testing.assert_array_equal(got, seq[6:])


@pytest.mark.slow
def test_sampling_draws_from_the_tempered_softmax():
    # one step from a one-id prompt, many keys: the frequencies follow softmax(z / T)
    model = tiny()
    params, state = random_params(model, jax.random.key(0))
    z = np.asarray(jax.jit(model.apply)(params, state, jnp.asarray([[3]]))[0][0, -1], np.float64)
    p = np.exp(z / 2.0 - np.max(z / 2.0))
    p /= p.sum()
    draws = [int(sampling.sample(model, params, [3], context=CONTEXT, length=1, temperature=2.0,
                                 key=jax.random.key(i))[0]) for i in range(400)]
    freq = np.bincount(draws, minlength=VOCAB) / len(draws)
    assert np.max(np.abs(freq - p)) < 4 * np.sqrt(0.25 / len(draws))


@pytest.mark.slow
@pytest.mark.parametrize("kwargs,expected", [
    (dict(length=0), "sample: length must be a positive integer, got 0"),
    (dict(temperature=-0.1), "sample: temperature must be a finite number >= 0, got -0.1"),
    (dict(temperature=float("nan")), "sample: temperature must be a finite number >= 0, got nan"),
    (dict(prompt_ids=[]), "sample: prompt_ids must be a non-empty 1-D sequence of integer ids"),
    (dict(prompt_ids=[1.5]), "sample: prompt_ids must be a non-empty 1-D sequence of integer ids"),
    (dict(prompt_ids=[1, VOCAB]), rf"sample: prompt_ids must be in \[0, {VOCAB}\), got values in \[1, {VOCAB}\]"),
    (dict(context=0), "sample: context must be a positive integer, got 0"),
])
def test_sampler_refuses_bad_arguments_in_one_line(kwargs, expected):
    model = tiny()
    params, _ = model.init(jax.random.key(0), (CONTEXT,))
    args = {**dict(prompt_ids=[1, 2], context=CONTEXT, length=3, temperature=1.0, key=jax.random.key(0)), **kwargs}
    with pytest.raises(ValueError, match=expected) as info:
        sampling.sample(model, params, args.pop("prompt_ids"), **args)
    assert "\n" not in str(info.value)


def test_build_dispatches_gpt_and_gpt_refuses_bad_sizes():
    built = models.build("gpt", (CONTEXT,), VOCAB, layers=1, heads=2, width=16)
    assert built.output_shape((CONTEXT,)) == (CONTEXT, VOCAB)
    assert jax.tree_util.tree_structure(jax.eval_shape(lambda k: built.init(k, (CONTEXT,))[0], jax.random.key(0))) \
        == jax.tree_util.tree_structure(jax.eval_shape(lambda k: tiny().init(k, (CONTEXT,))[0], jax.random.key(0)))
    with pytest.raises(ValueError, match="gpt: width must be a multiple of heads"):
        models.gpt(VOCAB, context=CONTEXT, layers=1, heads=3, width=16)
    with pytest.raises(ValueError, match="gpt: layers must be a positive integer"):
        models.gpt(VOCAB, context=CONTEXT, layers=0, heads=2, width=16)


@pytest.mark.slow
def test_train_lm_lowers_the_validation_loss():
    import optax

    from funcnn.data import text

    corpus = text.load_pydoc(0)
    model = models.gpt(corpus.vocab_size, context=CONTEXT, layers=1, heads=2, width=16)
    kw = dict(context=CONTEXT, batch_size=8, optimizer=optax.adam(1e-2), eval_every=15, eval_windows=16, seed=0)
    whole = lm.train_lm(model, corpus, steps=30, **kw)
    h = whole.history
    assert h["step"] == [15, 30] and len(h["train_loss"]) == len(h["val_loss"]) == 2
    assert h["val_loss"][-1] < np.log(corpus.vocab_size) - 1.0  # well below the uniform guess, log 103 = 4.6


@pytest.mark.slow
def test_train_lm_resumed_from_a_checkpoint_is_bitwise_the_run_left_alone(tmp_path):
    import optax

    from funcnn.data import text

    corpus = text.load_pydoc(0)
    model = models.gpt(corpus.vocab_size, context=CONTEXT, layers=1, heads=2, width=16)
    kw = dict(context=CONTEXT, batch_size=8, optimizer=optax.adam(1e-2), eval_every=5, eval_windows=4, seed=0)
    whole = lm.train_lm(model, corpus, steps=10, **kw)
    lm.train_lm(model, corpus, steps=5, checkpoint_dir=tmp_path / "ck", **kw)  # "killed" after step 5
    with pytest.raises(ValueError, match="already holds checkpoints"):
        lm.train_lm(model, corpus, steps=10, checkpoint_dir=tmp_path / "ck", **kw)
    resumed = lm.train_lm(model, corpus, steps=10, checkpoint_dir=tmp_path / "ck", resume=True, **kw)
    for a, b in zip(jax.tree_util.tree_leaves(whole.params), jax.tree_util.tree_leaves(resumed.params)):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert resumed.history["val_loss"] == whole.history["val_loss"]
    assert resumed.history["train_loss"] == whole.history["train_loss"]


@pytest.mark.slow
def test_train_lm_guard_names_the_step_of_the_run_and_keeps_the_last_evaluation(tmp_path):
    import optax

    from funcnn.data import text

    corpus = text.load_pydoc(0)
    model = models.gpt(corpus.vocab_size, context=CONTEXT, layers=1, heads=2, width=16)
    with pytest.raises(fn.train.NonFiniteError) as e:  # SGD with a huge rate: the parameters overflow
        lm.train_lm(model, corpus, context=CONTEXT, steps=12, batch_size=4, optimizer=optax.sgd(1e30), eval_every=1,
                    eval_windows=2, checkpoint_dir=tmp_path / "ck", keep=50)
    err = e.value
    assert err.epoch is None and str(err).startswith(f"train_lm: non-finite value at step {err.step}: {err.where}")
    kept = sorted(int(p.name) for p in (tmp_path / "ck").iterdir() if p.name.isdigit())
    assert kept == list(range(1, err.step))  # one checkpoint per evaluation, none from the bad step on


GPT_FLAGS = ["--model", "gpt", "--data", "pydoc", "--steps", "4", "--context", "8", "--layers", "1", "--heads", "2",
             "--width", "16", "--batch-size", "4", "--eval-every", "2", "--eval-windows", "4", "--no-progress"]


@pytest.mark.slow
def test_cli_train_then_sample_round_trip(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *GPT_FLAGS, "--out", str(out)]) == 0
    text_out = capsys.readouterr().out
    assert "validation loss" in text_out and "manual vs autodiff" in text_out
    record = json.loads((out / "run.json").read_text())
    assert record["kind"] == "gpt" and record["model"]["input_shape"] == [8]
    assert record["model"]["options"] == {"layers": 1, "heads": 2, "width": 16}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["history"]["step"] == [2, 4] and metrics["first_step_grad_rel_diff"] < 1e-4
    assert (out / "curves.png").stat().st_size > 1000

    run = fn.load_run(out)  # the saved params are the trained ones
    assert run.kind == "gpt" and run.complete and run.input_shape == (8,) and run.vocab == run_record_vocab(out)
    model, params = run.model, run.params
    fresh, _ = jax.jit(lambda k: model.init(k, (8,)))(jax.random.key(0))
    assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(fresh)
    assert not np.array_equal(np.asarray(params["0_embedding"]["w"]), np.asarray(fresh["0_embedding"]["w"]))
    assert main(["sample", str(out), "--prompt", "def ", "--length", "30", "--temperature", "0.5"]) == 0
    sampled = capsys.readouterr().out
    assert sampled.startswith("def ") and len(sampled) == len("def ") + 30 + 1  # + print's newline

    # a run killed after its last checkpoint (step 4), before its final files, whose step-4 checkpoint
    # is damaged: the damaged one is set aside, the run continues from step 2 with its recorded arguments
    import shutil

    shutil.rmtree(out / "model")
    meta = out / "checkpoints" / "4" / "meta" / "metadata"
    cut = meta.read_text()[:10]
    meta.write_text(cut)
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--no-progress"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("train_lm: checkpoint ") and err[0].endswith("resuming from step 2")
    assert (out / "checkpoints" / "4.damaged" / "meta" / "metadata").read_text() == cut  # kept as it was
    resumed = json.loads((out / "metrics.json").read_text())
    assert resumed["history"]["step"] == [2, 4] and resumed["history"]["val_loss"] == metrics["history"]["val_loss"]
    for a, b in zip(jax.tree_util.tree_leaves(fn.load_run(out).params), jax.tree_util.tree_leaves(params)):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()  # bitwise the run left alone


def run_record_vocab(run_dir):
    return json.loads((run_dir / "run.json").read_text())["vocab"]


@pytest.mark.parametrize("argv,expected", [
    (["train", "--model", "gpt", "--data", "digits"], "--data: gpt trains on text, use --data pydoc"),
    (["train", "--model", "mlp", "--data", "pydoc"], "--model: the pydoc corpus is text, use --model gpt"),
    (["train", *GPT_FLAGS, "--width", "15"], "--width: expected a multiple of --heads"),
    (["sample", "/nonexistent/run"], "RUN_DIR: expected a folder written by funcnn train --model gpt"),
])
def test_cli_refuses_in_one_line(tmp_path, capsys, argv, expected):
    if argv[0] == "train":
        argv = [*argv, "--out", str(tmp_path / "never")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1
    assert not (tmp_path / "never").exists()
