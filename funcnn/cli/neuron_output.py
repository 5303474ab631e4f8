"""What ``funcnn neuron`` writes: CSV tables and figures (matplotlib, Agg backend).

Kept apart from ``funcnn.cli.neuron``, which parses and checks the flags and calls the
simulations of ``funcnn.science.neurons``.
"""
from __future__ import annotations

import csv
import os
from typing import Any, Iterable, Sequence

from funcnn.core import extras


def write_csv(path: str | os.PathLike, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Write ``header`` and ``rows`` as a CSV file at ``path``."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def _plt():
    return extras.pyplot("the neuron figures")


def trace_figure(path: str | os.PathLike, t: Any, v: Any, title: str) -> None:
    """The voltage trace ``v`` (mV) against ``t`` (ms), both of shape ``(T,)``, as a PNG."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.plot(t, v, lw=1)
    ax.set(xlabel="t (ms)", ylabel="V (mV)", title=title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def phase_figure(path: str | os.PathLike, v: Any, nullclines: dict, trajectory: dict, equilibria: list,
                 title: str) -> None:
    """The Morris–Lecar phase plane as a PNG: the nullclines over ``v`` (shape ``(K,)``), the
    trajectory (``trajectory["V"]``, ``trajectory["N"]``) and the equilibria ``(y, eigenvalues,
    "stable" | ...)`` (filled when stable)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.plot(v, nullclines["N_dV0"], label="dV/dt = 0")
    ax.plot(v, nullclines["N_dN0"], label="dN/dt = 0")
    ax.plot(trajectory["V"], trajectory["N"], "k", lw=0.8, label="trajectory")
    for y, _, st in equilibria:
        ax.plot(float(y[0]), float(y[1]), "o", mfc="k" if st == "stable" else "w", mec="k")
    ax.set(xlabel="V (mV)", ylabel="N", ylim=(-0.05, 1.0), title=title)
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def fi_figure(path: str | os.PathLike, currents: Any, rest: Any, cycle: Any, title: str) -> None:
    """The f–I curves (Hz) from rest and started on the cycle against ``currents``, all of
    shape ``(N,)``, as a PNG."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(currents, rest, "o-", ms=3, label="from rest")
    ax.plot(currents, cycle, "s--", ms=3, label="started on the cycle")
    ax.set(xlabel="I (µA/cm²)", ylabel="rate (Hz)", title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
