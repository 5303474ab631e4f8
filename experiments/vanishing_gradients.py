"""Vanishing gradients through time: SimpleRNN vs LSTM vs GRU on the adding problem.

The adding problem (Hochreiter & Schmidhuber 1997): a sequence of T = 100 steps of
two features, a random value u_t ~ U(0, 1) and a marker that is 1 at two steps (one
in each half) and 0 elsewhere; the target is the sum of the two marked values. Only
a network whose loss gradient reaches back ~50-100 steps can learn it; predicting
the mean (1) gives MSE 1/6 ~ 0.167. Accuracy: |prediction - target| < 0.04.

Each network is cell(H) -> last h -> Dense(1), trained with MSE, Adam and global-norm
clipping, the hand-written BPTT. The figure shows the mean over a batch of
||dL/dh_t|| against the distance T-1-t from the last state (the one the loss reads),
at initialisation and after training. In the SimpleRNN every step back multiplies
the gradient by diag(tanh'(a)) W_hh, so it decays geometrically; the LSTM's cell
carries dc_{t-1} = f * dc_t and holds it.

How dL/dh_t is measured, with the layers' own manual backward:
* SimpleRNN, LSTM: h_{t-1} enters step t only through a_t = ... + h_{t-1} W_hh^T, so
  dL/dh_{t-1} = dA_t W_hh. Feeding the inputs [x_t, 0] (H extra zero features) with
  w_ih' = [w_ih, w_hh] changes nothing in the forward, and the input gradient's
  extra features are then exactly dA_t W_hh = dL/dh_{t-1}, for every t in one pass.
* GRU (h_{t-1} also enters directly, h_t = ... + z h_{t-1}): run the last T-1-t steps
  from the initial state h_t (the layer's initial-state input) and read the
  initial-state gradient, at a set of distances.

    python experiments/vanishing_gradients.py [--quick]

Writes experiments/results/vanishing_gradients.md and vanishing_gradients.png.
"""
from __future__ import annotations

import argparse
import pathlib
import time

import funcnn  # noqa: F401  (the library under study)

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from funcnn.core.layer import serial  # noqa: E402
from funcnn.layers.dense import Dense  # noqa: E402
from funcnn.layers.recurrent import GRU, LSTM, SimpleRNN  # noqa: E402
from funcnn.losses import mse  # noqa: E402
from funcnn.training.fit import fit  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
CELLS = {"SimpleRNN": SimpleRNN, "LSTM": LSTM, "GRU": GRU}
TOLERANCE = 0.04
LR, CLIP = 3e-3, 1.0


