"""Optional dependencies: the main job (an MLP on digits) needs few packages; the rest
come with extras (`pip install "funcnn[plots]"`, ...), and a missing one is one line."""
from __future__ import annotations

import importlib
from types import ModuleType

EXTRAS = {
    "matplotlib": "plots",
    "mlxtend": "datasets",
    "mnist1d": "datasets",
    "diffrax": "neurons",
}


class MissingExtra(ImportError):
    """An optional dependency is not installed; the message names the extra that brings it."""


def require(module: str, what: str) -> ModuleType:
    """Import `module`, or raise `MissingExtra` naming the extra that installs it.

    **Arguments:**

    - `module`: the module to import, e.g. `"matplotlib.pyplot"`.
    - `what`: what needs it, for the message, e.g. `"the training curves (curves.png)"`.

    **Returns:**

    The imported module.
    """
    top = module.split(".")[0]
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name is None or e.name.split(".")[0] != top:  # installed, but broken: not a missing extra
            raise
        extra = EXTRAS.get(top, top)
        raise MissingExtra(f"{what} needs {top}, which is not installed: pip install \"funcnn[{extra}]\"") from None


def pyplot(what: str) -> ModuleType:
    """`matplotlib.pyplot` on the Agg backend (no display needed), or `MissingExtra`
    naming the `plots` extra.

    **Arguments:**

    - `what`: what needs it, for the message, e.g. `"curves.png"`.

    **Returns:**

    The `matplotlib.pyplot` module.
    """
    require("matplotlib", what).use("Agg")
    return require("matplotlib.pyplot", what)
