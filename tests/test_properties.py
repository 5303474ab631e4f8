"""Property tests: the hand-written backward equals autodiff for random shapes."""
import jax
import jax.numpy as jnp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import funcnn as fn
from helpers import RTOL_F64, assert_close

ACTS = ["sigmoid", "tanh", "relu", "identity", "softmax"]


@pytest.mark.slow
@settings(max_examples=12, deadline=None)
@given(batch=st.integers(1, 5), n_in=st.integers(1, 6), n_out=st.integers(1, 6),
       act=st.sampled_from(ACTS), seed=st.integers(0, 2**16))
def test_dense_activation_manual_equals_autodiff(batch, n_in, n_out, act, seed):
    model = fn.serial(fn.Dense(n_out), fn.layers.activations.get(act))
    with jax.enable_x64(True):
        @jax.jit  # one compilation per example, not one per primitive
        def both(key):
            k1, k2, k3 = jax.random.split(key, 3)
            params, state = model.init(k1, (n_in,))
            params = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), params)
            x = jax.random.normal(k2, (batch, n_in), jnp.float64)
            dy = jax.random.normal(k3, (batch, n_out), jnp.float64)
            _, _, cache = model.forward(params, state, x)
            _, vjp = jax.vjp(lambda p, x: model.apply(p, state, x)[0], params, x)
            return model.backward(params, cache, dy), vjp(dy)

        g_manual, g_auto = both(jax.random.key(seed))
        for a, b in zip(jax.tree_util.tree_leaves(g_manual), jax.tree_util.tree_leaves(g_auto)):
            assert_close(a, b, RTOL_F64)
