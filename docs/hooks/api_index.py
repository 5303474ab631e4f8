"""The table of ``funcnn``'s public names, generated from ``funcnn.__all__`` at build time.

The page line ``<!-- public-names -->`` becomes one row per name: what it is and a link
(an mkdocstrings cross-reference) to where its docstring is rendered.
"""
from __future__ import annotations

import inspect

MARKER = "<!-- public-names -->"


def canonical(obj) -> str:
    if inspect.ismodule(obj):
        return obj.__name__
    return f"{obj.__module__}.{obj.__qualname__}"


def kind(obj) -> str:
    if inspect.ismodule(obj):
        return "module"
    if inspect.isclass(obj):
        return "class"
    return "function"


def table() -> str:
    import funcnn

    rows = ["| name | kind | defined in |", "|---|---|---|"]
    for name in funcnn.__all__:
        obj = getattr(funcnn, name)
        path = canonical(obj)
        rows.append(f"| [`fn.{name}`][{path}] | {kind(obj)} | `{path}` |")
    return "\n".join(rows) + "\n"


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, table())
