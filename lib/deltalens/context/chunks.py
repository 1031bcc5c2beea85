"""Context chunks: cutting definitions and file windows out of a module to a character budget, and picking one
that defines none of the names a target line uses (:func:`pick_chunk`, the non-relevant categories' rule).

Chunk dicts: ``project``, ``path``, ``name`` ('' for a file window), ``start_line``, ``end_line`` (0-based, end
exclusive) and ``text`` (exactly ``"".join(lines[start_line:end_line])``); the sample assembly
(:mod:`.samples`) adds ``category`` and ``defines``.
"""

from __future__ import annotations

import random
import re

from .ast_index import Definition, ModuleInfo, ProjectIndex
from .build_params import BuildParams
from .sources import Project


def _defines_pattern(names) -> re.Pattern | None:
    names = sorted(set(names))
    if not names:
        return None
    alt = "|".join(re.escape(n) for n in names)
    return re.compile(rf"^(?:(?:async\s+)?def|class)\s+(?:{alt})\b|^(?:{alt})\s*(?::[^=\n]*)?=(?!=)", re.M)


def defines_any(text: str, names) -> bool:
    """Whether ``text`` holds a top-level (column 0) definition of any of ``names``."""
    pat = _defines_pattern(names)
    return bool(pat and pat.search(text))


def cut_lines(lines: list[str], start: int, end: int, budget: int) -> int:
    """The largest end' <= end such that lines[start:end'] fits the budget (at least one line)."""
    total, e = 0, start
    while e < end and (e == start or total + len(lines[e]) <= budget):
        total += len(lines[e])
        e += 1
    return e


def line_chunk(project: Project, info: ModuleInfo, start: int, end: int, name: str, budget: int,
               head: int | None = None) -> dict:
    """Lines [start, end) cut to the budget; when decorators alone exceed it, start at ``head`` (the def line)."""
    full_end = end
    end = cut_lines(info.lines, start, full_end, budget)
    if head is not None and end <= head:
        start = head
        end = cut_lines(info.lines, start, full_end, budget)
    text = "".join(info.lines[start:end])
    return {"project": project.name, "path": info.file.path, "name": name, "start_line": start, "end_line": end,
            "text": text}


def file_window(project: Project, info: ModuleInfo, budget: int, anchor: int | None = None) -> dict:
    """The file's first lines within the budget, or (``anchor``) a window from the anchor line, widened upwards."""
    lines = info.lines
    if anchor is None:
        return line_chunk(project, info, 0, len(lines), "", budget)
    end = cut_lines(lines, anchor, len(lines), budget)
    total = sum(len(x) for x in lines[anchor:end])
    start = anchor
    while start > 0 and total + len(lines[start - 1]) <= budget:
        start -= 1
        total += len(lines[start])
    return {"project": project.name, "path": info.file.path, "name": "", "start_line": start, "end_line": end,
            "text": "".join(lines[start:end])}


class ChunkPools:
    """Per project: definitions and modules big enough to be chunks."""

    def __init__(self, index: ProjectIndex, min_chars: int):
        self.index = index
        self.defs: dict[str, list[Definition]] = {}
        for mod, info in sorted(index.modules.items()):
            ds = [d for _, d in sorted(info.defs.items())
                  if sum(len(x) for x in info.lines[d.start:d.end]) >= min_chars]
            if ds:
                self.defs[mod] = ds
        self.file_modules = sorted(m for m, info in index.modules.items() if len(info.file.text) >= min_chars)

    def modules_for(self, granularity: str) -> list[str]:
        return sorted(self.defs) if granularity == "definition" else self.file_modules


def pick_chunk(rng: random.Random, pools: ChunkPools, mod: str, p: BuildParams, avoid_names: set[str],
               prefer: list[str] | None = None) -> dict | None:
    """A chunk of module ``mod`` that defines none of ``avoid_names`` (a definition, preferring those named in
    ``prefer``, or, at file granularity, the file's first window), or None."""
    index = pools.index
    info = index.modules[mod]
    if p.granularity == "file":
        c = file_window(index.project, info, p.chunk_chars)
        return None if defines_any(c["text"], avoid_names) else c
    cands = [d for d in pools.defs.get(mod, []) if d.name not in avoid_names]
    if prefer:
        preferred = [d for d in cands if d.name in prefer]
        cands = preferred or cands
    rng.shuffle(cands)
    for d in cands:
        c = line_chunk(index.project, info, d.start, d.end, d.name, p.chunk_chars, d.head)
        if not defines_any(c["text"], avoid_names):
            return c
    return None
