"""SimpleRNN, LSTM and GRU: BPTT against autodiff and finite differences (float64),
forward outputs against a NumPy loop written from the textbook equations (gate order
i, f, g, o; GRU's reset gate inside the candidate, as cuDNN/PyTorch) and, where PyTorch is
installed (the `bench` extra), against torch.nn with the same weights; shapes, states, errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnn as fn
from funcnn.check import check_layer
from funcnn.layers.recurrent import GRU, LSTM, SimpleRNN
from helpers import RTOL_F32, RTOL_F64, assert_close
from layer_checks import perturbed

F, H = 2, 3
CELLS = {
    "simple_rnn": lambda **kw: SimpleRNN(H, **kw),
    "lstm": lambda **kw: LSTM(H, **kw),
    "gru": lambda **kw: GRU(H, **kw),
    "simple_rnn_relu": lambda **kw: SimpleRNN(H, "relu", **kw),
}
BASE = ("simple_rnn", "lstm", "gru")


def _state(name, batch, key):
    k1, k2 = jax.random.split(key)
    h0 = jax.random.normal(k1, (batch, H))
    return (h0, jax.random.normal(k2, (batch, H))) if name == "lstm" else h0


# (layer, time, return_sequences, initial state): lengths 1 to 5; every cell with both
# kinds of output and with and without an initial state (in some combination).
CASES = [
    ("simple_rnn", 1, True, False), ("simple_rnn", 4, False, True), ("simple_rnn_relu", 3, True, True),
    ("lstm", 3, True, False), ("lstm", 5, False, True),
    ("gru", 4, True, True), ("gru", 2, False, False),
]


@pytest.mark.slow
@pytest.mark.parametrize("name,time,seqs,with_state", CASES)
def test_bptt_matches_autodiff_and_finite_differences(name, time, seqs, with_state):
    layer = CELLS[name](return_sequences=seqs)
    kx, ks = jax.random.split(jax.random.key(time))
    x = jax.random.normal(kx, (3, time, F))
    if with_state:
        x = (x, _state(name, 3, ks))
    report = check_layer(layer, (time, F), x=x, key=jax.random.key(7), max_fd=64)
    report.assert_ok()
    paths = {r.path for r in report.rows}
    assert ("x[1]" in paths or "x[1][0]" in paths) == with_state  # the initial state was checked


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _numpy_reference(name, params, x, state0, activation="tanh"):
    """The cells written out step by step in float64 NumPy; returns every hidden state."""
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    x = np.asarray(x, np.float64)
    batch, time, _ = x.shape
    act = np.tanh if activation == "tanh" else (lambda z: np.maximum(z, 0.0))
    if state0 is None:
        h, c = np.zeros((batch, H)), np.zeros((batch, H))
    elif name == "lstm":
        h, c = (np.asarray(s, np.float64) for s in state0)
    else:
        h = np.asarray(state0, np.float64)
    out = []
    for t in range(time):
        xt = x[:, t]
        if name == "lstm":
            z = xt @ p["w_ih"].T + h @ p["w_hh"].T + p["b"]
            i, f, g, o = np.split(z, 4, axis=1)
            c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
            h = _sigmoid(o) * np.tanh(c)
        elif name == "gru":
            ri, zi, ni = np.split(xt @ p["w_ih"].T + p["b_ih"], 3, axis=1)
            rh, zh, nh = np.split(h @ p["w_hh"].T + p["b_hh"], 3, axis=1)
            r, u = _sigmoid(ri + rh), _sigmoid(zi + zh)
            n = np.tanh(ni + r * nh)
            h = (1 - u) * n + u * h
        else:
            h = act(xt @ p["w_ih"].T + h @ p["w_hh"].T + p["b"])
        out.append(h)
    return np.stack(out, axis=1)


def _torch_reference(name, params, x, state0, activation="tanh"):
    torch = pytest.importorskip("torch")
    p = {k: torch.tensor(np.asarray(v, np.float64)) for k, v in params.items()}
    if name == "lstm":
        mod = torch.nn.LSTM(F, H, batch_first=True).double()
        biases = (p["b"], torch.zeros_like(p["b"]))
    elif name == "gru":
        mod = torch.nn.GRU(F, H, batch_first=True).double()
        biases = (p["b_ih"], p["b_hh"])
    else:
        mod = torch.nn.RNN(F, H, nonlinearity=activation, batch_first=True).double()
        biases = (p["b"], torch.zeros_like(p["b"]))
    with torch.no_grad():
        mod.weight_ih_l0.copy_(p["w_ih"])
        mod.weight_hh_l0.copy_(p["w_hh"])
        mod.bias_ih_l0.copy_(biases[0])
        mod.bias_hh_l0.copy_(biases[1])
        to_torch = lambda a: torch.tensor(np.asarray(a, np.float64))[None]
        args = (torch.tensor(np.asarray(x)),) + (() if state0 is None else (jax.tree_util.tree_map(to_torch, state0),))
        out, _ = mod(*args)
    return out.numpy()


@pytest.mark.slow
@pytest.mark.parametrize("reference", [_numpy_reference, _torch_reference], ids=["numpy", "torch"])
@pytest.mark.parametrize("name,activation,with_state", [
    ("lstm", None, False), ("lstm", None, True), ("gru", None, True),
    ("simple_rnn", "tanh", False), ("simple_rnn", "relu", True)])
def test_forward_matches_reference(name, activation, with_state, reference):
    """Every hidden state, and the last alone (return_sequences=False), equal the reference's."""
    kw = {} if activation is None else {"activation": activation}
    seq, last = CELLS[name](**kw), CELLS[name](return_sequences=False, **kw)
    with jax.enable_x64(True):
        params, _ = seq.init(jax.random.key(0), (7, F))
        params = perturbed(jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), params), jax.random.key(1))
        x = jax.random.normal(jax.random.key(2), (4, 7, F), jnp.float64)
        state0 = _state(name, 4, jax.random.key(3)) if with_state else None
        x_in = x if state0 is None else (x, state0)
        y_seq, y_last = jax.jit(lambda p, x: (seq.apply(p, {}, x)[0], last.apply(p, {}, x)[0]))(params, x_in)
    expected = reference(name, params, x, state0, activation or "tanh")
    assert y_seq.shape == (4, 7, H) and y_last.shape == (4, H)
    assert_close(np.asarray(y_seq), expected, RTOL_F64)
    assert_close(np.asarray(y_last), expected[:, -1], RTOL_F64)


