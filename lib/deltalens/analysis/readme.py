"""The README's results section, generated from the analysis' results table (``make readme-results``).

The section between ``<!-- results:start -->`` and ``<!-- results:end -->`` in README.md is replaced by
``reports/analysis/results.md`` (never typed by hand); everything else in the README is left as it is.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from ..core.paths import resolve

START, END = "<!-- results:start -->", "<!-- results:end -->"


def update_readme(readme: str | Path, results: str | Path, note: str = "") -> bool:
    """Replace the marked section of ``readme`` with the text of ``results``; True when the README changed."""
    readme, results = resolve(readme), resolve(results)
    text = readme.read_text()
    if START not in text or END not in text:
        raise ValueError(f"{readme}: no {START} ... {END} section to fill")
    body = results.read_text().strip()
    block = f"{START}\n<!-- generated from {results.name} by `make readme-results`; do not edit by hand -->\n{note}{body}\n{END}"
    new = re.sub(re.escape(START) + r".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    if new != text:
        readme.write_text(new)
    return new != text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deltalens.analysis.readme", description=__doc__.splitlines()[0])
    ap.add_argument("--readme", default="README.md")
    ap.add_argument("--results", default="reports/analysis/results.md")
    args = ap.parse_args(argv)
    changed = update_readme(args.readme, args.results)
    print(f"{args.readme}: results section {'updated' if changed else 'unchanged'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
