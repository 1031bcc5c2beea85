"""The hybrid (transformers ``BambaForCausalLM``: Mamba-2 layers + attention) and attention-only (``LlamaForCausalLM``)
code LMs: parameter checks that name the key, a tiny model of each trained through the real trainer with the copying
curriculum, saved, reloaded, Δ captured on the hybrid's Mamba-2 layers only; the SSM's A_log, D and dt_bias never
weight-decayed in any family; the copy diagnostics' gradient check on every training path."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from deltalens.codelm.params import load_params
from deltalens.core.params import ParameterError
from deltalens.delta.capture import capture_delta

SMOKE = "params/codelm/smoke.yaml"
ROOT = Path(__file__).resolve().parent.parent
TINY_HYBRID = {"model.arch": "hybrid", "model.head_dim": 16, "model.chunk_size": 16, "model.attn_layers": [1],
               "model.n_attention_heads": 2, "model.intermediate_size": 64, "train.max_steps": 2,
               "train.eval_every": 2}
TINY_ATTENTION = {"model.arch": "attention", "model.n_attention_heads": 2, "model.intermediate_size": 64,
                  "model.d_state": 16, "train.max_steps": 2, "train.eval_every": 2}
PACKAGES = ["json", "email", "logging", "http", "urllib", "concurrent"]
CONTEXT = {"context.share": 0.5, "context.stdlib_packages": PACKAGES, "context.installed": ["tenacity"],
           "context.eval_samples": 2, "context.held_out_fraction": 0.5, "context.loss": "query",
           "context.build": {"samples_per_project": 2, "n_chunks": 6, "chunk_chars": 300, "prefix_chars": 300},
           "curriculum.renamed": [1.0, 0.5], "curriculum.spans": [0.3, 0.1], "curriculum.pairs": [0.1, 0.0],
           "train.seq_len": 256}


@pytest.mark.parametrize("override, match", [
    ({"model.arch": "hybrid", "model.head_dim": 16}, r"attn_layers=None"),
    ({"model.arch": "hybrid", "model.head_dim": 16, "model.attn_layers": [0, 1]}, r"fewer than n_layers"),
    ({"model.arch": "hybrid", "model.head_dim": 16, "model.attn_layers": [5]}, r"layer indices in 0..1"),
    ({"model.attn_layers": [1]}, r"attn_layers=\[1\] is an attention parameter"),
    ({"model.arch": "attention", "model.n_attention_heads": 3}, r"n_attention_heads=3 does not divide d_model=32"),
    ({"model.arch": "attention", "model.head_dim": 16}, r"head_dim=16 is a Mamba-2 parameter"),
    ({"curriculum.spans": [0.9, 0.0], "curriculum.pairs": [0.2, 0.0]}, r"spans \+ pairs"),
])
def test_bad_parameters_name_the_key_and_the_file(override, match):
    with pytest.raises(ParameterError, match=match) as e:
        load_params(SMOKE, override)
    assert str(e.value).startswith(str(ROOT / SMOKE) + ": ")


def test_keys_of_models_without_the_new_sections_are_unchanged():
    """A Mamba-1 / Mamba-2 model without a curriculum has no curriculum or attention key in its parameters (so
    every checkpoint trained before them is reused); the attention model's key has no SSM parameter."""
    for override in ({}, {"model.arch": "mamba2", "model.head_dim": 16}):
        c = load_params(SMOKE, override).content_params()
        assert "curriculum" not in c and not {"attn_layers", "n_attention_heads", "intermediate_size"} & set(c["model"])
    a = load_params(SMOKE, TINY_ATTENTION).content_params()["model"]
    assert a["arch"] == "attention" and not {"d_state", "expand", "d_conv", "head_dim", "dt_rank"} & set(a)
    h = load_params(SMOKE, {**TINY_HYBRID, **CONTEXT}).content_params()
    assert h["model"]["attn_layers"] == [1] and h["curriculum"]["renamed"] == [1.0, 0.5]


@pytest.mark.parametrize("override, architecture", [(TINY_HYBRID, "BambaForCausalLM"),
                                                    (TINY_ATTENTION, "LlamaForCausalLM")])
