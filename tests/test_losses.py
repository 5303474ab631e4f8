"""Loss values against references, stability at extreme logits, argument errors."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from funcnn import losses


def test_softmax_cross_entropy_matches_optax_for_labels_and_onehot():
    z = jax.random.normal(jax.random.key(0), (6, 4))
    y = jnp.array([0, 3, 1, 2, 2, 0])
    ref = optax.softmax_cross_entropy_with_integer_labels(z, y).mean()
    np.testing.assert_allclose(losses.softmax_cross_entropy.value(z, y), ref, rtol=1e-6)
    np.testing.assert_allclose(losses.softmax_cross_entropy.value(z, jax.nn.one_hot(y, 4)), ref, rtol=1e-6)
    g = losses.softmax_cross_entropy.grad(z, y)
    np.testing.assert_allclose(g, (jax.nn.softmax(z) - jax.nn.one_hot(y, 4)) / 6, rtol=1e-6, atol=1e-8)


def test_binary_cross_entropy_matches_optax_and_is_stable():
    z = jnp.array([[-1e4], [-3.0], [0.0], [2.0], [1e4]])
    t = jnp.array([[1.0], [0.0], [1.0], [1.0], [0.0]])
    ref = optax.sigmoid_binary_cross_entropy(z, t).mean()
    v = losses.binary_cross_entropy.value(z, t)
    assert np.isfinite(v)
    np.testing.assert_allclose(v, ref, rtol=1e-6)
    np.testing.assert_allclose(v, (1e4 + 3.0486e-2 + 0.6931472 + 0.126928 + 1e4) / 5, rtol=1e-4)
    g = losses.binary_cross_entropy.grad(z, t)
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g[:, 0], np.array([-1, 0.0474259, -0.5, -0.1192029, 1]) / 5, rtol=1e-5, atol=1e-7)


def test_softmax_cross_entropy_is_stable_for_huge_logits():
    z = jnp.array([[1e4, 0.0, -1e4], [-1e4, 1e4, 0.0]])
    v = losses.softmax_cross_entropy.value(z, jnp.array([1, 1]))
    np.testing.assert_allclose(v, 1e4 / 2, rtol=1e-6)
    assert np.all(np.isfinite(losses.softmax_cross_entropy.grad(z, jnp.array([1, 1]))))


def test_mse_and_fixed_variance_gaussian_nll_are_the_same_objective():
    """MSE is the Gaussian NLL with a fixed variance: NLL = D/(2 s^2) * MSE + const."""
    mu = jax.random.normal(jax.random.key(0), (5, 3))
    t = jax.random.normal(jax.random.key(1), (5, 3))
    s = 0.7
    nll = losses.gaussian_nll(s).value(mu, t)
    const = 3 * (np.log(s) + 0.5 * np.log(2 * np.pi))
    np.testing.assert_allclose(nll, 3 / (2 * s**2) * losses.mse.value(mu, t) + const, rtol=1e-5)


def test_learned_variance_gaussian_nll_matches_density():
    mu, logvar = jnp.array([[0.5]]), jnp.array([[np.log(2.0)]])
    t = jnp.array([[1.5]])
    v = losses.gaussian_nll().value(jnp.concatenate([mu, logvar], 1), t)
    ref = -np.log(np.exp(-(1.0**2) / (2 * 2.0)) / np.sqrt(2 * np.pi * 2.0))
    np.testing.assert_allclose(v, ref, rtol=1e-6)


def test_loss_argument_errors():
    with pytest.raises(ValueError, match="target must have the shape of pred"):
        losses.mse.value(jnp.ones((3, 2)), jnp.ones((3,)))
    with pytest.raises(ValueError, match=r"integer target must have shape \(3,\)"):
        losses.softmax_cross_entropy.value(jnp.ones((3, 2)), jnp.ones((2,), jnp.int32))
    with pytest.raises(ValueError, match=r"pred must have shape \(3, 2\)"):
        losses.gaussian_nll().value(jnp.ones((3, 1)), jnp.ones((3,)))
    with pytest.raises(ValueError, match="sigma must be positive"):
        losses.gaussian_nll(0.0)
    with pytest.raises(ValueError, match="loss must be one of"):
        losses.get("hinge")