def adding_problem(key, n, length):
    """x (n, length, 2): values and markers; y (n, 1): the sum of the two marked values."""
    k_u, k_a, k_b = jax.random.split(key, 3)
    u = jax.random.uniform(k_u, (n, length))
    first = jax.random.randint(k_a, (n,), 0, length // 2)
    second = jax.random.randint(k_b, (n,), length // 2, length)
    marks = jax.nn.one_hot(first, length) + jax.nn.one_hot(second, length)
    x = jnp.stack([u, marks], axis=-1)
    return np.asarray(x, np.float32), np.asarray((u * marks).sum(1, keepdims=True), np.float32)


def model_for(name, hidden):
    return serial(CELLS[name](hidden, return_sequences=False), Dense(1))


def _no_state(params):
    """These models carry no state: an empty dict per layer."""
    return {k: {} for k in params}


def _last_state_grad(params, pred, y):
    """dL/dh_{T-1}: the gradient arriving from the Dense layer, dL/dpred W_out."""
    return jnp.linalg.norm(mse.grad(pred, y) @ params["1_dense"]["w"], axis=-1).mean()


def grad_norms_augmented(name, hidden, params, x, y):
    """Mean ||dL/dh_t|| at distances 0..T-1 (SimpleRNN, LSTM) in one manual backward."""
    model = model_for(name, hidden)
    rec_key = next(k for k in params if k.startswith("0_"))
    rec = dict(params[rec_key], w_ih=jnp.concatenate([params[rec_key]["w_ih"], params[rec_key]["w_hh"]], axis=1))
    wide = {**params, rec_key: rec}
    x_wide = jnp.concatenate([x, jnp.zeros((*x.shape[:2], hidden), x.dtype)], axis=-1)

    @jax.jit
    def by_time(p, x_wide, y):
        pred, _, cache = model.forward(p, _no_state(p), x_wide)
        _, dx = model.backward(p, cache, mse.grad(pred, y))
        dh_prev = dx[:, 1:, x.shape[-1]:]  # dL/dh_{t-1} for t = 1..T-1
        return jnp.concatenate([jnp.linalg.norm(dh_prev, axis=-1).mean(0), _last_state_grad(p, pred, y)[None]])

    return np.asarray(by_time(wide, x_wide, y))[::-1]  # index = distance T-1-t


def grad_norms_suffix(name, hidden, params, x, y, distances):
    """Mean ||dL/dh_t|| at the given distances (GRU): rerun the suffix from the state h_t."""
    model = model_for(name, hidden)
    length = x.shape[1]
    hs = CELLS[name](hidden).apply(params["0_gru"], {}, x)[0]  # h_0 .. h_{T-1}, (B, T, H)
    step = jax.jit(lambda p, suffix, y: model.backward(p, model.forward(p, _no_state(p), suffix)[2],
                                                       mse.grad(model.apply(p, _no_state(p), suffix)[0], y))[1][1])
    out = {0: float(_last_state_grad(params, model.apply(params, _no_state(params), x)[0], y))}
    for d in distances:
        if d > 0:
            t = length - 1 - d
            out[d] = float(jnp.linalg.norm(step(params, (x[:, t + 1:], hs[:, t]), y), axis=-1).mean())
    return out


def accuracy(model, params, x, y):
    pred = jax.jit(lambda p, x: model.apply(p, _no_state(p), x)[0])(params, x)
    return float(jnp.mean(jnp.abs(pred - y) < TOLERANCE)), float(jnp.mean((pred - y) ** 2))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny smoke run (short sequences, one epoch)")
    args = p.parse_args(argv)
    length, hidden, n_train, epochs = (20, 16, 512, 1) if args.quick else (100, 64, 10_000, 25)
    batch = 64
    k_train, k_test, k_probe = jax.random.split(jax.random.key(0), 3)
    x_tr, y_tr = adding_problem(k_train, n_train, length)
    x_te, y_te = adding_problem(k_test, 1000, length)
    x_pr, y_pr = map(jnp.asarray, adding_problem(k_probe, 256, length))
    gru_distances = sorted({0, 1, 2, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, length - 1} & set(range(length)))

    def norms(name, params):
        if name == "GRU":
            d = grad_norms_suffix(name, hidden, params, x_pr, y_pr, gru_distances)
            return np.array(list(d)), np.array(list(d.values()))
        v = grad_norms_augmented(name, hidden, params, x_pr, y_pr)
        return np.arange(len(v)), v

    start = time.perf_counter()
    rows, curves, grads = [], {}, {}
    for name in CELLS:
        model = model_for(name, hidden)
        params, _ = model.init(jax.random.key(1), (length, 2))
        grads[name, "init"] = norms(name, params)
        opt = optax.chain(optax.clip_by_global_norm(CLIP), optax.adam(LR))
        t0 = time.perf_counter()
        res = fit(model, mse, opt, (x_tr, y_tr, x_te, y_te), epochs=epochs, batch_size=batch,
                  key=jax.random.key(2), progress=False)
        seconds = time.perf_counter() - t0
        grads[name, "trained"] = norms(name, res.params)
        acc, test_mse = accuracy(model, res.params, jnp.asarray(x_te), jnp.asarray(y_te))
        d, v = grads[name, "init"]
        far = v[d == d.max()][0] / v[d == 0][0]
        d, v = grads[name, "trained"]
        far_tr = v[d == d.max()][0] / v[d == 0][0]
        rows.append((name, test_mse, acc, far, far_tr, seconds))
        curves[name] = res.history["test_loss"]
        print(f"{name:10s} test MSE {test_mse:.4f} acc {acc:.3f}  |dL/dh| far/near init {far:.2g} "
              f"trained {far_tr:.2g}  ({seconds:.0f} s)", flush=True)
    elapsed = time.perf_counter() - start

    RESULTS.mkdir(parents=True, exist_ok=True)
    lines = [
        f"# Vanishing gradients: the adding problem, T = {length}",
        "",
        f"{n_train} training / 1000 test sequences, hidden {hidden}, cell -> last h -> Dense(1), MSE, "
        f"Adam lr {LR:g} with global-norm clipping at {CLIP:g}, batch {batch}, {epochs} epochs, "
        f"hand-written BPTT. Accuracy: |prediction - target| < {TOLERANCE}; predicting the mean gives "
        f"MSE 0.167. The gradient columns give mean ||dL/dh_t|| at distance {length - 1} from the loss over "
        f"that at distance 0 (256 probe sequences). Total time {elapsed:.0f} s.",
        "",
        "| cell | test MSE | test accuracy | far/near gradient at init | far/near gradient trained | train s |",
        "|---|---:|---:|---:|---:|---:|",
        *[f"| {n} | {m:.4f} | {a:.3f} | {f:.2g} | {g:.2g} | {s:.0f} |" for n, m, a, f, g, s in rows],
        "",
        "![vanishing gradients](vanishing_gradients.png)",
        "",
    ]
    (RESULTS / "vanishing_gradients.md").write_text("\n".join(lines))

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    colors = {"SimpleRNN": "C3", "LSTM": "C0", "GRU": "C2"}
    for ax, phase in zip(axes[:2], ("init", "trained")):
        for name in CELLS:
            d, v = grads[name, phase]
            ax.semilogy(d, v, "-" if name != "GRU" else "o-", color=colors[name], label=name, ms=3)
        ax.set(xlabel="distance T-1-t from the loss (steps)", ylabel="mean ||dL/dh_t||",
               title=f"gradient through time, {'at initialisation' if phase == 'init' else 'after training'}")
        ax.legend()
    for name, c in curves.items():
        axes[2].plot(range(1, len(c) + 1), c, color=colors[name], label=name)
    axes[2].axhline(1 / 6, color="grey", lw=0.8, ls="--", label="predict the mean")
    axes[2].set(xlabel="epoch", ylabel="test MSE", title="adding problem, test MSE", yscale="log")
    axes[2].legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "vanishing_gradients.png", dpi=120)
    print(f"wrote {RESULTS / 'vanishing_gradients.md'} and .png in {elapsed:.0f} s")


if __name__ == "__main__":
    main()
