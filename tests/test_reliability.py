"""Bad input never costs data or a rerun: each item of the robustness pass (issue 15) with the message it must give,
and a check that nothing was deleted, written or lost."""

import json
import shutil
import warnings

import pytest
import yaml

from deltalens.context import BuildParams, ParamsError, build, load, load_params
from deltalens.context.__main__ import main as context_main
from deltalens.context.schema import SchemaError
from deltalens.core.params import ParameterError
from deltalens.core.paths import project_root
from deltalens.extract import run as ex

from tiny_lm import save_tiny_lm

SMOKE = project_root() / "params/dataset/smoke.yaml"


@pytest.fixture(scope="module")
def ds_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("ctx") / "ctx"
    build(load_params(SMOKE, {"out": str(out), "samples_per_project": 2}), progress=False)
    return out


@pytest.fixture(scope="module")
def lm_dir(ds_dir, tmp_path_factory):
    return save_tiny_lm(tmp_path_factory.mktemp("lm"), list(load(ds_dir).chunks["text"][:150]))


def _tree(d):
    return sorted((str(p.relative_to(d)), p.read_bytes()) for p in d.rglob("*") if p.is_file())


# 1 ----------------------------------------------------------------------------------------------------------------
def test_build_refuses_a_directory_that_is_not_a_dataset(tmp_path, ds_dir, capsys):
    user = tmp_path / "data"
    (user / "raw").mkdir(parents=True)
    (user / "raw/notes.txt").write_text("my data")
    (user / "keep.csv").write_text("a,b\n1,2\n")
    before = _tree(user)
    assert context_main(["build", "-p", str(SMOKE), "--out", str(user), "--no-progress",
                         "--set", "samples_per_project=1"]) == 2
    assert "refusing to write the dataset" in capsys.readouterr().err
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("")
    assert context_main(["from-jsonl", str(jsonl), "--out", str(user)]) == 2
    assert _tree(user) == before  # nothing deleted, nothing written
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".data.")]  # no temporary left behind
    # replacing an existing dataset stays possible (and atomic); an empty directory is fine too
    copy = tmp_path / "copy"
    shutil.copytree(ds_dir, copy)
    assert context_main(["build", "-p", str(SMOKE), "--out", str(copy), "--no-progress",
                         "--set", "samples_per_project=1"]) == 0
    assert len(load(copy)) < len(load(ds_dir))
    (tmp_path / "empty").mkdir()
    assert context_main(["build", "-p", str(SMOKE), "--out", str(tmp_path / "empty"), "--no-progress",
                         "--set", "samples_per_project=1"]) == 0


# 2 ----------------------------------------------------------------------------------------------------------------
def test_a_run_that_failed_on_its_first_sample_does_not_pin_the_parameters(tmp_path, ds_dir, lm_dir):
    ds = load(ds_dir)
    lm, tok = ex.load_lm(str(lm_dir))
    bad = ex.ExtractConfig(out_dir=str(tmp_path / "d"), max_tokens=16, truncation="error", max_samples=2)
    with pytest.raises(ParameterError, match="max_tokens=16"):
        ex.extract(bad, ds=ds, lm=lm, tokenizer=tok, progress=False)
    assert (tmp_path / "d/run.json").is_file()
    good = ex.ExtractConfig(out_dir=str(tmp_path / "d"), max_tokens=4096, max_samples=2)
    assert ex.extract(good, ds=ds, lm=lm, tokenizer=tok, progress=False).done_now == 2
    assert json.loads((tmp_path / "d/run.json").read_text())["key"]["max_tokens"] == 4096
    # once a sample is finished, other parameters are refused (nothing finished is overwritten)
    with pytest.raises(ParameterError, match="2 finished samples.*other parameters"):
        ex.extract(ex.ExtractConfig(out_dir=str(tmp_path / "d"), max_tokens=2048, max_samples=2), ds=ds, lm=lm,
                   tokenizer=tok, progress=False)


def test_a_torch_error_reaches_the_cli_user_with_the_sample_and_what_to_do(tmp_path, ds_dir, lm_dir, monkeypatch, capsys):
    def broken(*a, **k):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")
    monkeypatch.setattr(ex, "forward_all", broken)
    params = tmp_path / "p.yaml"
    params.write_text(yaml.safe_dump({"model": str(lm_dir), "dataset_dir": str(ds_dir), "out_dir": str(tmp_path / "d"),
                                      "max_samples": 1}))
    assert ex.main(["run", "-p", str(params), "--no-progress"]) == 2
    err = capsys.readouterr().err
    sid = ex.select_samples(load(ds_dir), None, 1)[0]
    assert "Traceback" not in err and sid in err and "illegal memory access" in err and "finished samples are kept" in err


