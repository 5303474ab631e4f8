"""GPT-2 small by hand, checked against PyTorch the way llm.c's test_gpt2 checks its backward.

The same weights (GPT-2 initialisation, seed 0) in funcnn's `models.gpt2()` (12 layers, 12
heads, width 768, context 1024, vocab 50257, tied head, tanh GELU: funcnn's GELU is
available in both forms and GPT-2 uses the tanh one) and in an independent PyTorch model
written nanoGPT's way (fused qkv `nn.Linear`, `F.scaled_dot_product_attention(is_causal=True)`,
tied `lm_head`, `nn.GELU(approximate="tanh")`: the benchmarks' `contenders_gpt.torch_gpt`), moved
across by `models.gpt_state_dict`. On one
fixed batch (B = 4, T = 64, ids drawn with seed 0), on the CPU, in float32 and in float64:
the logits, the loss and every gradient tensor (max |difference| / max |reference| per
tensor), funcnn's hand-written backward against PyTorch and against `jax.grad` of the same
forward; then 10 AdamW steps in both (optax.adamw and torch.optim.AdamW, the same
hyperparameters and the same decay mask, nanoGPT's: tensors of rank >= 2 decay) with every
step's loss compared. Targets: float32 loss within 1e-4 relative at every step, every
gradient tensor within 1e-3; float64 (step 0 and the 10 steps) within 1e-10.

    python experiments/gpt2_small.py            # GPT-2 small (several minutes, ~10 GB)
    python experiments/gpt2_small.py --small    # 2 layers, width 64, vocab 512: seconds
"""
from __future__ import annotations

import argparse
import datetime
import gc
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
from contenders_gpt import torch_gpt  # noqa: E402  (nanoGPT in PyTorch, shared with the benchmarks)

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
FULL = dict(vocab=50257, context=1024, layers=12, heads=12, width=768)
SMALL = dict(vocab=512, context=64, layers=2, heads=4, width=64)
BATCH, TIME, STEPS = 4, 64, 10
ADAMW = dict(lr=1e-4, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.1)
TARGETS = {"float32": {"loss": 1e-4, "grad": 1e-3}, "float64": {"loss": 1e-10, "grad": 1e-10}}


def batch(vocab: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The fixed batch: ids (B, T) and their next ids (B, T)."""
    ids = np.random.default_rng(seed).integers(0, vocab, (BATCH, TIME + 1)).astype(np.int32)
    return ids[:, :-1], ids[:, 1:]


def rel(a: np.ndarray, ref: np.ndarray) -> float:
    """max |a - ref| / max |ref|."""
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    return float(np.max(np.abs(a - ref)) / max(np.max(np.abs(ref)), np.finfo(float).tiny))


def run_funcnn(sizes: dict, state_dict: dict, dtype, x: np.ndarray, y: np.ndarray) -> dict:
    """funcnn's logits, loss and gradients (manual and autodiff) at the weights, then AdamW steps."""
    import optax

    import funcnn as fn
    from funcnn import models

    model = models.gpt2(sizes["vocab"], **{k: sizes[k] for k in ("context", "layers", "heads", "width")})
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), models.gpt_params(model, state_dict))
    state = _empty_state(model)
    manual = jax.jit(fn.value_and_grad(model, fn.losses.softmax_cross_entropy, mode="manual"))
    autodiff = jax.jit(fn.value_and_grad(model, fn.losses.softmax_cross_entropy, mode="autodiff"))
    out = {"logits": np.asarray(jax.jit(lambda p, i: model.apply(p, state, i)[0])(params, x))}
    loss, grads, _ = manual(params, state, x, y)
    out["loss"], out["grads"] = float(loss), models.gpt_state_dict(grads)
    _, grads_ad, _ = autodiff(params, state, x, y)
    out["grads_autodiff"] = models.gpt_state_dict(grads_ad)
    del grads_ad
    opt = optax.adamw(ADAMW["lr"], b1=ADAMW["b1"], b2=ADAMW["b2"], eps=ADAMW["eps"],
                      weight_decay=ADAMW["weight_decay"], mask=models.gpt_decay_mask)
    update = jax.jit(lambda p, s, g: _apply(opt, p, s, g))
    opt_state, losses = opt.init(params), []
    for _ in range(STEPS):
        loss, grads, _ = manual(params, state, x, y)
        losses.append(float(loss))
        params, opt_state = update(params, opt_state, grads)
    out["losses"] = losses
    return out