def test_initial_state_continues_a_sequence():
    """Running the first 3 steps, then the last 4 from the state reached, is the full run."""
    layer = GRU(H)
    params, _ = layer.init(jax.random.key(1), (7, F))
    x = jax.random.normal(jax.random.key(0), (2, 7, F))
    apply = jax.jit(layer.apply)
    full, _ = apply(params, {}, x)
    head, _ = apply(params, {}, x[:, :3])
    tail, _ = apply(params, {}, (x[:, 3:], head[:, -1]))
    assert_close(jnp.concatenate([head, tail], axis=1), full, RTOL_F32)


def test_params_shapes_and_forget_bias():
    shapes = {
        "simple_rnn": {"w_ih": (H, F), "w_hh": (H, H), "b": (H,)},
        "lstm": {"w_ih": (4 * H, F), "w_hh": (4 * H, H), "b": (4 * H,)},
        "gru": {"w_ih": (3 * H, F), "w_hh": (3 * H, H), "b_ih": (3 * H,), "b_hh": (3 * H,)},
    }
    for name in BASE:
        params, state = CELLS[name]().init(jax.random.key(0), (5, F))
        assert {k: v.shape for k, v in params.items()} == shapes[name] and state == {}
    b = LSTM(H).init(jax.random.key(0), (5, F))[0]["b"]
    np.testing.assert_array_equal(np.asarray(b), np.r_[np.zeros(H), np.ones(H), np.zeros(2 * H)])
    # each recurrent gate block starts orthogonal
    w_hh = LSTM(H).init(jax.random.key(0), (5, F))[0]["w_hh"].reshape(4, H, H)
    # every entry of W W^T is judged against the scale of I (floor_frac=1): float32 rounding
    # of an orthogonal factor leaves ~1e-7 off the diagonal
    assert_close(w_hh @ jnp.swapaxes(w_hh, 1, 2), np.broadcast_to(np.eye(H), (4, H, H)), RTOL_F32, floor_frac=1.0)


def test_output_shape_and_serial():
    assert LSTM(6).output_shape((9, 2)) == (9, 6)
    assert GRU(6, return_sequences=False).output_shape((9, 2)) == (6,)
    model = fn.serial(LSTM(5), SimpleRNN(4), GRU(4, return_sequences=False), fn.Dense(3))
    params, state = model.init(jax.random.key(0), (6, 2))
    x = jax.ShapeDtypeStruct((8, 6, 2), jnp.float32)
    y, _ = jax.eval_shape(lambda p, x: model.apply(p, state, x), params, x)
    assert y.shape == (8, 3) == (8, *model.output_shape((6, 2)))