# 3 ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("key, value, match", [
    ("leave_one_out", "false", "leave_one_out='false'.*true or false"),
    ("save_token_stats", 1, "save_token_stats=1.*true or false"),
    ("allow_download", "yes", "allow_download='yes'"),
    ("max_tokens", "4096", "max_tokens='4096'.*integer"),
    ("dtype", "bf16", "dtype='bf16'.*allowed"),
    ("scan", "parallel", "scan='parallel'.*allowed"),
    ("device", "gpu", "device='gpu'"),
    ("device_map", "everywhere", "device_map='everywhere'"),
    ("split", 1, "split=1"),
])
def test_every_extraction_parameter_is_type_checked(key, value, match):
    with pytest.raises(ParameterError, match=match):
        ex.config_from_params({key: value})


@pytest.mark.parametrize("override, match", [
    ({"n_injected": -3}, "n_injected.*>= 0"),
    ({"min_chunk_chars": -1}, "min_chunk_chars.*>= 1"),
    ({"n_chunks": 4, "max_relevant": 2, "max_related": 2, "n_injected": 2}, "> n_chunks=4"),
    ({"test_fraction": "0.5"}, "test_fraction.*number"),
    ({"min_target_chars": 200, "max_target_chars": 100}, "min_target_chars=200 > max_target_chars=100"),
    ({"samples_per_project": 0}, "samples_per_project.*>= 1"),
    ({"header": "# file\n"}, "header.*{path}"),
])
def test_builder_parameter_bounds(override, match):
    base = yaml.safe_load(SMOKE.read_text())["dataset"]
    with pytest.raises(ParamsError, match=match):
        BuildParams.from_dict({**base, **override})


# 4 ----------------------------------------------------------------------------------------------------------------
def test_unknown_schema_version_is_refused(tmp_path, ds_dir):
    copy = tmp_path / "ds"
    shutil.copytree(ds_dir, copy)
    m = json.loads((copy / "manifest.json").read_text())
    m["schema_version"] = 99
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(SchemaError, match="schema_version 99.*reads version 1"):
        load(copy)


# 6 ----------------------------------------------------------------------------------------------------------------
def test_a_split_with_one_project_is_reported_not_silent(tmp_path):
    p = load_params(SMOKE, {"out": str(tmp_path / "two"), "samples_per_project": 2,
                            "installed": ["h11", "nbformat"]})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds, _ = build(p, progress=False)
    assert len(ds.manifest["warnings"]) == 2 and all("no injected chunks" in w for w in ds.manifest["warnings"])
    assert any("no injected chunks" in str(w.message) for w in caught)
    assert (ds.chunks["category"] != "injected").all()  # what the warning says is what happened
    assert load(tmp_path / "two").manifest["warnings"] == ds.manifest["warnings"]


# 8 ----------------------------------------------------------------------------------------------------------------
def test_merge_names_a_torn_part_file(tmp_path, ds_dir, lm_dir):
    ds = load(ds_dir)
    lm, tok = ex.load_lm(str(lm_dir))
    cfg = ex.ExtractConfig(out_dir=str(tmp_path / "d"), max_tokens=4096, max_samples=2)
    ex.extract(cfg, ds=ds, lm=lm, tokenizer=tok, progress=False)
    part = sorted((tmp_path / "d").glob("shard-*/parts/*.json"))[0]
    part.write_text(part.read_text()[:40])
    with pytest.raises(ValueError, match=f"{part.name}.*unreadable.*delete both files"):
        ex.merge(cfg.out_dir)


def test_another_shard_count_into_the_same_folder_is_refused_up_front(tmp_path, ds_dir, lm_dir):
    ds = load(ds_dir)
    lm, tok = ex.load_lm(str(lm_dir))
    ex.extract(ex.ExtractConfig(out_dir=str(tmp_path / "d"), max_tokens=4096, max_samples=4, shard="0/2"),
               ds=ds, lm=lm, tokenizer=tok, progress=False)
    with pytest.raises(ParameterError, match=r"split into \[2\] shards.*uses 3"):
        ex.extract(ex.ExtractConfig(out_dir=str(tmp_path / "d"), max_tokens=4096, max_samples=4, shard="1/3"),
                   ds=ds, lm=lm, tokenizer=tok, progress=False)
    assert not (tmp_path / "d/shard-1-of-3/parts").exists() or not any((tmp_path / "d/shard-1-of-3/parts").iterdir())


def test_hub_hint_depends_on_allow_download():
    with pytest.raises(ex.ModelLoadError) as off:
        ex.load_lm("nobody-here/no-such-model-xyz")
    assert "allow_download" in str(off.value) and "not reachable" in str(off.value)
    with pytest.raises(ex.ModelLoadError) as on:
        ex.load_lm("nobody-here/no-such-model-xyz", allow_download=True)
    assert "set allow_download" not in str(on.value) and "download failed" in str(on.value)


def test_labeling_export_with_a_misspelled_split_gives_a_message(tmp_path, ds_dir, capsys):
    from deltalens.labeling.__main__ import main as labeling_main

    params = yaml.safe_load((project_root() / "params/labeling/smoke.yaml").read_text())
    params.update(dataset_dir=str(ds_dir), label_split="tset", manual_dir=str(tmp_path / "manual"))
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(params))
    assert labeling_main(["export", "-p", str(tmp_path / "p.yaml"), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "label_split='tset'" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()
