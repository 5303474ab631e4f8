"""Check a whole network and blame the layer whose own backward is wrong.

Errors travel backwards: one wrong layer makes every gradient before it wrong too,
so an end-to-end check shows the symptom (``0_dense`` and ``x`` flagged) but not the
cause. ``check_model`` runs the network forward in float64 and checks every layer at
the input it actually receives and at its own slice of the parameters, recursing
through ``Layer.children``:

* children of ``serial`` (recognised by its ``forward``) are run in order, each on the
  previous child's output, with the key ``serial`` gives it (so dropout masks match);
* children of a combinator with ``Layer.feed`` (``residual``, ``parallel``) are checked
  at the input and key it feeds each of them;
* children of any other combinator are checked at the combinator's own input and key,
  which is what ``residual``-style combinators feed them; the combinator
  is also checked as a whole, so a wrong combination rule is caught even if a child
  in fact receives something else (that child is then checked at an input it may not
  see in the network -- still a valid check of its backward, but not the network's
  exact point). A child whose forward cannot take that input is reported as
  "not checked".

Kinks are real here (a max-pool after a ReLU sees tied zeros): finite differences run
over every element of each layer's input, so elements where the layer is not
differentiable are recognised and left out (``funcnn.check.core``, "Kinks").

The rows come in forward order, each combinator after its children, the whole model
last. ``first_wrong`` is the key path (``"1_layernorm"``, ``"2_serial/1_dense"``) of the
first row whose own check fails: the first layer, in forward order, whose backward is
wrong given correct gradients from above -- where the error starts.
"""
from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any, Sequence

import jax
import numpy as np

from funcnn.check import draws
from funcnn.check.core import _check_points, _layer_fns, _layer_identity, _points, _to64
from funcnn.check.report import Report

if TYPE_CHECKING:
    from funcnn.core.layer import Layer


@dataclasses.dataclass(frozen=True)
class ModelRow:
    """One layer of the network: its key path, its own check (``None`` if not checked)."""

    path: str
    layer: str
    report: Report | None
    note: str = ""

    @property
    def ok(self) -> bool:
        """True unless the layer was checked and its check failed (an unchecked layer counts as ok)."""
        return self.report is None or self.report.ok


@dataclasses.dataclass(frozen=True)
class ModelReport:
    """What ``check_model`` found: one ``ModelRow`` per layer, in forward order, each
    combinator after its children, the whole model last.

    ``report[path]`` is the row of a key path (``"2_serial/1_dense"``, ``"(model)"``);
    ``str(report)`` is a table, one line per layer, with the wrong leaves of wrong layers.

    **Arguments:**

    - `name`: the model's name.
    - `rows`: the rows.
    """

    name: str
    rows: tuple[ModelRow, ...]

    @property
    def ok(self) -> bool:
        """True when every layer's own check passed."""
        return all(r.ok for r in self.rows)

    @property
    def first_wrong(self) -> str | None:
        """Key path of the first layer (forward order) whose own backward is wrong."""
        for r in self.rows:
            if not r.ok:
                return r.path
        return None

    def __getitem__(self, path: str) -> ModelRow:
        for r in self.rows:
            if r.path == path:
                return r
        raise KeyError(path)

    def __str__(self) -> str:
        def worst(r, attr):
            vals = [getattr(x, attr) for x in r.report.rows if not math.isnan(getattr(x, attr))] if r.report else []
            return f"{max(vals):.1e}" if vals else "-"

        width = max([len(r.path) for r in self.rows] + [5])
        lw = max([len(r.layer) for r in self.rows] + [5])
        head = f"{self.name}: {'ok' if self.ok else 'MISMATCH'}" + (
            f"; first wrong layer: {self.first_wrong}" if not self.ok else "")
        lines = [head, f"  {'layer':<{width}}  {'kind':<{lw}}  rel(ad)  rel(fd)"]
        for r in self.rows:
            status = r.note if r.report is None else ("" if r.ok else "  <-- wrong")
            lines.append(f"  {r.path:<{width}}  {r.layer:<{lw}}  {worst(r, 'rel_autodiff'):>7}  "
                         f"{worst(r, 'rel_fd'):>7}{status}")
            if r.report is not None and not r.ok:
                for row in r.report.rows:
                    if not row.ok:
                        tags = " ".join(t for t in (row.point, "2nd order" if row.order == 2 else "") if t)
                        lines.append(f"      {row.path}{' @' + tags if tags else ''}: "
                                     f"{row.problem or row.diagnosis or 'wrong'}")
        return "\n".join(lines)

    def assert_ok(self) -> "ModelReport":
        """Raise unless every layer's check passed.

        **Returns:**

        This report, when ok; otherwise raises ``AssertionError`` with the table (``str(self)``).
        """
        if not self.ok:
            raise AssertionError("gradient check failed\n" + str(self))
        return self


