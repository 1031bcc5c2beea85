"""The context-dataset builder: ground truth re-verified, determinism, atomic writes, bad inputs."""

import json
import shutil
from pathlib import Path

import pytest

from deltalens.context import (
    BuildParams,
    ParamsError,
    SchemaError,
    SourceError,
    build,
    build_dataset,
    load,
    load_params,
)
from deltalens.context.ast_index import ProjectIndex
from deltalens.context.sources import dir_project, repos_dir_projects
from deltalens.context.verify import verify

FIXTURES = Path(__file__).parent / "fixtures" / "context"
REPOS = FIXTURES / "repos"
OUTPUTS = ("samples.parquet", "chunks.parquet", "manifest.json")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("ctx") / "smoke"
    p = load_params("params/dataset/smoke.yaml")
    ds, _ = build(p, out=out, progress=False)
    return out, p, ds


def test_smoke_build_ground_truth_every_sample(smoke):
    out, p, _ = smoke
    ds = load(out)  # validated on load
    checked = verify(ds)
    assert checked["samples"] == len(ds.samples) > 0
    assert checked["relevant"] > 0 and checked["injected"] > 0 and checked["distractor"] > 0
    # splits by project: no project on both sides, the split is stored in the manifest
    assert ds.samples.groupby("project")["split"].nunique().max() == 1
    assert set(ds.samples["split"]) == {"dev", "test"}
    assert ds.manifest["splits"] == dict(ds.samples.groupby("project")["split"].first())
    # no chunk is the target file, no answer leaks into the query
    merged = ds.chunks.merge(ds.samples[["sample_id", "project", "path", "target", "prompt", "query_start"]],
                             on="sample_id", suffixes=("", "_s"))
    assert not ((merged["project"] == merged["project_s"]) & (merged["path"] == merged["path_s"])).any()
    for s in ds.samples.itertuples():
        assert s.prompt[s.query_start:] == s.prefix
        assert not s.prefix.endswith(s.target + "\n")


def test_default_params_file_is_valid():
    p = load_params("params/dataset/default.yaml")
    assert len(p.installed) >= 8 and p.samples_per_project * len(p.installed) >= 300 and p.min_samples >= 300


def test_manifest_records_sources_versions_hashes(smoke):
    out, p, _ = smoke
    m = json.loads((out / "manifest.json").read_text())
    assert m["seed"] == p.seed and m["params"]["n_chunks"] == p.n_chunks and "out" not in m["params"]
    names = {s["project"] for s in m["sources"]}
    assert names == {"h11", "nbformat", "papermill", "requests"}
    for s in m["sources"]:
        assert s["version"] and s["files"] and all(len(f["sha256"]) == 64 for f in s["files"])
    assert m["counts"]["samples"] == len(load(out).samples)
    assert set(m["counts"]["chunks_per_category"]) == {"relevant", "related", "distractor", "injected"}


