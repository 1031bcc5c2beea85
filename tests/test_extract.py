"""Δ extraction from transformers Mamba / FalconMamba LMs per context chunk: Δ equal to the model's own, chunk
statistics equal to statistics of the full Δ, target loss equal to the model's own loss, resume, shards, merge,
truncation, leave-one-out, and the errors before heavy work."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from deltalens.core.params import ParameterError
from deltalens.delta.capture import capture_delta
from deltalens.extract import run as ex
from deltalens.extract.config import parse_shard
from deltalens.lm.prompts import layout

from tiny_lm import save_tiny_lm


@pytest.fixture(scope="module", params=["falcon_mamba", "mamba"])
def lm_dir(request, ds, tmp_path_factory):
    return save_tiny_lm(tmp_path_factory.mktemp(request.param), list(ds.chunks["text"][:150]), request.param,
                        rms_eps=3e-2)  # a non-default FalconMamba mixer_rms_eps: the capture must use the model's own


@pytest.fixture(scope="module")
def lm(lm_dir):
    return ex.load_lm(str(lm_dir))


def _cfg(tmp_path, **kw):
    return ex.ExtractConfig(out_dir=str(tmp_path / "delta"), max_tokens=100_000, **kw)


def test_captured_delta_equals_the_models_own(lm, monkeypatch, ds):
    """Wrap the library's own selective-scan function: the Δ it computes (softplus(dt + bias)) is what we capture."""
    import transformers.models.falcon_mamba.modeling_falcon_mamba as fm
    import transformers.models.mamba.modeling_mamba as mm

    model, tok = lm
    seen = []
    for mod in (fm, mm):
        original = mod.mamba_selective_scan

        def wrapped(hidden, dt, *args, _orig=original, **kw):
            bias = kw.get("delta_bias")
            seen.append(torch.nn.functional.softplus(dt.float() + bias.float()[..., None]).transpose(1, 2))
            return _orig(hidden, dt, *args, **kw)
        monkeypatch.setattr(mod, "mamba_selective_scan", wrapped)
    ids = tok(ds.samples["prompt"].iloc[0][:2000], return_tensors="pt")["input_ids"]
    for use_mambapy in (False, True):
        ex.set_scan(model, use_mambapy)
        seen.clear()
        with capture_delta(model) as rec, torch.no_grad():
            model(ids)
        assert len(seen) == len(rec.last()) == model.config.num_hidden_layers
        for own, captured in zip(seen, rec.last()):
            torch.testing.assert_close(captured, own, rtol=1e-5, atol=1e-6)


def test_chunk_stats_equal_stats_of_full_delta_and_loss_equals_models_own(lm, ds, tmp_path):
    model, tok = lm
    cfg = _cfg(tmp_path)
    sample = ds.sample(0)
    enc = ex.encode(tok, sample, cfg.layout)
    stats, loss, nll = ex.forward_sample(model, enc, token_nll=True)
    rows = ex.chunk_rows(sample["sample_id"], enc, stats, list(range(len(stats))))
    with capture_delta(model) as rec, torch.no_grad():
        logits = model(enc.input_ids).logits
    full = rec.stacked()[:, 0]  # (layers, L, d_inner)
    for _, r in rows.iterrows():
        a, b = enc.chunk_tokens[r["chunk_index"]]
        d = full[r["layer"], a:b]
        assert r["n_tokens"] == b - a > 0
        np.testing.assert_allclose(r["mean"], d.mean(-1).mean().item(), rtol=1e-5)
        np.testing.assert_allclose(r["mean_log"], d.log().mean(-1).mean().item(), rtol=1e-5)
        np.testing.assert_allclose(r["l2"], d.norm(dim=-1).mean().item(), rtol=1e-5)
        np.testing.assert_allclose(r["max"], d.amax(-1).mean().item(), rtol=1e-5)
    t0, t1 = enc.target_tokens
    own = torch.nn.functional.cross_entropy(logits[0, t0 - 1:t1 - 1], enc.input_ids[0, t0:t1]).item()
    assert loss == pytest.approx(own, rel=1e-5)
    assert ex.forward_sample(model, enc, capture=False)[1] == pytest.approx(loss, rel=1e-6)
    # per-token NLL (self-information) == the model's own cross-entropy at every position
    own_nll = torch.nn.functional.cross_entropy(logits[0, :-1], enc.input_ids[0, 1:], reduction="none").numpy()
    assert np.isnan(nll[0])
    np.testing.assert_allclose(nll[1:], own_nll, rtol=1e-4, atol=1e-5)
    # the target tokens decode to the target line, the chunk tokens to the chunk texts
    assert tok.decode(enc.input_ids[0, t0:t1]).strip() == sample["target"].strip()
    c = sample["chunks"][0]
    a, b = enc.chunk_tokens[0]
    assert c["text"].strip() in tok.decode(enc.input_ids[0, a:b]) or tok.decode(enc.input_ids[0, a:b]).strip() in c["text"]


