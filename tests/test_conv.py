"""Conv1D/Conv2D: forward against lax.conv_general_dilated, hand-written backward against
autodiff and finite differences (float64), both formulations, shapes and input errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from funcnn.check import check_layer
from funcnn.gradients import value_and_grad
from funcnn.core.layer import serial
from funcnn.layers.activations import ReLU
from funcnn.layers.conv import CPU_BATCH_CHUNK, GEMM_MAX_CHANNELS, MAX_CHUNKS, Conv1D, Conv2D, batch_chunks, default_impl
from funcnn.layers.dense import Dense
from helpers import RTOL_F32, RTOL_F64, assert_close
from funcnn.layers.flatten import Flatten
from funcnn.layers.pooling import MaxPool2D
from funcnn.losses import softmax_cross_entropy

# (kernel, stride, padding, dilation, input (H, W, C)): odd sizes, both paddings, explicit
# pads wider than the kernel (negative transposed padding), strides that drop a remainder
CONV2D = [
    (3, 1, "SAME", 1, (5, 5, 2)),
    ((3, 2), 2, "VALID", 1, (7, 6, 2)),
    (3, 2, "SAME", 1, (6, 7, 3)),
    (2, (2, 1), ((3, 1), (0, 2)), (1, 2), (5, 5, 2)),
    (3, 1, "SAME", 2, (6, 5, 1)),
    (3, 3, 1, 1, (8, 7, 2)),
]
CONV1D = [(3, 2, 1, 1, (9, 2)), (5, 1, "VALID", 2, (11, 3)), (4, 3, "SAME", 1, (10, 1))]
IMPLS = ("gemm", "xla")


def _both_formulations(make, shape, spec, stride, pads, dilation):
    """Both formulations' forward against lax, and their backward against each other (same
    formulas, so they agree to rounding). float64, one jitted call per formulation."""
    with jax.enable_x64(True):
        x = jax.random.normal(jax.random.key(1), (2, *shape), jnp.float64)
        grads = []
        for impl in IMPLS:
            layer = make(impl)
            params, _ = layer.init(jax.random.key(0), shape)
            params = {"w": params["w"].astype(jnp.float64), "b": jnp.linspace(-1.0, 1.0, params["b"].shape[0])}

            @jax.jit
            def run(params, x):
                y, _, cache = layer.forward(params, {}, x)
                ref = lax.conv_general_dilated(x, params["w"], stride, pads, rhs_dilation=dilation,
                                               dimension_numbers=spec) + params["b"]
                return y, ref, layer.backward(params, cache, jnp.cos(y))

            y, ref, g = run(params, x)
            assert y.shape == ref.shape == (2, *layer.output_shape(shape))
            assert_close(y, ref, RTOL_F64)
            grads.append(g)
        for a, b in zip(*(jax.tree_util.tree_leaves(g) for g in grads)):
            assert_close(a, b, RTOL_F64)


def _lax_args(n, shape, kernel, stride, padding, dilation):
    """(stride, explicit pads, dilation) for lax.conv_general_dilated."""
    tup = lambda v: (v,) * n if isinstance(v, int) else tuple(v)  # noqa: E731
    if isinstance(padding, str):
        extent = [(k - 1) * d + 1 for k, d in zip(tup(kernel), tup(dilation))]
        pads = lax.padtype_to_pads(shape[:-1], extent, tup(stride), padding)
    else:
        pads = [(padding, padding)] * n if isinstance(padding, int) else padding
    return tup(stride), pads, tup(dilation)


@pytest.mark.slow
@pytest.mark.parametrize("kernel,stride,padding,dilation,shape", CONV2D)
def test_conv2d_forward_matches_lax_and_formulations_agree(kernel, stride, padding, dilation, shape):
    _both_formulations(lambda impl: Conv2D(4, kernel, stride=stride, padding=padding, dilation=dilation, impl=impl),
                       shape, ("NHWC", "HWIO", "NHWC"), *_lax_args(2, shape, kernel, stride, padding, dilation))


@pytest.mark.parametrize("kernel,stride,padding,dilation,shape", CONV1D)
def test_conv1d_forward_matches_lax_and_formulations_agree(kernel, stride, padding, dilation, shape):
    _both_formulations(lambda impl: Conv1D(3, kernel, stride=stride, padding=padding, dilation=dilation, impl=impl),
                       shape, ("NWC", "WIO", "NWC"), *_lax_args(1, shape, kernel, stride, padding, dilation))


def test_conv2d_is_a_sum_of_dot_products_over_patches():
    """The seed's definition, written out with loops for one output position."""
    layer = Conv2D(2, 3, padding="VALID", use_bias=False)
    params, _ = layer.init(jax.random.key(0), (4, 5, 3))
    x = np.asarray(jax.random.normal(jax.random.key(1), (1, 4, 5, 3)))
    y = jax.jit(lambda p, x: layer.apply(p, {}, x)[0])(params, jnp.asarray(x))
    w = np.asarray(params["w"])
    for i, j in [(0, 0), (1, 2)]:
        assert_close(y[0, i, j], np.einsum("hwc,hwco->o", x[0, i:i + 3, j:j + 3], w), RTOL_F32)


