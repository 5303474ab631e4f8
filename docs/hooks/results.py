"""Results pages show the files the experiment and benchmark scripts write, never a copy.

A page line ``<!-- include: experiments/results/NAME.md -->`` (a path from the repository
root; ``#KEY`` after it selects the section a script tagged ``<!-- begin:KEY -->`` ...
``<!-- end:KEY -->``) is replaced at build time by that file, without its title line,
its relative links (figures) pointing at the same files, which this hook adds to the
site under ``_results/``. Below it goes the file's provenance: its path and the date git
last saw it change.
"""
from __future__ import annotations

import posixpath
import re
import subprocess
from pathlib import Path

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]
RESULT_DIRS = ("experiments/results", "benchmarks/results")
ASSET_SUFFIXES = {".png", ".svg", ".json", ".csv"}
PREFIX = "_results"
INCLUDE = re.compile(r"^<!-- include: (?P<path>[^ #]+)(?:#(?P<key>[^ ]+))? -->$", re.M)
LINK = re.compile(r"(!?\[[^\]]*\]\()(?P<target>[^)\s]+)(\))")


def result_files(suffixes: set[str] | None = None) -> list[str]:
    """Repository-relative paths of every file the scripts wrote (``quick/`` smoke runs excluded)."""
    out = []
    for folder in RESULT_DIRS:
        for path in sorted((ROOT / folder).rglob("*")):
            rel = path.relative_to(ROOT).as_posix()
            if path.is_file() and "/quick/" not in rel and (suffixes is None or path.suffix in suffixes):
                out.append(rel)
    return out


def on_files(files: Files, config) -> Files:
    for rel in result_files(ASSET_SUFFIXES):
        files.append(File.generated(config, f"{PREFIX}/{rel}", abs_src_path=str(ROOT / rel)))
    return files


def section(text: str, key: str | None, path: str) -> str:
    if key is None:
        return text
    match = re.search(re.escape(f"<!-- begin:{key} -->") + r"\n(.*?)" + re.escape(f"<!-- end:{key} -->"), text, re.S)
    if match is None:
        raise ValueError(f"results hook: no section {key!r} in {path}")
    return match.group(1)


def committed(path: str) -> str | None:
    try:
        out = subprocess.run(["git", "log", "-1", "--format=%cs", "--", path], cwd=ROOT, capture_output=True,
                             text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def include(path: str, key: str | None, page_uri: str) -> str:
    source = ROOT / path
    if not source.is_file():
        raise FileNotFoundError(f"results hook: {page_uri} includes {path}, which does not exist")
    text = section(source.read_text(encoding="utf-8"), key, path)
    text = re.sub(r"\A\s*# [^\n]*\n", "", text)  # the page has its own title
    page_dir = posixpath.dirname(page_uri)

    def relink(match: re.Match) -> str:
        target = match.group("target")
        if re.match(r"^[a-z]+:|^#|^/", target):
            return match.group(0)
        repo_path = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
        if not (ROOT / repo_path).is_file():
            raise FileNotFoundError(f"results hook: {path} links {target}, which does not exist")
        return match.group(1) + posixpath.relpath(f"{PREFIX}/{repo_path}", page_dir) + match.group(3)

    text = LINK.sub(relink, text)
    date = committed(path)
    where = f"`{path}`" + (f" (section `{key}`)" if key else "")
    stamp = f"last changed {date}" if date else "not yet committed"
    return f"{text.rstrip()}\n\n*Source: {where}, written by its script; {stamp}.*\n"


def on_page_markdown(markdown: str, page, config, files) -> str:
    return INCLUDE.sub(lambda m: include(m.group("path"), m.group("key"), page.file.src_uri), markdown)