def _walk(layer, params, state, x, key, train, path, points, check_kwargs, outputs=None):
    """[(path, layer, report or None, note)] in forward order, combinators after children.

    ``params`` and ``x`` are lists, one entry per point (same shapes); every layer is
    checked at all points in one program (``funcnn.check.core``), which also gives its
    output at every point (appended to ``outputs``): the next layer's input."""
    entries = []
    if layer.children:
        if layer.sequential:
            keys = [None] * len(layer.children) if key is None else draws.split(key, len(layer.children))
            h = x
            for (k, child), ck in zip(layer.children, keys):
                out: list = []
                entries += _walk(child, [p[k] for p in params], state[k], h, ck, train, f"{path}{k}/", points,
                                 check_kwargs, out)
                h = out
        elif layer.feed is not None:  # the combinator says what each child receives
            fed = [layer.feed(xi, key) for xi in x]
            for c, (k, child) in enumerate(layer.children):
                hs = [f[c][0] for f in fed]
                entries += _walk(child, [p[k] for p in params], state[k], hs, fed[0][c][1], train,
                                 f"{path}{k}/", points, check_kwargs)
        else:
            for k, child in layer.children:
                try:
                    jax.eval_shape(lambda p, s, h: child.forward(p, s, h, key=key, train=train)[0],
                                   params[0][k], state[k], x[0])
                except Exception:  # noqa: BLE001 -- any failure means the input is not this child's
                    entries.append((f"{path}{k}", child.name, None, "  not checked (its input is not reproducible)"))
                    continue
                entries += _walk(child, [p[k] for p in params], state[k], x, key, train, f"{path}{k}/", points,
                                 check_kwargs)
    forward, backward = _layer_fns(layer, train)
    kwargs = dict(check_kwargs)
    kwargs["max_fd"] = max([kwargs.get("max_fd", 512)] + [int(np.size(h)) for h in jax.tree_util.tree_leaves(x[0])])  # kinks
    report = _check_points(forward, backward, [(p, xi) for p, xi in zip(params, x)], points, extra=(state, key),
                           key=jax.random.key(1), name=layer.name, argnames=["params", "x"],
                           identity=_layer_identity(layer, train), outputs=outputs, **kwargs)
    entries.append((path.rstrip("/") or "(model)", layer.name, report, ""))
    return entries


def check_model(model: Layer, input_shape: Sequence[int], *, params: Any = None, state: Any = None,
                x: Any = None, key: jax.Array | None = None, batch: int = 3, train: bool = True,
                name: str | None = None, random: bool = True, **kwargs: Any) -> ModelReport:
    """Check every layer of ``model`` at the input it receives, and the model end to end.

    Points as in ``check_layer``: random and initial parameters by default, or the
    given ``params``/``state``. Other keyword arguments (``order=2``, ``fd``, ``max_fd``)
    go to ``check_backward``. Returns a ``ModelReport`` (``.ok``, ``.first_wrong``,
    ``.assert_ok()``, ``str`` one row per layer).
    """
    key = jax.random.key(0) if key is None else key
    k_init, k_x, k_layer = draws.split(key, 3)
    with jax.enable_x64(True):
        if x is None:
            x = draws.normal(k_x, (batch, *input_shape))
        x = _to64(x)
        pts = _points(model, input_shape, params, state, k_init, random)
        entries = _walk(model, [p for _, p, _ in pts], pts[0][2], [x] * len(pts), k_layer, train, "",
                        [name for name, _, _ in pts], kwargs)
    rows = tuple(ModelRow(path, lname, report, note) for path, lname, report, note in entries)
    return ModelReport(name or model.name, rows)
