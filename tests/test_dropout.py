"""Dropout: the mask's distribution over many draws (a gradient check cannot see it),
eval mode, the key requirement, the same mask in the backward, and the checker."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnn.check import check_layer
from funcnn.core.layer import serial
from funcnn.layers.dropout import Dropout
from helpers import RTOL_F32, assert_close


def _draws(rate, shape, n_keys, x=None):
    """``n_keys`` independent training-mode outputs for the input ``x`` (ones by default)."""
    layer = Dropout(rate)
    x = jnp.ones(shape) if x is None else x
    keys = jax.random.split(jax.random.key(42), n_keys)
    return np.asarray(jax.jit(jax.vmap(lambda k: layer.apply({}, {}, x, key=k, train=True)[0]))(keys))


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.8])
def test_mask_statistics(rate):
    keep = 1.0 - rate
    y = _draws(rate, (32, 50), 200)  # 320,000 units
    n = y.size
    # kept units are scaled by exactly 1 / (1 - rate), dropped ones are exactly 0
    kept = y != 0
    assert_close(y[kept], np.full(np.shape(y[kept]), 1.0 / keep), RTOL_F32)
    # the kept fraction is 1 - rate, within 5 binomial standard deviations
    assert abs(kept.mean() - keep) < 5 * np.sqrt(keep * rate / n)
    # the mean is preserved: E[y] = x = 1, Var[y] = rate / keep
    assert abs(y.mean() - 1.0) < 5 * np.sqrt(rate / keep / n)
    # units are dropped independently: of each other and from draw to draw
    both_neighbours = (kept[:, :, 1:] & kept[:, :, :-1]).mean()
    both_draws = (kept[1:] & kept[:-1]).mean()
    for both in (both_neighbours, both_draws):
        assert abs(both - keep**2) < 5 * np.sqrt(keep**2 * (1 - keep**2) / (n / 2))


def test_mean_is_preserved_for_every_unit():
    x = jax.random.normal(jax.random.key(0), (1, 6))
    y = _draws(0.5, None, 20_000, x=x)  # (draws, 1, 6)
    se = np.abs(np.asarray(x)) * np.sqrt(0.5 / 0.5 / 20_000)
    assert np.all(np.abs(y.mean(0) - np.asarray(x)) < 5 * se)


def test_eval_mode_is_the_identity():
    layer = Dropout(0.5)
    x = jax.random.normal(jax.random.key(0), (4, 7))
    for key in (None, jax.random.key(1)):
        y, state = layer.apply({}, {}, x, key=key, train=False)
        np.testing.assert_array_equal(y, x)
        assert state == {}
    _, _, cache = layer.forward({}, {}, x, train=False)
    np.testing.assert_array_equal(layer.backward({}, cache, x)[1], x)


def test_rate_zero_is_the_identity_in_training_mode():
    x = jax.random.normal(jax.random.key(0), (4, 7))
    np.testing.assert_array_equal(Dropout(0.0).apply({}, {}, x, key=jax.random.key(1), train=True)[0], x)


def test_a_key_is_required_in_training_mode():
    with pytest.raises(ValueError, match="Dropout: a PRNG key is required in training mode"):
        Dropout(0.5).apply({}, {}, jnp.ones((2, 3)), train=True)


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, True, "0.5", None])
def test_bad_rate_is_refused(rate):
    with pytest.raises(ValueError, match=r"Dropout: rate must be a number in \[0, 1\)"):
        Dropout(rate)


def test_integer_input_is_refused():
    with pytest.raises(TypeError, match="Dropout: x must be a floating-point array"):
        Dropout(0.5).apply({}, {}, jnp.ones((2, 3), jnp.int32), key=jax.random.key(0), train=True)


def test_the_key_fixes_the_mask():
    layer = Dropout(0.5)
    x = jnp.ones((8, 16))
    y1 = layer.apply({}, {}, x, key=jax.random.key(1), train=True)[0]
    y1_again = layer.apply({}, {}, x, key=jax.random.key(1), train=True)[0]
    y2 = layer.apply({}, {}, x, key=jax.random.key(2), train=True)[0]
    np.testing.assert_array_equal(y1, y1_again)
    assert not np.array_equal(y1, y2)


def test_backward_applies_the_forward_mask():
    layer = Dropout(0.25)
    key = jax.random.key(3)
    x = jax.random.normal(jax.random.key(0), (5, 9))
    dy = jax.random.normal(jax.random.key(1), (5, 9))
    y, _, cache = layer.forward({}, {}, x, key=key, train=True)
    dparams, dx = layer.backward({}, cache, dy)
    assert dparams == {}
    kept = np.asarray(y) != 0
    assert 0 < kept.mean() < 1
    assert_close(dx, np.where(kept, np.asarray(dy) / 0.75, 0.0), RTOL_F32)
    # autodiff through apply with the same key sees the same mask
    dx_auto = jax.vjp(lambda x: layer.apply({}, {}, x, key=key, train=True)[0], x)[1](dy)[0]
    assert_close(dx, dx_auto, RTOL_F32)


def test_serial_gives_each_dropout_its_own_key():
    model = serial(Dropout(0.5), Dropout(0.5))
    params, state = model.init(jax.random.key(0), (64,))
    _, _, (mask0, mask1) = model.forward(params, state, jnp.ones((4, 64)), key=jax.random.key(1), train=True)
    assert not np.array_equal(mask0, mask1)


# (training mode at key 0 is also in funcnn.check.catalog)
@pytest.mark.parametrize("seed,train", [(1, True), (0, False)], ids=["train", "eval"])
def test_checker_with_a_fixed_key(seed, train):
    check_layer(Dropout(0.3), (3, 4), batch=3, train=train, key=jax.random.key(seed)).assert_ok()


def test_traced_train_flag_is_refused_with_a_hint():
    apply = jax.jit(lambda x, train: Dropout(0.5).apply({}, {}, x, key=jax.random.key(0), train=train))
    with pytest.raises(TypeError, match="Dropout: train must be a Python bool.*static_argnames"):
        apply(jnp.ones((2, 3)), True)
