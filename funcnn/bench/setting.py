"""What `funcnn bench` measures: the `QUICK` and `FULL` settings."""
from __future__ import annotations

from typing import NamedTuple


class Setting(NamedTuple):
    """How much `funcnn bench` measures: `QUICK` or `FULL`."""

    name: str
    gemm_sizes: tuple  # n for the (n, n) @ (n, n) peak search
    stream_elems: int  # elements of the bandwidth kernel's vectors
    models: tuple  # (model, batch, size) with size the image side / sequence length
    rounds: int
    budget_s: float  # per group of interleaved cases


QUICK = Setting("quick", (256, 1024), 1 << 22, (("mlp", 128, 28), ("cnn", 8, 28), ("lstm", 64, 10)), 5, 1.5)
FULL = Setting("full", (512, 1024, 2048), 1 << 24, (("mlp", 128, 28), ("cnn", 64, 28), ("lstm", 64, 40)), 15, 8.0)
