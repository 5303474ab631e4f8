"""The checker's report: one row per leaf, a readable table, ``assert_ok``."""
from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class Row:
    """Errors of one gradient leaf: hand-written against autodiff and against finite
    differences (``nan`` where finite differences were not run). ``problem`` names a
    structural fault (missing leaf, wrong shape) that makes the row fail outright.
    ``point`` says where it was checked ("random" or "init" parameters, "given", or ""
    for plain ``check_backward``), ``order`` is 1 (the backward) or 2 (the backward
    differentiated once more), ``diagnosis`` explains a wrong leaf
    (``funcnn.check.diagnose``), and ``kinks`` counts the elements left out because
    the function is not differentiable there (``funcnn.check.core``). ``formulation``
    names the autotuner's candidate the layer ran (``"conv=gemm/8"``) when it has several
    (``funcnn.core.autotune``), else ""."""

    path: str
    abs_autodiff: float
    rel_autodiff: float
    abs_fd: float
    rel_fd: float
    ok: bool
    problem: str = ""
    point: str = ""
    order: int = 1
    diagnosis: str = ""
    kinks: int = 0
    formulation: str = ""


@dataclasses.dataclass(frozen=True)
class Report:
    """What a gradient check found: one ``Row`` per gradient leaf (per point, formulation
    and order), and the tolerances it was held to. ``str(report)`` is a table.

    **Arguments:**

    - `name`: what was checked (the layer's, loss's or function's name).
    - `rows`: the rows.
    - `tol_autodiff`, `tol_fd`: the relative tolerances against autodiff and finite differences.
    """

    name: str
    rows: tuple[Row, ...]
    tol_autodiff: float
    tol_fd: float

    @property
    def ok(self) -> bool:
        """True when every row passed."""
        return all(r.ok for r in self.rows)

    def __str__(self) -> str:
        def fmt(v):
            return "-" if math.isnan(v) else f"{v:.1e}"

        def label(r):
            tags = [t for t in (r.point, r.formulation, "2nd order" if r.order == 2 else "") if t]
            return r.path + (f" @{' '.join(tags)}" if tags else "")

        width = max([len(label(r)) for r in self.rows] + [4])
        head = (f"{self.name}: {'ok' if self.ok else 'MISMATCH'} "
                f"(rel tol: autodiff {self.tol_autodiff:.0e}, finite differences {self.tol_fd:.0e})")
        lines = [head, f"  {'leaf':<{width}}  abs(ad)  rel(ad)  abs(fd)  rel(fd)"]
        for r in self.rows:
            mark = ("" if r.ok else "  <-- " + (r.problem or "wrong")) + (
                f"  ({r.kinks} at kinks, skipped)" if r.kinks else "")
            lines.append(
                f"  {label(r):<{width}}  {fmt(r.abs_autodiff):>7}  {fmt(r.rel_autodiff):>7}"
                f"  {fmt(r.abs_fd):>7}  {fmt(r.rel_fd):>7}{mark}"
            )
            if r.diagnosis and not r.ok:
                lines.append(f"  {'':<{width}}    {r.diagnosis}")
        return "\n".join(lines)

    def assert_ok(self) -> "Report":
        """Raise unless every row passed.

        **Returns:**

        This report, when ok; otherwise raises ``AssertionError`` with the table (``str(self)``).
        """
        if not self.ok:
            raise AssertionError("gradient check failed\n" + str(self))
        return self

    def merged(self, other: "Report") -> "Report":
        """The rows of both reports (e.g. random and initial parameters) in one."""
        return dataclasses.replace(self, rows=self.rows + other.rows)
