"""The code-context dataset schema (two parquet tables + a manifest), prompt assembly, validation, save and load.

A dataset directory holds

* ``samples.parquet``: one row per completion point (see :data:`SAMPLE_COLUMNS`);
* ``chunks.parquet``: one row per (sample, context chunk), in prompt order (see :data:`CHUNK_COLUMNS`);
* ``manifest.json``: sources and versions, per-file sha256, parameters, seed, counts, skipped inputs, split.

The prompt of a sample is ``header(chunk 0) + chunk 0 text + "\\n" + ... + header(query file) + prefix``: every chunk
sits at ``prompt[char_start:char_end]`` (headers and separators are outside the spans) and the query (the prefix)
at ``prompt[query_start:]``. Validation (:func:`validate`) checks all of it and names the file, row and field of
any problem.

One module at the ~300-line guideline on purpose: the columns, the prompt assembly, the validation and save / load
are one contract (save validates against these columns before it writes, load after it reads), and code outside the
package imports ``load`` and ``dataset_fingerprint`` from here.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

SCHEMA_VERSION = 1
CATEGORIES = ("relevant", "related", "distractor", "injected")
EXTERNAL_CATEGORIES = CATEGORIES + ("unknown",)
SPLITS = ("dev", "test")
DEFAULT_HEADER = "# {path}\n"

# column -> (kind, description); kinds: str, int, strlist
SAMPLE_COLUMNS: dict[str, tuple[str, str]] = {
    "sample_id": ("str", "unique id, '<project>:<path>:<line>' for built samples"),
    "source": ("str", "'builder' | 'jsonl' | 'lca'"),
    "project": ("str", "project of the completion file"),
    "project_version": ("str", "its version (pinned distribution version, commit hash, 'tree:<hash>')"),
    "split": ("str", "'dev' | 'test' (by project: a project's samples are all in one split)"),
    "path": ("str", "completion file, relative to the project root"),
    "target_line": ("int", "0-based line index of the target line in the completion file (-1 if unknown)"),
    "prefix_start_line": ("int", "0-based line where the (cut) prefix starts (-1 if unknown)"),
    "line_category": ("str", "why the line was chosen: 'inproject' for built samples, LCA's category, or ''"),
    "prefix": ("str", "the query: the completion file's text before the target line (cut to prefix_chars)"),
    "target": ("str", "the target line, without its newline"),
    "suffix": ("str", "text after the target line (cut to suffix_chars), for fill-in-the-middle"),
    "used_names": ("strlist", "names on the target line that resolve to definitions in other modules"),
    "n_chunks": ("int", "number of context chunks"),
    "prompt": ("str", "assembled prompt: chunk headers + chunks, then the query header + prefix"),
    "query_start": ("int", "offset of the prefix in the prompt (prompt[query_start:] == prefix)"),
}
CHUNK_COLUMNS: dict[str, tuple[str, str]] = {
    "sample_id": ("str", "sample the chunk belongs to"),
    "chunk_index": ("int", "position in the prompt (0..n_chunks-1)"),
    "category": ("str", "'relevant' | 'related' | 'distractor' | 'injected' ('unknown' allowed for external data)"),
    "project": ("str", "project the chunk comes from"),
    "path": ("str", "file the chunk comes from, relative to its project root"),
    "name": ("str", "top-level definition the chunk holds ('' for a file window)"),
    "start_line": ("int", "0-based first line of the chunk in its file (-1 if unknown)"),
    "end_line": ("int", "0-based end line, exclusive (-1 if unknown)"),
    "defines": ("strlist", "for relevant chunks: the used names (as on the target line) the chunk defines"),
    "text": ("str", "chunk text, as it appears in the prompt"),
    "char_start": ("int", "prompt[char_start:char_end] == text"),
    "char_end": ("int", ""),
}


class SchemaError(ValueError):
    """A dataset that does not follow the schema; the message names the file, row and field."""


@dataclass
class ContextDataset:
    samples: pd.DataFrame
    chunks: pd.DataFrame
    manifest: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.samples)

    def chunks_of(self, sample_id: str) -> pd.DataFrame:
        return self.chunks[self.chunks["sample_id"] == sample_id].sort_values("chunk_index")

    def sample(self, i: int | str) -> dict:
        """One sample as a dict with its chunks (list of dicts) under 'chunks'."""
        row = self.samples.iloc[i] if isinstance(i, (int, np.integer)) else \
            self.samples[self.samples["sample_id"] == i].iloc[0]
        out = {k: _py(row[k]) for k in SAMPLE_COLUMNS}
        out["chunks"] = [{k: _py(r[k]) for k in CHUNK_COLUMNS} for _, r in self.chunks_of(out["sample_id"]).iterrows()]
        return out


def _py(v):
    if isinstance(v, np.ndarray):
        return [_py(x) for x in v.tolist()]
    if isinstance(v, np.integer):
        return int(v)
    return v


def assemble_prompt(chunks: list[dict], query_path: str, prefix: str, header: str = DEFAULT_HEADER) -> tuple[str, list[tuple[int, int]], int]:
    """(prompt, [(char_start, char_end) per chunk], query_start). Chunk dicts need 'path' and 'text'."""
    parts, spans, pos = [], [], 0
    for c in chunks:
        h = header.format(path=c["path"], project=c.get("project", ""))
        parts.append(h)
        pos += len(h)
        spans.append((pos, pos + len(c["text"])))
        parts.append(c["text"])
        pos += len(c["text"])
        parts.append("\n")
        pos += 1
    h = header.format(path=query_path, project="")
    parts.append(h)
    pos += len(h)
    parts.append(prefix)
    return "".join(parts), spans, pos


def make_frames(samples: list[dict], chunks: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """DataFrames with the schema's columns, in the schema's order and dtypes."""
    def frame(rows, cols):
        data = {}
        for c, (kind, _) in cols.items():
            vals = [r[c] for r in rows]
            if kind == "int":
                data[c] = pd.array(vals, dtype="int64")
            elif kind == "strlist":
                data[c] = pd.Series([list(v) for v in vals], dtype=object)
            else:
                data[c] = pd.Series(vals, dtype=object)
        return pd.DataFrame(data, columns=list(cols))
    return frame(samples, SAMPLE_COLUMNS), frame(chunks, CHUNK_COLUMNS)


def dataset_fingerprint(ds: ContextDataset) -> str:
    """sha256 of what prompts are built from (ids, split, path, query, target, and every chunk's category, path and
    text): caches and resumable runs derived from a dataset are reused only for exactly the same content."""
    h = hashlib.sha256()
    for frame, cols in ((ds.samples, ["sample_id", "split", "path", "prefix", "target"]),
                        (ds.chunks, ["sample_id", "chunk_index", "category", "path", "text"])):
        h.update(pd.util.hash_pandas_object(frame[cols], index=False).to_numpy().tobytes())
    return h.hexdigest()


# ---- validation ---------------------------------------------------------------------------------------------------
def _check_columns(df: pd.DataFrame, cols: dict, where: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise SchemaError(f"{where}: missing column(s) {missing}")
    for c, (kind, _) in cols.items():
        col = df[c]
        for i, v in enumerate(col.tolist()):
            ok = (isinstance(v, str) if kind == "str" else
                  isinstance(v, (int, np.integer)) and not isinstance(v, bool) if kind == "int" else
                  isinstance(v, (list, tuple, np.ndarray)) and all(isinstance(x, str) for x in list(v)))
            if not ok:
                raise SchemaError(f"{where} row {i} field {c!r}: expected {kind}, got {type(v).__name__} {v!r:.60}")


def validate(ds: ContextDataset, where: str = "dataset", categories=EXTERNAL_CATEGORIES) -> None:
    """Raise :class:`SchemaError` naming file/row/field at the first problem."""
    s_where, c_where = f"{where}/samples.parquet", f"{where}/chunks.parquet"
    _check_columns(ds.samples, SAMPLE_COLUMNS, s_where)
    _check_columns(ds.chunks, CHUNK_COLUMNS, c_where)
    samples = ds.samples.to_dict("records")
    by_id: dict[str, int] = {}
    project_split: dict[str, str] = {}
    for i, s in enumerate(samples):
        sid = s["sample_id"]
        if sid in by_id:
            raise SchemaError(f"{s_where} row {i} field 'sample_id': duplicate {sid!r} (also row {by_id[sid]})")
        by_id[sid] = i
        if s["split"] not in SPLITS:
            raise SchemaError(f"{s_where} row {i} field 'split': expected one of {SPLITS}, got {s['split']!r}")
        prev = project_split.setdefault(s["project"], s["split"])
        if prev != s["split"]:
            raise SchemaError(f"{s_where} row {i} field 'split': project {s['project']!r} is in both "
                              f"{prev!r} and {s['split']!r} (splits are by project)")
        if "\n" in s["target"]:
            raise SchemaError(f"{s_where} row {i} field 'target': must be a single line")
        if not 0 <= s["query_start"] <= len(s["prompt"]) or s["prompt"][s["query_start"]:] != s["prefix"]:
            raise SchemaError(f"{s_where} row {i} field 'query_start': prompt[query_start:] is not the prefix")
    chunks = ds.chunks.to_dict("records")
    seen_idx: dict[str, list[int]] = {}
    for j, c in enumerate(chunks):
        sid = c["sample_id"]
        if sid not in by_id:
            raise SchemaError(f"{c_where} row {j} field 'sample_id': {sid!r} is not in samples.parquet")
        if c["category"] not in categories:
            raise SchemaError(f"{c_where} row {j} field 'category': expected one of {tuple(categories)}, "
                              f"got {c['category']!r}")
        s = samples[by_id[sid]]
        if not 0 <= c["char_start"] <= c["char_end"] <= s["query_start"]:
            raise SchemaError(f"{c_where} row {j} field 'char_start'/'char_end': span ({c['char_start']}, "
                              f"{c['char_end']}) outside the context part of the prompt of {sid!r}")
        if s["prompt"][c["char_start"]:c["char_end"]] != c["text"]:
            raise SchemaError(f"{c_where} row {j} field 'text': prompt[char_start:char_end] of {sid!r} differs "
                              "from the chunk text")
        if c["category"] == "relevant" and len(list(c["defines"])) == 0:
            raise SchemaError(f"{c_where} row {j} field 'defines': a relevant chunk must name what it defines")
        seen_idx.setdefault(sid, []).append(c["chunk_index"])
    for sid, i in by_id.items():
        idx = seen_idx.get(sid, [])
        if sorted(idx) != list(range(samples[i]["n_chunks"])):
            raise SchemaError(f"{s_where} row {i} field 'n_chunks': {samples[i]['n_chunks']} but chunks.parquet "
                              f"has chunk_index {sorted(idx)[:20]} for {sid!r}")


# ---- save / load --------------------------------------------------------------------------------------------------
def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([(c, pa.int64() if k == "int" else pa.list_(pa.string()) if k == "strlist" else pa.string())
                        for c, (k, _) in (SAMPLE_COLUMNS if "prompt" in df.columns else CHUNK_COLUMNS).items()])
    table = pa.Table.from_pandas(df, schema=schema, preserve_index=False).replace_schema_metadata(None)
    pq.write_table(table, path, compression="zstd", use_dictionary=False, write_statistics=False)


def is_dataset_dir(path: Path) -> bool:
    """A directory holding a manifest this project wrote (``"dataset": "deltalens-context"``)."""
    try:
        return json.loads((path / "manifest.json").read_text()).get("dataset") == "deltalens-context"
    except (OSError, ValueError, AttributeError):
        return False


def refuse_foreign_dir(out_dir: Path) -> None:
    """A dataset replaces only a dataset (or an empty directory): ``--out data`` must never wipe user files."""
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir()) and not is_dataset_dir(out_dir))):
        raise SchemaError(f"refusing to write the dataset to {out_dir}: it exists and is not a dataset written by "
                          "deltalens (no manifest.json with \"dataset\": \"deltalens-context\"); nothing was changed. "
                          "Choose a new or empty directory, or one that holds an earlier dataset")


def save(ds: ContextDataset, out_dir: str | Path) -> Path:
    """Write the dataset atomically: into a temporary sibling directory, renamed to ``out_dir`` at the end."""
    out_dir = Path(out_dir)
    refuse_foreign_dir(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        validate(ds, where=str(out_dir))
        _write_parquet(ds.samples, tmp / "samples.parquet")
        _write_parquet(ds.chunks, tmp / "chunks.parquet")
        manifest = dict(ds.manifest)
        manifest["schema_version"] = SCHEMA_VERSION
        manifest["outputs"] = {n: sha256_file(tmp / n) for n in ("samples.parquet", "chunks.parquet")}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
        old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
        if out_dir.exists():
            out_dir.rename(old)
        tmp.rename(out_dir)
        if old.exists():
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    ds.manifest = manifest
    return out_dir


def load(path: str | Path, validate_on_load: bool = True) -> ContextDataset:
    """Load a dataset directory (relative paths are resolved against the repository root)."""
    from ..core.paths import resolve

    path = resolve(path)
    if not path.exists():
        raise FileNotFoundError(f"dataset directory {str(path)!r} does not exist (build it: make dataset)")
    for name in ("manifest.json", "samples.parquet", "chunks.parquet"):
        if not (path / name).is_file():
            raise SchemaError(f"{path}: {name} is missing (incomplete dataset; rebuild it)")
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except json.JSONDecodeError as e:
        raise SchemaError(f"{path}/manifest.json: not valid JSON ({e})") from None
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise SchemaError(f"{path}/manifest.json: schema_version {manifest.get('schema_version')!r}, this deltalens "
                          f"reads version {SCHEMA_VERSION}; rebuild the dataset with this version (make dataset)")
    for name, digest in manifest.get("outputs", {}).items():
        if sha256_file(path / name) != digest:
            raise SchemaError(f"{path}/{name}: sha256 differs from the manifest (modified or partially written)")
    samples = pd.read_parquet(path / "samples.parquet")
    chunks = pd.read_parquet(path / "chunks.parquet")
    for df in (samples, chunks):
        for c in df.columns:
            if df[c].dtype != "int64":
                df[c] = df[c].astype(object)
            if len(df) and isinstance(df[c].iloc[0], np.ndarray):
                df[c] = df[c].map(list)
    ds = ContextDataset(samples, chunks, manifest)
    if validate_on_load:
        validate(ds, where=str(path))
    return ds
