"""How long proving a backward takes: funcnn's checker against JAX's own, side by side.

Every measurement runs in a fresh process (compilation included, JAX's import not: the
clock starts after ``import jax, funcnn``), ``--runs`` times (separate processes every
time), so the table gives the median and the spread; the table is rewritten after every
measurement:

* ``check_layer`` of the guide's 4-wide LayerNorm (the ``LayerNorm`` of "Writing and
  checking your own layer") at a batch of 3, against
  ``jax.test_util.check_grads(f, (params, x), order=1, modes=("rev",))`` on the same
  function ``f(params, x) = LayerNorm forward``;
* ``check_layer`` of every built-in layer case of ``funcnn check`` (one process, in catalog
  order: the first case also pays for the checker's few shared programs);
* ``check_model`` of the built-in GPT (the catalog's ``model:gpt``);
* ``funcnn check --quiet`` with every case (wall time of the command, its default ``--jobs``).

Targets: the LayerNorm at or below ``check_grads``; every layer under 3 s; the GPT under
10 s; ``funcnn check`` under 60 s. JAX's persistent compilation cache is off (a cold
start, as a developer's first run). Writes ``benchmarks/results/check_speed.md`` and the raw
times to ``check_speed.json``; ``--only`` measures some rows again and keeps the others.

    python benchmarks/check_speed.py --runs 3
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "check_speed.md"
TARGETS = {"layer_s": 3.0, "gpt_s": 10.0, "cli_s": 60.0}


def readme_layernorm() -> str:
    """The guide's LayerNorm definition (the python block of docs/guides/own-layer.md)."""
    text = (ROOT / "docs" / "guides" / "own-layer.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "def LayerNorm" in b)
    return block.split("fn.check_layer(")[0]


WORKERS = {
    "funcnn_layernorm": """
import time, jax, jax.numpy as jnp, funcnn as fn
{layernorm}
t = time.perf_counter()
assert fn.check_layer(LayerNorm(), (4,)).ok
print(time.perf_counter() - t)
""",
    "check_grads_layernorm": """
import time, jax, jax.numpy as jnp, funcnn as fn
from jax.test_util import check_grads
{layernorm}
t = time.perf_counter()
with jax.enable_x64(True):
    layer = LayerNorm()
    params, state = layer.init(jax.random.key(0), (4,))
    params = jax.tree_util.tree_map(lambda p: p.astype(jnp.float64), params)
    x = jax.random.normal(jax.random.key(1), (3, 4), jnp.float64)
    check_grads(lambda p, xx: layer.forward(p, state, xx)[0], (params, x), order=1, modes=("rev",))
print(time.perf_counter() - t)
""",
    "layers": """
import time, json, funcnn
from funcnn.check import catalog
out = {{}}
for case in catalog.LAYER_CASES:
    t = time.perf_counter()
    assert catalog.run_layer_case(case).ok, case.name
    out[case.name] = time.perf_counter() - t
print(json.dumps(out))
""",
    "gpt": """
import time, funcnn
from funcnn.check import catalog
case = next(c for c in catalog.MODEL_CASES if c.name == "model:gpt")
t = time.perf_counter()
assert catalog.run_model_case(case).ok
print(time.perf_counter() - t)
""",
}


def run_worker(name: str) -> str:
    code = WORKERS[name].format(layernorm=readme_layernorm())
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    if r.returncode:
        raise RuntimeError(f"{name} failed:\n{r.stderr[-2000:]}")
    return r.stdout.strip().splitlines()[-1]


def run_cli() -> float:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "funcnn", "check", "--quiet"], capture_output=True, text=True,
                       env=env, cwd=ROOT)
    wall = time.perf_counter() - t
    if r.returncode:
        raise RuntimeError(f"funcnn check failed:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    return wall


MEASUREMENTS = {  # name -> one measurement in fresh processes; the cheap ones first
    "funcnn_layernorm": lambda: float(run_worker("funcnn_layernorm")),
    "check_grads_layernorm": lambda: float(run_worker("check_grads_layernorm")),
    "gpt": lambda: float(run_worker("gpt")),
    "layers": lambda: json.loads(run_worker("layers")),
    "cli": run_cli,
}


def _fmt(values) -> str:
    med = statistics.median(values)
    return f"{med:.2f}" + (f" ({min(values):.2f}-{max(values):.2f})" if len(values) > 1 else "")


def table(runs: dict, note: str) -> str:
    from funcnn.core.machine import machine, versions

    v = versions(("jax", "jaxlib"))
    lines = ["# Gradient checks: how long a proof takes", "",
             f"Machine: {machine()}; jax {v['jax']}, jaxlib {v['jaxlib']}. "
             f"Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC. "
             "Each measurement in fresh processes, repeated (runs per row in the table); seconds, median "
             "(min-max), compile included, "
             "JAX's import not; persistent compilation cache off.", ""]
    if note:
        lines += [note, ""]
    lines += ["Reproduce: `python benchmarks/check_speed.py --runs 3`", "",
              "| work | seconds | runs | target |", "|---|---:|---:|---|"]

    def row(label, values, target=""):
        if values:
            lines.append(f"| {label} | {_fmt(values)} | {len(values)} | {target} |")

    row("`check_layer` of the guide's 4-wide LayerNorm (docs/guides/own-layer.md), fresh process", runs.get("funcnn_layernorm"),
        "<= check_grads")
    row("`jax.test_util.check_grads(order=1, modes=(\"rev\",))` on the same function",
        runs.get("check_grads_layernorm"))
    row("slowest built-in layer's `check_layer`", [max(r.values()) for r in runs.get("layers", [])],
        f"< {TARGETS['layer_s']:.0f}")
    row("`check_model` of the built-in GPT", runs.get("gpt"), f"< {TARGETS['gpt_s']:.0f}")
    row("`funcnn check --quiet` (every case, default `--jobs 2`, wall time of the command)", runs.get("cli"), f"< {TARGETS['cli_s']:.0f}")
    if runs.get("layers"):
        lines += ["", "Every built-in layer's `check_layer` (one process, catalog order; the first case also "
                  "compiles the checker's shared programs):", "", "| case | seconds |", "|---|---:|"]
        for name in runs["layers"][0]:
            lines.append(f"| `{name}` | {_fmt([r[name] for r in runs['layers']])} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3, help="separate runs (each in fresh processes), default 3")
    p.add_argument("--out", type=Path, default=RESULT, help=f"the markdown table (default {RESULT})")
    p.add_argument("--only", default="", help=f"comma-separated measurements, of {', '.join(MEASUREMENTS)}")
    p.add_argument("--note", default="", help="a line for the table, e.g. what else loaded the machine")
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error(f"--runs: expected a positive integer, got {args.runs}")
    only = args.only.split(",") if args.only else list(MEASUREMENTS)
    unknown = [m for m in only if m not in MEASUREMENTS]
    if unknown:
        p.error(f"--only: unknown measurement(s) {', '.join(unknown)}; known: {', '.join(MEASUREMENTS)}")
    raw = args.out.with_suffix(".json")
    runs: dict = json.loads(raw.read_text()) if args.only and raw.exists() else {}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for name in only:  # the table is rewritten after every measurement
        runs[name] = []
        for i in range(args.runs):
            runs[name].append(MEASUREMENTS[name]())
            print(f"{name} {i + 1}/{args.runs}: " + (json.dumps(runs[name][-1]) if name != "layers" else "done"),
                  flush=True)
            raw.write_text(json.dumps(runs, indent=1) + "\n")
            args.out.write_text(table(runs, args.note))
    print(table(runs, args.note))
    return 0


if __name__ == "__main__":
    sys.exit(main())
