"""Loss values against references (optax, torch, NumPy), gradients in both modes at
every point (BCE at logits exactly 0 included), stability, target validation."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from funcnn import losses
from funcnn.check import debug
from helpers import RTOL_F32, RTOL_F64, assert_close


@pytest.mark.slow
def test_softmax_cross_entropy_matches_optax_for_labels_and_onehot():
    z = jax.random.normal(jax.random.key(0), (6, 4))
    y = jnp.array([0, 3, 1, 2, 2, 0])
    ref = optax.softmax_cross_entropy_with_integer_labels(z, y).mean()
    assert_close(losses.softmax_cross_entropy.value(z, y), ref, RTOL_F32)
    assert_close(losses.softmax_cross_entropy.value(z, jax.nn.one_hot(y, 4)), ref, RTOL_F32)
    g = losses.softmax_cross_entropy.grad(z, y)
    assert_close(g, (jax.nn.softmax(z) - jax.nn.one_hot(y, 4)) / 6, RTOL_F32)


def test_binary_cross_entropy_matches_optax_and_is_stable():
    z = jnp.array([[-1e4], [-3.0], [0.0], [2.0], [1e4]])
    t = jnp.array([[1.0], [0.0], [1.0], [1.0], [0.0]])
    ref = optax.sigmoid_binary_cross_entropy(z, t).mean()
    v = losses.binary_cross_entropy.value(z, t)
    assert np.isfinite(v)
    assert_close(v, ref, RTOL_F32)
    with jax.enable_x64(True):
        exact = (1e4 + np.log1p(np.exp(-3.0)) + np.log(2.0) + np.log1p(np.exp(-2.0)) + 1e4) / 5
    assert_close(v, exact, RTOL_F32)
    g = losses.binary_cross_entropy.grad(z, t)
    assert np.all(np.isfinite(g))
    sig = 0.5 * (1 + np.tanh(np.array([-1e4, -3.0, 0.0, 2.0, 1e4]) / 2))
    assert_close(g[:, 0], (sig - np.array([1.0, 0.0, 1.0, 1.0, 0.0])) / 5, RTOL_F32)


def test_binary_cross_entropy_autodiff_is_right_at_zero_logits():
    """The issue's case: a zero-initialised Dense(1) gives logits exactly 0; autodiff of
    the value must agree with the hand-written grad (db = mean(0.5 - t) = -0.25)."""
    x = jax.random.normal(jax.random.key(0), (4, 3))
    t = jnp.array([[1.0], [1.0], [1.0], [0.0]])

    def loss(w, b):
        return losses.binary_cross_entropy.value(x @ w.T + b, t)

    w, b = jnp.zeros((1, 3)), jnp.zeros(1)
    dw, db = jax.grad(loss, argnums=(0, 1))(w, b)
    dz = losses.binary_cross_entropy.grad(jnp.zeros((4, 1)), t)
    assert_close(db, dz.sum(0), RTOL_F32)
    assert_close(db, jnp.array([-0.25]), RTOL_F32)
    assert_close(dw, dz.T @ x, RTOL_F32)
    assert_close(jax.grad(losses.binary_cross_entropy.value)(jnp.zeros((4, 1)), t), dz, RTOL_F32)


def _torch():
    return pytest.importorskip("torch")


def test_losses_match_torch_in_float64():
    torch = _torch()
    F = torch.nn.functional
    rng = np.random.default_rng(0)
    z = rng.normal(size=(2, 5, 4)) * 2
    y = rng.integers(0, 4, size=(2, 5))
    w = rng.uniform(size=(2, 5)) * (rng.uniform(size=(2, 5)) > 0.3)
    t = rng.uniform(size=(2, 5, 4))
    with jax.enable_x64(True):
        zt = torch.tensor(z, requires_grad=True)
        nll = F.cross_entropy(zt.reshape(-1, 4), torch.tensor(y).reshape(-1), reduction="none").reshape(2, 5)
        ref = (torch.tensor(w) * nll).sum() / torch.tensor(w).sum()
        ref.backward()
        zj = jnp.asarray(z)
        assert_close(losses.softmax_cross_entropy.value(zj, jnp.asarray(y), weights=jnp.asarray(w)),
                     ref.item(), RTOL_F64)
        assert_close(losses.softmax_cross_entropy.grad(zj, jnp.asarray(y), weights=jnp.asarray(w)),
                     zt.grad.numpy(), RTOL_F64)

        zt = torch.tensor(z, requires_grad=True)
        ref = F.cross_entropy(zt.permute(0, 2, 1), torch.tensor(y))  # (N, C, T) layout, mean over positions
        ref.backward()
        assert_close(losses.softmax_cross_entropy.value(zj, jnp.asarray(y)), ref.item(), RTOL_F64)
        assert_close(losses.softmax_cross_entropy.grad(zj, jnp.asarray(y)), zt.grad.numpy(), RTOL_F64)

        zt = torch.tensor(z, requires_grad=True)
        ref = F.cross_entropy(zt.permute(0, 2, 1), torch.tensor(t).permute(0, 2, 1))  # probability targets
        ref.backward()
        assert_close(losses.softmax_cross_entropy.value(zj, jnp.asarray(t)), ref.item(), RTOL_F64)
        assert_close(losses.softmax_cross_entropy.grad(zj, jnp.asarray(t)), zt.grad.numpy(), RTOL_F64)

        s = rng.normal(size=(7, 4))
        labels = rng.integers(0, 4, size=7)
        st = torch.tensor(s, requires_grad=True)
        ref = F.multi_margin_loss(st, torch.tensor(labels))
        ref.backward()
        assert_close(losses.multiclass_hinge.value(jnp.asarray(s), jnp.asarray(labels)), ref.item(), RTOL_F64)
        assert_close(losses.multiclass_hinge.grad(jnp.asarray(s), jnp.asarray(labels)), st.grad.numpy(), RTOL_F64)

        b = rng.normal(size=(6, 1)) * 3
        b[0, 0] = 0.0
        tb = rng.uniform(size=(6, 1))
        bt = torch.tensor(b, requires_grad=True)
        ref = F.binary_cross_entropy_with_logits(bt, torch.tensor(tb))
        ref.backward()
        assert_close(losses.binary_cross_entropy.value(jnp.asarray(b), jnp.asarray(tb)), ref.item(), RTOL_F64)
        assert_close(losses.binary_cross_entropy.grad(jnp.asarray(b), jnp.asarray(tb)), bt.grad.numpy(), RTOL_F64)


def test_multiclass_hinge_matches_numpy_loops():
    rng = np.random.default_rng(1)
    s, y = rng.normal(size=(5, 3)), rng.integers(0, 3, size=5)
    value, grad = 0.0, np.zeros_like(s)
    for n in range(5):
        for j in range(3):
            if j != y[n] and 1 - s[n, y[n]] + s[n, j] > 0:
                value += 1 - s[n, y[n]] + s[n, j]
                grad[n, j] += 1
                grad[n, y[n]] -= 1
    with jax.enable_x64(True):
        assert_close(losses.multiclass_hinge.value(jnp.asarray(s), jnp.asarray(y)), value / 15, RTOL_F64)
        assert_close(losses.multiclass_hinge.grad(jnp.asarray(s), jnp.asarray(y)), grad / 15, RTOL_F64)
    assert losses.get("multiclass_hinge") is losses.multiclass_hinge


@pytest.mark.slow
def test_weighted_cross_entropy_ignores_zero_weight_positions_and_matches_numpy():
    rng = np.random.default_rng(2)
    z, y = rng.normal(size=(3, 4, 5)), rng.integers(0, 5, size=(3, 4))
    w = np.ones((3, 4))
    w[:, 2:] = 0.0
    with jax.enable_x64(True):
        lse = np.log(np.exp(z).sum(-1))
        nll = lse - np.take_along_axis(z, y[..., None], -1)[..., 0]
        v = losses.softmax_cross_entropy.value(jnp.asarray(z), jnp.asarray(y), weights=jnp.asarray(w))
        assert_close(v, nll[:, :2].mean(), RTOL_F64)
        garbage = z.copy()
        garbage[:, 2:] = 1e3 * rng.normal(size=(3, 2, 5))
        g = losses.softmax_cross_entropy.grad(jnp.asarray(garbage), jnp.asarray(y), weights=jnp.asarray(w))
        assert np.all(np.asarray(g)[:, 2:] == 0)
        assert_close(g[:, :2], losses.softmax_cross_entropy.grad(jnp.asarray(z[:, :2]), jnp.asarray(y[:, :2])),
                     RTOL_F64)
        zero = losses.softmax_cross_entropy.value(jnp.asarray(z), jnp.asarray(y), weights=jnp.zeros((3, 4)))
        assert float(zero) == 0.0


def _grad_and_autodiff(loss, *args, **kwargs):
    """(``loss.grad``, autodiff of ``loss.value``) with respect to the prediction, as one
    compiled program (op by op, each primitive and its transpose would compile alone)."""
    return jax.jit(lambda a, k: (loss.grad(*a, **k), jax.grad(loss.value)(*a, **k)))(args, kwargs)


@pytest.mark.slow
def test_every_loss_grad_matches_autodiff_of_its_value():
    k = jax.random.split(jax.random.key(3), 4)
    with jax.enable_x64(True):
        z = jax.random.normal(k[0], (2, 3, 4), jnp.float64)
        y = jax.random.randint(k[1], (2, 3), 0, 4)
        w = jax.random.uniform(k[2], (2, 3), jnp.float64)
        sce = losses.softmax_cross_entropy
        assert_close(*_grad_and_autodiff(sce, z, y, weights=w), RTOL_F64)
        assert_close(*_grad_and_autodiff(sce, z, y), RTOL_F64)
        assert_close(*_grad_and_autodiff(losses.multiclass_hinge, z.reshape(6, 4), y.reshape(6)), RTOL_F64)
        zb = jnp.array([[0.0], [0.0], [1.5], [-2.0]])
        tb = jnp.array([[1.0], [0.3], [0.0], [1.0]])
        assert_close(*_grad_and_autodiff(losses.binary_cross_entropy, zb, tb), RTOL_F64)


def test_softmax_cross_entropy_is_stable_for_huge_logits():
    z = jnp.array([[1e4, 0.0, -1e4], [-1e4, 1e4, 0.0]])
    v = losses.softmax_cross_entropy.value(z, jnp.array([1, 1]))
    assert_close(v, 1e4 / 2, RTOL_F32)
    assert np.all(np.isfinite(losses.softmax_cross_entropy.grad(z, jnp.array([1, 1]))))


def test_mse_and_fixed_variance_gaussian_nll_are_the_same_objective():
    """MSE is the Gaussian NLL with a fixed variance: NLL = D/(2 s^2) * MSE + const."""
    mu = jax.random.normal(jax.random.key(0), (5, 3))
    t = jax.random.normal(jax.random.key(1), (5, 3))
    s = 0.7
    nll = losses.gaussian_nll(s).value(mu, t)
    const = 3 * (np.log(s) + 0.5 * np.log(2 * np.pi))
    assert_close(nll, 3 / (2 * s**2) * losses.mse.value(mu, t) + const, RTOL_F32)


def test_learned_variance_gaussian_nll_matches_density():
    mu, logvar = jnp.array([[0.5]]), jnp.array([[np.log(2.0)]])
    t = jnp.array([[1.5]])
    v = losses.gaussian_nll().value(jnp.concatenate([mu, logvar], 1), t)
    ref = -np.log(np.exp(-(1.0**2) / (2 * 2.0)) / np.sqrt(2 * np.pi * 2.0))
    assert_close(v, ref, RTOL_F32)


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
    with pytest.raises(ValueError, match=r"weights must have the labels' shape \(3,\)"):
        losses.softmax_cross_entropy.value(jnp.ones((3, 2)), jnp.zeros(3, jnp.int32), weights=jnp.ones(2))
    with pytest.raises(TypeError, match="multiclass_hinge: target must be integer labels"):
        losses.multiclass_hinge.value(jnp.ones((3, 2)), jnp.ones((3, 2)))


@pytest.mark.slow
@pytest.mark.parametrize("call", [
    lambda: losses.softmax_cross_entropy.value(jnp.zeros((3, 4)), jnp.full(3, 10)),
    lambda: losses.softmax_cross_entropy.grad(jnp.zeros((3, 4)), jnp.array([0, -1, 2])),
    lambda: losses.softmax_cross_entropy.value(jnp.zeros((2, 3, 4)), jnp.full((2, 3), 4)),
    lambda: losses.multiclass_hinge.value(jnp.zeros((3, 4)), jnp.full(3, 4)),
    lambda: losses.binary_cross_entropy.value(jnp.zeros((2, 1)), jnp.array([[0.0], [2.0]])),
    lambda: losses.softmax_cross_entropy.value(jnp.zeros((2, 3)), -jnp.ones((2, 3))),
    lambda: losses.softmax_cross_entropy.value(jnp.zeros((2, 3)), jnp.zeros(2, jnp.int32), weights=-jnp.ones(2)),
    lambda: losses.validate_targets(losses.softmax_cross_entropy, (4,), np.full(5, 10)),
    lambda: losses.validate_targets(losses.binary_cross_entropy, (1,), np.full((5, 1), -1.0)),
])
def test_out_of_range_targets_raise_one_line(call):
    """The issue's case: labels 10 with 4 classes used to give loss 0.0 without a word."""
    with pytest.raises(ValueError, match=r"must (lie in|be >= 0)") as e:
        call()
    assert "\n" not in str(e.value)


