"""The Mamba-2 twin of the code LM (``model.arch: mamba2``): parameter checks that name the key and the file, a tiny
transformers ``Mamba2ForCausalLM`` trained through the real trainer (plain, then continued on the context mixture),
saved and reloaded with Δ per head; the Mamba-1 reuse key unchanged by the new option; no import cycle in codelm."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from deltalens.codelm.params import CodeLMParams, load_params
from deltalens.core.params import ParameterError
from deltalens.delta.capture import capture_delta

SMOKE = "params/codelm/smoke.yaml"
ROOT = Path(__file__).resolve().parent.parent
TINY_M2 = {"model.arch": "mamba2", "model.head_dim": 16, "model.chunk_size": 16, "train.max_steps": 2,
           "train.eval_every": 2}


# ---- parameters ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("override, match", [
    ({"model.arch": "mamba3"}, r"arch='mamba3'.*allowed: mamba1, mamba2"),
    ({"model.head_dim": 16}, r"head_dim=16 is a Mamba-2 parameter"),           # arch defaults to mamba1
    ({"model.arch": "mamba2", "model.dt_rank": 4}, r"dt_rank=4 is a Mamba-1 parameter"),
    ({"model.arch": "mamba2", "model.head_dim": 24}, r"head_dim=24 does not divide"),  # d_model 32 x expand 2
    ({"model.arch": "mamba2", "model.head_dim": 16, "model.n_groups": 3}, r"n_groups=3 does not divide"),
    ({"model.arch": "mamba2", "model.chunk_size": 0}, r"chunk_size=0 is too small"),
])
def test_bad_model_parameters_name_the_key_and_the_file(override, match):
    with pytest.raises(ParameterError, match=match) as e:
        load_params(SMOKE, override)
    assert str(e.value).startswith(str(ROOT / SMOKE) + ": model: ")


def test_a_bad_arch_in_a_params_file_names_the_file(tmp_path):
    f = tmp_path / "m.yaml"
    f.write_text("codelm:\n  model:\n    arch: transformer\n")
    with pytest.raises(ParameterError, match=rf"{f}: model: parameter arch='transformer'"):
        load_params(f)


def test_the_shipped_mamba2_params_are_valid_and_continue_each_other():
    plain, m2 = load_params("params/codelm/mamba2-plain.yaml"), load_params("params/codelm/mamba2.yaml")
    assert plain.model == m2.model and plain.model.arch == "mamba2" and plain.model.n_heads == 8
    assert m2.init_from == plain.out and not plain.context.enabled and m2.context.enabled
    # the recipe of the Mamba-1 pair: every section but the model (and the output, and the CPU threads) is the same
    for a, b in ((plain, load_params("params/codelm/plain.yaml")), (m2, load_params("params/codelm/default.yaml"))):
        ca, cb = a.content_params(), b.content_params()
        for c in (ca, cb):
            c.pop("model"), c.pop("init_from", None), c["train"].pop("threads")
        assert ca == cb


# ---- the reuse key ---------------------------------------------------------------------------------------------------
# params/codelm/plain.yaml as it was when model.arch was added; its key was computed before the change
MAMBA1 = {
    "seed": 0,
    "corpus": {"stdlib": True, "distributions": [], "exclude_dataset_params": "params/dataset/default.yaml",
               "exclude_distributions": [],
               "exclude_dirs": ["test", "tests", "idlelib", "turtledemo", "site-packages", "dist-packages",
                                "__pycache__", "_vendor", "vendored", "_vendored"],
               "max_file_bytes": 300000, "max_chars": 20000000, "held_out_fraction": 0.02},
    "tokenizer": {"vocab_size": 8192, "min_frequency": 2, "special_tokens": ["<|endoftext|>", "<|pad|>"],
                  "max_token_length": 24},
    "model": {"d_model": 256, "n_layers": 4, "d_state": 16, "expand": 2, "d_conv": 4, "dt_rank": "auto",
              "tie_embeddings": True, "rms_norm_eps": 1.0e-5, "init_std": 0.02},
    "train": {"seq_len": 512, "batch_size": 4, "micro_batch_size": 1, "lr": 2.0e-3, "min_lr_ratio": 0.1,
              "warmup_steps": 50, "weight_decay": 0.1, "betas": [0.9, 0.95], "grad_clip": 1.0, "max_steps": 300,
              "max_minutes": 14.0, "eval_every": 100, "eval_tokens": 16384, "eval_batch_size": 1, "threads": 2},
}
MAMBA1_KEY = "8f86d71eda03134d"  # CodeLMParams.from_dict(MAMBA1).key("fixed-corpus-sha") before model.arch existed


def test_the_mamba1_key_is_the_one_it_had_before_arch_existed():
    p = CodeLMParams.from_dict(MAMBA1)
    assert p.key("fixed-corpus-sha") == MAMBA1_KEY
    explicit = json.loads(json.dumps(MAMBA1))
    explicit["model"]["arch"] = "mamba1"
    assert CodeLMParams.from_dict(explicit).key("fixed-corpus-sha") == MAMBA1_KEY
    assert set(p.content_params()["model"]) == set(MAMBA1["model"])  # no arch, no Mamba-2 parameters
    m2 = json.loads(json.dumps(MAMBA1))
    m2["model"] = {**{k: v for k, v in m2["model"].items() if k != "dt_rank"}, "arch": "mamba2"}
    q = CodeLMParams.from_dict(m2)
    assert q.key("fixed-corpus-sha") != MAMBA1_KEY
    assert q.content_params()["model"]["arch"] == "mamba2" and "dt_rank" not in q.content_params()["model"]
    assert q.content_params()["model"]["head_dim"] == 64  # the defaults are part of the key


# ---- training end to end ---------------------------------------------------------------------------------------------
def test_tiny_mamba2_trains_saves_reloads_and_continues(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer, Mamba2ForCausalLM

    from deltalens.codelm import train_code_lm

    params = load_params(SMOKE, TINY_M2)
    out = tmp_path / "m2-plain"
    first = train_code_lm(params, out=out, progress=False)
    meta = json.loads((out / "training.json").read_text())
    assert not first.reused and meta["train"]["steps"] == 2 and meta["model"]["architecture"] == "Mamba2ForCausalLM"
    assert meta["model"]["conversion_max_abs_logit_diff"] == 0.0 and meta["model"]["reload_max_abs_logit_diff"] <= 1e-4
    assert meta["params"]["model"]["arch"] == "mamba2" and meta["held_out"]["loss"] > 0

    model = AutoModelForCausalLM.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    assert isinstance(model, Mamba2ForCausalLM) and model.config.num_heads == 4
    assert model.config.eos_token_id == tok.convert_tokens_to_ids("<|endoftext|>")
    assert model.lm_head.weight is model.backbone.embeddings.weight  # tied, as the Mamba-1 code LM
    ids = tok("def f(x):\n    return x + 1\n", return_tensors="pt")["input_ids"]
    with torch.no_grad(), capture_delta(model) as delta:
        logits = model(ids).logits
    assert torch.isfinite(logits).all() and delta.granularity == ["head", "head"]
    assert delta.stacked().shape == (2, 1, ids.shape[1], 4)  # (layers, batch, tokens, heads)

    assert train_code_lm(params, out=out, progress=False).reused  # identical parameters and corpus: reused

    # the second stage: init_from the first, on the context mixture (the held-out context gain runs on Mamba-2)
    packages = ["json", "email", "logging", "http", "urllib", "concurrent"]
    ctx = load_params(SMOKE, {**TINY_M2, "init_from": str(out), "train.max_steps": 1, "train.seq_len": 256,
                              "context.share": 0.5, "context.stdlib_packages": packages,
                              "context.installed": ["tenacity"], "context.eval_samples": 2,
                              "context.held_out_fraction": 0.5,
                              "context.build": {"samples_per_project": 2, "n_chunks": 6, "chunk_chars": 300,
                                                "prefix_chars": 300}})
    cont = train_code_lm(ctx, out=tmp_path / "m2", progress=False)
    cmeta = cont.summary
    assert cmeta["init_from"]["key"] == meta["key"] and cmeta["model"]["architecture"] == "Mamba2ForCausalLM"
    assert cmeta["context"]["held_out_gain"]["samples"] == 2 and cmeta["trained_length"] == 256
    assert (tmp_path / "m2/tokenizer.json").read_text() == (out / "tokenizer.json").read_text()  # the same tokenizer


def test_continuing_needs_a_mamba2_model_of_the_same_shape(tmp_path):
    from transformers import MambaConfig, MambaForCausalLM

    from deltalens.codelm.mamba2 import build_mamba2_lm, load_mamba2_weights

    cfg = load_params(SMOKE, TINY_M2).model
    lm = build_mamba2_lm(cfg, 64, seed=0)
    with pytest.raises(ParameterError, match="init_from names a MambaForCausalLM"):
        load_mamba2_weights(lm, MambaForCausalLM(MambaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2)))
    other = build_mamba2_lm(load_params(SMOKE, {**TINY_M2, "model.d_state": 4}).model, 64, seed=0)
    with pytest.raises(ParameterError, match="same model parameters"):
        load_mamba2_weights(lm, other.hf)
    same = build_mamba2_lm(cfg, 64, seed=1)
    load_mamba2_weights(lm, same.hf)
    assert all(torch.equal(a, b) for a, b in zip(lm.hf.state_dict().values(), same.hf.state_dict().values()))


# ---- no import cycle -------------------------------------------------------------------------------------------------
def test_codelm_has_no_import_cycle():
    """Static import graph of deltalens.codelm (every import, TYPE_CHECKING and function-level ones included): acyclic;
    ``params`` assembles the sections and never imports ``train``, which imports ``params``."""
    from deltalens.tools.deps import imported_modules, module_file

    pkg = ROOT / "lib/deltalens/codelm"
    graph = {}
    for f in pkg.glob("*.py"):
        name = "deltalens.codelm" if f.name == "__init__.py" else f"deltalens.codelm.{f.stem}"
        deps = imported_modules(f.read_text(), name, is_package=f.name == "__init__.py")
        graph[name] = {d for d in deps if d.startswith("deltalens.codelm.") and module_file(d) is not None}
    assert "deltalens.codelm.train" not in graph["deltalens.codelm.params"]
    assert "deltalens.codelm.train_config" in graph["deltalens.codelm.params"]

    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                raise AssertionError(f"import cycle: {' -> '.join(path + [node, nxt])}")
            if nxt not in state:
                visit(nxt, path + [node])
        state[node] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [])
    # and each module imports on its own in a fresh interpreter (a cycle shows as a partially initialised module)
    for mod in ("deltalens.codelm.train", "deltalens.codelm.params", "deltalens.codelm.mamba2"):
        subprocess.run([sys.executable, "-c", f"import {mod}"], check=True, cwd=ROOT, capture_output=True)
