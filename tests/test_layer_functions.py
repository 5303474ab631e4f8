"""The named forward/backward functions of the layer modules, each on its own (no Layer):
every backward against autodiff of its own forward (float64), forwards against references."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from funcnn.layers import activations, batchnorm, conv, dropout, flatten, pooling
from funcnn.layers._conv_windows import geometry
from funcnn.layers.bayes_dense import bayes_dense_backward, bayes_dense_forward
from funcnn.layers.recurrent import gru, lstm, rnn
from helpers import RTOL_F64, assert_close


def _normal(seed, shape):
    return jax.random.normal(jax.random.key(seed), shape, jnp.float64)


def _vjp(f, primals, dy):
    """Autodiff's vector-Jacobian product of `f` at `primals`, the reference here (one compiled
    program: run op by op, each primitive and its transpose would compile alone)."""
    return jax.jit(lambda primals, dy: jax.vjp(f, *primals)[1](dy))(primals, dy)


@pytest.mark.parametrize("name", sorted(activations.ELEMENTWISE) + ["softmax"])
def test_activation_pairs(name):
    forward, backward = ((activations.softmax_forward, activations.softmax_backward) if name == "softmax"
                         else activations.ELEMENTWISE[name])
    with jax.enable_x64(True):
        x, dy = _normal(0, (3, 5)) + 0.01, _normal(1, (3, 5))
        y, cache = forward(x)
        (dx_ref,) = _vjp(lambda x: forward(x)[0], (x,), dy)
        assert_close(backward(dy, cache), dx_ref, RTOL_F64)


@pytest.mark.slow
@pytest.mark.parametrize("impl", ["gemm/all", "xla/all", "gemm/2", "xla/2"])
def test_conv_forward_and_backward(impl):
    with jax.enable_x64(True):
        x, w, b = _normal(0, (3, 6, 5, 2)), _normal(1, (3, 2, 2, 4)), _normal(2, (4,))
        g = geometry(x.shape[1:-1], (3, 2), (2, 1), (1, 2), "SAME", "test")
        y, cache = conv.conv_forward(x, w, b, g, impl)
        ref = lax.conv_general_dilated(x, w, g.stride, g.pads, rhs_dilation=g.dilation,
                                       dimension_numbers=("NHWC", "HWIO", "NHWC")) + b
        assert_close(y, ref, RTOL_F64)
        dy = _normal(3, y.shape)
        want = _vjp(lambda x, w, b: conv.conv_forward(x, w, b, g, impl)[0], (x, w, b), dy)
        assert_close(conv.conv_backward(dy, cache), want, RTOL_F64)
        _, cache = conv.conv_forward(x, w, None, g, impl)
        assert conv.conv_backward(dy, cache)[2] is None


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool_forward_and_backward(kind):
    forward, backward = {"max": (pooling.max_pool_forward, pooling.max_pool_backward),
                         "avg": (pooling.avg_pool_forward, pooling.avg_pool_backward)}[kind]
    with jax.enable_x64(True):
        x = _normal(0, (2, 5, 6, 3))
        g = geometry(x.shape[1:-1], (3, 2), (2, 2), (1, 1), ((1, 1), (0, 1)), "test")
        y, cache = forward(x, g)
        dy = _normal(1, y.shape)
        (want,) = _vjp(lambda x: forward(x, g)[0], (x,), dy)
        assert_close(backward(dy, cache), want, RTOL_F64)
        y, cache = pooling.global_avg_pool_forward(x)
        (want,) = _vjp(lambda x: pooling.global_avg_pool_forward(x)[0], (x,), _normal(2, y.shape))
        assert_close(pooling.global_avg_pool_backward(_normal(2, y.shape), cache), want, RTOL_F64)


@pytest.mark.slow
@pytest.mark.parametrize("axis", [1, 3])
def test_batchnorm_functions(axis):
    with jax.enable_x64(True):
        x = 2.0 + 3.0 * _normal(0, (4, 3, 2, 3))
        gamma, beta = _normal(1, (3,)), _normal(2, (3,))
        mean, var = _normal(3, (3,)), 0.5 + jnp.abs(_normal(4, (3,)))
        dy = _normal(5, x.shape)
        y, _, _, cache = batchnorm.batchnorm_forward_train(x, gamma, beta, axis=axis, eps=1e-5)
        want = _vjp(lambda x, g, b: batchnorm.batchnorm_forward_train(x, g, b, axis=axis, eps=1e-5)[0],
                    (x, gamma, beta), dy)
        assert_close(batchnorm.batchnorm_backward(dy, cache), want, RTOL_F64)
        assert_close(batchnorm.batchnorm_backward_staged(dy, cache), want, RTOL_F64)
        y, cache = batchnorm.batchnorm_forward_eval(x, gamma, beta, mean, var, axis=axis, eps=1e-5)
        want = _vjp(lambda x, g, b: batchnorm.batchnorm_forward_eval(x, g, b, mean, var, axis=axis, eps=1e-5)[0],
                    (x, gamma, beta), dy)
        assert_close(batchnorm.batchnorm_backward(dy, cache), want, RTOL_F64)


def test_dropout_and_flatten_functions():
    with jax.enable_x64(True):
        x = _normal(0, (4, 3, 2))
        y, cache = dropout.dropout_forward(x, jax.random.key(7), 0.25)
        kept = np.asarray(cache) != 0
        assert_close(np.asarray(y)[kept], np.asarray(x)[kept] / 0.75, RTOL_F64)
        assert not np.asarray(y)[~kept].any()
        dy = _normal(1, x.shape)
        (want,) = _vjp(lambda x: dropout.dropout_forward(x, jax.random.key(7), 0.25)[0], (x,), dy)
        assert_close(dropout.dropout_backward(dy, cache), want, RTOL_F64)
        y, cache = flatten.flatten_forward(x)
        assert y.shape == (4, 6) and flatten.flatten_backward(y, cache).shape == x.shape


def test_bayes_dense_functions():
    with jax.enable_x64(True):
        params = {"w_mu": _normal(0, (3, 4)), "w_rho": _normal(1, (3, 4)),
                  "b_mu": _normal(2, (3,)), "b_rho": _normal(3, (3,))}
        x, dy = _normal(4, (5, 4)), _normal(5, (5, 3))
        for key in (jax.random.key(6), None):
            _, cache = bayes_dense_forward(x, params, key)
            dx, grads = bayes_dense_backward(dy, params, cache)
            want_dx, want_grads = _vjp(lambda x, p: bayes_dense_forward(x, p, key)[0], (x, params), dy)
            assert_close(dx, want_dx, RTOL_F64)
            assert_close(grads, want_grads, RTOL_F64)


def _cell_case(name):
    """(forward(h, xp_t, w), backward(dh, cache, h, w) -> (dh_prev, da pieces), carry, xp, w)."""
    b, h = 2, 3
    if name == "lstm":
        carry = (_normal(0, (b, h)), _normal(1, (b, h)))
        return (lambda c, xp, w: lstm.lstm_cell_forward(c, xp, w.T),
                lambda dc, cache, c, w: lstm.lstm_cell_backward(dc, cache, w), carry,
                _normal(2, (b, 4 * h)), _normal(3, (4 * h, h)))
    if name == "gru":
        b_hh = _normal(4, (3 * h,))
        return (lambda c, xp, w: gru.gru_cell_forward(c, xp, w.T, b_hh),
                lambda dc, cache, c, w: gru.gru_cell_backward(dc, cache, c, w), _normal(0, (b, h)),
                _normal(2, (b, 3 * h)), _normal(3, (3 * h, h)))
    return (lambda c, xp, w: rnn.rnn_cell_forward(c, xp, w.T),
            lambda dc, cache, c, w: rnn.rnn_cell_backward(dc, cache, w), _normal(0, (b, h)),
            _normal(2, (b, h)), _normal(3, (h, h)))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["rnn", "lstm", "gru"])
def test_recurrent_cell_steps(name):
    """One step's backward: the carry's gradient and the projections' gradients (dA_x for the
    input projection; autodiff's w.r.t. h_{t-1} through W_hh is checked via dh_prev)."""
    with jax.enable_x64(True):
        forward, backward, carry, xp, w = _cell_case(name)
        out, cache = forward(carry, xp, w)
        dout = jax.tree_util.tree_map(lambda a: _normal(9, a.shape), out)
        dcarry_prev, da = backward(dout, cache, carry, w)
        want_carry, want_xp = _vjp(lambda c, xp: forward(c, xp, w)[0], (carry, xp), dout)
        assert_close(dcarry_prev, want_carry, RTOL_F64)
        assert_close(da[0] if name == "gru" else da, want_xp, RTOL_F64)
