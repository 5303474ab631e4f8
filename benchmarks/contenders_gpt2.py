"""GPT-2 small (12 layers x 12 heads, width 768, vocabulary 50257, context 1024, tied head,
tanh GELU: ``funcnn.models.gpt2()``), batch 4 sequences of 64 tokens, AdamW.

The contenders of ``contenders_gpt.py`` at this shape (without the one-thread PyTorch row),
from the same initial weights and checked equal the same way before timing. Besides ms/step,
the table gives tokens/s and each contender's peak memory (``peak_memory``).

    python benchmarks/contenders_gpt2.py --memory "funcnn manual"   # one contender's peak memory, in MB
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import contenders_gpt as G  # noqa: E402

GPT2 = dict(vocab=50257, context=1024, layers=12, heads=12, width=768, batch=4, time=64, gelu="tanh")
TITLE = "GPT-2 small 12 layers x 12 heads, width 768, vocab 50257, tied head, batch 4 x 64 tokens, AdamW"
REFERENCE = "pytorch"
TOKENS = GPT2["batch"] * GPT2["time"]
MEMORY_HEADER = "peak memory MB (RSS growth, fresh process)"
STEPS = 3
NOTES = (
    "The contenders of the small GPT (its notes), at GPT-2 small's shape with GPT-2's tanh GELU "
    "(funcnn: `funcnn.models.gpt2()`, the same as `gpt(..., tie_embeddings=True, init=\"gpt2\", "
    "gelu=\"tanh\")`). Peak memory: each contender alone in a fresh process that imports every "
    "library, reads the 124M initial weights (0.5 GB) from a file, builds the contender and runs "
    f"{STEPS} steps; the figure is the growth of the process's peak resident set (`VmHWM`) from "
    "after the imports, so it counts the weights read, the contender's own copies, gradients, "
    "optimizer state and activations, and also what compiling took (XLA for the JAX contenders, "
    "inductor for `torch.compile`). funcnn's softmax cross-entropy takes the exponentials of the "
    "50257 logits per token once per step: its value and gradient share `funcnn.losses.shifted_exp`."
)


def contenders(only=None, params=None):
    return G.contenders(GPT2, only=only, single_thread=False, params=params)


def peak_memory(names):
    """{name: peak MB} from one fresh process per contender (``NOTES``)."""
    import jax

    from funcnn import models

    params = G.funcnn_model(GPT2).init(jax.random.key(0), (GPT2["time"],))[0]
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "weights.npz"
        np.savez(weights, **models.gpt_state_dict(params))
        del params
        for name in names:
            run = subprocess.run([sys.executable, __file__, "--memory", name, "--weights", str(weights)],
                                 capture_output=True, text=True)
            out[name] = run.stdout.strip().splitlines()[-1] if run.returncode == 0 else "failed"
            print(f"peak memory {name}: {out[name]}", flush=True)
    return out


def _measure(name, weights):
    """Print the growth in MB of this process's peak RSS while ``name`` is built and run."""
    import equinox  # noqa: F401  every library imported before the baseline
    import flax.nnx  # noqa: F401
    import jax
    import torch  # noqa: F401

    from funcnn import models

    before = peak_rss_mb()
    sd = dict(np.load(weights))
    params = models.gpt_params(G.funcnn_model(GPT2), sd)
    del sd
    contender = contenders(only=[name], params=params)[name]
    del params
    for _ in range(STEPS):
        jax.block_until_ready(contender())
    print(f"{peak_rss_mb() - before:.0f}")


def peak_rss_mb():
    """This process's peak resident set in MB: ``VmHWM`` of ``/proc/self/status`` (Linux). Not
    ``ru_maxrss``, which a child started by ``subprocess`` inherits from the parent's size."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--memory", required=True)
    p.add_argument("--weights", default=None)
    args = p.parse_args()
    if args.weights is None:
        print(peak_memory([args.memory])[args.memory])
    else:
        _measure(args.memory, args.weights)