def test_rebuild_is_byte_identical(smoke, tmp_path):
    out, p, _ = smoke
    build(p, out=tmp_path / "again", progress=False)
    for name in OUTPUTS:
        assert (out / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name


def test_seed_changes_the_order(smoke):
    out, p, ds = smoke
    other = build_dataset(BuildParams.from_dict({**p.manifest_params(), "seed": 1}), progress=False)
    assert list(other.samples["prompt"]) != list(ds.samples["prompt"])


def test_repos_dir_file_granularity_verifies(tmp_path):
    p = BuildParams.from_dict({"repos_dirs": [str(REPOS)], "granularity": "file", "n_chunks": 5, "max_relevant": 2,
                               "max_related": 1, "n_injected": 1, "min_chunk_chars": 40, "samples_per_project": 20,
                               "max_samples_per_file": 10})
    ds, _ = build(p, out=tmp_path / "ctx", progress=False)
    ds = load(tmp_path / "ctx")
    verify(ds)
    assert set(ds.samples["project"]) == {"alpha", "beta"}
    assert set(ds.chunks["name"]) == {""}  # file windows
    assert (ds.chunks["category"] == "injected").sum() == 0  # one project per split: nothing to inject
    ids = set(ds.samples["sample_id"])
    assert "alpha:alpha/app.py:L16" not in ids  # `return compute(1)` uses a parameter that shadows the import


def test_analysis_resolves_imports_reexports_and_shadowing():
    idx = ProjectIndex(dir_project(REPOS / "alpha"))
    app = idx.modules["alpha.app"]
    uses = {ln + 1: sorted((d.module, d.name) for d in ds) for ln, ds in app.uses.items()}
    assert uses[8] == [("alpha.helpers", "parse_number")]  # absolute import
    assert uses[9] == [("alpha.core", "Engine")]  # relative import
    assert uses[11] == [("alpha.core", "compute")]
    assert uses[12] == [("alpha.helpers", "fmt")]  # attribute on an imported module
    assert 16 not in uses  # shadowed by the parameter
    report = idx.modules["alpha.report"]
    assert [(d.module, d.name) for d in report.uses[6]] == [("alpha.core", "compute")]  # re-export followed
    beta = ProjectIndex(dir_project(REPOS / "beta"))
    assert "beta.text" in beta.modules  # src layout: module names from __init__.py files
    assert [d.name for d in beta.modules["beta.cli"].uses[9]] == ["words"]


def test_failed_build_leaves_nothing_and_keeps_previous(tmp_path):
    out = tmp_path / "ctx"
    good = BuildParams.from_dict({"repos_dirs": [str(REPOS)], "min_chunk_chars": 40, "n_chunks": 4,
                                  "max_relevant": 2, "max_related": 1, "n_injected": 1})
    build(good, out=out, progress=False)
    before = {n: (out / n).read_bytes() for n in OUTPUTS}
    bad = BuildParams.from_dict({**good.manifest_params(), "min_samples": 10_000})
    with pytest.raises(SourceError, match="min_samples"):
        build(bad, out=out, progress=False)
    assert {n: (out / n).read_bytes() for n in OUTPUTS} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ctx"]  # no temporary directory left behind
    with pytest.raises(SourceError):
        build(bad, out=tmp_path / "never", progress=False)
    assert not (tmp_path / "never").exists()


# ---- bad input ----------------------------------------------------------------------------------------------------
def test_path_that_does_not_exist(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        build_dataset(BuildParams.from_dict({"project_dirs": [str(tmp_path / "nope")]}), progress=False)
    with pytest.raises(SourceError, match="does not exist"):
        build_dataset(BuildParams.from_dict({"repos_dirs": [str(tmp_path / "nope")]}), progress=False)
    with pytest.raises(SourceError, match="not installed"):
        build_dataset(BuildParams.from_dict({"installed": ["no-such-distribution-xyz"]}), progress=False)


def test_project_without_python_files(tmp_path):
    (tmp_path / "docs_only").mkdir()
    (tmp_path / "docs_only" / "README.md").write_text("# nothing here\n")
    with pytest.raises(SourceError, match="has no Python files"):
        dir_project(tmp_path / "docs_only")
    repos = tmp_path / "repos"
    shutil.copytree(REPOS, repos)
    shutil.copytree(tmp_path / "docs_only", repos / "docs_only")
    projects, skipped = repos_dir_projects(repos)
    assert [p.name for p in projects] == ["alpha", "beta"]
    assert skipped[0]["project"] == "docs_only" and "no Python files" in skipped[0]["reason"]
    ds = build_dataset(BuildParams.from_dict({"repos_dirs": [str(repos)], "min_chunk_chars": 40, "n_chunks": 4,
                                              "max_relevant": 2, "max_related": 1, "n_injected": 1}),
                       progress=False, root=tmp_path)
    assert ds.manifest["skipped_projects"][0]["project"] == "docs_only"


def test_bad_files_are_skipped_counted_and_reported(tmp_path):
    repo = tmp_path / "repos" / "alpha"
    shutil.copytree(REPOS / "alpha", repo)
    (repo / "alpha" / "broken.py").write_text("def broken(:\n    pass\n")
    (repo / "alpha" / "blob.py").write_bytes(b"\x00\x01\x02binary")
    (repo / "alpha" / "latin.py").write_bytes("x = 'caf\xe9'\n".encode("latin-1"))
    (repo / "alpha" / "huge.py").write_text("X = 1\n" * 5000)
    p = BuildParams.from_dict({"project_dirs": [str(repo)], "max_file_bytes": 20_000, "min_chunk_chars": 40,
                               "n_chunks": 4, "max_relevant": 2, "max_related": 1, "n_injected": 1,
                               "min_projects": 1})
    ds, _ = build(p, out=tmp_path / "ctx", progress=False)
    m = json.loads((tmp_path / "ctx" / "manifest.json").read_text())
    reasons = {s["path"]: s["reason"] for s in m["skipped_files"]}
    assert reasons["alpha/broken.py"].startswith("does not parse")
    assert reasons["alpha/blob.py"].startswith("binary")
    assert reasons["alpha/latin.py"].startswith("not UTF-8")
    assert reasons["alpha/huge.py"].startswith("too large")
    assert m["sources"][0]["n_skipped"] == 4
    assert len(ds.samples) > 0


def test_unknown_or_wrong_parameters():
    with pytest.raises(ParamsError, match="unknown dataset parameter"):
        BuildParams.from_dict({"installed": ["papermill"], "n_chunk": 3})
    with pytest.raises(ParamsError, match="granularity"):
        BuildParams.from_dict({"installed": ["papermill"], "granularity": "lines"})
    with pytest.raises(ParamsError, match="no sources"):
        BuildParams.from_dict({})
    with pytest.raises(ParamsError, match="does not exist"):
        load_params("params/dataset/no-such.yaml")


def test_validation_names_file_row_field(smoke, tmp_path):
    out, _, _ = smoke
    ds = load(out)
    ds.chunks.loc[3, "text"] = "tampered"
    from deltalens.context import validate
    with pytest.raises(SchemaError, match=r"chunks.parquet row 3 field 'text'"):
        validate(ds)
    ds = load(out)
    ds.samples.loc[1, "split"] = "train"
    with pytest.raises(SchemaError, match=r"samples.parquet row 1 field 'split'"):
        validate(ds)
    # a partially written / modified directory is refused on load
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "chunks.parquet").write_bytes((copy / "chunks.parquet").read_bytes()[:100])
    with pytest.raises(SchemaError, match="sha256"):
        load(copy)
    (copy / "chunks.parquet").unlink()
    with pytest.raises(SchemaError, match="chunks.parquet is missing"):
        load(copy)