def _empty_state(model) -> dict:
    return {k: _empty_state(c) for k, c in model.children} if model.children else {}


def _apply(opt, params, opt_state, grads):
    import optax

    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


def run_torch(sizes: dict, state_dict: dict, dtype, x: np.ndarray, y: np.ndarray) -> dict:
    """PyTorch's logits, loss and gradients at the same weights, then AdamW steps (same mask)."""
    import torch

    torch.manual_seed(0)
    gpt = torch_gpt(**sizes, gelu="tanh").to(getattr(torch, np.dtype(dtype).name))
    gpt.load_state_dict({k: torch.from_numpy(np.array(v, dtype)) for k, v in state_dict.items()})
    xt, yt = torch.from_numpy(x.astype(np.int64)), torch.from_numpy(y.astype(np.int64))

    def model(ids, targets):
        logits = gpt(ids)
        return logits, torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))

    logits, loss = model(xt, yt)
    loss.backward()
    out = {"logits": logits.detach().numpy(), "loss": loss.item(),
           "grads": {n: p.grad.numpy().copy() for n, p in gpt.named_parameters()}}
    decay = [p for p in gpt.parameters() if p.dim() >= 2]
    no_decay = [p for p in gpt.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": ADAMW["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}], lr=ADAMW["lr"],
                            betas=(ADAMW["b1"], ADAMW["b2"]), eps=ADAMW["eps"], foreach=False)
    losses = []
    for _ in range(STEPS):
        opt.zero_grad(set_to_none=True)
        _, loss = model(xt, yt)
        loss.backward()
        losses.append(loss.item())
        opt.step()
    out["losses"] = losses
    return out


def compare(ours: dict, ref: dict) -> dict:
    """The relative errors: logits, loss, every gradient tensor (manual and autodiff vs ref, manual vs
    autodiff), every step's loss."""
    names = [n for n in ref["grads"]]
    return {"logits": rel(ours["logits"], ref["logits"]), "loss": abs(ours["loss"] - ref["loss"]) / abs(ref["loss"]),
            "grads": {n: (rel(ours["grads"][n], ref["grads"][n]), rel(ours["grads_autodiff"][n], ref["grads"][n]),
                          rel(ours["grads"][n], ours["grads_autodiff"][n]), ours["grads"][n].shape) for n in names},
            "steps": [(a, b, abs(a - b) / abs(b)) for a, b in zip(ours["losses"], ref["losses"])]}


def measure(sizes: dict, dtype, x, y, state_dict) -> dict:
    """Both frameworks at one dtype, one after the other (each freed before the next)."""
    t = time.perf_counter()
    with jax.enable_x64(dtype == np.float64):
        ours = run_funcnn(sizes, state_dict, dtype, x, y)
        jax.clear_caches()
    gc.collect()
    print(f"  funcnn {np.dtype(dtype).name}: {time.perf_counter() - t:.0f} s", flush=True)
    t = time.perf_counter()
    ref = run_torch(sizes, state_dict, dtype, x, y)
    print(f"  torch {np.dtype(dtype).name}: {time.perf_counter() - t:.0f} s", flush=True)
    result = compare(ours, ref)
    result["losses"] = (ours["losses"], ref["losses"])
    return result


def verdicts(results: dict) -> list[tuple[str, float, float, bool]]:
    """(what, worst error, target, pass) per target."""
    rows = []
    for name, r in results.items():
        t = TARGETS[name]
        grads = max(max(g[0], g[1]) for g in r["grads"].values())
        steps = max(s[2] for s in r["steps"])
        rows += [(f"{name}: logits", r["logits"], t["grad"], r["logits"] <= t["grad"]),
                 (f"{name}: loss at step 0", r["loss"], t["loss"], r["loss"] <= t["loss"]),
                 (f"{name}: every gradient tensor (manual and autodiff)", grads, t["grad"], grads <= t["grad"]),
                 (f"{name}: loss at every one of {STEPS} AdamW steps", steps, t["loss"], steps <= t["loss"])]
    return rows


