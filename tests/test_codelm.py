"""The local code LM: leak-free deterministic corpus, BPE tokenizer with offsets, exact mambapy -> transformers
conversion (logits and Δ), a tiny end-to-end training run with reuse, and parameter errors."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from deltalens.codelm import (
    CodeLMConfig,
    CorpusConfig,
    TokenizerConfig,
    build_corpus,
    build_lm,
    load_params,
    to_transformers,
    train_code_lm,
    train_tokenizer,
)
from deltalens.codelm.__main__ import main as cli
from deltalens.codelm.corpus import ExclusionSet, dataset_distributions, normalise_name
from deltalens.core.params import ParameterError
from deltalens.delta.capture import capture_delta

SMOKE = "params/codelm/smoke.yaml"


@pytest.fixture(scope="module")
def small_corpus():
    return build_corpus(CorpusConfig(max_chars=150_000, held_out_fraction=0.05))


@pytest.fixture(scope="module")
def small_tokenizer(small_corpus):
    return train_tokenizer(small_corpus.texts("train"), TokenizerConfig(vocab_size=400))


# ---- corpus ----------------------------------------------------------------------------------------------------------
def test_corpus_is_deterministic_and_leaves_out_tests_and_dataset_projects(small_corpus):
    again = build_corpus(CorpusConfig(max_chars=150_000, held_out_fraction=0.05))
    assert again.manifest == small_corpus.manifest
    m = small_corpus.manifest
    excluded = {normalise_name(n) for n in dataset_distributions("params/dataset/default.yaml")}
    assert excluded and set(m["excluded_distributions"]) == excluded
    assert {"click", "jinja2", "requests"} <= excluded  # names are normalised (Jinja2 -> jinja2)
    paths = [f["path"] for f in m["files"]]
    assert paths == sorted(paths) and all(p.startswith("stdlib/") for p in paths)
    assert not any({"test", "tests", "idlelib", "site-packages"} & set(p.split("/")[:-1]) for p in paths)
    assert 0 < m["counts"]["chars"] <= 150_000 and m["counts"]["held_out_files"] >= 1
    assert m["counts"]["train_files"] + m["counts"]["held_out_files"] == len(small_corpus.files)
    assert all(len(f["sha256"]) == 64 for f in m["files"]) and m["python"]["version"]
    assert any(s["reason"].startswith("over the character budget") for s in m["skipped"])
    # the split depends on the path only: a larger budget keeps every split decision
    bigger = {f.path: f.split for f in build_corpus(CorpusConfig(max_chars=400_000, held_out_fraction=0.05)).files}
    assert all(bigger[f.path] == f.split for f in small_corpus.files if f.path in bigger)


def test_dataset_distributions_cannot_enter_the_corpus(tmp_path):
    with pytest.raises(ParameterError, match="distributions.*jinja2"):
        build_corpus(CorpusConfig(distributions=("JINJA2",)))  # case-insensitive match against the dataset list
    ex = ExclusionSet.build(["Click"])
    import importlib.metadata as md

    dist = md.distribution("click")
    f = next(Path(dist.locate_file(p)) for p in dist.files if str(p).endswith("core.py"))
    digest = __import__("hashlib").sha256(f.read_bytes()).hexdigest()
    assert "belongs to excluded distribution click" in ex.reason(f, digest, f.stat().st_size)
    copy = tmp_path / "vendored_core.py"  # a vendored copy elsewhere is caught by its bytes
    shutil.copy(f, copy)
    assert "same bytes" in ex.reason(copy, digest, copy.stat().st_size)


# ---- tokenizer -------------------------------------------------------------------------------------------------------
def test_tokenizer_round_trips_and_gives_offsets(small_corpus, small_tokenizer, tmp_path):
    tok = small_tokenizer
    again = train_tokenizer(small_corpus.texts("train"), TokenizerConfig(vocab_size=400))
    assert again.get_vocab() == tok.get_vocab()  # deterministic
    texts = small_corpus.texts("held_out")[:2] + ["def f(x: int) -> str:\n\treturn 'é ✓'  # ünïcode\r\n"]
    for text in texts:
        ids = tok(text)["input_ids"]
        assert tok.decode(ids) == text
    text = "class A:\n    def run(self, n=3):\n        return [i * 2 for i in range(n)]\n"
    enc = tok(text, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    assert len(offsets) == len(enc["input_ids"]) and offsets[0][0] == 0 and offsets[-1][1] == len(text)
    assert "".join(text[s:e] for s, e in offsets) == text  # ASCII: spans tile the text
    tok.save_pretrained(tmp_path)
    from transformers import AutoTokenizer

    loaded = AutoTokenizer.from_pretrained(tmp_path)
    enc2 = loaded(text, return_offsets_mapping=True)
    assert enc2["input_ids"] == enc["input_ids"]
    assert [tuple(o) for o in enc2["offset_mapping"]] == [tuple(o) for o in offsets]
    assert loaded.eos_token == "<|endoftext|>" and loaded.pad_token == "<|pad|>"


# ---- conversion ------------------------------------------------------------------------------------------------------
def _randomise(model: torch.nn.Module, seed: int) -> None:
    """Move every parameter off its initial value (norm weights, D, A_log, biases...) so each one matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g) * (p.abs().mean() + 0.1))