def test_name_accuracy_is_the_argmax_hit_rate_on_the_tokens_of_the_used_names(lm, ds, tmp_path):
    model, tok = lm
    cfg = _cfg(tmp_path)
    from deltalens.lm.forward import forward_batch

    checked = 0
    for i in range(len(ds.samples)):
        sample = ds.sample(i)
        enc = ex.encode(tok, sample, cfg.layout)
        t0, t1 = enc.target_tokens
        if not sample["used_names"]:
            assert enc.name_tokens == []
            continue
        # every name token lies in the target line, and together they spell the used names found on it
        assert enc.name_tokens and all(t0 <= p < t1 for p in enc.name_tokens)
        text = tok.decode(enc.input_ids[0, enc.name_tokens])
        assert any(n in text for n in sample["used_names"])
        with torch.no_grad():
            logits = model(enc.input_ids).logits[0]
        hits = [(logits[p - 1].argmax() == enc.input_ids[0, p]).item() for p in enc.name_tokens]
        res = forward_batch(model, [enc], capture=False)[0]
        assert res.name_accuracy == pytest.approx(float(np.mean(hits)))
        checked += 1
        if checked == 5:
            break
    assert checked == 5


def test_name_token_positions_match_whole_identifiers_only():
    from deltalens.lm.prompts import name_token_positions

    text = "x = 1\n    y = helper_two(helper) + helper\n"
    a = text.index("    y")
    span = (a, len(text) - 1)
    offsets = np.array([(i, i + 1) for i in range(len(text))])  # one token per character
    pos = name_token_positions(text, span, offsets, ["helper"])
    got = "".join(text[p] for p in pos)
    assert got == "helper" * 2  # not the "helper" inside helper_two
    assert name_token_positions(text, span, offsets, []) == []
    assert name_token_positions(text, span, offsets, ["x"]) == []  # x occurs before the target line only


def test_run_resume_shards_merge_and_leave_one_out(lm, ds, tmp_path, monkeypatch):
    model, tok = lm
    cfg = _cfg(tmp_path, leave_one_out=True, max_samples=4, batch_tokens=1)  # one sample per group, one row per batch
    calls = []
    real = ex.forward_all

    def crashing(*a, **k):
        calls.append(k.get("capture", True))
        if sum(calls) == 3:  # the third sample's Δ forward dies (a kill / crash mid-run)
            raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(ex, "forward_all", crashing)
    with pytest.raises(KeyboardInterrupt):
        ex.extract(cfg, ds=ds, lm=model, tokenizer=tok, progress=False)
    monkeypatch.setattr(ex, "forward_all", real)
    s = ex.extract(cfg, ds=ds, lm=model, tokenizer=tok, progress=False)
    assert (s.done_before, s.done_now) == (2, 2)  # finished samples were kept, nothing recomputed
    assert ex.extract(cfg, ds=ds, lm=model, tokenizer=tok, progress=False).done_now == 0
    one = ex.merge(cfg.out_dir)

    cfg2 = _cfg(tmp_path / "sharded", leave_one_out=True, max_samples=4, batch_tokens=1)
    for shard in ("1/2", "0/2"):
        cfg2.shard = shard
        ex.extract(cfg2, ds=ds, lm=model, tokenizer=tok, progress=False)
    two = ex.merge(cfg2.out_dir)
    for k in ("chunk_delta", "chunk_lm"):
        pd.testing.assert_frame_equal(pd.read_parquet(one[k]), pd.read_parquet(two[k]))
    a, b = pd.read_parquet(one["samples"]), pd.read_parquet(two["samples"])
    pd.testing.assert_frame_equal(a.drop(columns="seconds"), b.drop(columns="seconds"))

    chunk, chunk_lm = pd.read_parquet(one["chunk_delta"]), pd.read_parquet(one["chunk_lm"])
    loo = chunk_lm.dropna(subset=["loss_gain"])
    assert len(loo) == (chunk_lm["n_tokens"] > 0).sum() > 0 and chunk_lm["self_information"].notna().all()
    n_layers = model.config.num_hidden_layers
    assert len(chunk) == a["sample_id"].map(lambda s: len(ds.chunks_of(s))).sum() * n_layers
    # leave-one-out: loss without chunk c == the loss of the prompt laid out without c, computed directly
    r = loo.iloc[0]
    sample = ds.sample(r["sample_id"])
    lp = layout(sample, drop=[r["chunk_index"]])
    enc = tok(lp.text, return_offsets_mapping=True)
    offs = np.asarray(enc["offset_mapping"])
    tgt = np.flatnonzero((offs[:, 0] < lp.target_span[1]) & (offs[:, 1] > lp.target_span[0]))
    ids = torch.tensor([enc["input_ids"]])
    with torch.no_grad():
        logits = model(ids).logits
    direct = torch.nn.functional.cross_entropy(logits[0, tgt[0] - 1:tgt[-1]], ids[0, tgt[0]:tgt[-1] + 1]).item()
    assert r["loss_without"] == pytest.approx(direct, rel=1e-4)
    full = a.set_index("sample_id").loc[r["sample_id"], "target_loss"]
    assert r["loss_gain"] == pytest.approx(r["loss_without"] - full)