def report(sizes: dict, results: dict, seconds: float, small: bool) -> list[str]:
    from funcnn.core.machine import machine, versions_line

    cmd = "python experiments/gpt2_small.py" + (" --small" if small else "")
    lines = [f"# GPT-2 {'(small test size)' if small else 'small'}: funcnn's hand-written backward against PyTorch",
             "", f"Machine: {machine()}; {versions_line()}.", "",
             f"Date: {datetime.date.today().isoformat()}; {seconds:.0f} s. Reproduce: `{cmd}`.", "",
             f"Model: `funcnn.models.gpt2({sizes['vocab']}, context={sizes['context']}, layers={sizes['layers']}, "
             f"heads={sizes['heads']}, width={sizes['width']})` (tied head, GPT-2 init, tanh GELU) and an "
             f"independent nanoGPT-style PyTorch model, the same weights; batch B={BATCH}, T={TIME} (seed 0), CPU. "
             f"AdamW lr={ADAMW['lr']}, betas=({ADAMW['b1']}, {ADAMW['b2']}), eps={ADAMW['eps']}, "
             f"weight_decay={ADAMW['weight_decay']} on tensors of rank >= 2 (optax.adamw vs torch.optim.AdamW).",
             "", "Errors are max |funcnn - PyTorch| / max |PyTorch| per tensor (losses: |difference| / |PyTorch|).",
             "", "| target | worst error | tolerance | result |", "|---|---|---|---|"]
    lines += [f"| {w} | {e:.2e} | {t:.0e} | {'PASS' if ok else 'FAIL'} |" for w, e, t, ok in verdicts(results)]
    lines += ["", "## Loss at every AdamW step", "", "| step | " + " | ".join(
        f"funcnn {d} | PyTorch {d} | rel. diff {d}" for d in results) + " |",
        "|---|" + "---|---|---|" * len(results)]
    for i in range(STEPS):
        lines.append(f"| {i} | " + " | ".join(f"{r['steps'][i][0]:.10f} | {r['steps'][i][1]:.10f} | "
                                              f"{r['steps'][i][2]:.1e}" for r in results.values()) + " |")
    lines += ["", "## Every gradient tensor at step 0", "",
              "| tensor | shape | " + " | ".join(f"manual vs PyTorch {d} | autodiff vs PyTorch {d} | manual vs "
                                                  f"autodiff {d}" for d in results) + " |",
              "|---|---|" + "---|---|---|" * len(results)]
    first = next(iter(results.values()))
    for name, g in first["grads"].items():
        cells = " | ".join(f"{r['grads'][name][0]:.1e} | {r['grads'][name][1]:.1e} | {r['grads'][name][2]:.1e}"
                           for r in results.values())
        lines.append(f"| `{name}` | {tuple(g[3])} | {cells} |")
    lines.append("\nLogits: " + "; ".join(f"{d} {r['logits']:.1e}" for d, r in results.items()) + ".")
    return lines


def plot(results: dict, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ours, ref = results["float32"]["losses"]
    ax.plot(range(STEPS), ref, "o-", label="PyTorch (float32)", markersize=8, alpha=0.6)
    ax.plot(range(STEPS), ours, "x--", label="funcnn, hand-written backward (float32)", markersize=8)
    ax.set(xlabel="AdamW step", ylabel="loss (nats/token)", title="GPT-2 small: the same 10 steps")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", action="store_true", help="2 layers, width 64, vocab 512, context 64: seconds")
    p.add_argument("--out", type=pathlib.Path, default=None, help="output folder (default experiments/results)")
    args = p.parse_args(argv)
    from funcnn import models

    sizes = SMALL if args.small else FULL
    out = args.out or (RESULTS / "quick" if args.small else RESULTS)
    t0 = time.perf_counter()
    model = models.gpt2(sizes["vocab"], **{k: sizes[k] for k in ("context", "layers", "heads", "width")})
    state_dict = models.gpt_state_dict(model.init(jax.random.key(0), (sizes["context"],))[0])
    x, y = batch(sizes["vocab"])
    results = {}
    for dtype in (np.float32, np.float64):
        results[np.dtype(dtype).name] = measure(sizes, dtype, x, y, state_dict)
    lines = report(sizes, results, time.perf_counter() - t0, args.small)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpt2_small.md").write_text("\n".join(lines) + "\n")
    plot(results, out / "gpt2_small.png")
    print("\n".join(lines[:20]))
    return 0 if all(ok for *_, ok in verdicts(results)) else 1


if __name__ == "__main__":
    sys.exit(main())
