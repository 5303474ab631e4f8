"""What a measurement or a run was made on: the machine and the package versions."""
from __future__ import annotations

import importlib.metadata
import os
import platform

PACKAGES = ("funcnn", "jax", "jaxlib", "optax", "orbax-checkpoint", "numpy", "flax", "equinox", "torch")


def machine() -> str:
    """The first device and the host, e.g. ``"cpu (cpu); host AMD EPYC, 2 cores"``.

    **Returns:**

    One line: `platform (device kind); host CPU model, core count`.
    """
    import jax

    dev = jax.devices()[0]
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{dev.platform} ({dev.device_kind}); host {cpu}, {os.cpu_count()} cores"


def versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """The installed version of Python and of each of `packages` (`None` when not installed).

    **Arguments:**

    - `packages`: distribution names, as pip knows them.

    **Returns:**

    `{"python": "3.11.7", "jax": "0.10.2", ...}`, in the order asked.
    """
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def versions_line(packages: tuple[str, ...] = ("jax", "optax", "flax", "equinox", "torch")) -> str:
    """`versions` as one line of the installed ones: ``"python 3.11.7, jax 0.10.2, ..."``."""
    return ", ".join(f"{k} {v}" for k, v in versions(packages).items() if v is not None)