def test_merge_refuses_missing_and_resume_refuses_other_parameters(lm, ds, tmp_path):
    model, tok = lm
    cfg = _cfg(tmp_path, max_samples=4, shard="0/2")
    ex.extract(cfg, ds=ds, lm=model, tokenizer=tok, progress=False)
    with pytest.raises(ValueError, match="2 of 4 samples not extracted"):
        ex.merge(cfg.out_dir)
    assert not (tmp_path / "delta/merged.json").exists()
    ex.merge(cfg.out_dir, allow_partial=True)
    assert json.loads((tmp_path / "delta/merged.json").read_text())["missing"] == 2
    with pytest.raises(ParameterError, match="other parameters.*order"):
        ex.extract(_cfg(tmp_path, max_samples=4, order="query_first"), ds=ds, lm=model, tokenizer=tok, progress=False)


def test_truncation_policies_are_recorded(lm, ds, tmp_path):
    model, tok = lm
    sample = ds.sample(0)
    n_full = len(tok(layout(sample).text)["input_ids"])
    limit = n_full * 2 // 3
    enc = ex.encode(tok, sample, ex.ExtractConfig(max_tokens=limit, truncation="drop_chunks").layout)
    assert enc.input_ids.shape[1] <= limit and enc.dropped and enc.dropped == sorted(enc.dropped)
    assert all(enc.chunk_tokens[i] is None for i in enc.dropped) and enc.n_tokens_full == n_full
    enc = ex.encode(tok, sample, ex.ExtractConfig(max_tokens=limit, truncation="left").layout)
    assert enc.input_ids.shape[1] == limit and enc.cut_tokens == n_full - limit
    t0, t1 = enc.target_tokens
    assert tok.decode(enc.input_ids[0, t0:t1]).strip() == sample["target"].strip()
    with pytest.raises(ParameterError, match=f"{sample['sample_id']}.*max_tokens={limit}"):
        ex.encode(tok, sample, ex.ExtractConfig(max_tokens=limit, truncation="error").layout)


def test_query_first_layout_puts_the_query_before_every_chunk(ds):
    s = ds.sample(0)
    lp = layout(s, "query_first", query_chars=200)
    first_chunk = min(a for a, _ in lp.chunk_spans)
    assert lp.text.startswith("# query: ") and s["prefix"][-50:] in lp.text[:first_chunk]
    assert lp.text[lp.target_span[0]:lp.target_span[1]] == s["target"]


@pytest.mark.parametrize("spec", ["3/2", "2/2", "a/b", "0/0", "1"])
def test_bad_shard_specs(spec):
    with pytest.raises(ParameterError, match="shard"):
        parse_shard(spec)


def test_process_shard_combines_with_accelerate_ranks():
    assert ex.process_shard("0/1", {}) == (0, 1)
    assert ex.process_shard("1/2", {"WORLD_SIZE": "4", "RANK": "3"}) == (7, 8)


def test_clear_errors_before_heavy_work(tmp_path, ds):
    with pytest.raises(ex.ModelLoadError, match="hub is not reachable.*model=DIR"):
        ex.load_lm("tiiuae/falcon-mamba-7b-not-cached-here")
    with pytest.raises(ex.ModelLoadError, match="no such local directory"):
        ex.load_lm(str(tmp_path / "nope"))
    from transformers import LlamaConfig, LlamaForCausalLM

    from tiny_lm import train_tiny_tokenizer

    d = tmp_path / "llama"
    LlamaForCausalLM(LlamaConfig(vocab_size=300, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2)).save_pretrained(d)
    train_tiny_tokenizer(["def f(): pass"] * 20, 300).save_pretrained(d)
    with pytest.raises(ex.ModelLoadError, match="no Mamba mixer"):
        ex.load_lm(str(d))
    with pytest.raises(ParameterError, match="order"):
        ex.ExtractConfig(order="middle").check()
    with pytest.raises(ParameterError, match="unknown extraction parameter"):
        ex.config_from_params({"modle": "x"})
    (tmp_path / "p.yaml").write_text("shard: 3/2\n")
    assert ex.main(["run", "-p", str(tmp_path / "p.yaml")]) == 2  # CLI: a clear message, exit code 2
