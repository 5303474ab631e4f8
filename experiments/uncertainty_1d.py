"""Predictive uncertainty on the cubic toy of Hernandez-Lobato & Adams (2015).

y = x^3 + eps, eps ~ N(0, 3^2), 20 training points drawn uniformly in [-4, 4]; the
predictive mean and a +-2 sigma band over [-6, 6] for

* a deterministic MLP fitted by maximum likelihood (Gaussian NLL with the known noise
  sigma = 3): its band is the noise alone, the same everywhere;
* MC dropout (Gal & Ghahramani, 2016): dropout kept on at test time, 200 passes;
* Bayes by Backprop (Blundell et al., 2015): BayesDense layers, negative ELBO
  = Gaussian NLL + KL / 20, 200 weight samples at test time.

All three are one hidden layer of 100 ReLU units, trained full batch with Adam on the
hand-written backward (inputs scaled by 1/4, targets by 1/50). The predictive variance
is the Monte Carlo variance of the network output plus the noise variance 9. Writes
experiments/results/uncertainty_1d.{md,png}.

    python experiments/uncertainty_1d.py [--quick]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import funcnn  # noqa: F401  (the library under study)

import jax
import jax.numpy as jnp
import numpy as np
import optax

from funcnn import losses
from funcnn.layers.bayes_dense import BayesDense
from funcnn.science.bayes.kl import kl_penalty
from funcnn.science.bayes.predict import predict
from funcnn.gradients import value_and_grad
from funcnn.core.layer import serial
from funcnn.layers.activations import ReLU
from funcnn.layers.dense import Dense
from funcnn.layers.dropout import Dropout

RESULTS = Path(__file__).parent / "results"
NOISE, X_SCALE, Y_SCALE, N_TRAIN, HIDDEN = 3.0, 4.0, 50.0, 20, 100


def toy_data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-4, 4, (N_TRAIN, 1)).astype(np.float32)
    y = (x**3 + NOISE * rng.standard_normal((N_TRAIN, 1))).astype(np.float32)
    x_test = np.linspace(-4, 4, 200, dtype=np.float32)[:, None]
    y_test = (x_test**3 + NOISE * rng.standard_normal(x_test.shape)).astype(np.float32)
    return x, y, x_test, y_test


def train(model, loss, params, state, x, y, *, steps, lr, key, l2=0.0, penalty=None):
    """Full-batch Adam (cosine-decayed step) on the manual gradient, one compiled scan."""
    vg = value_and_grad(model, loss, l2=l2, penalty=penalty)
    opt = optax.adam(optax.cosine_decay_schedule(lr, steps, alpha=0.05))

    @jax.jit
    def run(params, key):
        def step(carry, k):
            p, s = carry
            value, g, _ = vg(p, state, x, y, key=k)
            u, s = opt.update(g, s, p)
            return (optax.apply_updates(p, u), s), value

        (p, _), values = jax.lax.scan(step, (params, opt.init(params)), jax.random.split(key, steps))
        return p, values

    return run(params, key)


def methods():
    """name -> (model, extra training options as a function of the state)."""
    return {
        "deterministic MLP (MLE)": (serial(Dense(HIDDEN, w_init="he_normal"), ReLU(), Dense(1)),
                                    lambda state: {}),
        "MC dropout (p=0.1)": (serial(Dense(HIDDEN, w_init="he_normal"), ReLU(), Dropout(0.1), Dense(1)),
                               lambda state: {"l2": 1e-4}),
        "Bayes by Backprop": (serial(BayesDense(HIDDEN, 1.0, sigma_init=0.02, w_init="he_normal"), ReLU(),
                                     BayesDense(1, 1.0, sigma_init=0.02)),
                              lambda state: {"penalty": kl_penalty(state, N_TRAIN)}),
    }


def run(quick=False, seed=0):
    steps, samples = (300, 20) if quick else (4000, 200)
    x, y, x_test, y_test = toy_data(seed)
    grid = np.linspace(-6, 6, 241, dtype=np.float32)[:, None]
    loss = losses.gaussian_nll(NOISE / Y_SCALE)
    rows, curves = [], {}
    for i, (name, (model, options)) in enumerate(methods().items()):
        t0 = time.perf_counter()
        params, state = model.init(jax.random.key(seed + 10 * i), (1,))
        params, values = train(model, loss, params, state, jnp.asarray(x / X_SCALE), jnp.asarray(y / Y_SCALE),
                               steps=steps, lr=0.01, key=jax.random.key(seed + 10 * i + 1), **options(state))
        key = jax.random.key(seed + 10 * i + 2)
        noise_var = (NOISE / Y_SCALE) ** 2
        g = predict(model, params, state, jnp.asarray(grid / X_SCALE), key, samples=samples, noise_var=noise_var)
        t = predict(model, params, state, jnp.asarray(x_test / X_SCALE), key, samples=samples, noise_var=noise_var)
        mean, std = np.asarray(g.mean[:, 0]) * Y_SCALE, np.sqrt(np.asarray(g.variance[:, 0])) * Y_SCALE
        t_mean, t_var = np.asarray(t.mean[:, 0]) * Y_SCALE, np.asarray(t.variance[:, 0]) * Y_SCALE**2
        curves[name] = (mean, std)
        inside, outside = np.abs(grid[:, 0]) <= 4, np.abs(grid[:, 0]) >= 5
        rows.append({
            "method": name,
            "rmse": float(np.sqrt(np.mean((t_mean - x_test[:, 0] ** 3) ** 2))),
            "nll": float(np.mean(0.5 * (np.log(2 * np.pi * t_var) + (y_test[:, 0] - t_mean) ** 2 / t_var))),
            "std_in": float(std[inside].mean()),
            "std_out": float(std[outside].mean()),
            "seconds": time.perf_counter() - t0,
        })
        print(f"{name:26s} final loss {float(values[-1]):8.4f}  rmse {rows[-1]['rmse']:6.2f}  "
              f"std in {rows[-1]['std_in']:6.2f} out {rows[-1]['std_out']:6.2f}  ({rows[-1]['seconds']:.1f} s)")
    write(rows, curves, x, y, grid, steps, samples, quick)
    return rows


def write(rows, curves, x, y, grid, steps, samples, quick):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    RESULTS.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Predictive uncertainty on the cubic toy (y = x^3 + N(0, 9), 20 points in [-4, 4])",
        "",
        f"One hidden layer of {HIDDEN} ReLU units, {steps} full-batch Adam steps on the manual backward, "
        f"{samples} Monte Carlo samples at test time; predictive std includes the noise sd 3. "
        "RMSE is against the noiseless x^3 and NLL against fresh noisy targets, both on 200 points in [-4, 4]; "
        "std in = mean predictive std over |x| <= 4 (where the data are), std out = over 5 <= |x| <= 6."
        + (" (quick run)" if quick else ""),
        "",
        "| method | RMSE [-4,4] | test NLL | std in | std out | out / in | seconds |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['method']} | {r['rmse']:.2f} | {r['nll']:.3f} | {r['std_in']:.2f} | "
                     f"{r['std_out']:.2f} | {r['std_out'] / r['std_in']:.2f} | {r['seconds']:.1f} |")
    lines += ["", "![predictive mean and +-2 sigma](uncertainty_1d.png)", ""]
    (RESULTS / "uncertainty_1d.md").write_text("\n".join(lines))

    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.8), sharey=True)
    g = grid[:, 0]
    for ax, (name, (mean, std)) in zip(axes, curves.items()):
        ax.fill_between(g, mean - 2 * std, mean + 2 * std, color="C0", alpha=0.25, label="+-2 sigma")
        ax.plot(g, g**3, "k--", lw=1, label="x^3")
        ax.plot(g, mean, color="C0", lw=1.8, label="predictive mean")
        ax.scatter(x[:, 0], y[:, 0], s=12, color="C3", zorder=3, label="data")
        ax.axvspan(-6, -4, color="0.92", zorder=0)
        ax.axvspan(4, 6, color="0.92", zorder=0)
        ax.set(title=name, xlabel="x", xlim=(-6, 6), ylim=(-250, 250))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("y")
    axes[0].legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "uncertainty_1d.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny smoke run")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    run(args.quick, args.seed)
