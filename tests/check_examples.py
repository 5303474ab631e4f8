"""Layers with hand-written backwards for the checker's tests: a LayerNorm (right, and
with the gain left out of dx), and derivations that are right only at initial values."""
import jax.numpy as jnp

from funcnn.core.layer import Layer


def LayerNorm(eps=1e-5, *, forget_gain_in_dx=False):
    """y = g * (x - mean) / sqrt(var + eps) + b over the last axis."""
    def init(key, input_shape):
        d = input_shape[-1]
        return {"g": jnp.ones(d), "b": jnp.zeros(d)}, {}

    def forward(params, state, x, *, key=None, train=False):
        xc = x - x.mean(-1, keepdims=True)
        inv = 1 / jnp.sqrt((xc**2).mean(-1, keepdims=True) + eps)
        xhat = xc * inv
        return params["g"] * xhat + params["b"], state, (xhat, inv)

    def backward(params, cache, dy):
        xhat, inv = cache
        g = dy if forget_gain_in_dx else dy * params["g"]
        dx = inv * (g - g.mean(-1, keepdims=True) - xhat * (g * xhat).mean(-1, keepdims=True))
        d = xhat.shape[-1]
        return {"g": (dy * xhat).reshape(-1, d).sum(0), "b": dy.reshape(-1, d).sum(0)}, dx

    return Layer("layernorm", init, forward, backward, lambda s: tuple(s))


def _layer(name, init, forward, backward):
    def fwd(params, state, x, *, key=None, train=False):
        y, cache = forward(params, x)
        return y, state, cache

    return Layer(name, lambda key, shape: (init(shape[-1]), {}), fwd, backward, lambda s: tuple(s))


def Scale(*, wrong=False):
    """y = exp(s) x, log-scale s starting at 0: dx = exp(s) dy (wrong: dy)."""
    def forward(p, x):
        return jnp.exp(p["s"]) * x, x

    def backward(p, x, dy):
        e = jnp.exp(p["s"])
        return {"s": (dy * e * x).sum(0)}, dy if wrong else e * dy

    return _layer("scale", lambda d: {"s": jnp.zeros(d)}, forward, backward)


def Affine(*, wrong=False):
    """y = g x + b, gain starting at 1: dg = sum dy x (wrong: sum dy x g)."""
    def forward(p, x):
        return p["g"] * x + p["b"], x

    def backward(p, x, dy):
        dg = (dy * x).sum(0)
        return {"g": dg * p["g"] if wrong else dg, "b": dy.sum(0)}, dy * p["g"]

    return _layer("affine", lambda d: {"g": jnp.ones(d), "b": jnp.zeros(d)}, forward, backward)


def PReLU(*, wrong=False):
    """y = x for x > 0, a x otherwise, slope a starting at 0: dx = dy where x > 0, a dy
    elsewhere (wrong: 0 elsewhere, as for a ReLU)."""
    def forward(p, x):
        return jnp.where(x > 0, x, p["a"] * x), x

    def backward(p, x, dy):
        dx = jnp.where(x > 0, dy, 0.0 if wrong else p["a"] * dy)
        return {"a": jnp.where(x > 0, 0.0, dy * x).sum(0)}, dx

    return _layer("prelu", lambda d: {"a": jnp.zeros(d)}, forward, backward)


def DenseTanh(units=3, *, wrong=False):
    """y = tanh(x w^T + b), bias starting at 0 (wrong: the backward recomputes the
    pre-activation without b)."""
    def init(key, shape):
        w = jnp.cos(jnp.arange(units * shape[-1], dtype=jnp.float32).reshape(units, shape[-1]))
        return {"w": w, "b": jnp.zeros(units)}, {}

    def forward(params, state, x, *, key=None, train=False):
        return jnp.tanh(x @ params["w"].T + params["b"]), state, x

    def backward(params, x, dy):
        z = x @ params["w"].T + (0.0 if wrong else params["b"])
        dz = dy * (1 - jnp.tanh(z) ** 2)
        return {"w": dz.T @ x, "b": dz.sum(0)}, dz @ params["w"]

    return Layer("dense_tanh", init, forward, backward, lambda s: (units,))


def ForgetGate(*, wrong=False):
    """One LSTM-style cell step c' = sigmoid(f) c with a forget bias f starting at 0...
    here f starts at log(1) = 0 of the odds: y = sigmoid(f) x; dx = sigmoid(f) dy,
    df = sum dy x sigmoid(f) (1 - sigmoid(f)) (wrong: sigmoid(f) (1 - sigmoid(f))
    replaced by its value 1/4 at f = 0)."""
    def forward(p, x):
        return (1 / (1 + jnp.exp(-p["f"]))) * x, x

    def backward(p, x, dy):
        s = 1 / (1 + jnp.exp(-p["f"]))
        ds = 0.25 if wrong else s * (1 - s)
        return {"f": (dy * x * ds).sum(0)}, s * dy

    return _layer("forget_gate", lambda d: {"f": jnp.zeros(d)}, forward, backward)
