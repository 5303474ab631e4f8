r"""Batch normalization (Ioffe & Szegedy, 2015) with running statistics as state.

**Forward (training).** Every axis of $x$ except the feature axis is a sample axis: for a
Dense output `(N, F)` the statistics are over N, for a convolution output `(N, H, W, C)`
over N, H and W. With $m$ the number of values per feature ($i$ runs over them), for each
feature

$$
\mu = \frac{1}{m} \sum_i x_i, \qquad
\sigma^2 = \frac{1}{m} \sum_i (x_i - \mu)^2 \;\;\text{(biased)}, \qquad
\hat x_i = \frac{x_i - \mu}{\sqrt{\sigma^2 + \epsilon}}, \qquad
y_i = \gamma \hat x_i + \beta .
$$

$x$, $\hat x$ and $y$ have the input's shape, e.g. `(N, F)` or `(N, H, W, C)`; $\mu$,
$\sigma^2$, $\gamma$ and $\beta$ are `(F,)`, held broadcastable, `(1, F)` or
`(1, 1, 1, C)`. The cache (`BatchNormCache`) holds $\hat x$ (the input's shape),
$s = (\sigma^2 + \epsilon)^{-1/2}$ and $\gamma$ (both broadcastable), and (static) the
feature axis and whether the statistics came from the batch.

**Backward.** Given $\delta_i = \partial L / \partial y_i$ (the input's shape; sums run
over the $m$ values of one feature). The affine map gives, per feature,

$$
\frac{\partial L}{\partial \beta} = \sum_i \delta_i, \qquad
\frac{\partial L}{\partial \gamma} = \sum_i \delta_i \hat x_i, \qquad
g_i := \frac{\partial L}{\partial \hat x_i} = \gamma \delta_i .
$$

$\hat x_i$ depends on $x_j$ directly, through $\mu$ ($\partial \mu / \partial x_j = 1/m$)
and through $\sigma^2$ ($\partial \sigma^2 / \partial x_j = 2 (x_j - \mu) / m$, the
$\mu$-path of $\sigma^2$ vanishing since $\sum_i (x_i - \mu) = 0$):

$$
\frac{\partial \hat x_i}{\partial x_j}
= s \left(\delta_{ij} - \frac{1}{m}\right) - \frac{s}{m}\, \hat x_i \hat x_j .
$$

So $\partial L / \partial x_j = \sum_i g_i\, \partial \hat x_i / \partial x_j
= s \left(g_j - \overline{g} - \hat x_j\, \overline{g \hat x}\right)$, with
$\overline{g} = \gamma\, \partial L / \partial \beta \,/\, m$ and
$\overline{g \hat x} = \gamma\, \partial L / \partial \gamma \,/\, m$:

$$
\frac{\partial L}{\partial x_i} = \gamma\, s \left(\delta_i - \frac{1}{m}\frac{\partial L}{\partial \beta}
- \frac{\hat x_i}{m} \frac{\partial L}{\partial \gamma}\right)
\qquad \text{(the input's shape).}
$$

This closed form (`batchnorm_backward`) is checked against a second derivation, CS231n's
staged one, that walks the graph of the forward back one node at a time
($\mu$, $x_c = x - \mu$, $x_c^2$, $\sigma^2$, $\sqrt{\sigma^2 + \epsilon}$, its inverse $s$,
$\hat x = x_c s$, $y$): `batchnorm_backward_staged`, and `tests/test_batchnorm.py` holds a
third, in NumPy. They agree to float64 rounding.

**Running statistics.** Training mode returns the running statistics updated as

$$
r \leftarrow \text{momentum}\cdot r + (1 - \text{momentum})\cdot \text{batch},
$$

with the *unbiased* batch variance $\sigma^2 m / (m - 1)$ in the running variance. Eval
mode normalises with the running statistics, constants, so $y$ is affine in $x$ and
$\partial L / \partial x_i = \gamma\, \delta_i / \sqrt{r_{\sigma^2} + \epsilon}$ (the same
function, without the two $1/m$ terms). The state is threaded, never differentiated: its
update is under `jax.lax.stop_gradient`.

**Data parallelism.** With `axis_name`, inside `shard_map` over a batch split along that
mesh axis, $\mu$, $\sigma^2$ and the two sums of the backward are averaged over the shards
(`lax.pmean`), so the statistics are those of the global batch.

**Precision.** The statistics, $\hat x$ and the affine map run in float32 at least
(`stat_dtype`), whatever the compute dtype: a float16 variance of activations around 256
overflows (the fp16 BatchNorm NaN Haiku's mixed-precision docs show) and a bfloat16 mean
keeps 8 bits. $y$ and $dx$ come back in $x$'s dtype. The running statistics are stored in
`param_dtype` or float32, whichever is wider: an exponential average updated by
$(1 - \text{momentum})\cdot$batch loses the update in bfloat16, so with `param_dtype`
bfloat16 or float16 (and only then) params and state differ in width, on purpose.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from typing import Any, Callable

import jax
import jax.numpy as jnp

from funcnn.core import initializers
from funcnn.core.dtypes import available, initialise, layer_dtypes, stat_dtype, with_compute_dtype
from funcnn.core.layer import Layer, Params, Shape, State
from funcnn.core.validate import example_shape


@functools.partial(jax.tree_util.register_dataclass, data_fields=["xhat", "inv_std", "gamma"],
                   meta_fields=["axis", "batch_stats", "axis_name"])
@dataclasses.dataclass(frozen=True)
class BatchNormCache:
    r"""What `batchnorm_backward` needs.

    - `xhat`: the normalised input, the input's shape, in the statistics dtype.
    - `inv_std`: $s = (\sigma^2 + \epsilon)^{-1/2}$, broadcastable against `xhat`
      (`(1, ..., F, ..., 1)`).
    - `gamma`: the scale, broadcastable likewise, in the statistics dtype.
    - `axis` (static): the non-negative feature axis; `batch_stats` (static): the statistics
      are the batch's (training) rather than constants (eval); `axis_name` (static): the
      mesh axis the batch statistics are averaged over, or `None`.
    """

    xhat: jax.Array
    inv_std: jax.Array
    gamma: jax.Array
    axis: int
    batch_stats: bool
    axis_name: Any = None


def _broadcast_shape(ndim: int, ax: int, features: int) -> Shape:
    """`(1, ..., F, ..., 1)`: a per-feature vector shaped to broadcast against x."""
    return tuple(features if i == ax else 1 for i in range(ndim))


def _global_mean(local, axis_name):
    """The mean over the shards of `axis_name` (identity without one)."""
    return local if axis_name is None else jax.lax.pmean(local, axis_name)


def feature_axis(ndim: int, axis: int) -> int:
    """`axis` as a non-negative feature axis of an `ndim`-axis batched x (not the batch axis 0).

    **Returns:**

    The axis in `1..ndim-1`. Raises `ValueError` for fewer than 2 axes, or an axis out of
    range or equal to the batch axis.
    """
    if ndim < 2:
        raise ValueError(f"BatchNorm: x must have a batch axis and at least one feature axis, got {ndim} axes")
    if not -ndim <= axis < ndim or axis % ndim == 0:
        raise ValueError(
            f"BatchNorm: axis must be a feature axis of x (1..{ndim - 1} or -{ndim - 1}..-1; "
            f"axis 0 is the batch axis), got axis={axis} for {ndim}-axis input"
        )
    return int(axis) % ndim


def _prepared(x, gamma, beta, axis):
    """x, gamma and beta in the statistics dtype, the latter two broadcastable."""
    bshape = _broadcast_shape(x.ndim, axis, gamma.shape[0])
    sd = stat_dtype(x.dtype)
    return x.astype(sd), gamma.reshape(bshape).astype(sd), beta.reshape(bshape).astype(sd), bshape


def batchnorm_forward_train(x: jax.Array, gamma: jax.Array, beta: jax.Array, *, axis: int, eps: float,
                            axis_name: Any = None) -> tuple[jax.Array, jax.Array, jax.Array, BatchNormCache]:
    r"""Normalise with the batch statistics: $y = \gamma (x - \mu) / \sqrt{\sigma^2 + \epsilon} + \beta$.

    **Arguments:**

    - `x`: input, e.g. `(N, F)` or `(N, H, W, C)`, F features on `axis`.
    - `gamma`, `beta`: scale and shift, shape `(F,)`.
    - `axis`: the non-negative feature axis (`feature_axis`); `eps`: added to the variance.
    - `axis_name`: average the statistics over this mesh axis (inside `shard_map`), or `None`.

    **Returns:**

    `(y, mean, var, cache)`: `y` of `x`'s shape and dtype; `mean` and `var` of shape `(F,)`,
    the batch mean and the *unbiased* batch variance (for the running statistics), in the
    statistics dtype; `cache` a `BatchNormCache`. Raises `ValueError` for one value per
    feature (the unbiased variance is undefined).
    """
    out_dtype = x.dtype
    x, gamma, beta, bshape = _prepared(x, gamma, beta, axis)
    reduce = tuple(i for i in range(x.ndim) if i != axis)
    m = math.prod(x.shape[i] for i in reduce)
    if m < 2:
        raise ValueError(
            f"BatchNorm: training mode needs more than one value per feature to estimate the "
            f"variance, got x of shape {x.shape}; use a larger batch or train=False"
        )
    mu = _global_mean(jnp.mean(x, axis=reduce, keepdims=True), axis_name)
    centred = x - mu
    var = _global_mean(jnp.mean(jnp.square(centred), axis=reduce, keepdims=True), axis_name)  # two-pass
    m = m if axis_name is None else m * jax.lax.axis_size(axis_name)
    inv_std = jax.lax.rsqrt(var + eps)
    xhat = centred * inv_std
    features = gamma.size
    y = (gamma * xhat + beta).astype(out_dtype)
    return (y, mu.reshape(features), var.reshape(features) * (m / (m - 1)),
            BatchNormCache(xhat, inv_std, gamma, axis, True, axis_name))


def batchnorm_forward_eval(x: jax.Array, gamma: jax.Array, beta: jax.Array, mean: jax.Array, var: jax.Array,
                           *, axis: int, eps: float) -> tuple[jax.Array, BatchNormCache]:
    r"""Normalise with constant statistics: $y = \gamma (x - r_\mu) / \sqrt{r_{\sigma^2} + \epsilon} + \beta$.

    **Arguments:**

    - `x`: input, F features on `axis`; `gamma`, `beta`: shape `(F,)`.
    - `mean`, `var`: the running statistics, shape `(F,)` (no gradient reaches them).
    - `axis`: the non-negative feature axis; `eps`: added to the variance.

    **Returns:**

    `(y, cache)`: `y` of `x`'s shape and dtype; `cache` a `BatchNormCache`.
    """
    out_dtype = x.dtype
    x, gamma, beta, bshape = _prepared(x, gamma, beta, axis)
    mean, var = jax.lax.stop_gradient((mean, var))
    inv_std = jax.lax.rsqrt(var.astype(x.dtype) + eps).reshape(bshape)
    xhat = (x - mean.astype(x.dtype).reshape(bshape)) * inv_std
    return (gamma * xhat + beta).astype(out_dtype), BatchNormCache(xhat, inv_std, gamma, axis, False)


def batchnorm_backward(dy: jax.Array, cache: BatchNormCache) -> tuple[jax.Array, jax.Array, jax.Array]:
    r"""The closed form $dx = \gamma s (\delta - \frac{1}{m} d\beta - \frac{\hat x}{m} d\gamma)$ (module docstring).

    **Arguments:**

    - `dy`: the output's gradient, the input's shape.
    - `cache`: the forward's `BatchNormCache` (eval mode: no $1/m$ terms).

    **Returns:**

    `(dx, dgamma, dbeta)`: `dx` of the input's shape in `dy`'s dtype; `dgamma` and `dbeta`
    of shape `(F,)` in the statistics dtype.
    """
    ax = cache.axis
    reduce = tuple(i for i in range(dy.ndim) if i != ax)
    bshape = _broadcast_shape(dy.ndim, ax, dy.shape[ax])
    dx_dtype, dy = dy.dtype, dy.astype(cache.xhat.dtype)
    dbeta = jnp.sum(dy, axis=reduce)
    dgamma = jnp.sum(dy * cache.xhat, axis=reduce)
    if cache.batch_stats:  # the mean and variance depend on x too
        m = dy.size // dy.shape[ax]
        sum_dy, sum_dy_xhat = _global_mean((dbeta, dgamma), cache.axis_name)  # m: values per feature per shard
        dy = dy - (sum_dy.reshape(bshape) + cache.xhat * sum_dy_xhat.reshape(bshape)) / m
    return (cache.gamma * cache.inv_std * dy).astype(dx_dtype), dgamma, dbeta


def batchnorm_backward_staged(dy: jax.Array, cache: BatchNormCache) -> tuple[jax.Array, jax.Array, jax.Array]:
    r"""CS231n's staged derivation of the training-mode backward, node by node (one device).

    The forward as a graph: $\mu$, $x_c = x - \mu$, $q = x_c^2$, $\sigma^2 = \overline{q}$,
    $\sigma = \sqrt{\sigma^2 + \epsilon}$, $s = 1/\sigma$, $\hat x = x_c s$,
    $y = \gamma \hat x + \beta$; walked back, each node adds its parents' shares. $x_c$ is
    recovered as $\hat x / s$. A check on `batchnorm_backward`, not used by the layer.

    **Arguments:**

    - `dy`: the output's gradient, the input's shape; `cache`: a training-mode cache.

    **Returns:**

    `(dx, dgamma, dbeta)` as `batchnorm_backward`.
    """
    ax = cache.axis
    reduce = tuple(i for i in range(dy.ndim) if i != ax)
    m = dy.size // dy.shape[ax]
    dx_dtype, dy = dy.dtype, dy.astype(cache.xhat.dtype)
    s, xhat = cache.inv_std, cache.xhat
    xc, sigma = xhat / s, 1.0 / s
    dbeta, dgamma = jnp.sum(dy, axis=reduce), jnp.sum(dy * xhat, axis=reduce)
    dxhat = dy * cache.gamma  # (input's shape)
    dxc = dxhat * s  # x_hat = x_c s: the x_c branch
    ds = jnp.sum(dxhat * xc, axis=reduce, keepdims=True)  # ... and the s branch (1, .., F, .., 1)
    dvar = -ds / sigma ** 2 * 0.5 / sigma  # s = 1 / sigma, sigma = sqrt(var + eps)
    dxc = dxc + 2.0 * xc * dvar / m  # var = mean(x_c^2)
    dmu = -jnp.sum(dxc, axis=reduce, keepdims=True)  # x_c = x - mu
    return (dxc + dmu / m).astype(dx_dtype), dgamma, dbeta


def running_update(state: State, mean: jax.Array, var: jax.Array, momentum: float) -> State:
    """`momentum * running + (1 - momentum) * batch`, in the state's dtype, no gradient.

    **Arguments:**

    - `state`: `{"mean": (F,), "var": (F,)}`, the running statistics.
    - `mean`, `var`: the batch mean and unbiased variance, shape `(F,)`.

    **Returns:**

    The new state, `{"mean": (F,), "var": (F,)}`.
    """
    batch = {"mean": mean, "var": var}
    return jax.lax.stop_gradient({
        k: (momentum * state[k] + (1 - momentum) * batch[k]).astype(state[k].dtype) for k in batch})


def batchnorm_init(key: jax.Array, features: int, gamma_init: Callable, beta_init: Callable,
                   param_dtype: Any) -> tuple[Params, State]:
    """Params `{"gamma": (F,), "beta": (F,)}` in `param_dtype`; state `{"mean": (F,), "var": (F,)}`
    (zeros, ones) in `param_dtype` or float32, whichever is wider."""
    kg, kb = jax.random.split(key)
    params = {"gamma": initialise(gamma_init, kg, (features,), features, features, param_dtype),
              "beta": initialise(beta_init, kb, (features,), features, features, param_dtype)}
    sd = stat_dtype(param_dtype)
    return params, {"mean": jnp.zeros((features,), sd), "var": jnp.ones((features,), sd)}


def _check_arguments(momentum, eps, axis):
    if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real) or not 0.0 <= momentum < 1.0:
        raise ValueError(f"BatchNorm: momentum must be a number in [0, 1), got {momentum!r}")
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not eps > 0:
        raise ValueError(f"BatchNorm: eps must be a positive number, got {eps!r}")
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"BatchNorm: axis must be an int, got {axis!r}")


def _check_x(x, features, axis, train):
    if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
        raise TypeError(f"BatchNorm: x must be a floating-point array, got dtype {jnp.result_type(x)}")
    ax = feature_axis(x.ndim, axis)
    if x.shape[ax] != features:
        raise ValueError(f"BatchNorm: x must have {features} features on axis {axis}, got shape {x.shape}")
    if isinstance(train, jax.core.Tracer):
        raise TypeError("BatchNorm: train must be a Python bool, got a traced value; "
                        "mark it static under jit (static_argnames='train')")
    return ax


def BatchNorm(*, momentum: float = 0.9, eps: float = 1e-5, axis: int = -1,
              gamma_init: str | Callable = "ones", beta_init: str | Callable = "zeros", axis_name: Any = None,
              param_dtype: Any = "float32", dtype: Any = None) -> Layer:
    """Normalise each feature over the batch, then scale by `gamma` and shift by `beta`.

    Params `{"gamma": (F,), "beta": (F,)}` (ones, zeros by default); state
    `{"mean": (F,), "var": (F,)}` (zeros, ones). Input and output: the same shape, F
    features on `axis`, e.g. `(N, F)` or `(N, H, W, C)`.

    **Arguments:**

    - `momentum`: weight of the old running statistics in their update, in [0, 1).
    - `eps`: added to the variance before the square root, > 0.
    - `axis`: the feature axis of the batched input x (batch axis first; negative counts
      from the end). `-1` suits `(N, F)` and NHWC `(N, H, W, C)`; `1` suits NCHW. It may not
      be the batch axis.
    - `gamma_init`, `beta_init`: initialisers (a name from `funcnn.core.initializers` or a
      callable `init(key, shape, fan_in, fan_out[, dtype])`) of the scale and the shift.
    - `axis_name`: inside `shard_map` over a batch split along this mesh axis, use the
      statistics of the global batch: the means and the backward's sums are averaged over
      the axis (`lax.pmean`; the shards must be of equal size). `None` (the default) uses
      the batch the layer sees; under a sharded `jit` that is already the global batch.
    - `param_dtype`: the params' dtype; the running statistics are in it or float32,
      whichever is wider (module docstring).
    - `dtype`: the computation's (None: the input's); statistics run in float32 at least.

    **Returns:**

    The `Layer`. Raises `ValueError` for a momentum outside [0, 1), a non-positive eps, an
    axis that is the batch axis or out of range, an input whose feature axis does not have
    F entries, and, in training mode, a batch with one value per feature (its unbiased
    variance is undefined).
    """
    _check_arguments(momentum, eps, axis)
    gamma_init, beta_init = initializers.get(gamma_init, "gamma_init"), initializers.get(beta_init, "beta_init")
    param_dtype, dtype = layer_dtypes(param_dtype, dtype, "BatchNorm")

    def init(key, input_shape):
        shape = example_shape(input_shape, "BatchNorm")
        features = shape[feature_axis(len(shape) + 1, axis) - 1]
        return batchnorm_init(key, features, gamma_init, beta_init, available(param_dtype, "BatchNorm"))

    def output_shape(input_shape):
        feature_axis(len(input_shape) + 1, axis)
        return tuple(input_shape)

    def forward(params, state, x, *, key=None, train=False):
        ax = _check_x(x, params["gamma"].shape[0], axis, train)
        if not train:
            y, cache = batchnorm_forward_eval(x, params["gamma"], params["beta"], state["mean"], state["var"],
                                              axis=ax, eps=eps)
            return y, state, cache
        y, mean, var, cache = batchnorm_forward_train(x, params["gamma"], params["beta"], axis=ax, eps=eps,
                                                      axis_name=axis_name)
        return y, running_update(state, mean, var, momentum), cache

    def backward(params, cache, dy):
        dx, dgamma, dbeta = batchnorm_backward(dy, cache)
        return {"gamma": dgamma.astype(params["gamma"].dtype), "beta": dbeta.astype(params["beta"].dtype)}, dx

    return with_compute_dtype(Layer("batchnorm", init, forward, backward, output_shape), dtype)