# Configurations not in funcnn/check/catalog.py (which `funcnn check` and the gallery test
# run): each is checked once, alternating the formulation (both agree exactly below).
CHECKED = [
    (Conv2D, dict(features=2, kernel_size=(3, 2), stride=2, padding="VALID", impl="gemm"), (7, 6, 2)),
    (Conv2D, dict(features=2, kernel_size=3, stride=3, padding=1, use_bias=False, impl="xla"), (8, 7, 2)),
    (Conv2D, dict(features=2, kernel_size=3, dilation=2, padding="SAME", impl="gemm"), (6, 5, 1)),
    (Conv1D, dict(features=2, kernel_size=5, dilation=2, padding="VALID", impl="xla"), (11, 3)),
]


@pytest.mark.slow
@pytest.mark.parametrize("case", range(len(CHECKED)))
def test_conv_backward_passes_checker(case):
    make, kwargs, shape = CHECKED[case]
    check_layer(make(**kwargs), shape, key=jax.random.key(case), batch=2).assert_ok()


@pytest.mark.slow
def test_cnn_manual_gradients_equal_autodiff():
    model = serial(Conv2D(3, 3), ReLU(), MaxPool2D(2), Conv2D(4, 3, stride=2, impl="xla"), Flatten(), Dense(3))
    with jax.enable_x64(True):
        params, state = model.init(jax.random.key(0), (8, 8, 1))
        params = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), params)
        x = jax.random.normal(jax.random.key(1), (4, 8, 8, 1), jnp.float64)
        y = jnp.array([0, 1, 2, 1])
        lm, gm, _ = jax.jit(value_and_grad(model, softmax_cross_entropy, mode="manual"))(params, state, x, y)
        la, ga, _ = jax.jit(value_and_grad(model, softmax_cross_entropy, mode="autodiff"))(params, state, x, y)
        assert_close(lm, la, RTOL_F64)
        for a, b in zip(jax.tree_util.tree_leaves(gm), jax.tree_util.tree_leaves(ga)):
            assert_close(a, b, RTOL_F64)


