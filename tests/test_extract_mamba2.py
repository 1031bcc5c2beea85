"""Extraction with Mamba-2 and hybrid models: per-head Δ chunk statistics, the model's own layer numbers, the scan
paths the family has, half precision, and the chunk table of the analysis (tiny random models on the CPU)."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from deltalens import analysis as an
from deltalens.core.chunk_columns import ScoreColumn
from deltalens.core.params import ParameterError
from deltalens.delta.capture import capture_delta
from deltalens.extract import run as ex
from deltalens.lm.loading import set_scan

from tiny_lm import save_tiny_lm


@pytest.fixture(scope="module", params=["mamba2", "bamba"])
def lm_dir(request, ds, tmp_path_factory):
    return save_tiny_lm(tmp_path_factory.mktemp(request.param), list(ds.chunks["text"][:150]), request.param)


def run(lm_dir, ds, out, **kw):
    cfg = ex.ExtractConfig(model=str(lm_dir), out_dir=str(out), max_tokens=100_000, max_samples=4, **kw)
    summary = ex.extract(cfg, ds=ds, progress=False)
    ex.merge(cfg.out_dir)
    return summary, json.loads((out / "run.json").read_text())


def test_per_head_chunk_stats_equal_the_captured_delta_and_layers_are_the_models_own(lm_dir, ds, tmp_path):
    summary, meta = run(lm_dir, ds, tmp_path / "d", leave_one_out=True)
    facts = meta["key"]["model_facts"]
    assert facts["delta_granularity"] == "head" and facts["delta_width"] == 4
    assert summary.runtime["scan"] == "chunked"
    lm, tok = ex.load_lm(str(lm_dir))
    expected_layers = [0, 1] if facts["architecture"] == "Mamba2ForCausalLM" else [0, 2]  # bamba: 1 is attention
    assert facts["layer_ids"] == expected_layers
    cd = pd.read_parquet(tmp_path / "d/chunk_delta.parquet")
    assert sorted(cd["layer"].unique()) == expected_layers
    sid = cd["sample_id"].iloc[0]
    sample = ds.sample(sid)
    enc = ex.encode(tok, sample, ex.ExtractConfig(max_tokens=100_000).layout)
    with capture_delta(lm) as rec, torch.no_grad():
        lm(enc.input_ids)
    assert rec.granularity == ["head"] * len(expected_layers)
    full = rec.stacked()[:, 0]  # (mixers, L, n_heads)
    rows = cd[cd["sample_id"] == sid]
    for _, r in rows.iterrows():
        a, b = enc.chunk_tokens[r["chunk_index"]]
        d = full[expected_layers.index(r["layer"]), a:b]
        np.testing.assert_allclose(r["mean"], d.mean(-1).mean().item(), rtol=1e-5)
        np.testing.assert_allclose(r["max"], d.amax(-1).mean().item(), rtol=1e-5)
    lm_rows = pd.read_parquet(tmp_path / "d/chunk_lm.parquet")
    assert lm_rows["loss_gain"].notna().any()  # leave-one-out ran
    # the analysis' chunk table takes per-head runs like any other
    t = an.chunk_table(ds, {"m2": str(tmp_path / "d")})
    cols = an.delta_columns(t, "m2")
    assert cols and {ScoreColumn.parse(c).layer for c in cols} == set(expected_layers)


@pytest.mark.parametrize("dtype, tol", [("bfloat16", 5e-2), ("float16", 1e-2)])
def test_half_precision_runs_and_stays_close_to_float32(lm_dir, ds, tmp_path, dtype, tol):
    run(lm_dir, ds, tmp_path / "f32")
    summary, _ = run(lm_dir, ds, tmp_path / "half", dtype=dtype)
    assert summary.runtime["dtype"] == dtype
    a = pd.read_parquet(tmp_path / "f32/chunk_delta.parquet").sort_values(["sample_id", "chunk_index", "layer"])
    b = pd.read_parquet(tmp_path / "half/chunk_delta.parquet").sort_values(["sample_id", "chunk_index", "layer"])
    for s in ("mean", "l2", "max"):
        x, y = a[s].to_numpy(), b[s].to_numpy()
        ok = ~np.isnan(x)
        assert np.isfinite(y[ok]).all()
        assert np.abs(x[ok] - y[ok]).max() <= tol * np.abs(x[ok]).max(), s


def test_scan_paths_the_family_does_not_have_are_refused(lm_dir):
    lm, _ = ex.load_lm(str(lm_dir))
    assert set_scan(lm, "auto").scan == "chunked"
    for bad in ("mambapy", "sequential"):
        with pytest.raises(ParameterError, match="allowed: auto, cuda_kernels, chunked"):
            set_scan(lm, bad)
    with pytest.raises(ParameterError, match="cuda_kernels"):
        set_scan(lm, "cuda_kernels")


def test_mamba1_models_refuse_the_chunked_path(ds, tmp_path):
    d = save_tiny_lm(tmp_path / "m1", list(ds.chunks["text"][:150]), "mamba")
    lm, _ = ex.load_lm(str(d))
    with pytest.raises(ParameterError, match="allowed: auto, cuda_kernels, mambapy, sequential"):
        set_scan(lm, "chunked")


def test_every_capture_family_has_its_scan_paths():
    from deltalens.delta.adapters import ADAPTERS
    from deltalens.lm.loading import FAMILY_SCANS

    assert {a.family for a in ADAPTERS} == set(FAMILY_SCANS)
