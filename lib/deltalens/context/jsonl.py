"""User-provided data as JSONL: one sample per line; errors name the line number and the field.

A line::

    {"sample_id": "my-repo:src/app.py:L42",          # str, unique
     "project": "my-repo",                           # str
     "path": "src/app.py",                           # str, the completion file
     "prefix": "...text before the target line...",  # str, the query
     "target": "    result = helper(x)",             # str, one line
     "suffix": "...",                                # str, optional ("")
     "split": "test",                                # "dev" | "test", optional ("test")
     "project_version": "abc123",                    # str, optional ("")
     "line_category": "",                            # str, optional ("")
     "used_names": ["helper"],                       # list of str, optional ([])
     "chunks": [                                     # list, in prompt order
        {"text": "def helper(x): ...",               # str
         "category": "relevant",                     # relevant | related | distractor | injected | unknown
         "project": "my-repo", "path": "src/util.py",# str, optional (sample's project / "")
         "name": "helper",                           # str, optional ("")
         "start_line": 10, "end_line": 12,           # int, optional (-1)
         "defines": ["helper"]}]}                    # list of str, optional ([]; required non-empty if relevant)

The prompt is assembled exactly as for built samples (:func:`deltalens.context.schema.assemble_prompt`).
"""

from __future__ import annotations

import json
from pathlib import Path

from .schema import DEFAULT_HEADER, EXTERNAL_CATEGORIES, SPLITS, ContextDataset, assemble_prompt, make_frames

_SAMPLE_REQUIRED = {"sample_id": str, "project": str, "path": str, "prefix": str, "target": str, "chunks": list}
_SAMPLE_OPTIONAL = {"suffix": (str, ""), "split": (str, "test"), "project_version": (str, ""),
                    "line_category": (str, ""), "used_names": (list, None), "target_line": (int, -1),
                    "prefix_start_line": (int, -1)}
_CHUNK_REQUIRED = {"text": str, "category": str}
_CHUNK_OPTIONAL = {"project": (str, None), "path": (str, ""), "name": (str, ""), "start_line": (int, -1),
                   "end_line": (int, -1), "defines": (list, None)}


class JSONLError(ValueError):
    """A problem in a JSONL file: '<file> line <n>: field <f>: <what>'."""


def _type_name(t) -> str:
    return {str: "string", int: "integer", list: "list"}[t]


def _check(obj: dict, field: str, t, where: str, shown: str | None = None) -> None:
    v = obj[field]
    ok = isinstance(v, t) and not (t is int and isinstance(v, bool))
    if not ok:
        raise JSONLError(f"{where}: field {shown or field!r}: expected {_type_name(t)}, got "
                         f"{type(v).__name__} {json.dumps(v)[:60]}")


def parse_sample(obj, where: str, header: str = DEFAULT_HEADER) -> tuple[dict, list[dict]]:
    if not isinstance(obj, dict):
        raise JSONLError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    for f, t in _SAMPLE_REQUIRED.items():
        if f not in obj:
            raise JSONLError(f"{where}: field {f!r}: missing (required: {sorted(_SAMPLE_REQUIRED)})")
        _check(obj, f, t, where)
    known = set(_SAMPLE_REQUIRED) | set(_SAMPLE_OPTIONAL)
    unknown = sorted(set(obj) - known)
    if unknown:
        raise JSONLError(f"{where}: field {unknown[0]!r}: unknown field (known: {sorted(known)})")
    s = {}
    for f, (t, default) in _SAMPLE_OPTIONAL.items():
        if f in obj:
            _check(obj, f, t, where)
            s[f] = obj[f]
        else:
            s[f] = [] if default is None else default
    if s["split"] not in SPLITS:
        raise JSONLError(f"{where}: field 'split': expected one of {list(SPLITS)}, got {s['split']!r}")
    if not all(isinstance(x, str) for x in s["used_names"]):
        raise JSONLError(f"{where}: field 'used_names': expected a list of strings")
    if "\n" in obj["target"]:
        raise JSONLError(f"{where}: field 'target': must be a single line (contains a newline)")
    chunks = []
    for k, c in enumerate(obj["chunks"]):
        cw = f"chunks[{k}]"
        if not isinstance(c, dict):
            raise JSONLError(f"{where}: field {cw!r}: expected an object, got {type(c).__name__}")
        for f, t in _CHUNK_REQUIRED.items():
            if f not in c:
                raise JSONLError(f"{where}: field '{cw}.{f}': missing")
            _check(c, f, t, where, f"{cw}.{f}")
        unknown = sorted(set(c) - set(_CHUNK_REQUIRED) - set(_CHUNK_OPTIONAL))
        if unknown:
            raise JSONLError(f"{where}: field '{cw}.{unknown[0]}': unknown field")
        row = {"text": c["text"], "category": c["category"]}
        for f, (t, default) in _CHUNK_OPTIONAL.items():
            if f in c:
                _check(c, f, t, where, f"{cw}.{f}")
                row[f] = c[f]
            else:
                row[f] = obj["project"] if f == "project" else ([] if default is None else default)
        if row["category"] not in EXTERNAL_CATEGORIES:
            raise JSONLError(f"{where}: field '{cw}.category': expected one of {list(EXTERNAL_CATEGORIES)}, "
                             f"got {row['category']!r}")
        if not all(isinstance(x, str) for x in row["defines"]):
            raise JSONLError(f"{where}: field '{cw}.defines': expected a list of strings")
        if row["category"] == "relevant" and not row["defines"]:
            raise JSONLError(f"{where}: field '{cw}.defines': a relevant chunk must list the names it defines")
        chunks.append(row)
    prompt, spans, query_start = assemble_prompt(chunks, obj["path"], obj["prefix"], header)
    sample = {"sample_id": obj["sample_id"], "source": "jsonl", "project": obj["project"],
              "project_version": s["project_version"], "split": s["split"], "path": obj["path"],
              "target_line": s["target_line"], "prefix_start_line": s["prefix_start_line"],
              "line_category": s["line_category"], "prefix": obj["prefix"], "target": obj["target"],
              "suffix": s["suffix"], "used_names": s["used_names"], "n_chunks": len(chunks), "prompt": prompt,
              "query_start": query_start}
    rows = [{"sample_id": obj["sample_id"], "chunk_index": i, "category": c["category"], "project": c["project"],
             "path": c["path"], "name": c["name"], "start_line": c["start_line"], "end_line": c["end_line"],
             "defines": c["defines"], "text": c["text"], "char_start": a, "char_end": b}
            for i, (c, (a, b)) in enumerate(zip(chunks, spans))]
    return sample, rows


