"""The Rosenblatt rule converges on separable data and cannot on XOR; backprop can."""
import jax
import numpy as np
import optax
import pytest

import funcnn as fn
from funcnn import losses
from funcnn.science import perceptron


@pytest.mark.slow
def test_rosenblatt_converges_on_separable_blobs():
    d = fn.data.load("blobs")
    r = perceptron.train(d.x_train, d.y_train, epochs=50, key=jax.random.key(0))
    assert bool(r.converged)
    errors = np.asarray(r.errors_per_epoch)
    first_clean = int(np.flatnonzero(errors == 0)[0])
    assert np.all(errors[first_clean:] == 0)  # once clean, no further updates
    assert int(r.updates) == errors.sum() > 0
    pred = np.asarray(perceptron.predict(r.w, r.b, d.x_train))[:, 0]
    np.testing.assert_array_equal(pred, d.y_train)


def test_rosenblatt_rule_matches_a_hand_step():
    """From W = 0, b = 0 the first example (target 0) gives a = hardlim(0) = 1, e = -1."""
    p = np.array([[1.0, 2.0]], np.float32)
    r = perceptron.train(p, np.array([0]), epochs=1)
    np.testing.assert_allclose(r.w, [[-1.0, -2.0]])
    np.testing.assert_allclose(r.b, [-1.0])


def test_rosenblatt_cannot_learn_xor():
    d = fn.data.load("xor")
    r = perceptron.train(d.x_train, d.y_train, epochs=50, key=jax.random.key(0))
    assert not bool(r.converged)
    assert np.all(np.asarray(r.errors_per_epoch) > 0)


@pytest.mark.slow
def test_two_layer_sigmoid_network_solves_xor_by_backprop():
    d = fn.data.load("xor")
    model = fn.serial(fn.Dense(8), fn.Sigmoid(), fn.Dense(2))
    result = fn.train.fit(model, losses.softmax_cross_entropy, optax.adam(0.05), d, epochs=40, batch_size=30,
                          key=jax.random.key(0), grad="manual", progress=False)
    assert result.history["test_acc"][-1] >= 0.95
