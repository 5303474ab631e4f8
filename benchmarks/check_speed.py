"""How long proving a backward takes: funcnn's checker against JAX's own, side by side.

Every measurement runs in a fresh process (compilation included, JAX's import not: the
clock starts after ``import jax, funcnn``), and the whole set is repeated ``--runs`` times
(separate processes every time), so the table gives the median and the spread:

* ``check_layer`` of the README's 4-wide LayerNorm (the ``LayerNorm`` of "Writing and
  checking your own layer") at a batch of 3, against
  ``jax.test_util.check_grads(f, (params, x), order=1, modes=("rev",))`` on the same
  function ``f(params, x) = LayerNorm forward``;
* ``check_layer`` of every built-in layer case of ``funcnn check`` (one process, in catalog
  order: the first case also pays for the checker's few shared programs);
* ``check_model`` of the built-in GPT (the catalog's ``model:gpt``);
* ``funcnn check`` with every case (wall time of the command).

Targets: the LayerNorm at or below ``check_grads``; every layer under 3 s; the GPT under
10 s; ``funcnn check`` under 60 s. JAX's persistent compilation cache is off (a cold
start, as a developer's first run). Writes ``benchmarks/results/check_speed.md``.

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
    """The README's LayerNorm definition (the python block of "Writing and checking your own layer")."""
    text = (ROOT / "README.md").read_text()
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


def one_run() -> dict:
    return {"funcnn_layernorm": float(run_worker("funcnn_layernorm")),
            "check_grads_layernorm": float(run_worker("check_grads_layernorm")),
            "layers": json.loads(run_worker("layers")),
            "gpt": float(run_worker("gpt")),
            "cli": run_cli()}


def _fmt(values) -> str:
    med = statistics.median(values)
    return f"{med:.2f}" + (f" ({min(values):.2f}-{max(values):.2f})" if len(values) > 1 else "")


def table(runs: list, note: str) -> str:
    from funcnn.core.machine import machine, versions

    v = versions(("jax", "jaxlib"))
    lines = ["# Gradient checks: how long a proof takes", "",
             f"Machine: {machine()}; jax {v['jax']}, jaxlib {v['jaxlib']}. "
             f"Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC. "
             f"{len(runs)} runs, each in fresh processes; seconds, median (min-max), compile included, "
             "JAX's import not; persistent compilation cache off.", ""]
    if note:
        lines += [note, ""]
    lines += ["Reproduce: `python benchmarks/check_speed.py --runs 3`", "",
              "| work | seconds | target |", "|---|---:|---|"]
    ln = [r["funcnn_layernorm"] for r in runs]
    cg = [r["check_grads_layernorm"] for r in runs]
    lines.append(f"| `check_layer` of the README's 4-wide LayerNorm, fresh process | {_fmt(ln)} | "
                 f"<= check_grads |")
    lines.append(f"| `jax.test_util.check_grads(order=1, modes=(\"rev\",))` on the same function | {_fmt(cg)} | |")
    worst = [max(r["layers"].values()) for r in runs]
    lines.append(f"| slowest built-in layer's `check_layer` | {_fmt(worst)} | < {TARGETS['layer_s']:.0f} |")
    lines.append(f"| `check_model` of the built-in GPT | {_fmt([r['gpt'] for r in runs])} | "
                 f"< {TARGETS['gpt_s']:.0f} |")
    lines.append(f"| `funcnn check` (every case, wall time of the command) | {_fmt([r['cli'] for r in runs])} | "
                 f"< {TARGETS['cli_s']:.0f} |")
    lines += ["", "Every built-in layer's `check_layer` (one process, catalog order; the first case also "
              "compiles the checker's shared programs):", "", "| case | seconds |", "|---|---:|"]
    for name in runs[0]["layers"]:
        lines.append(f"| `{name}` | {_fmt([r['layers'][name] for r in runs])} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3, help="separate runs (each in fresh processes), default 3")
    p.add_argument("--out", type=Path, default=RESULT, help=f"the markdown table (default {RESULT})")
    p.add_argument("--note", default="", help="a line for the table, e.g. what else loaded the machine")
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error(f"--runs: expected a positive integer, got {args.runs}")
    runs = []
    for i in range(args.runs):
        runs.append(one_run())
        print(f"run {i + 1}/{args.runs}: " + json.dumps({k: v for k, v in runs[-1].items() if k != "layers"}),
              flush=True)
    text = table(runs, args.note)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