@pytest.mark.parametrize("tie, use_mambapy", [(True, False), (False, True)])
def test_conversion_gives_the_same_logits_and_delta(tie, use_mambapy):
    torch.manual_seed(0)
    cfg = CodeLMConfig(d_model=32, n_layers=2, d_state=8, expand=2, d_conv=3, tie_embeddings=tie, rms_norm_eps=1e-3)
    lm = build_lm(cfg, vocab_size=300, seed=1)
    _randomise(lm, seed=2)
    lm.eval()
    hf = to_transformers(lm, use_mambapy=use_mambapy, eos_token_id=0, pad_token_id=1)
    assert hf.config.layer_norm_epsilon == 1e-3 and hf.config.time_step_rank == 2 and hf.config.conv_kernel == 3
    assert hf.config.tie_word_embeddings is tie and not hf.training
    tokens = torch.randint(0, 300, (2, 45))
    with torch.no_grad(), capture_delta(lm) as d_lm:
        ref = lm(tokens)
    with torch.no_grad(), capture_delta(hf) as d_hf:
        out = hf(tokens, use_cache=False).logits
    assert out.dtype == torch.float32 and out.shape == ref.shape
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    delta_lm, delta_hf = d_lm.stacked(), d_hf.stacked()
    assert delta_lm.shape == (2, 2, 45, 64)
    torch.testing.assert_close(delta_hf, delta_lm, atol=1e-5, rtol=1e-5)
    assert delta_lm.std() > 0  # Δ varies over tokens and channels: the comparison is not trivial


def test_conversion_refuses_inner_layernorms():
    from mambapy.mamba import MambaBlock

    lm = build_lm(CodeLMConfig(d_model=16, n_layers=1, d_state=4), vocab_size=50, seed=0)
    cfg = lm.mamba.config
    cfg.inner_layernorms = True
    lm.mamba.layers[0].mixer = MambaBlock(cfg)
    with pytest.raises(ValueError, match="inner_layernorms"):
        to_transformers(lm)


def test_micro_batches_accumulate_the_full_batch_gradient():
    from deltalens.codelm.train import accumulate_gradients

    lm = build_lm(CodeLMConfig(d_model=16, n_layers=1, d_state=4), vocab_size=60, seed=0)
    batch = torch.randint(0, 60, (4, 17))
    grads = []
    for micro in (4, 1):
        lm.zero_grad()
        loss = accumulate_gradients(lm, batch, micro)
        grads.append((loss, [p.grad.clone() for p in lm.parameters()]))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    for a, b in zip(grads[0][1], grads[1][1]):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)


def test_held_out_windows_are_fixed_and_disjoint():
    from deltalens.codelm.train import held_out_windows

    stream = torch.arange(1000)
    w = held_out_windows(stream, seq_len=64, max_tokens=256)
    assert w.shape == (4, 65) and w[0, 0] == 0 and 990 <= w[-1, -1] <= 999  # spread over the whole stream
    assert all(int(w[i + 1, 0]) >= int(w[i, -1]) for i in range(3))  # windows may share a boundary token only
    assert held_out_windows(torch.arange(10), seq_len=64, max_tokens=256).shape == (1, 10)


