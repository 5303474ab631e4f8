"""Training on real data, the data loaders, and fit's argument checks."""
import jax
import numpy as np
import optax
import pytest

import funcnn as fn
from funcnn import losses, models
from helpers import RTOL_F32, assert_close


@pytest.mark.slow
def test_mlp_on_digits_reaches_95_percent_with_manual_gradients():
    d = fn.data.load("digits")
    model = models.mlp(d.x_train.shape[1:], 10, hidden=(64,))
    result = fn.train.fit(model, losses.softmax_cross_entropy, optax.adam(3e-3), d, epochs=8, batch_size=32,
                          key=jax.random.key(0), grad="manual", progress=False)
    h = result.history
    assert h["test_acc"][-1] >= 0.95, h["test_acc"]
    assert h["loss"][-1] < h["loss"][0] / 5
    assert all(len(v) == 8 for v in h.values())


@pytest.mark.slow
def test_fit_is_deterministic_given_the_key():
    d = fn.data.load("moons")
    model = models.mlp((2,), 2, hidden=(8,), activation="tanh")
    run = lambda: fn.train.fit(model, losses.softmax_cross_entropy, optax.sgd(0.1, momentum=0.9), d,
                               epochs=2, batch_size=50, key=jax.random.key(3), progress=False).params
    a, b = run(), run()
    jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)


@pytest.mark.slow
@pytest.mark.parametrize("name,shape", [("digits", (8, 8, 1)), ("mnist5k", (28, 28, 1)), ("xor", (2,)),
                                        ("blobs", (2,)), ("moons", (2,))])
def test_datasets_load_offline(name, shape):
    d = fn.data.load(name, seed=1)
    assert d.x_train.shape[1:] == shape and d.x_train.dtype == np.float32 and d.y_train.dtype == np.int32
    assert len(d.x_train) > len(d.x_test) > 0
    assert set(np.unique(d.y_train)) == set(range(d.num_classes))
    if name in ("digits", "mnist5k"):
        assert d.x_train.min() >= 0 and d.x_train.max() <= 1
    if name == "mnist5k":
        assert (len(d.x_train), len(d.x_test)) == (4000, 1000)


@pytest.mark.parametrize("seed", [0, 5, 2**32 - 1])
def test_splits_and_synthetic_sets_are_scikit_learns_draw_for_draw(seed):
    """The NumPy splits and generators reproduce scikit-learn's arrays exactly (the runs and
    figures made with them stay valid)."""
    from sklearn.datasets import load_digits, make_blobs, make_moons
    from sklearn.model_selection import train_test_split

    from funcnn.data.datasets import _standardise, _stratified_split

    def split(x, y, test_size):
        xtr, xte, ytr, yte = train_test_split(x, y, test_size=test_size, random_state=seed, stratify=y)
        return xtr.astype(np.float32), ytr, xte.astype(np.float32), yte

    digits = load_digits()
    blobs = make_blobs(400, centers=[[-2, -2], [2, 2]], cluster_std=0.8, random_state=seed)
    moons = make_moons(600, noise=0.2, random_state=seed)
    want = {"blobs": split(_standardise(blobs[0]), blobs[1], 0.25),
            "moons": split(_standardise(moons[0]), moons[1], 0.25),
            "digits": split(digits.images[..., None] / 16.0, digits.target, 0.2)}
    for name, arrays in want.items():
        got = fn.data.load(name, seed=seed)
        for a, b in zip(got[:4], arrays):
            np.testing.assert_array_equal(a, b, err_msg=name)
    y = np.random.default_rng(seed % 97).integers(0, 3, 101)
    for test_size in (0.3, 17):
        for a, b in zip(_stratified_split(y, test_size, seed), train_test_split(np.arange(101), test_size=test_size,
                                                                                random_state=seed, stratify=y)):
            np.testing.assert_array_equal(a, b)


def test_synthetic_sets_load_without_scikit_learn(monkeypatch):
    import sys

    for name in ["sklearn", *[m for m in sys.modules if m.startswith("sklearn.")]]:
        monkeypatch.setitem(sys.modules, name, None)  # any import of scikit-learn raises ImportError
    for name in ("xor", "blobs", "moons"):
        assert len(fn.data.load(name, seed=3).x_train) > 0
    with pytest.raises(ImportError):
        fn.data.load("digits")


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown dataset 'cifar'; known: blobs, digits, mnist1d, mnist5k, moons, pydoc, xor"):
        fn.data.load("cifar")