def load_jsonl(path: str | Path, header: str = DEFAULT_HEADER) -> ContextDataset:
    """Load user samples; raise :class:`JSONLError` with the line number and field of the first problem."""
    from ..core.paths import resolve

    path = resolve(path)
    if not path.is_file():
        raise JSONLError(f"{path}: file does not exist")
    samples, chunks, first_line = [], [], {}
    project_split: dict[str, tuple[str, int]] = {}
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            where = f"{path} line {lineno}"
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise JSONLError(f"{where}: not UTF-8 ({e.reason} at byte {e.start})") from None
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                raise JSONLError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from None
            s, rows = parse_sample(obj, where, header)
            if s["sample_id"] in first_line:
                raise JSONLError(f"{where}: field 'sample_id': duplicate {s['sample_id']!r} "
                                 f"(first on line {first_line[s['sample_id']]})")
            first_line[s["sample_id"]] = lineno
            prev = project_split.setdefault(s["project"], (s["split"], lineno))
            if prev[0] != s["split"]:
                raise JSONLError(f"{where}: field 'split': project {s['project']!r} is {prev[0]!r} on line "
                                 f"{prev[1]} (a project's samples must all be in one split)")
            samples.append(s)
            chunks.extend(rows)
    if not samples:
        raise JSONLError(f"{path}: no samples (empty file)")
    s_df, c_df = make_frames(samples, chunks)
    manifest = {"dataset": "jsonl", "source_file": path.name,
                "counts": {"samples": len(samples), "chunks": len(chunks)},
                "splits": {k: v[0] for k, v in sorted(project_split.items())}}
    return ContextDataset(s_df, c_df, manifest)


def from_records(records: list[dict], header: str = DEFAULT_HEADER, where: str = "record") -> ContextDataset:
    """A validated dataset from sample records in the JSONL format (already decoded), e.g. built in code or tests;
    errors name the record's position and field."""
    from .schema import validate

    samples, chunks = [], []
    for i, obj in enumerate(records):
        s, rows = parse_sample(obj, f"{where} {i}", header)
        samples.append(s)
        chunks.extend(rows)
    ds = ContextDataset(*make_frames(samples, chunks))
    validate(ds)
    return ds


def write_jsonl(ds: ContextDataset, path: str | Path) -> Path:
    """Export a dataset to the JSONL format (round-trips through :func:`load_jsonl`)."""
    from ..core.runinfo import atomic_write

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            for i in range(len(ds.samples)):
                s = ds.sample(i)
                obj = {k: s[k] for k in ("sample_id", "project", "path", "prefix", "target", "suffix", "split",
                                         "project_version", "line_category", "used_names", "target_line",
                                         "prefix_start_line")}
                obj["chunks"] = [{k: c[k] for k in ("text", "category", "project", "path", "name", "start_line",
                                                    "end_line", "defines")} for c in s["chunks"]]
                fh.write(json.dumps(obj, ensure_ascii=False, sort_keys=True) + "\n")

    return atomic_write(path, write)
