"""Context-augmented training data of the local code LM: built by the project's own context builder from the training
corpus only (never an evaluation project: by name and by file bytes), laid out exactly like the evaluation prompts in
both orders, mixed with plain windows; a tiny training run records its trained length and held-out context gain."""

from __future__ import annotations

import json

import pytest
import torch

from deltalens.codelm import load_params, train_code_lm, train_tokenizer
from deltalens.codelm.context_data import (
    ContextDataConfig,
    build_training_contexts,
    context_sequences,
    eval_project_files,
)
from deltalens.codelm.corpus import excluded_names
from deltalens.codelm.tokenizer import TokenizerConfig
from deltalens.codelm.train import sample_mixed
from deltalens.context.chunks import defines_any
from deltalens.core.params import ParameterError
from deltalens.lm.prompts import LayoutPolicy, encode

SMOKE = "params/codelm/smoke.yaml"
PACKAGES = ("json", "email", "logging", "http", "urllib", "concurrent")
CFG = ContextDataConfig(share=0.5, stdlib_packages=PACKAGES, installed=("tenacity",),
                        build={"samples_per_project": 4, "n_chunks": 6, "chunk_chars": 400, "prefix_chars": 400},
                        held_out_fraction=0.3, eval_samples=4)


@pytest.fixture(scope="module")
def excluded():
    return excluded_names(load_params(SMOKE).corpus)


@pytest.fixture(scope="module")
def ctx(excluded):
    return build_training_contexts(CFG, excluded, seed=0)


@pytest.fixture(scope="module")
def tok(ctx):
    return train_tokenizer(list(ctx.chunks["text"]) + list(ctx.samples["prefix"]), TokenizerConfig(vocab_size=600))


def test_every_relevant_chunk_defines_a_name_its_target_line_uses(ctx):
    rel = ctx.chunks[ctx.chunks["category"] == "relevant"]
    assert len(rel) > 0 and set(ctx.chunks["category"]) >= {"relevant", "distractor", "injected"}
    s = ctx.samples.set_index("sample_id")
    for _, c in rel.iterrows():
        used = list(s.at[c["sample_id"], "used_names"])  # names on the target line defined in other modules
        defines = list(c["defines"])
        last = {u.split(".")[-1] for u in used}  # used names as written on the line ('mod.name' or 'name')
        assert defines and {d.split(".")[-1] for d in defines} <= last, (c["sample_id"], defines, used)
        assert defines_any(c["text"], [n.split(".")[-1] for n in defines]), (c["sample_id"], defines)
        assert any(n.split(".")[-1] in s.at[c["sample_id"], "target"] for n in defines)


def test_no_evaluation_project_file_enters_the_training_prompts(ctx, excluded, tmp_path):
    from deltalens.context import build
    from deltalens.context import load_params as dataset_params
    from deltalens.core.paths import project_root

    projects = {src["project"] for src in ctx.manifest["sources"]}
    assert projects == {*PACKAGES, "tenacity"} and not projects & set(excluded)
    # against the evaluation dataset's own manifest hashes (built here from the default projects, a few samples)
    out = tmp_path / "eval"
    build(dataset_params(project_root() / "params/dataset/default.yaml", {"out": str(out), "samples_per_project": 1,
                                                                          "min_samples": 1}), progress=False)
    eval_hashes = eval_project_files(out)
    train_hashes = {f["sha256"] for src in ctx.manifest["sources"] for f in src["files"] if f["bytes"] >= 64}
    assert eval_hashes and train_hashes and not eval_hashes & train_hashes
    with pytest.raises(ParameterError, match="installed lists.*httpx"):
        build_training_contexts(ContextDataConfig(share=0.5, stdlib_packages=PACKAGES, installed=("httpx",)),
                                excluded, seed=0)


def test_sequences_are_the_evaluation_layout_in_both_orders(ctx, tok):
    seqs, skipped, starts = context_sequences(ctx, tok, CFG, max_tokens=100_000, split="dev")
    assert not skipped and starts == [0] * len(seqs)
    dev = list(ctx.samples.loc[ctx.samples["split"] == "dev", "sample_id"])
    assert len(seqs) == 2 * len(dev)
    sample = ctx.sample(dev[0])
    for seq, order in zip(seqs[:2], CFG.orders):
        expected = encode(tok, sample, LayoutPolicy(order, CFG.query_chars, 100_000, "drop_chunks"))
        assert torch.equal(seq, expected.input_ids[0])
    assert tok.decode(seqs[1]).startswith("# query: ")  # query first
    short, skipped, _ = context_sequences(ctx, tok, CFG, max_tokens=200, split="dev")
    assert max(len(s) for s in short) <= 200 and len(short) + len(skipped) == len(seqs)
    # loss: query scores the file prefix and the target line only: the scored part starts at the prefix
    import dataclasses

    q, _, qstarts = context_sequences(ctx, tok, dataclasses.replace(CFG, loss="query"), max_tokens=100_000)
    for seq, start, k in zip(q[:4], qstarts[:4], range(4)):
        sample = ctx.sample(dev[k // 2])
        assert 0 < start < len(seq) and sample["prefix"][:20].strip() in tok.decode(seq[start:])[:60]


def test_mixed_batches_hold_prompts_and_windows_in_the_given_share(ctx, tok):
    seqs, _, starts = context_sequences(ctx, tok, CFG, max_tokens=129, split="dev")
    stream = torch.arange(5000)
    gen = torch.Generator().manual_seed(0)
    batches = [sample_mixed(stream, seqs, 0.5, 128, 4, gen, starts) for _ in range(100)]
    is_prompt = [any(torch.equal(x, s) for s in seqs) for b in batches for x, _ in b]
    assert 0.35 < sum(is_prompt) / len(is_prompt) < 0.65
    assert all(len(x) <= 129 for b in batches for x, _ in b)


def test_tiny_context_training_records_trained_length_and_held_out_gain(tmp_path):
    overrides = {"context.share": 0.5, "context.stdlib_packages": list(PACKAGES), "context.installed": ["tenacity"],
                 "context.build": {"samples_per_project": 3, "n_chunks": 6, "chunk_chars": 300, "prefix_chars": 300},
                 "context.eval_samples": 3, "train.seq_len": 256, "train.micro_batch_size": 1}
    params = load_params(SMOKE, overrides)
    plain = load_params(SMOKE)
    assert params.key("x") != plain.key("x") and "context" not in plain.content_params()
    out = train_code_lm(params, out=tmp_path / "m", progress=False)
    meta = json.loads((tmp_path / "m/training.json").read_text())
    assert meta["trained_length"] == 256 and meta["context"]["sequences"] > 0
    assert meta["context"]["held_out_gain"]["samples"] == 3
    assert isinstance(meta["context"]["held_out_gain"]["context_gain"], float)
    assert not out.reused
    from deltalens.lm.loading import load_lm, model_facts

    lm, _ = load_lm(str(tmp_path / "m"))
    assert model_facts(lm)["trained_length"] == 256


@pytest.mark.parametrize("override, match", [
    ({"share": 1.0}, "share"),
    ({"orders": ["middle"]}, "orders"),
    ({"stdlib_packages": ["json"], "share": 0.5}, "at least 4 projects"),
])
def test_context_parameters_are_checked(override, match):
    with pytest.raises(ParameterError, match=match):
        ContextDataConfig(**override)
    with pytest.raises(ParameterError, match="not a package"):
        build_training_contexts(ContextDataConfig(share=0.5, stdlib_packages=("json", "email", "logging", "nope")),
                                [], seed=0)