def test_tiny_family_trains_with_the_curriculum_saves_and_reloads(tmp_path, override, architecture):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from deltalens.codelm import train_code_lm

    params = load_params(SMOKE, {**override, **CONTEXT, "train.max_steps": 3})
    train_code_lm(params, out=tmp_path / "m", progress=False)
    meta = json.loads((tmp_path / "m/training.json").read_text())
    assert meta["model"]["architecture"] == architecture and meta["train"]["steps"] == 3
    assert meta["model"]["conversion_max_abs_logit_diff"] == 0.0 and meta["model"]["reload_max_abs_logit_diff"] <= 1e-4
    drawn = meta["curriculum"]["drawn"]
    assert sum(drawn.values()) == 3 * params.train.batch_size and set(drawn) <= {"renamed", "prompt", "span",
                                                                                  "pairs", "plain"}
    assert meta["context"]["held_out_gain"]["samples"] == 2
    assert train_code_lm(params, out=tmp_path / "m", progress=False).reused
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "m").eval()
    tok = AutoTokenizer.from_pretrained(tmp_path / "m")
    assert type(model).__name__ == architecture
    ids = tok("def f(x):\n    return x + 1\n", return_tensors="pt")["input_ids"]
    if architecture == "BambaForCausalLM":  # Δ from the Mamba-2 layers only (layer 1 attends)
        with torch.no_grad(), capture_delta(model) as delta:
            logits = model(ids).logits
        assert torch.isfinite(logits).all() and delta.layer_ids == [0] and delta.granularity == ["head"]
        assert delta.stacked().shape == (1, 1, ids.shape[1], 4)
    else:
        with pytest.raises(ValueError, match="has no Mamba mixer of a supported family"):
            with capture_delta(model):
                pass


@pytest.mark.parametrize("arch", ["mamba1", "mamba2", "hybrid", "attention"])
def test_ssm_decay_skip_and_step_bias_are_never_weight_decayed(arch):
    sys.path.insert(0, str(ROOT / "bench"))
    from bench_copy_diagnostics import build, family_config

    from deltalens.codelm.train import param_groups

    model = build(arch, family_config(arch, 32, 2, tiny=True), 64, seed=0)
    decayed = {id(p) for p in param_groups(model, 0.1)[0]["params"]}
    names = [n for n, p in model.named_parameters() if id(p) in decayed]
    assert names and not [n for n in names if n.rsplit(".", 1)[-1] in ("A_log", "D", "dt_bias")]
    assert all(p.dim() >= 2 for n, p in model.named_parameters() if id(p) in decayed)
    if arch != "attention":
        assert any(n.endswith("A_log") for n, _ in model.named_parameters())


@pytest.mark.parametrize("arch", ["mamba1", "mamba2", "hybrid", "attention"])
def test_the_loss_on_a_repeat_reaches_the_first_occurrence_on_every_training_path(arch):
    sys.path.insert(0, str(ROOT / "bench"))
    from bench_copy_diagnostics import build, family_config

    from deltalens.codelm.diagnostics import copy_sequences, first_occurrence_gradient

    model = build(arch, family_config(arch, 32, 2, tiny=True), 64, seed=0)
    stream = torch.randint(0, 64, (4000,), generator=torch.Generator().manual_seed(0))
    seq, first, repeat = copy_sequences(stream, 8, 40, 1, seed=0)[0]
    assert torch.equal(seq[first:first + 8], seq[repeat:repeat + 8]) and repeat - first == 48
    g = first_occurrence_gradient(model, seq, first, repeat, 8)
    assert g["first_occurrence"] > 0 and g["before"] > 0 and g["loss"] > 0
    # and nothing after the repeat's inputs can receive gradient (causality): the last target is not an input
    assert model.training  # train mode restored


