"""Data-parallel scaling: step time and throughput on 1, 2, 4, 8 devices.

    python benchmarks/scaling.py [--rounds 10] [--runs 3] [--models mlp,cnn,lstm,gpt] [--quick]

One training step (forward, manual or autodiff backward, AdamW update) of the MLP, the
CNN, the LSTM and a small GPT (2 layers x 4 heads, width 64, context 32, next-character
cross-entropy over a 103-character vocabulary, as on pydoc; an example is a window of 32
characters), with the batch sharded over a mesh ``("data",)`` of D devices and
the parameters replicated (``funcnn.training.distributed``): CPU devices are virtual
(``jax_num_cpu_devices``), set before JAX starts; on a GPU host, its GPUs.
``--quick`` (a check that it runs): 2 rounds on 1 and 2 devices, printed, nothing written.

* strong scaling: the global batch B is fixed; efficiency = t_1 / (D t_D);
* weak scaling: b examples per device, global batch D b; efficiency = t_1 / t_D.

Steps are timed interleaved (``harness.time_interleaved``), one model at a time; ``--runs N``
repeats the whole measurement in N separate processes and the table gives the median over
runs with the spread (min-max) of the runs' medians. The
table goes to ``benchmarks/results/scaling.md`` (the docs' results page includes it).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import jax

jax.config.update("jax_num_cpu_devices", 8)  # no effect off CPU

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import funcnn_stepper, machine, time_interleaved, versions, write_section  # noqa: E402

from funcnn import layers as L  # noqa: E402
from funcnn import losses, models  # noqa: E402
from funcnn.training import distributed  # noqa: E402
from funcnn.core.layer import serial  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STRONG_BATCH = 256  # global batch of strong scaling
WEAK_BATCH = 32  # examples per device of weak scaling


VOCAB = 103  # the pydoc corpus's characters
GPT_CONTEXT = 32


def _classes(key, batch, shape):
    """Normal inputs of ``shape`` and labels of 10 classes."""
    k_x, k_y = jax.random.split(key)
    return (np.asarray(jax.random.normal(k_x, (batch, *shape))),
            np.asarray(jax.random.randint(k_y, (batch,), 0, 10), np.int32))


def _characters(key, batch, shape):
    """Windows of character ids and their next-character targets."""
    ids = np.asarray(jax.random.randint(key, (batch, shape[0] + 1), 0, VOCAB), np.int32)
    return ids[:, :-1], ids[:, 1:]


def _models():
    """name -> (model, example shape, batch(key, n, shape) -> (x, y), loss)."""
    ce = losses.softmax_cross_entropy
    return {
        "mlp": (models.mlp((28, 28, 1), 10, hidden=(256, 256)), (28, 28, 1), _classes, ce),
        "cnn": (models.cnn((28, 28, 1), 10, hidden=(128,)), (28, 28, 1), _classes, ce),
        "lstm": (serial(L.LSTM(64, return_sequences=False), L.Dense(10)), (20, 16), _classes, ce),
        "gpt": (models.gpt(VOCAB, context=GPT_CONTEXT, layers=2, heads=4, width=64), (GPT_CONTEXT,), _characters,
                losses.softmax_cross_entropy),
    }


def _stepper(model, shape, data, loss, mode, mesh, batch):
    x, y = data(jax.random.key(1), batch, shape)
    return funcnn_stepper(model, x, y, mode, loss=loss, mesh=mesh)


def measure(names, counts, rounds) -> dict:
    """{"model|scaling|backward|devices": median seconds per step}, one model at a time."""
    out = {}
    for name in names:
        model, shape, data, loss = _models()[name]
        contenders = {}
        for scaling in ("strong", "weak"):
            for mode in ("manual", "autodiff"):
                for d in counts:
                    batch = STRONG_BATCH if scaling == "strong" else WEAK_BATCH * d
                    contenders[f"{name}|{scaling}|{mode}|{d}"] = _stepper(model, shape, data, loss, mode,
                                                                          distributed.data_mesh(d), batch)
        times = {k: float(np.median(v)) for k, v in time_interleaved(contenders, rounds=rounds).items()}
        print(f"{name}: " + ", ".join(f"{k.split('|', 1)[1]} {1e3 * t:.2f} ms" for k, t in times.items()), flush=True)
        out.update(times)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--models", default=",".join(_models()))
    p.add_argument("--quick", action="store_true", help="2 rounds on 1 and 2 devices, printed only")
    p.add_argument("--runs", type=int, default=1, help="separate processes to repeat the measurement in")
    p.add_argument("--json", default=None, help=argparse.SUPPRESS)  # a child run writes its medians here
    args = p.parse_args(argv)
    unknown = sorted(set(args.models.split(",")) - set(_models()))
    if unknown:
        p.error(f"--models: expected names from {','.join(_models())}, got {','.join(unknown)}")
    rounds = 2 if args.quick else args.rounds
    counts = [d for d in ((1, 2) if args.quick else (1, 2, 4, 8)) if d <= len(jax.devices())]
    if args.json:
        Path(args.json).write_text(json.dumps(measure(args.models.split(","), counts, rounds)))
        return
    if args.runs > 1:
        runs = []
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(args.runs):
                out = Path(tmp) / f"run{i}.json"
                subprocess.run([sys.executable, __file__, "--rounds", str(rounds), "--models", args.models,
                                "--json", str(out)] + (["--quick"] if args.quick else []), check=True)
                runs.append(json.loads(out.read_text()))
    else:
        runs = [measure(args.models.split(","), counts, rounds)]
    rows = []
    for key in runs[0]:
        name, scaling, mode, d = key.split("|")
        d = int(d)
        t = np.array([r[key] for r in runs])
        t1 = np.array([r[f"{name}|{scaling}|{mode}|1"] for r in runs])
        batch = STRONG_BATCH if scaling == "strong" else WEAK_BATCH * d
        eff = t1 / (d * t) if scaling == "strong" else t1 / t
        spread = f"{1e3 * t.min():.2f}-{1e3 * t.max():.2f}" if len(runs) > 1 else "-"
        eff_spread = f" ({eff.min():.2f}-{eff.max():.2f})" if len(runs) > 1 else ""
        rows.append(f"| {name} | {scaling} | {mode} | {d} | {batch} | {1e3 * np.median(t):.2f} | {spread} | "
                    f"{batch / np.median(t):,.0f} | {np.median(eff):.2f}{eff_spread} |")
    dev = jax.devices()[0]
    command = f"python benchmarks/scaling.py --rounds {rounds} --runs {len(runs)}" + (
        "" if args.models == ",".join(_models()) else f" --models {args.models}") + (" --quick" if args.quick else "")
    text = "\n".join([
        f"### Data-parallel scaling ({dev.platform}, {len(jax.devices())} devices)",
        "",
        f"Measured on {machine()}; {versions()}. Reproduce: `{command}`; per run the median of "
        f"{rounds} interleaved rounds; ms/step and efficiency: the median over {len(runs)} separate runs "
        f"(processes), in brackets the spread (min-max) over the runs. Strong: global batch {STRONG_BATCH}, efficiency "
        f"t1 / (D tD); weak: {WEAK_BATCH} examples per device, efficiency t1 / tD. GPT: 2 layers x 4 heads, "
        f"width 64, an example is a window of {GPT_CONTEXT} characters.",
        "",
        "| model | scaling | backward | devices | global batch | ms/step | spread ms | examples/s | efficiency |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
        *rows,
    ]) + "\n"
    if args.quick:
        print(text)
        return
    key = f"scaling-{dev.platform}"
    write_section(ROOT / "benchmarks" / "results" / "scaling.md", key, text)
    print(text)


if __name__ == "__main__":
    main()
