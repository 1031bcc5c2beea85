"""The LM runtime: half precision on every scan path the CPU can run (Mamba and FalconMamba, bf16 and fp16, through
extraction, target metrics and filtering), capture firing on each path, batched forwards equal to one sequence at a
time, the scan choice and what run.json records, batch planning, the time estimate, and the GPU scale benchmark's
--tiny mode."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from deltalens.context import build, load, load_params
from deltalens.core.chunk_columns import DELTA_STATS
from deltalens.core.params import ParameterError
from deltalens.core.paths import project_root
from deltalens.delta.capture import capture_delta, find_mixers
from deltalens.extract import run as ex
from deltalens.lm import forward as fw
from deltalens.lm import loading as ld
from deltalens.lm.prompts import LayoutPolicy, encode

from tiny_lm import save_tiny_lm

# bf16 keeps 8 mantissa bits, fp16 11: chunk statistics (means over tokens and channels of Δ) of a half-precision run
# are compared with the float32 run of the same weights at these relative tolerances (measured here: bf16 within
# 2e-2, fp16 within 3e-3 on these tiny models; the bound leaves a factor ~2.5).
TOLERANCE = {"bfloat16": 5e-2, "float16": 1e-2}
CPU_SCANS = ("sequential", "mambapy")


@pytest.fixture(scope="module")
def ds_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("ctx")
    build(load_params(project_root() / "params/dataset/smoke.yaml", {"out": str(out), "samples_per_project": 2}),
          progress=False)
    return out


@pytest.fixture(scope="module")
def ds(ds_dir):
    return load(ds_dir)


@pytest.fixture(scope="module", params=["falcon_mamba", "mamba"])
def lm_dir(request, ds, tmp_path_factory):
    # residual_in_fp32 (falcon-mamba-7b's setting) is what made the bf16 head crash: the backbone returns float32
    return save_tiny_lm(tmp_path_factory.mktemp(request.param), list(ds.chunks["text"][:150]), request.param,
                        rms_eps=3e-2, hidden_size=48)


def _extract(lm_dir, ds, out, dtype, scan, **kw):
    lm, tok = ex.load_lm(str(lm_dir), dtype=dtype)
    cfg = ex.ExtractConfig(out_dir=str(out), max_tokens=100_000, dtype=dtype, scan=scan, max_samples=3,
                           leave_one_out=True, loo_samples=1, **kw)
    s = ex.extract(cfg, ds=ds, lm=lm, tokenizer=tok, progress=False)
    paths = ex.merge(cfg.out_dir)
    return s, {k: pd.read_parquet(v) for k, v in paths.items()}


@pytest.mark.parametrize("scan", CPU_SCANS)
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_extraction_matches_float32(lm_dir, ds, tmp_path, dtype, scan):
    s32, ref = _extract(lm_dir, ds, tmp_path / "f32", "float32", scan)
    s16, half = _extract(lm_dir, ds, tmp_path / dtype, dtype, scan)
    assert s16.runtime["dtype"] == dtype and s16.runtime["scan"] == scan
    # transformers' mambapy path crashes in half precision unless its float32 x half matmul is autocast
    assert s16.runtime["autocast"] == (dtype if scan == "mambapy" else None)
    a, b = ref["chunk_delta"].dropna(subset=["mean"]), half["chunk_delta"].dropna(subset=["mean"])
    assert len(a) == len(b) > 0
    for stat in DELTA_STATS:
        x, y = a[stat].to_numpy(), b[stat].to_numpy()
        assert np.isfinite(y).all()
        np.testing.assert_allclose(y, x, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype] * np.abs(x).mean(),
                                   err_msg=f"{dtype} {scan} {stat}")
    loss32, loss16 = ref["samples"]["target_loss"].to_numpy(), half["samples"]["target_loss"].to_numpy()
    np.testing.assert_allclose(loss16, loss32, rtol=TOLERANCE[dtype])
    assert half["chunk_lm"]["loss_gain"].notna().sum() == ref["chunk_lm"]["loss_gain"].notna().sum() > 0
    run = json.loads((tmp_path / dtype / "run.json").read_text())
    assert run["runtime"]["dtype"] == dtype and run["runtime"]["scan"] == scan
    merged = json.loads((tmp_path / dtype / "merged.json").read_text())
    assert [r["scan"] for r in merged["runtime"]] == [scan]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("scan", CPU_SCANS)
def test_capture_fires_on_every_cpu_path_and_equals_the_models_own_delta(lm_dir, ds, monkeypatch, dtype, scan):
    """The model's own Δ (softplus(dt + bias) as transformers' scan receives it) is what the hook captures."""
    import transformers.models.falcon_mamba.modeling_falcon_mamba as fm
    import transformers.models.mamba.modeling_mamba as mm

    lm, tok = ex.load_lm(str(lm_dir), dtype=dtype)
    choice = ld.set_scan(lm, scan)
    seen = []
    for mod in (fm, mm):
        def wrapped(hidden, dt, *args, _orig=mod.mamba_selective_scan, **kw):
            seen.append(torch.nn.functional.softplus(dt.float() + kw["delta_bias"].float()[..., None]).transpose(1, 2))
            return _orig(hidden, dt, *args, **kw)
        monkeypatch.setattr(mod, "mamba_selective_scan", wrapped)
    ids = tok(ds.samples["prompt"].iloc[0][:1500], return_tensors="pt")["input_ids"]
    with capture_delta(lm) as rec, torch.no_grad(), choice.context():
        lm.base_model(input_ids=ids, use_cache=False)
    assert len(seen) == len(rec.last()) == lm.config.num_hidden_layers
    # in half precision the model rounds dt @ W to bf16/fp16 before adding the bias; the hook recomputes in float32
    tol = {"float32": 1e-5, "bfloat16": 2e-2, "float16": 3e-3}[dtype]
    for own, captured in zip(seen, rec.last()):
        torch.testing.assert_close(captured, own, rtol=tol, atol=tol)


@pytest.mark.parametrize("scan", CPU_SCANS)
def test_batched_forward_equals_one_sequence_at_a_time(lm_dir, ds, scan):
    lm, tok = ex.load_lm(str(lm_dir))
    ld.set_scan(lm, scan)
    policy = LayoutPolicy(max_tokens=100_000)
    encs = [encode(tok, ds.sample(i), policy) for i in range(4)]
    encs.append(encode(tok, ds.sample(0), policy, drop=[0]))  # a leave-one-out variant: another length
    assert len({e.n_tokens for e in encs}) > 1  # padding is exercised
    alone = [fw.forward_batch(lm, [e], token_nll=True)[0] for e in encs]
    batched = fw.forward_all(lm, encs, batch_tokens=10**9, token_nll=True)
    assert len(fw.plan_batches([e.n_tokens for e in encs], 10**9)) == 1
    for a, b, e in zip(alone, batched, encs):
        assert b.target_loss == pytest.approx(a.target_loss, rel=1e-5, abs=1e-6)
        assert a.exact_match == b.exact_match
        np.testing.assert_allclose(b.token_nll, a.token_nll, rtol=1e-4, atol=1e-5)
        for la, lb in zip(a.stats, b.stats):
            for k in la:
                assert lb[k].shape == (e.n_tokens,)  # pad positions are cut off
                np.testing.assert_allclose(lb[k], la[k], rtol=1e-5, atol=1e-6)


def test_half_precision_target_metrics_and_filtering(lm_dir, ds):
    """The filtering curves and target metrics run in bf16 (the lm_head gets float32 hidden states otherwise)."""
    from deltalens.analysis.filtering import filtering_curves

    lm, tok = ex.load_lm(str(lm_dir), dtype="bfloat16")
    policy = LayoutPolicy(max_tokens=100_000)
    loss, exact = fw.target_metrics(lm, encode(tok, ds.sample(0), policy))
    assert np.isfinite(loss) and isinstance(exact, bool)
    sid = ds.samples["sample_id"].iloc[0]
    chunks = ds.chunks_of(sid)
    table = pd.DataFrame({"sample_id": sid, "chunk_index": chunks["chunk_index"],
                          "n_tokens:r": [len(tok(t)["input_ids"]) for t in chunks["text"]],
                          "relevant": (chunks["category"] == "relevant").astype(float)})
    curves = filtering_curves(lm, tok, ds, table, {"oracle": ("relevant", 1.0)}, "r", [sid], policy,
                              budgets=(0.0, 1.0), progress=False)
    full = curves.loc[curves["budget"] == 1.0, "loss"].item()
    assert full == pytest.approx(loss, rel=1e-2) and np.isfinite(curves["loss"]).all()


def test_scan_choice_and_dtype_resolution(lm_dir):
    lm, _ = ex.load_lm(str(lm_dir), dtype="half")
    assert next(lm.parameters()).dtype == torch.bfloat16  # half on the CPU: bfloat16
    c = ld.set_scan(lm, "auto")  # a small mixer on the CPU: the parallel scan, autocast in half precision
    assert (c.scan, c.autocast, c.device) == ("mambapy", "bfloat16", "cpu")
    assert ld.set_scan(lm, False).scan == "sequential" and ld.set_scan(lm, True).scan == "mambapy"
    assert all(m.use_mambapy for _, m in find_mixers(lm))
    with pytest.raises(ParameterError, match="cuda_kernels.*mamba_ssm"):
        ld.set_scan(lm, "cuda_kernels")
    with pytest.raises(ParameterError, match="scan"):
        ld.set_scan(lm, "fast")
    if not torch.cuda.is_available():
        with pytest.raises(ParameterError, match="no CUDA GPU"):
            ld.resolve_device("cuda")
    assert ld.resolve_dtype("half", "cpu") == torch.bfloat16 and ld.resolve_dtype("auto", "cpu") == "auto"


def test_plan_batches_and_auto_budget(lm_dir):
    assert fw.plan_batches([5, 9, 3, 9], 18) == [[1, 3], [0, 2]]  # longest first, rows x longest <= budget
    assert fw.plan_batches([50, 10], 20) == [[0], [1]]           # a sequence longer than the budget runs alone
    assert sorted(i for b in fw.plan_batches(list(range(1, 30)), 40) for i in b) == list(range(29))
    lm, _ = ex.load_lm(str(lm_dir))
    seq = fw.auto_batch_tokens(lm, ld.set_scan(lm, "sequential"), free_bytes=2**30)
    par = fw.auto_batch_tokens(lm, ld.set_scan(lm, "mambapy"), free_bytes=2**30)
    assert seq > par > 16  # the parallel scan keeps more per token


def test_time_estimate_warns_past_a_kaggle_session():
    hours, msg = ex.time_estimate(100.0, tokens_done=36_000, samples_done=10, samples_left=200)
    assert hours == pytest.approx(3600 * 200 / 100 / 3600) and "WARNING" not in msg
    hours, msg = ex.time_estimate(10.0, tokens_done=36_000, samples_done=10, samples_left=200)
    assert hours == pytest.approx(20.0) and "WARNING" in msg and "shard: 0/2" in msg
    # with forward counts: 10 samples without leave-one-out (20 forwards) done, 200 with 12 chunks each left
    hours, _ = ex.time_estimate(100.0, 36_000, 10, 200, forwards_done=20, forwards_left=200 * 14)
    assert hours == pytest.approx(36_000 / 20 * 2800 / 100 / 3600)


def test_extract_prints_the_estimate_and_records_sessions(lm_dir, ds, tmp_path, capsys):
    lm, tok = ex.load_lm(str(lm_dir))
    cfg = ex.ExtractConfig(out_dir=str(tmp_path / "d"), max_tokens=100_000, max_samples=3, batch_tokens=1)
    s = ex.extract(cfg, ds=ds, lm=lm, tokenizer=tok, progress=True)
    assert s.first_tokens_per_second > 0 and s.eta_hours >= 0
    printed = capsys.readouterr()
    assert "tokens/s on the first 1 samples" in printed.out + printed.err
    ex.extract(cfg, ds=ds, lm=lm, tokenizer=tok, progress=False)  # a resume is one more session
    lines = (tmp_path / "d/shard-0-of-1/sessions.jsonl").read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(x)["batch_tokens"] == 1 for x in lines)


def test_old_use_mambapy_parameter_gets_a_clear_message():
    with pytest.raises(ParameterError, match="use_mambapy.*replaced by scan"):
        ex.config_from_params({"use_mambapy": False})
    with pytest.raises(ParameterError, match="leave_one_out='false'.*true or false"):
        ex.ExtractConfig(leave_one_out="false").check()
    with pytest.raises(ParameterError, match="batch_tokens"):
        ex.ExtractConfig(batch_tokens=0).check()


def _bench_module(name: str):
    """A benchmark script of bench/ (not a package) imported as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, project_root() / f"bench/{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_scale_benchmark_tiny_runs_on_the_cpu(ds, ds_dir, tmp_path):
    bench = _bench_module("bench_gpu_scale")
    out = tmp_path / "gpu.json"
    r = bench.main(["--tiny", "--dataset", str(ds_dir), "--samples", "2", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["summary"] == json.loads(json.dumps(r["summary"]))
    steps = saved["steps"]
    assert {"sequential: batched", "mambapy: batched", "loo (auto path)", "extract() on the auto path",
            "whole dataset estimate", "float16 check"} <= set(steps)
    assert "cuda_kernels: skipped" in steps  # no kernels on the CPU: reported, not fatal
    for scan in CPU_SCANS:
        b = steps[f"{scan}: batched"]
        assert b["tokens_per_second_capture"] > 0 and b["capture_time_ratio"] > 0
        assert isinstance(steps["float16 check"][scan], dict) and np.isfinite(steps["float16 check"][scan]["target_loss"])
    assert steps["extract() on the auto path"]["runtime"]["scan"] == saved["auto_scan"]["scan"] == "mambapy"
    assert steps["whole dataset estimate"]["samples"] == len(ds)


def test_gpu_scale_benchmark_tiny_mamba2_shape(ds_dir, tmp_path):
    """--shape mamba-codestral-7b: the same benchmark on a Mamba-2 model (Δ per head, the chunked scan)."""
    bench = _bench_module("bench_gpu_scale")
    out = tmp_path / "gpu_m2.json"
    bench.main(["--tiny", "--shape", "mamba-codestral-7b", "--dataset", str(ds_dir), "--samples", "2", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["model"]["delta_granularity"] == "head" and saved["auto_scan"]["scan"] == "chunked"
    b = saved["steps"]["chunked: batched"]
    assert b["tokens_per_second_capture"] > 0 and b["capture_time_ratio"] > 0
    assert np.isfinite(saved["steps"]["float16 check"]["chunked"]["target_loss"])


def test_cpu_scan_benchmark_runs_and_both_paths_give_the_same_statistics(ds, ds_dir, tmp_path):
    """bench/bench_cpu_scan.py on a tiny Mamba: a row per scan x batch size, extract() timed per batch size, and the
    two scan paths' chunk statistics equal (the path changes speed, never Δ)."""
    lm_dir = save_tiny_lm(tmp_path / "lm", list(ds.chunks["text"][:150]), "mamba")
    bench = _bench_module("bench_cpu_scan")
    out = tmp_path / "cpu_scan.json"
    r = bench.main(["--model", str(lm_dir), "--dataset", str(ds_dir), "--samples", "4", "--repeats", "1",
                    "--threads", "1", "--batch-tokens", "512,auto", "--extract-samples", "2", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["samples"] == 4 and saved["tokens"] > 0
    assert {(row["scan"], row["batch_tokens"]) for row in saved["rows"]} == {
        (s, b) for s in ("sequential", "mambapy") for b in ("512", "auto")}
    assert all(row["tokens_per_second"] > 0 for row in saved["rows"])
    assert all(row["speedup_vs_sequential"] == 1.0 for row in saved["rows"] if row["scan"] == "sequential")
    assert [row["batch_tokens"] for row in saved["extract"]] == ["512", "auto"]
    assert all(row["seconds"] > 0 for row in saved["extract"])
    assert saved["max_relative_stat_difference"] < 1e-4 and r["max_relative_stat_difference"] == saved["max_relative_stat_difference"]
