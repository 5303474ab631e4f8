"""The command-line reference, generated from ``funcnn.cli.build_parser()`` at build time.

The page line ``<!-- cli-reference -->`` becomes one section per command (and per
subcommand of ``funcnn neuron``): its description, its usage and a table of its options,
read from the argparse parsers themselves, so the page cannot drift from the code.
"""
from __future__ import annotations

import argparse
import html

MARKER = "<!-- cli-reference -->"


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _cell(text: str) -> str:
    return html.escape(" ".join(str(text).split())).replace("|", "&#124;")


def _options_table(parser: argparse.ArgumentParser) -> list[str]:
    rows = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        name = ", ".join(f"`{s}`" for s in action.option_strings) or f"`{action.dest}`"
        if action.option_strings and action.nargs != 0:
            name += f" `{action.metavar or action.dest.upper()}`"
        choices = f" One of: {', '.join(map(str, action.choices))}." if action.choices else ""
        default = action.default
        hidden = default is None or default is False or default == argparse.SUPPRESS or action.nargs == 0
        shown = "" if hidden else f"`{default}`"
        help_text = (action.help or "") % {"default": default, "prog": parser.prog} if action.help else ""
        rows.append(f"| {name} | {_cell(help_text + choices)} | {shown} |")
    if not rows:
        return []
    return ["| argument | meaning | default |", "|---|---|---|", *rows, ""]


def _section(parser: argparse.ArgumentParser, level: int) -> list[str]:
    lines = [f"{'#' * level} `{parser.prog}`", ""]
    if parser.description:
        lines += [_cell(parser.description), ""]
    usage = parser.format_usage().strip()
    usage = usage[len("usage: "):] if usage.startswith("usage: ") else usage
    lines += ["```text", usage, "```", ""]
    lines += _options_table(parser)
    for child in _subparsers(parser).values():
        lines += _section(child, min(level + 1, 4))
    return lines


def reference() -> str:
    from funcnn.cli import build_parser

    root = build_parser()
    lines = ["```text", root.format_usage().strip().removeprefix("usage: "), "```", ""]
    for child in _subparsers(root).values():
        lines += _section(child, 2)
    return "\n".join(lines)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, reference())
