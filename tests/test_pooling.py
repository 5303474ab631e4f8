"""Max/average pooling and global average pooling: forward against lax.reduce_window,
hand-written backward against autodiff and finite differences, the tie rule, errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from funcnn.check import check_layer
from funcnn.layers.pooling import AvgPool1D, AvgPool2D, GlobalAvgPool, MaxPool1D, MaxPool2D
from helpers import RTOL_F32, assert_close

# (window, stride, padding, input (H, W, C)): tiling, a dropped remainder, overlap, SAME, pads
POOL2D = [
    (2, None, "VALID", (4, 6, 2)),
    (2, None, "VALID", (5, 7, 1)),
    (3, 2, "VALID", (7, 7, 2)),
    (3, 2, "SAME", (6, 5, 2)),
    ((2, 3), (1, 2), ((1, 0), (2, 1)), (5, 6, 1)),
]


def _pads(padding, window, stride, spatial):
    if isinstance(padding, str):
        return lax.padtype_to_pads(spatial, window, stride, padding)
    return padding


def _reference(kind, x, window, stride, padding):
    n = x.ndim - 2
    window = (window,) * n if isinstance(window, int) else tuple(window)
    stride = window if stride is None else ((stride,) * n if isinstance(stride, int) else tuple(stride))
    pads = [(0, 0), *_pads(padding, window, stride, x.shape[1:-1]), (0, 0)]
    dims, strides = (1, *window, 1), (1, *stride, 1)
    if kind == "max":
        return lax.reduce_window(x, -jnp.inf, lax.max, dims, strides, pads)
    total = lax.reduce_window(x, 0.0, lax.add, dims, strides, pads)
    return total / lax.reduce_window(jnp.ones_like(x), 0.0, lax.add, dims, strides, pads)


@pytest.mark.slow
@pytest.mark.parametrize("kind,make", [("max", MaxPool2D), ("avg", AvgPool2D)])
@pytest.mark.parametrize("window,stride,padding,shape", POOL2D)
def test_pool2d_forward_matches_reduce_window(kind, make, window, stride, padding, shape):
    layer = make(window, stride, padding)
    x = jax.random.normal(jax.random.key(0), (2, *shape))
    y, _ = layer.apply({}, {}, x)
    ref = _reference(kind, x, window, stride, padding)
    assert y.shape == ref.shape == (2, *layer.output_shape(shape))
    assert_close(y, ref, RTOL_F32)


@pytest.mark.parametrize("kind,make", [("max", MaxPool1D), ("avg", AvgPool1D)])
def test_pool1d_forward_matches_reduce_window(kind, make):
    x = jax.random.normal(jax.random.key(0), (2, 9, 3))
    y, _ = make(3, 2, "SAME").apply({}, {}, x)
    assert_close(y, _reference(kind, x, 3, 2, "SAME"), RTOL_F32)


def test_global_avg_pool_forward_and_shape():
    x = jax.random.normal(jax.random.key(0), (2, 3, 4, 5))
    layer = GlobalAvgPool()
    assert_close(layer.apply({}, {}, x)[0], x.mean(axis=(1, 2)), RTOL_F32)
    assert layer.output_shape((3, 4, 5)) == (5,) and layer.output_shape((7, 2)) == (2,)


def _separated(key, shape):
    """Distinct values at least 1/size apart: no near-ties for the finite differences
    (whose step 1e-5 could otherwise flip a window's arg-max)."""
    size = int(np.prod(shape))
    return (jax.random.permutation(key, size).reshape(shape) - size / 2) / size


# Configurations not in funcnn/check/catalog.py (run by `funcnn check` and the gallery test)
CHECKED = [
    (MaxPool2D(2), (5, 7, 1)),  # tiling, remainder dropped
    (MaxPool2D((2, 3), (1, 2), ((1, 0), (2, 1))), (5, 6, 1)),  # overlap, explicit pads
    (AvgPool2D((2, 3), (1, 2), ((1, 0), (2, 1))), (5, 6, 1)),
    (MaxPool1D(3, 2, "SAME"), (9, 2)),
    (AvgPool1D(2), (7, 2)),
    (GlobalAvgPool(), (5, 3)),
]


@pytest.mark.slow
@pytest.mark.parametrize("case", range(len(CHECKED)))
def test_pool_backward_passes_checker(case):
    layer, shape = CHECKED[case]
    x = _separated(jax.random.key(case), (2, *shape))
    check_layer(layer, shape, key=jax.random.key(case), x=x).assert_ok()


@pytest.mark.slow
def test_max_pool_sends_each_window_gradient_to_its_first_maximum():
    """Ties (e.g. zeros after ReLU) route the whole gradient to one input, the first in the
    window, as select_and_scatter_add does; overlapping windows add up on a shared winner."""
    layer = MaxPool2D(2)
    x = jnp.zeros((1, 4, 4, 1))
    y, _, cache = layer.forward({}, {}, x)
    _, dx = layer.backward({}, cache, jnp.arange(1.0, 5.0).reshape(1, 2, 2, 1))
    expected = np.zeros((4, 4))
    expected[0, 0], expected[0, 2], expected[2, 0], expected[2, 2] = 1, 2, 3, 4
    np.testing.assert_array_equal(dx[0, :, :, 0], expected)
    reference = jax.vjp(lambda v: _reference("max", v, 2, None, "VALID"), x)[1](jnp.arange(1.0, 5.0).reshape(1, 2, 2, 1))[0]
    np.testing.assert_array_equal(dx, reference)

    overlap = MaxPool1D(3, 1)
    x = jnp.array([0.0, 1.0, 5.0, 2.0, 0.0])[None, :, None]  # 5.0 wins all three windows
    _, _, cache = overlap.forward({}, {}, x)
    _, dx = overlap.backward({}, cache, jnp.array([1.0, 10.0, 100.0])[None, :, None])
    np.testing.assert_array_equal(dx[0, :, 0], [0, 0, 111, 0, 0])


def test_avg_pool_excludes_padding_from_the_mean():
    y, _ = AvgPool2D(3, 1, "SAME").apply({}, {}, jnp.ones((1, 4, 4, 1)))
    assert_close(y, np.ones(np.shape(y)), RTOL_F32)


def test_pool_errors_are_clear():
    with pytest.raises(ValueError, match=r"MaxPool2D: x must have shape \(batch, height, width, channels\)"):
        MaxPool2D(2).apply({}, {}, jnp.ones((4, 4, 1)))
    with pytest.raises(ValueError, match="MaxPool2D: padding .* must be smaller than the window"):
        MaxPool2D(2, padding=2).init(jax.random.key(0), (4, 4, 1))
    with pytest.raises(ValueError, match="AvgPool2D: the window .* is larger than the padded input"):
        AvgPool2D(5).init(jax.random.key(0), (3, 3, 1))
    with pytest.raises(ValueError, match="AvgPool1D: input_shape must have 2 axes"):
        AvgPool1D(2).init(jax.random.key(0), (8,))
    with pytest.raises(ValueError, match="MaxPool2D: window must be"):
        MaxPool2D(0)
    with pytest.raises(TypeError, match="floating-point"):
        MaxPool2D(2).apply({}, {}, jnp.ones((1, 4, 4, 1), jnp.int32))
    with pytest.raises(ValueError, match="GlobalAvgPool: x must have shape"):
        GlobalAvgPool().apply({}, {}, jnp.ones((4, 3)))
