"""Data-parallel scaling: step time and throughput on 1, 2, 4, 8 devices.

    python benchmarks/scaling.py [--rounds 10] [--models mlp,cnn,lstm] [--readme]

One training step (forward, manual or autodiff backward, Adam update) of the MLP, the
CNN and the LSTM, with the batch sharded over a mesh ``("data",)`` of D devices and
the parameters replicated (``funcnn.parallel``): CPU devices are virtual
(``jax_num_cpu_devices``), set before JAX starts; on a GPU host, its GPUs.

* strong scaling: the global batch B is fixed; efficiency = t_1 / (D t_D);
* weak scaling: b examples per device, global batch D b; efficiency = t_1 / t_D.

Steps are timed interleaved (``harness.time_interleaved``), one model at a time. The
table goes to ``benchmarks/results/scaling.md`` (and the README with ``--readme``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax

jax.config.update("jax_num_cpu_devices", 8)  # no effect off CPU

import numpy as np  # noqa: E402
import optax  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import machine, time_interleaved, versions, write_section  # noqa: E402

from funcnn import layers as L  # noqa: E402
from funcnn import losses, models, parallel  # noqa: E402
from funcnn.gradients import value_and_grad  # noqa: E402
from funcnn.layer import serial  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STRONG_BATCH = 256  # global batch of strong scaling
WEAK_BATCH = 32  # examples per device of weak scaling


def _models():
    return {
        "mlp": (models.mlp((28, 28, 1), 10, hidden=(256, 256)), (28, 28, 1)),
        "cnn": (models.cnn((28, 28, 1), 10, hidden=(128,)), (28, 28, 1)),
        "lstm": (serial(L.LSTM(64, return_sequences=False), L.Dense(10)), (20, 16)),
    }


def _stepper(model, shape, mode, mesh, batch):
    loss = losses.softmax_cross_entropy
    vg = value_and_grad(model, loss, mode=mode)
    opt = optax.adam(1e-3)
    params, state = model.init(jax.random.key(0), shape)
    k_x, k_y = jax.random.split(jax.random.key(1))
    x = np.asarray(jax.random.normal(k_x, (batch, *shape)))
    y = np.asarray(jax.random.randint(k_y, (batch,), 0, 10), np.int32)

    @jax.jit
    def step(carry, x, y):
        params, state, opt_state = carry
        _, grads, state = vg(params, state, x, y)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), state, opt_state

    with jax.set_mesh(mesh):
        box = [parallel.replicate((params, state, opt.init(params)), mesh)]
        xs, ys = parallel.shard_batch((x, y), mesh)

    def run():
        with jax.set_mesh(mesh):
            box[0] = step(box[0], xs, ys)
        return box[0]

    return run


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--models", default="mlp,cnn,lstm")
    p.add_argument("--readme", action="store_true", help="also replace the table in README.md")
    args = p.parse_args(argv)
    counts = [d for d in (1, 2, 4, 8) if d <= len(jax.devices())]
    rows = []
    for name in args.models.split(","):
        model, shape = _models()[name]
        contenders = {}
        for scaling in ("strong", "weak"):
            for mode in ("manual", "autodiff"):
                for d in counts:
                    batch = STRONG_BATCH if scaling == "strong" else WEAK_BATCH * d
                    contenders[(scaling, mode, d)] = _stepper(model, shape, mode, parallel.data_mesh(d), batch)
        times = {k: np.median(v) for k, v in time_interleaved(contenders, rounds=args.rounds).items()}
        for (scaling, mode, d), t in times.items():
            t1 = times[(scaling, mode, 1)]
            batch = STRONG_BATCH if scaling == "strong" else WEAK_BATCH * d
            eff = t1 / (d * t) if scaling == "strong" else t1 / t
            rows.append(f"| {name} | {scaling} | {mode} | {d} | {batch} | {1e3 * t:.2f} | {batch / t:,.0f} | "
                        f"{eff:.2f} |")
        print("\n".join(rows[-len(times):]), flush=True)
    dev = jax.devices()[0]
    command = f"python benchmarks/scaling.py --rounds {args.rounds}"
    text = "\n".join([
        f"### Data-parallel scaling ({dev.platform}, {len(jax.devices())} devices)",
        "",
        f"Measured on {machine()}; {versions()}. Reproduce: `{command}`; median of "
        f"{args.rounds} interleaved rounds. Strong: global batch {STRONG_BATCH}, efficiency "
        f"t1 / (D tD); weak: {WEAK_BATCH} examples per device, efficiency t1 / tD.",
        "",
        "| model | scaling | backward | devices | global batch | ms/step | examples/s | efficiency |",
        "|---|---|---|---:|---:|---:|---:|---:|",
        *rows,
    ]) + "\n"
    key = f"scaling-{dev.platform}"
    write_section(ROOT / "benchmarks" / "results" / "scaling.md", key, text)
    if args.readme:
        write_section(ROOT / "README.md", key, text)
    print(text)


if __name__ == "__main__":
    main()
