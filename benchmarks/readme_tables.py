"""Copy benchmark tables from ``benchmarks/results`` into README.md, so the README's figures
are the scripts' output, never typed by hand.

    python benchmarks/readme_tables.py

Each README block ``<!-- results:PATH[#KEY] -->`` ... ``<!-- /results -->`` is replaced by
the file ``benchmarks/results/PATH`` (with ``#KEY``: only its section tagged ``KEY`` by
``harness.write_section``), without its first heading line.
"""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"(<!-- results:(?P<src>[^ #]+)(?:#(?P<key>[^ ]+))? -->\n).*?(<!-- /results -->)", re.S)


def section(src: str, key: str | None) -> str:
    text = (ROOT / "benchmarks" / "results" / src).read_text()
    if key:
        match = re.search(re.escape(f"<!-- begin:{key} -->") + r"\n(.*?)" + re.escape(f"<!-- end:{key} -->"), text, re.S)
        if not match:
            raise SystemExit(f"readme_tables: no section {key!r} in benchmarks/results/{src}")
        text = match.group(1)
    lines = text.strip("\n").splitlines()
    if lines and lines[0].startswith("#"):
        lines = lines[1:]
    return "\n".join(lines).strip("\n") + "\n"


def main():
    readme = ROOT / "README.md"
    old = readme.read_text()
    new = BLOCK.sub(lambda m: m.group(1) + "\n" + section(m.group("src"), m.group("key")) + "\n" + m.group(4), old)
    readme.write_text(new)
    print(f"README.md: {len(BLOCK.findall(old))} result blocks refreshed")


if __name__ == "__main__":
    main()