# ---- training end to end -----------------------------------------------------------------------------------------
def test_tiny_training_saves_a_loadable_transformers_model_and_reuses_it(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    params = load_params(SMOKE)
    out = tmp_path / "code-lm"
    first = train_code_lm(params, out=out, progress=False)
    assert not first.reused and sorted(p.name for p in tmp_path.iterdir()) == ["code-lm"]  # no temporary left
    meta = json.loads((out / "training.json").read_text())
    assert math.isfinite(meta["held_out"]["loss"]) and meta["held_out"]["perplexity"] > 1
    assert meta["train"]["steps"] == params.train.max_steps and meta["curve"][-1]["step"] == params.train.max_steps
    assert meta["model"]["reload_max_abs_logit_diff"] <= 1e-4 and meta["versions"]["transformers"]
    manifest = json.loads((out / "corpus_manifest.json").read_text())
    assert manifest["content_sha256"] == meta["corpus"]["content_sha256"] and manifest["files"]

    model = AutoModelForCausalLM.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    text = "import os\n\ndef main():\n    print(os.getcwd())\n"
    enc = tok(text, return_offsets_mapping=True, return_tensors="pt")
    with torch.no_grad(), capture_delta(model) as delta:
        logits = model(enc["input_ids"]).logits
    assert logits.shape[-1] == len(tok) and torch.isfinite(logits).all()
    assert delta.stacked().shape[:3] == (params.model.n_layers, 1, enc["input_ids"].shape[1])

    second = train_code_lm(params, out=out, progress=False)
    assert second.reused and second.summary["key"] == meta["key"]
    again = train_code_lm(params, out=tmp_path / "again", progress=False, force=True)  # seeded: the same run
    assert not again.reused and again.summary["held_out"]["loss"] == meta["held_out"]["loss"]
    changed = load_params(SMOKE, {"train.max_steps": 2})
    assert changed.key(meta["corpus"]["content_sha256"]) != meta["key"]  # other params, other key: trains again


# ---- parameters ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("override, name", [
    ({"train.lr": -1.0}, "lr"),
    ({"model.d_model": "big"}, "d_model"),
    ({"train.seq_len": 0}, "seq_len"),
    ({"tokenizer.vocab_size": 10}, "vocab_size"),
    ({"corpus.held_out_fraction": 0.9}, "held_out_fraction"),
    ({"train.warmup": 10}, "warmup"),
    ({"train.micro_batch_size": 3}, "micro_batch_size"),
    ({"corpus.distributions": ["click"]}, "distributions"),
])
def test_bad_parameter_names_it(override, name):
    with pytest.raises(ParameterError, match=name):
        params = load_params(SMOKE, override)
        build_corpus(params.corpus)


def test_cli_reports_parameter_errors(capsys):
    assert cli(["train", "-p", SMOKE, "--set", "train.batch_size=0", "--out", "/nonexistent/never"]) == 2
    assert "batch_size" in capsys.readouterr().err


def test_part1_and_the_code_lm_build_one_model_class():
    """Issue 10: the synthetic model and the code LM are one class, ``models.MambaLM``; with the same shape, head
    and seed both configs give identical weights (so the merge changed no seed's initial weights)."""
    from deltalens.synthetic.models import MambaLM, ModelConfig, build_model

    tiny = build_model(ModelConfig(vocab_size=50, d_model=32, n_layers=2), seed=3)
    code = build_lm(CodeLMConfig(d_model=32, n_layers=2, tie_embeddings=False), vocab_size=50, seed=3)
    assert type(tiny) is type(code) is MambaLM
    a, b = tiny.state_dict(), code.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    tied = build_lm(CodeLMConfig(d_model=32, n_layers=2), vocab_size=50, seed=3)
    assert tied.lm_head.weight is tied.embedding.weight and len(tied.mixers) == 2
    assert tied.n_parameters() == code.n_parameters() - 50 * 32  # the tied head counts once