def test_a_data_bundle_trains_the_same_model_as_building_the_data_here(tmp_path):
    """``bundle`` writes the corpus and the training prompts; training from it gives the same key and the same
    weights as training from scratch on this machine; a bundle for other parameters is refused."""
    from safetensors.torch import load_file

    from deltalens.codelm import train_code_lm
    from deltalens.codelm.__main__ import main
    from deltalens.codelm.bundle import read_bundle

    over = {**TINY_HYBRID, **CONTEXT, "train.max_steps": 2}
    params = load_params(SMOKE, over)
    sets = [f"--set={k}={json.dumps(v)}" for k, v in over.items()]
    assert main(["bundle", "-p", SMOKE, "--out", str(tmp_path / "b"), *sets]) == 0
    assert {p.name for p in (tmp_path / "b").iterdir()} == {"bundle.json", "corpus.parquet", "corpus_manifest.json",
                                                            "contexts"}
    direct = train_code_lm(params, out=tmp_path / "direct", progress=False)
    bundled = train_code_lm(params, out=tmp_path / "bundled", progress=False, bundle=tmp_path / "b")
    assert direct.summary["key"] == bundled.summary["key"]
    a, b = load_file(tmp_path / "direct/model.safetensors"), load_file(tmp_path / "bundled/model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert direct.summary["curriculum"] == bundled.summary["curriculum"]
    other = load_params(SMOKE, {**over, "seed": 1})
    with pytest.raises(ParameterError, match="built for other parameters \\(seed differ"):
        read_bundle(other, tmp_path / "b")
    with pytest.raises(ParameterError, match="not a code-LM data bundle"):
        main_out = tmp_path / "direct"  # a model folder, never overwritten by a bundle
        from deltalens.codelm.bundle import write_bundle

        write_bundle(params, main_out)
    assert (tmp_path / "direct/model.safetensors").is_file()


def test_the_training_device_is_checked_before_any_work(monkeypatch):
    params = load_params(SMOKE, {"train.device": "auto"})
    assert params.train.resolved_device() == ("cuda" if torch.cuda.is_available() else "cpu")
    assert "device" in params.content_params()["train"]  # a non-CPU request is part of the key
    assert "device" not in load_params(SMOKE).content_params()["train"]  # cpu: the key it had before
    with pytest.raises(ParameterError, match="device='gpu' is not allowed"):
        load_params(SMOKE, {"train.device": "gpu"})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ParameterError, match="torch sees no CUDA device"):
        load_params(SMOKE, {"train.device": "cuda"}).train.resolved_device()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (the lent GPU machine)")
def test_tiny_hybrid_trains_on_cuda_and_saves_a_cpu_model(tmp_path):
    from deltalens.codelm import train_code_lm

    res = train_code_lm(load_params(SMOKE, {**TINY_HYBRID, "train.device": "cuda"}), out=tmp_path / "m",
                        progress=False)
    assert res.summary["train"]["device"] == "cuda" and res.summary["model"]["reload_max_abs_logit_diff"] <= 1e-4