@pytest.mark.slow
def test_fit_argument_errors():
    d = fn.data.load("blobs")
    model = models.mlp((2,), 2, hidden=(4,))
    kwargs = dict(key=jax.random.key(0), progress=False)
    with pytest.raises(ValueError, match="grad must be one of"):
        fn.train.fit(model, losses.softmax_cross_entropy, optax.sgd(0.1), d, epochs=1, batch_size=8, grad="numeric", **kwargs)
    with pytest.raises(ValueError, match="batch_size must be an integer in"):
        fn.train.fit(model, losses.softmax_cross_entropy, optax.sgd(0.1), d, epochs=1, batch_size=10**6, **kwargs)
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        fn.train.fit(model, losses.softmax_cross_entropy, optax.sgd(0.1), d, epochs=0, batch_size=8, **kwargs)


@pytest.mark.slow
@pytest.mark.parametrize("scan", [True, False])
def test_fit_compiles_the_epoch_once(scan):
    """The loss is traced once per compilation: many epochs (or batches) must not retrace."""
    import dataclasses

    traces = []
    base = losses.softmax_cross_entropy

    def counting_value(pred, y):
        traces.append(1)
        return base.value(pred, y)

    loss = dataclasses.replace(base, value=counting_value)
    d = fn.data.load("blobs")
    fn.train.fit(models.mlp((2,), 2, hidden=(4,)), loss, optax.sgd(0.1), d, epochs=4, batch_size=20,
                 key=jax.random.key(0), progress=False, scan=scan)
    # one trace for the training epoch (or step), and one per distinct eval shape (train set,
    # test set): the per-epoch evaluation is compiled too, not retraced every epoch
    eval_shapes = {np.shape(d.x_train), np.shape(d.x_test)}
    assert len(traces) == 1 + len(eval_shapes), len(traces)


@pytest.mark.slow
def test_scanned_and_stepped_epochs_train_to_the_same_parameters():
    """fit(scan=True) (one lax.scan per epoch) and fit(scan=False) (the compiled step per
    batch) use the same permutation and keys: same parameters, same history."""
    from funcnn.layers.conv import Conv2D
    from funcnn.layers.pooling import MaxPool2D

    def conv_net(impl):
        return fn.serial(Conv2D(3, 3, impl=impl), fn.ReLU(), MaxPool2D(2), fn.Flatten(), fn.Dense(4))

    model = conv_net("xla")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 6, 6, 1)).astype(np.float32)
    y = rng.integers(0, 4, 40).astype(np.int32)
    runs = [fn.train.fit(model, losses.softmax_cross_entropy, optax.adam(1e-2), (x, y), epochs=2, batch_size=8,
                         key=jax.random.key(3), progress=False, scan=scan) for scan in (True, False)]
    for a, b in zip(jax.tree_util.tree_leaves(runs[0].params), jax.tree_util.tree_leaves(runs[1].params)):
        assert_close(a, b, RTOL_F32)
    assert_close(runs[0].history["loss"], runs[1].history["loss"], RTOL_F32)
    # the automatic choice between the two (scan=None) is measured: tests/test_autotune.py


def test_the_epoch_schedule_is_a_permutation_cut_into_full_batches():
    """One schedule for the scanned, stepped and sharded epochs: n // B rows of distinct
    examples (the remainder dropped, a different one per key) and one key per step."""
    idx, keys = fn.train.shuffle(jax.random.key(0), 43, 10)
    idx = np.asarray(idx)
    assert idx.shape == (4, 10) and keys.shape == (4,)
    assert len(set(idx.ravel())) == 40 and idx.min() >= 0 and idx.max() < 43
    again, _ = jax.jit(fn.train.shuffle, static_argnums=(1, 2))(jax.random.key(0), 43, 10)
    np.testing.assert_array_equal(np.asarray(again), idx)  # the same under jit (the stepped epochs' path)
    other, _ = fn.train.shuffle(jax.random.key(1), 43, 10)
    assert not np.array_equal(np.asarray(other), idx)


def test_scanned_and_stepped_epochs_return_the_same_flags_and_loss():
    """make_epoch(scan=True) and make_epoch(scan=False) run the same steps on the same batches."""
    model = models.mlp((3,), 2, hidden=(4,))
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((25, 3)).astype(np.float32), rng.integers(0, 2, 25).astype(np.int32)
    params, state = model.init(jax.random.key(0), (3,))
    opt = optax.sgd(0.1)
    outs = [fn.train.make_epoch(model, losses.softmax_cross_entropy, opt, batch_size=8, scan=scan)(
        params, state, opt.init(params), x, y, jax.random.key(2)) for scan in (True, False)]
    assert outs[0][4].shape == outs[1][4].shape == (3, len(fn.train.guard_names(params)))
    assert not np.asarray(outs[0][4]).any() and not np.asarray(outs[1][4]).any()
    assert_close(outs[0][3], outs[1][3], RTOL_F32)
    assert_close(outs[0][0], outs[1][0], RTOL_F32)
