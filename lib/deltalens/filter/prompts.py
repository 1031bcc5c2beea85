"""A user's prompt to filter, and the JSONL file of many: checked field by field before any model loads.

One JSON object per line::

    {"id": "req-17",                      # required, unique in the file, a non-empty string
     "query": "def handler(event):\n",    # required: what the context is for (a completion prompt: the file prefix)
     "path": "app/handlers.py",           # optional: the query's file (the layout's header line)
     "target": "    return route(event)", # optional: the text to complete; only the leave-one-out oracle needs it
     "chunks": [                          # required, a list (may be empty)
        "def route(e): ...",                                 # a chunk as plain text, or
        {"text": "class Router: ...", "path": "app/router.py"}   # with its file path (optional)
     ],
     "keep": [0]}                         # optional: chunk positions always kept (they may exceed the budget)

A prompt becomes the sample dict that :mod:`deltalens.lm.prompts` lays out (``prefix`` = the query, ``chunks`` with
``chunk_index`` = their position), so a filter reads a prompt exactly as the study's extraction read its samples.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..core.params import ParameterError

DEFAULT_PATH = "query.py"        # the header of a query without a path
DEFAULT_CHUNK_PATH = "context.py"


class PromptError(ParameterError):
    """A prompt (or a line of a prompts file) that does not follow the schema; the message names where and what."""


@dataclass(frozen=True)
class Chunk:
    text: str
    path: str = DEFAULT_CHUNK_PATH


@dataclass(frozen=True)
class FilterPrompt:
    id: str
    query: str
    chunks: tuple[Chunk, ...]
    path: str = DEFAULT_PATH
    target: str | None = None
    keep: tuple[int, ...] = field(default_factory=tuple)

    def sample(self) -> dict:
        """The sample dict of :func:`deltalens.lm.prompts.layout` (target: ``target`` or empty)."""
        return {"sample_id": self.id, "path": self.path, "prefix": self.query, "target": self.target or "",
                "chunks": [{"chunk_index": i, "text": c.text, "path": c.path} for i, c in enumerate(self.chunks)]}


def _type(v) -> str:
    return "null" if v is None else type(v).__name__


def make_prompt(row, where: str = "prompt") -> FilterPrompt:
    """A :class:`FilterPrompt` from a dict of the schema above (``where`` names it in errors)."""
    if isinstance(row, FilterPrompt):
        return row
    if not isinstance(row, dict):
        raise PromptError(f"{where}: expected a JSON object, got {_type(row)}")
    unknown = sorted(set(row) - {"id", "query", "path", "target", "chunks", "keep"})
    if unknown:
        raise PromptError(f"{where}: unknown field(s) {unknown}; allowed: id, query, path, target, chunks, keep")
    for name in ("id", "query", "chunks"):
        if name not in row:
            raise PromptError(f"{where}: field {name!r} is missing")
    if not isinstance(row["id"], str) or not row["id"]:
        raise PromptError(f"{where}: field 'id' must be a non-empty string, got {row['id']!r}")
    where = f"{where} (id {row['id']!r})"
    for name in ("query", "path", "target"):
        if name in row and not isinstance(row[name], str) and not (name == "target" and row[name] is None):
            raise PromptError(f"{where}: field {name!r} must be a string, got {_type(row[name])}")
    if not isinstance(row["chunks"], list):
        raise PromptError(f"{where}: field 'chunks' must be a list, got {_type(row['chunks'])}")
    chunks = []
    for i, c in enumerate(row["chunks"]):
        if isinstance(c, str):
            chunks.append(Chunk(c))
            continue
        if not isinstance(c, dict) or not isinstance(c.get("text"), str):
            got = _type(c.get("text")) if isinstance(c, dict) else _type(c)
            raise PromptError(f"{where}: field 'chunks[{i}]' must be a string or an object with a string 'text', "
                              f"got {got}")
        extra = sorted(set(c) - {"text", "path"})
        if extra:
            raise PromptError(f"{where}: field 'chunks[{i}]' has unknown field(s) {extra}; allowed: text, path")
        if "path" in c and not isinstance(c["path"], str):
            raise PromptError(f"{where}: field 'chunks[{i}].path' must be a string, got {_type(c['path'])}")
        chunks.append(Chunk(c["text"], c.get("path", DEFAULT_CHUNK_PATH)))
    keep = row.get("keep", [])
    if not isinstance(keep, list) or not all(isinstance(k, int) and not isinstance(k, bool) for k in keep):
        raise PromptError(f"{where}: field 'keep' must be a list of chunk positions, got {keep!r}")
    bad = [k for k in keep if not 0 <= k < len(chunks)]
    if bad:
        raise PromptError(f"{where}: field 'keep': positions {bad} are not chunks (0..{len(chunks) - 1})")
    return FilterPrompt(row["id"], row["query"], tuple(chunks), row.get("path", DEFAULT_PATH), row.get("target"),
                        tuple(dict.fromkeys(keep)))


def prompt_from_sample(sample: dict) -> FilterPrompt:
    """The prompt of a dataset sample (``ContextDataset.sample``): its prefix as the query, its chunks in
    ``chunk_index`` order with their paths, its target line — what extraction laid out for that sample."""
    chunks = sorted(sample["chunks"], key=lambda c: c["chunk_index"])
    return make_prompt({"id": sample["sample_id"], "query": sample["prefix"], "path": sample["path"],
                        "target": sample["target"], "chunks": [{"text": c["text"], "path": c["path"]} for c in chunks]})


def read_prompts(path: str | Path) -> list[FilterPrompt]:
    """Every prompt of a JSONL file, each line checked (JSON, schema, unique ids) before anything else runs; the
    first bad line raises :class:`PromptError` naming the file, the line and the field."""
    path = Path(path)
    if not path.is_file():
        raise PromptError(f"prompts file {str(path)!r} does not exist")
    prompts, seen = [], {}
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}: line {n}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise PromptError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
            p = make_prompt(row, where)
            if p.id in seen:
                raise PromptError(f"{where}: id {p.id!r} is already on line {seen[p.id]}")
            seen[p.id] = n
            prompts.append(p)
    return prompts


def check_unique(prompts: list[FilterPrompt]) -> None:
    """Prompt ids are unique (results and resumes are keyed by them)."""
    seen: set[str] = set()
    for i, p in enumerate(prompts):
        if p.id in seen:
            raise PromptError(f"prompts[{i}]: id {p.id!r} is given twice; ids must be unique")
        seen.add(p.id)