def test_the_copy_diagnostics_bench_runs_every_family_on_the_same_batches(tmp_path):
    """bench/bench_copy_diagnostics.py --cpu-tiny: a row per family with its gradient check (> 0 into the first
    occurrence), the same drawn sequence kinds for every family, a copy curve per (span, distance) and the
    instrument check of the attention model."""
    sys.path.insert(0, str(ROOT / "bench"))
    import bench_copy_diagnostics as bench

    out = tmp_path / "diag.json"
    res = bench.main(["--cpu-tiny", "--threads", "1", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(res))
    fams = res["families"]
    assert set(fams) == {"mamba1", "mamba2", "hybrid", "attention"}
    assert len({json.dumps(f["drawn"], sort_keys=True) for f in fams.values()}) == 1  # the same batches
    for f in fams.values():
        assert f["gradient_at_init"]["first_occurrence"] > 0 and f["steps"] == 6 and f["seconds_per_step"] > 0
        assert sorted((p["source"], p["span"], p["distance"]) for p in f["copy_after"]) == [
            ("code", 8, 16), ("code", 16, 16), ("random", 8, 16), ("random", 16, 16)]
        assert all(p["gap_lo"] <= p["gap"] <= p["gap_hi"] for p in f["copy_after"])
        assert f["drawn"].get("random_span", 0) > 0 and f["drawn"].get("span", 0) > 0
    assert set(res["instrument_check"]) == {"attention_best_gap", "attention_best_code_gap", "copies"}


def test_the_induction_steps_bench_trains_every_family_on_the_same_batches(tmp_path):
    """bench/bench_induction_steps.py --tiny: one repeat-loss curve per family, logged at the same steps, from
    the same batches (so the first logged losses, before any update, are all near chance)."""
    sys.path.insert(0, str(ROOT / "bench"))
    import bench_induction_steps as bench

    out = tmp_path / "induction.json"
    res = bench.main(["--tiny", "--threads", "1", "--families", "attention,hybrid,mamba2", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(res))
    assert set(res["families"]) == {"attention", "hybrid", "mamba2"}
    for f in res["families"].values():
        assert [r["step"] for r in f["curve"]] == [0, 2, 4] and f["seconds_per_step"] > 0
        assert abs(f["curve"][0]["repeat_loss"] - res["chance"]) < 1.0  # untrained: about ln(V - 2)
    x = bench.batch(torch.Generator().manual_seed(0), 3, 48, 64, 4, 8)
    assert torch.equal(x[:, -8:], x[:, 4:12]) and int(x.min()) >= 2  # the repeat, never a special id
    x = bench.batch(torch.Generator().manual_seed(0), 40, 48, 20, None, 8)  # random first positions, ids 2..19
    sources = {next(f for f in range(48 - 16 + 1) if torch.equal(row[f:f + 8], row[-8:])) for row in x}
    assert len(sources) > 5 and int(x.min()) >= 2 and int(x.max()) < 20
    res = bench.main(["--tiny", "--threads", "1", "--families", "attention", "--random-first", "--token-vocab", "12",
                      "--out", str(out)])
    assert res["chance"] == pytest.approx(math.log(10)) and res["args"]["random_first"]


def test_the_induction_steps_bench_mimetic_init_and_official_decay_groups(tmp_path):
    sys.path.insert(0, str(ROOT / "bench"))
    import bench_induction_steps as bench

    res = bench.main(["--tiny", "--threads", "1", "--families", "mamba2,attention", "--init", "mimetic",
                      "--decay", "official", "--out", str(tmp_path / "m.json")])
    assert res["families"]["mamba2"]["mimetic_mixers"] == res["args"]["layers"] == 2
    assert res["families"]["attention"]["mimetic_mixers"] == 0       # no Mamba-2 mixer: left alone
    res = bench.main(["--tiny", "--threads", "1", "--families", "mamba1", "--init", "mimetic", "--decay", "official",
                      "--d-state", "4", "--out", str(tmp_path / "m1.json")])
    m1 = res["families"]["mamba1"]                                     # the mambapy Mamba-1 LM, 2 mimetic mixers
    assert m1["mimetic_mixers"] == 2 and [r["step"] for r in m1["curve"]] == [0, 2, 4]
    assert abs(m1["curve"][0]["repeat_loss"] - res["chance"]) < 1.0
    model = bench.build("mamba1", 64, 32, 2, [], 0, d_state=4)
    assert {n.rsplit(".", 1)[-1] for p in bench.param_groups(model, "official")[1]["params"]
            for n, q in model.named_parameters() if q is p} == {"A_log", "D"}   # mambapy: no dt_bias parameter
    model = bench.build("mamba2", 64, 32, 2, [], 0)
    groups = bench.param_groups(model, "official")
    no_decay = {id(p) for p in groups[1]["params"]}
    names = {n.rsplit(".", 1)[-1] for n, p in model.named_parameters() if id(p) in no_decay}
    assert names == {"A_log", "D", "dt_bias"} and groups[1]["weight_decay"] == 0.0 and groups[0]["weight_decay"] == 0.1
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    assert len(bench.param_groups(model, "all")) == 1


def test_the_gpu_training_script_parses():
    import subprocess

    subprocess.run(["bash", "-n", str(ROOT / "bench/gpu_train_codelm.sh")], check=True)


def test_the_lm_runtime_runs_an_attention_only_lm_without_delta():
    """No SSM mixer: scan 'auto' resolves to 'none', any other scan is refused by name, the model facts say there
    is nothing to capture, and a forward without capture gives the target-line loss."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from deltalens.lm import forward as fw
    from deltalens.lm import loading as ld
    from deltalens.lm.prompts import Encoded

    torch.manual_seed(0)
    lm = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=2, num_key_value_heads=2)).eval()
    with pytest.raises(ParameterError, match="scan='sequential': LlamaForCausalLM has no Mamba mixer"):
        ld.set_scan(lm, "sequential")
    assert ld.set_scan(lm, "auto").scan == "none"
    facts = ld.model_facts(lm)
    assert facts["n_layers"] == 0 and facts["mixer_family"] is None and facts["d_inner"] == 32
    enc = Encoded(torch.randint(0, 64, (1, 20)), [(0, 10)], (15, 20), 20)
    (res,) = fw.forward_all(lm, [enc], capture=False)
    with torch.no_grad():
        logits = lm(enc.input_ids).logits[0]
    expected = torch.nn.functional.cross_entropy(logits[14:19], enc.input_ids[0, 15:20])
    assert res.target_loss == pytest.approx(float(expected), rel=1e-5)