@pytest.mark.slow
def test_manual_grads_match_autodiff_in_float32_under_jit_and_vmap():
    model = fn.serial(GRU(4, return_sequences=False), fn.Dense(2))
    params, state = model.init(jax.random.key(0), (5, 2))
    x = jax.random.normal(jax.random.key(1), (6, 5, 2))
    y = jax.random.randint(jax.random.key(2), (6,), 0, 2)
    loss = fn.losses.softmax_cross_entropy
    _, g_manual, _ = jax.jit(fn.value_and_grad(model, loss, mode="manual"))(params, state, x, y)
    _, g_auto, _ = jax.jit(fn.value_and_grad(model, loss, mode="autodiff"))(params, state, x, y)
    assert_close(g_manual, g_auto, RTOL_F32)
    per_example = jax.jit(fn.per_example_grads(model, loss))(params, state, x, y)[1]
    mean = jax.tree_util.tree_map(lambda g: g.mean(axis=0), per_example)
    assert_close(mean, g_manual, RTOL_F32)


@pytest.mark.slow
def test_with_manual_vjp_passes_initial_state_gradient():
    layer = LSTM(H, return_sequences=False)
    bridged = fn.with_manual_vjp(layer)
    params, _ = layer.init(jax.random.key(0), (4, F))
    x = jax.random.normal(jax.random.key(1), (2, 4, F))
    s0 = _state("lstm", 2, jax.random.key(2))

    def objective(apply, s0):
        return jnp.sum(apply(params, {}, (x, s0))[0] ** 2)

    g_manual = jax.jit(jax.grad(lambda s: objective(bridged.apply, s)))(s0)
    g_auto = jax.jit(jax.grad(lambda s: objective(layer.apply, s)))(s0)
    assert_close(g_manual, g_auto, RTOL_F32)


@pytest.mark.parametrize("name", BASE)
def test_two_dimensional_input_is_a_clear_error(name):
    layer = CELLS[name]()
    params, _ = layer.init(jax.random.key(0), (5, F))
    title = {"simple_rnn": "SimpleRNN", "lstm": "LSTM", "gru": "GRU"}[name]
    with pytest.raises(ValueError, match=rf"^{title}: x must have shape \(batch, time, {F}\).*got \(4, {F}\)"):
        layer.apply(params, {}, jnp.ones((4, F)))


def test_other_bad_inputs():
    layer = LSTM(H)
    params, _ = layer.init(jax.random.key(0), (5, F))
    with pytest.raises(ValueError, match=r"x must have shape \(batch, time, 2\).*got \(4, 5, 3\)"):
        layer.apply(params, {}, jnp.ones((4, 5, 3)))
    with pytest.raises(ValueError, match="at least one time step"):
        layer.apply(params, {}, jnp.ones((4, 0, F)))
    with pytest.raises(TypeError, match="floating-point"):
        layer.apply(params, {}, jnp.ones((4, 5, F), jnp.int32))
    with pytest.raises(ValueError, match=r"pair \(h0, c0\)"):
        layer.apply(params, {}, (jnp.ones((4, 5, F)), jnp.zeros((4, H))))
    with pytest.raises(ValueError, match=r"initial cell c0 must have shape \(4, 3\), got \(4, 2\)"):
        layer.apply(params, {}, (jnp.ones((4, 5, F)), (jnp.zeros((4, H)), jnp.zeros((4, 2)))))
    with pytest.raises(ValueError, match=r"GRU: initial state h0 must have shape \(4, 3\)"):
        g = GRU(H)
        g.apply(g.init(jax.random.key(0), (5, F))[0], {}, (jnp.ones((4, 5, F)), jnp.zeros((3, H))))
    with pytest.raises(ValueError, match="hidden must be a positive integer"):
        GRU(0)
    with pytest.raises(ValueError, match="activation must be one of"):
        SimpleRNN(3, "softmax")
    with pytest.raises(ValueError, match=r"input_shape must be \(time, features\)"):
        LSTM(3).init(jax.random.key(0), (5,))
    with pytest.raises(ValueError, match=r"LSTM: recurrent_init must be a callable, 'orthogonal' or one of .*'orthogonl'"):
        LSTM(3, recurrent_init="orthogonl")
