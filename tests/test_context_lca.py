"""The Long Code Arena adapter, on a small fixture written in that dataset's schema (no `datasets` needed)."""

import json
import sys
from pathlib import Path

import pytest

from deltalens.context import load, save, validate
from deltalens.context.chunks import defines_any
from deltalens.context.long_code_arena import LCAError, from_lca_records, read_lca

FIXTURE = Path(__file__).parent / "fixtures" / "context" / "lca_small.jsonl"


def _records():
    return [json.loads(line) for line in FIXTURE.read_text().splitlines()]


def test_maps_fields_and_labels_chunks(tmp_path):
    ds = from_lca_records(_records(), n_chunks=5, max_relevant=2, max_related=1, n_injected=1)
    validate(ds)
    s = ds.samples.set_index("sample_id")
    assert set(s["source"]) == {"lca"} and set(s["split"]) == {"test"}
    assert set(s["line_category"]) == {"inproject", "infile"}  # the default categories; 'common' left out
    sid = "alice__calc@0123456789:calc/main.py:L7"
    row = s.loc[sid]
    assert row["target"] == "    s = add(a, b)" and row["project_version"].startswith("0123456789")
    content_lines = _records()[0]["completion_file"]["content"].split("\n")
    assert row["prefix"] == "".join(ln + "\n" for ln in content_lines[:6])  # LCA lines are 0-based
    ch = ds.chunks_of(sid)
    rel = ch[ch["category"] == "relevant"]
    assert list(rel["path"]) == ["calc/ops.py"] and defines_any(rel["text"].iloc[0], ["add"])
    inj = ch[ch["category"] == "injected"]
    assert len(inj) >= 1 and set(inj["project"]) == {"bob__words"}
    assert not ((ch["project"] == "alice__calc") & (ch["path"] == "calc/main.py")).any()
    # an 'infile' line that uses no other module: no relevant chunk
    assert (ds.chunks_of("alice__calc@0123456789:calc/main.py:L13")["category"] != "relevant").all()
    save(ds, tmp_path / "lca")
    assert len(load(tmp_path / "lca")) == len(ds)


def test_reads_local_parquet_shard(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(_records()), tmp_path / "shard.parquet")
    rows = list(read_lca(parquet=str(tmp_path / "shard.parquet")))
    assert [r["repo"] for r in rows] == ["alice__calc", "bob__words"]
    ds = from_lca_records(rows, line_categories=("inproject",), n_chunks=4, max_relevant=2, max_related=1,
                          n_injected=1)
    assert len(ds) == 4 and set(ds.samples["line_category"]) == {"inproject"}


def test_clear_errors(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if not installed
    with pytest.raises(ImportError, match="needs the Hugging Face `datasets` package"):
        next(read_lca("small_context"))
    bad = _records()[0]
    bad.pop("repo_snapshot")
    with pytest.raises(LCAError, match="record 0: field 'repo_snapshot': missing"):
        from_lca_records([bad])
    bad = _records()[0]
    bad["completion_lines"]["inproject"] = ["6"]
    with pytest.raises(LCAError, match="completion_lines.inproject"):
        from_lca_records([bad])