def test_batch_chunks_cover_the_batch():
    for n in (1, 7, 8, 19, 64, 1000):
        chunks = batch_chunks(n)
        assert chunks[0][0] == 0 and chunks[-1][1] == n
        assert all(b == c for (_, b), (c, _) in zip(chunks, chunks[1:]))
        if jax.default_backend() == "cpu":
            assert len(chunks) == min(-(-n // CPU_BATCH_CHUNK), MAX_CHUNKS)


@pytest.mark.slow
def test_chunked_xla_convolution_equals_one_whole_batch_call():
    """A batch of 19 runs as chunks 8, 8, 3 on CPU: forward, dW (summed over chunks) and dX
    (concatenated) equal one whole-batch lax.conv_general_dilated and its autodiff."""
    layer = Conv2D(3, 3, stride=2, padding="SAME", impl="xla")
    with jax.enable_x64(True):
        params, _ = layer.init(jax.random.key(0), (7, 6, 5))
        x = jax.random.normal(jax.random.key(1), (19, 7, 6, 5), jnp.float64)
        w = params["w"].astype(jnp.float64)

        def reference(w, x):
            return lax.conv_general_dilated(x, w, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))

        y, _, cache = layer.forward({"w": w, "b": jnp.zeros(3)}, {}, x)
        y_ref, vjp = jax.vjp(reference, w, x)
        dy = jax.random.normal(jax.random.key(2), y.shape, jnp.float64)
        grads, dx = layer.backward({"w": w, "b": jnp.zeros(3)}, cache, dy)
        dw_ref, dx_ref = vjp(dy)
        assert_close(y, y_ref, RTOL_F64)
        assert_close(grads["w"], dw_ref, RTOL_F64)
        assert_close(dx, dx_ref, RTOL_F64)
        assert_close(grads["b"], dy.sum((0, 1, 2)), RTOL_F64)


def test_conv_jits_and_vmaps():
    layer = Conv2D(2, 3, stride=2)
    params, _ = layer.init(jax.random.key(0), (5, 5, 1))
    x = jax.random.normal(jax.random.key(1), (3, 2, 5, 5, 1))
    apply = jax.jit(lambda x: layer.apply(params, {}, x)[0])
    y = jax.jit(jax.vmap(apply))(x)
    assert_close(y[1], apply(x[1]), RTOL_F32)  # vmapped vs unbatched: reassociated float32 sums


def test_init_shapes_and_default_formulation():
    params, state = Conv2D(8, (3, 2)).init(jax.random.key(0), (9, 9, 5))
    assert params["w"].shape == (3, 2, 5, 8) and params["b"].shape == (8,) and state == {}
    assert "b" not in Conv1D(4, 3, use_bias=False).init(jax.random.key(0), (7, 2))[0]
    assert Conv2D(8, 3, stride=2).output_shape((9, 8, 1)) == (5, 4, 8)
    assert Conv1D(4, 3, padding="VALID", dilation=2).output_shape((10, 2)) == (6, 4)
    if jax.default_backend() == "cpu":
        assert default_impl(GEMM_MAX_CHANNELS) == "gemm" and default_impl(GEMM_MAX_CHANNELS + 1) == "xla"
    else:
        assert default_impl(1) == "xla"


def test_conv2d_errors_are_clear():
    layer = Conv2D(4, 3)
    params, _ = layer.init(jax.random.key(0), (6, 6, 2))
    with pytest.raises(ValueError, match=r"Conv2D: x must have shape \(batch, height, width, channels\)"):
        layer.apply(params, {}, jnp.ones((6, 6, 2)))  # 3-D input: batch axis missing
    with pytest.raises(ValueError, match="with 2 channels"):
        layer.apply(params, {}, jnp.ones((1, 6, 6, 3)))
    with pytest.raises(ValueError, match="Conv2D: input_shape must have 3 axes"):
        layer.init(jax.random.key(0), (6, 6))
    with pytest.raises(ValueError, match=r"Conv2D: the window .* is larger than the padded input \(3, 3\)"):
        Conv2D(4, 5, padding="VALID").init(jax.random.key(0), (3, 3, 1))
    with pytest.raises(ValueError, match="larger than the padded input"):
        Conv2D(4, 5, padding="VALID").apply({"w": jnp.ones((5, 5, 1, 4)), "b": jnp.zeros(4)}, {}, jnp.ones((1, 3, 3, 1)))
    with pytest.raises(TypeError, match="floating-point"):
        layer.apply(params, {}, jnp.ones((1, 6, 6, 2), jnp.int32))
    with pytest.raises(ValueError, match="Conv2D: padding must be"):
        Conv2D(4, 3, padding="FULL")
    with pytest.raises(ValueError, match="Conv2D: kernel_size must be a positive int or a sequence of 2"):
        Conv2D(4, (3, 3, 3))
    with pytest.raises(ValueError, match="Conv2D: stride must be"):
        Conv2D(4, 3, stride=0)
    with pytest.raises(ValueError, match="Conv1D: features must be a positive integer"):
        Conv1D(0, 3)
    with pytest.raises(ValueError, match="Conv2D: impl must be"):
        Conv2D(4, 3, impl="fft")
    with pytest.raises(ValueError, match=r"Conv1D: x must have shape \(batch, length, channels\)"):
        Conv1D(2, 3).apply({"w": jnp.ones((3, 1, 2)), "b": jnp.zeros(2)}, {}, jnp.ones((4, 9)))