def test_validate_targets_passes_good_targets():
    losses.validate_targets(losses.softmax_cross_entropy, (4,), np.array([0, 3, 1]))
    losses.validate_targets(losses.softmax_cross_entropy, (5, 4), np.zeros((2, 5), np.int32))
    losses.validate_targets(losses.mse, (2,), np.ones((3, 2)))
    losses.validate_targets(losses.gaussian_nll(1.0), (2,), np.ones((3, 2)))


def test_inside_jit_labels_are_checked_only_under_debug_checked():
    def step(z, y):
        return losses.softmax_cross_entropy.value(z, y)

    z, bad = jnp.zeros((3, 4)), jnp.array([0, 10, 1])
    jax.jit(step)(z, bad)  # traced: nothing can be inspected, no error (the value is NaN)
    with pytest.raises(ValueError, match=r"softmax_cross_entropy: integer labels must lie in \[0, 4\)"):
        debug.checked(step)(z, bad)
    assert_close(debug.checked(step)(z, jnp.array([0, 3, 1])), np.log(4.0), RTOL_F32)
    with pytest.raises(ValueError, match="nan"):
        debug.checked(lambda a: jnp.log(a) * 0.0)(-jnp.ones(2))


BAD_PAIRS = [  # (pred, target) that every loss of the list refuses, value and grad alike
    (jnp.ones((3, 1)), jnp.ones((3,))),
    (jnp.ones((3, 2)), jnp.ones((3, 2, 1))),
]


@pytest.mark.parametrize("loss", [losses.mse, losses.binary_cross_entropy, losses.gaussian_nll(0.5),
                                  losses.gaussian_nll(), losses.softmax_cross_entropy, losses.multiclass_hinge],
                         ids=lambda l: l.name)
@pytest.mark.parametrize("pair", range(len(BAD_PAIRS)))
def test_grad_validates_like_value(loss, pair):
    """mse.grad with pred (3, 1) and target (3,) used to return a (3, 3) gradient without a word."""
    pred, target = BAD_PAIRS[pair]
    if loss.name == "gaussian_nll" and pair == 0:
        pred = jnp.ones((3, 3))  # learned variance: pred (N, 2D); (3, 1) would be refused for its own shape
    errors = []
    for part in (loss.value, loss.grad):
        with pytest.raises((ValueError, TypeError)) as e:
            part(pred, target)
        assert "\n" not in str(e.value)
        errors.append(str(e.value))
    assert errors[0] == errors[1]


def test_bce_grad_validates_target_range():
    with pytest.raises(ValueError, match=r"binary_cross_entropy: targets must lie in \[0, 1\]"):
        losses.binary_cross_entropy.grad(jnp.zeros((2, 1)), jnp.array([[0.0], [2.0]]))
