"""deltalens.filter: every scorer computes what the study's own pipeline computes for the same prompt, the budget rule
equals a brute force over all subsets, and the CLI checks, resumes and repeats itself byte for byte."""

import itertools
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from tiny_lm import save_tiny_lm

from deltalens import extract as ex
from deltalens.context import build, load
from deltalens.context.build_params import load_params
from deltalens.core.paths import project_root
from deltalens.core.similarity import TfidfScorer, bm25_scores, query_text
from deltalens.filter import (ContextFilter, FilterPrompt, PromptError, make_prompt, rank_order, read_prompts,
                              select_within_budget)
from deltalens.filter.cli import main as cli_main
from deltalens.filter.prompts import prompt_from_sample
from deltalens.lm.prompts import layout

LM_CASES = [("delta", {"layer": 1, "statistic": "mean"}, "mean"), ("delta", {"layer": 0, "statistic": "l2"}, "l2"),
            ("decimation", {"layer": 1, "statistic": "25"}, "decimate_25"),
            ("hidden_attention", {"layer": 0, "prefix_tokens": 4}, "ha_prefix_end"),
            ("self_information", {}, "self_information"), ("leave_one_out", {}, "loss_gain")]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A tiny dataset, a tiny Mamba LM and one extraction run (leave-one-out, hidden attention) of its samples."""
    root = tmp_path_factory.mktemp("filter")
    build(load_params(project_root() / "params/dataset/smoke.yaml", {"out": str(root / "ctx"), "samples_per_project": 2}),
          progress=False)
    ds = load(root / "ctx")
    save_tiny_lm(root / "lm", list(ds.chunks["text"][:150]), "mamba")
    lm, tok = ex.load_lm(str(root / "lm"))
    cfg = ex.ExtractConfig(model=str(root / "lm"), out_dir=str(root / "run"), max_tokens=100_000, leave_one_out=True,
                           loo_samples=4, hidden_attention=4)
    ex.extract(cfg, ds=ds, lm=lm, tokenizer=tok, progress=False)
    ex.merge(cfg.out_dir)
    return root, ds, (lm, tok)


def prompt_of(ds, sid) -> FilterPrompt:
    return prompt_from_sample(ds.sample(sid))


@pytest.mark.parametrize("scorer,options,column", LM_CASES, ids=[f"{c[0]}-{c[2]}" for c in LM_CASES])
def test_every_lm_scorer_equals_the_extractions_column_for_the_same_prompt(study, scorer, options, column):
    root, ds, model = study
    chunk_delta = pd.read_parquet(root / "run/chunk_delta.parquet")
    chunk_lm = pd.read_parquet(root / "run/chunk_lm.parquet")
    f = ContextFilter(scorer, model, max_tokens=100_000, **options)
    ids = list(chunk_lm.dropna(subset=["loss_gain"])["sample_id"].unique()[:3]) if scorer == "leave_one_out" else \
        list(ds.samples["sample_id"][:3])
    results = f.filter_many([prompt_of(ds, s) for s in ids], rate=0.5, batch_size=2)  # batched: 2 + 1 prompts
    for sid, r in zip(ids, results):
        if column in chunk_lm.columns:
            want = chunk_lm[chunk_lm["sample_id"] == sid].sort_values("chunk_index")[column].to_numpy(float)
        else:
            rows = chunk_delta[(chunk_delta["sample_id"] == sid) & (chunk_delta["layer"] == options["layer"])]
            want = rows.sort_values("chunk_index")[column].to_numpy(float)
        np.testing.assert_allclose(np.array(r.scores, float), want, rtol=1e-4, atol=1e-6)
        assert r.unit.startswith("tokens:") and r.n_tokens == [
            len(model[1](c.text, add_special_tokens=False)["input_ids"]) for c in prompt_of(ds, sid).chunks]
        assert r.tokens_after <= 0.5 * r.tokens_before and r.scorer["scorer"] == scorer


def test_text_scorers_equal_the_similarity_module_and_random_is_seeded_by_the_prompt(study):
    _, ds, _ = study
    p = prompt_of(ds, ds.samples["sample_id"].iloc[0])
    texts, query = [c.text for c in p.chunks], query_text(p.query, 30)
    r = ContextFilter("bm25").filter_many([p], rate=1.0)[0]
    np.testing.assert_allclose(r.scores, bm25_scores(query, texts))
    r = ContextFilter("tfidf", sign=-1.0).filter_many([p], rate=1.0)[0]
    np.testing.assert_allclose(r.scores, -TfidfScorer(texts + [query]).scores(query, texts))
    assert r.unit == "characters" and r.n_tokens == [len(t) for t in texts] and sorted(r.kept) == list(range(len(texts)))
    a = ContextFilter("random", seed=3).filter_many([p], rate=0.5)[0]
    b = ContextFilter("random", seed=3).filter_many([make_prompt({"id": "other", "query": "", "chunks": []}), p],
                                                    rate=0.5)[1]
    c = ContextFilter("random", seed=4).filter_many([p], rate=0.5)[0]
    assert a.scores == b.scores != c.scores   # a prompt's scores never depend on its neighbours in a batch


def brute_force(scores, sizes, limit, forced=()):
    """Over all 2^n subsets: those that hold the forced chunks, no other empty chunk, and fit the limit (or are the
    forced chunks alone); of them, the one that prefers chunks by rank (the largest indicator vector in rank order)."""
    order = [int(i) for i in rank_order(scores)]
    best = None
    for bits in itertools.product([1, 0], repeat=len(scores)):
        chosen = {i for i, b in zip(order, bits) if b}
        if not set(forced) <= chosen or any(sizes[i] == 0 for i in chosen - set(forced)):
            continue
        if chosen != set(forced) and sum(sizes[i] for i in chosen) > limit + 1e-9:
            continue
        if best is None or bits > best[0]:
            best = (bits, chosen)
    return frozenset(best[1])


def test_the_budget_rule_equals_a_brute_force_over_all_subsets():
    rng = np.random.default_rng(0)
    for trial in range(300):
        n = int(rng.integers(1, 8))
        scores = rng.choice([0.1, 0.5, 0.9, np.nan], n) if trial % 3 == 0 else rng.normal(size=n)
        sizes = rng.integers(0, 30, n).astype(float)
        limit = float(rng.integers(0, 80))
        forced = tuple(int(i) for i in rng.choice(n, int(rng.integers(0, 2)), replace=False))
        kept = select_within_budget(scores, sizes, limit, forced)
        assert kept == brute_force(scores, sizes, limit, forced), (scores, sizes, limit, forced)
        assert sum(sizes[i] for i in kept if i not in forced) + sum(sizes[i] for i in forced) <= max(
            limit, sum(sizes[i] for i in forced)) + 1e-9


def test_results_name_their_budget_forced_keeps_and_order(study):
    _, ds, model = study
    p = prompt_of(ds, ds.samples["sample_id"].iloc[1])
    f = ContextFilter("delta", model, layer=1, statistic="max", sign=-1.0)
    worst = int(np.argmax(f.filter_many([p], rate=1.0)[0].ranks))
    r = f.filter([{"text": c.text, "path": c.path} for c in p.chunks], p.query, budget_tokens=0, keep=[worst],
                 path=p.path)
    assert r.kept == [worst] and r.forced == [worst] and r.over_budget and r.tokens_after == r.n_tokens[worst]
    by_score = f.filter_many([p], rate=0.6, order="score")[0]
    original = f.filter_many([p], rate=0.6)[0]
    assert sorted(by_score.kept) == original.kept and [by_score.ranks[i] for i in by_score.kept] == sorted(
        by_score.ranks[i] for i in by_score.kept)
    assert original.prompt.endswith(p.query) and all(c in original.prompt for c in original.chunks)
    lp = layout(p.sample(), drop=[i for i in range(len(p.chunks)) if i not in original.kept])
    assert original.prompt == lp.text[:lp.target_span[0]]   # the study's layout of the kept chunks, then the query
    with pytest.raises(ValueError, match="exactly one of budget_tokens"):
        f.filter(["a"], "q", rate=0.5, budget_tokens=3)
    with pytest.raises(ValueError, match="needs a tokenizer"):
        ContextFilter("bm25").filter(["a"], "q", budget_tokens=3)
    with pytest.raises(ValueError, match="layer=7 is not an SSM layer"):
        ContextFilter("delta", model, layer=7)
    with pytest.raises(ValueError, match="layer is required"):
        ContextFilter("delta", model)
    with pytest.raises(ValueError, match="takes no option"):
        ContextFilter("bm25", layer=1)
    with pytest.raises(PromptError, match="needs each prompt's 'target'"):
        ContextFilter("leave_one_out", model).filter(["a"], "q", rate=0.5)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16", "half", "auto"])
def test_every_dtype_filters_on_the_cpu(study, dtype):
    root, ds, _ = study
    p = prompt_of(ds, ds.samples["sample_id"].iloc[0])
    r = ContextFilter("delta", str(root / "lm"), layer=1, dtype=dtype, device="cpu").filter_many([p], rate=0.5)[0]
    assert np.isfinite(np.array(r.scores, float)).all() and r.scorer["dtype"] in ("float32", "bfloat16", "float16")


def test_from_analysis_takes_the_dev_choice_and_the_runs_model(study, tmp_path):
    root, ds, _ = study
    metrics = {"params": {"runs": {"tiny/context_first": str(root / "run")}, "filter_run": "tiny/context_first"},
               "choices": [{"name": "Δ best (tiny/context_first)", "column": "inprompt_rank:delta:tiny/context_first:L1:l2",
                            "sign": -1.0, "dev_auc": 0.6, "kind": "delta_best", "chosen_by": "auc"},
                           {"name": "BM25", "column": "bm25", "sign": 1.0, "dev_auc": 0.7, "kind": "baseline"},
                           {"name": "path distance", "column": "path_distance", "sign": -1.0, "kind": "control"}]}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    f = ContextFilter.from_analysis(tmp_path / "metrics.json")
    assert (f.scorer.name, f.scorer.layer, f.scorer.statistic, f.scorer.sign) == ("delta", 1, "l2", -1.0)
    assert f.settings()["chosen_on_dev"]["column"].endswith("L1:l2") and f.scorer.model_name == str(root / "lm")
    sid = ds.samples["sample_id"].iloc[0]
    rows = pd.read_parquet(root / "run/chunk_delta.parquet").query("sample_id == @sid and layer == 1")
    np.testing.assert_allclose(f.filter_many([prompt_of(ds, sid)], rate=0.5)[0].scores,
                               -rows.sort_values("chunk_index")["l2"].to_numpy(), rtol=1e-4)
    assert ContextFilter.from_analysis(tmp_path / "metrics.json", "baseline").scorer.name == "bm25"
    with pytest.raises(ValueError, match="has no filter"):
        ContextFilter.from_analysis(tmp_path / "metrics.json", "control")
    with pytest.raises(ValueError, match="0 choices match"):
        ContextFilter.from_analysis(tmp_path / "metrics.json", "learned")


def write_prompts(path, prompts):
    path.write_text("".join(json.dumps(p) + "\n" for p in prompts))


def test_cli_checks_every_line_before_any_model_loads(tmp_path, capsys):
    good = {"id": "a", "query": "x = 1\n", "chunks": ["def f(): pass\n"]}
    bad = {"id": "b", "query": "y\n", "chunks": ["ok", {"text": 3}]}
    write_prompts(tmp_path / "in.jsonl", [good, bad])
    rc = cli_main(["--in", str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "out.jsonl"), "--scorer", "delta",
                   "--model", str(tmp_path / "no-such-model"), "--layer", "0", "--rate", "0.5"])
    err = capsys.readouterr().err
    assert rc == 2 and "line 2" in err and "chunks[1]" in err and "Traceback" not in err
    assert not (tmp_path / "out.jsonl").exists()
    (tmp_path / "in.jsonl").write_text(json.dumps(good) + "\n{not json\n")
    assert cli_main(["--in", str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "o.jsonl"), "--scorer", "bm25",
                     "--rate", "0.5"]) == 2
    assert "line 2: not valid JSON" in capsys.readouterr().err
    write_prompts(tmp_path / "in.jsonl", [good, good])
    with pytest.raises(PromptError, match="already on line 1"):
        read_prompts(tmp_path / "in.jsonl")
    for row, field in (({"id": "", "query": "", "chunks": []}, "'id'"), ({"id": "a", "chunks": []}, "'query'"),
                       ({"id": "a", "query": "", "chunks": [], "keep": [3]}, "'keep'"),
                       ({"id": "a", "query": "", "chunks": [], "extra": 1}, "unknown field")):
        with pytest.raises(PromptError, match=field):
            make_prompt(row)


def test_cli_resumes_without_repeating_and_repeats_itself_byte_for_byte(study, tmp_path):
    root, ds, _ = study
    rows = [{"id": s, "query": ds.sample(s)["prefix"], "path": ds.sample(s)["path"],
             "chunks": [{"text": c["text"], "path": c["path"]} for c in ds.sample(s)["chunks"]]}
            for s in ds.samples["sample_id"][:5]]
    args = ["--scorer", "delta", "--model", str(root / "lm"), "--layer", "1", "--statistic", "mean", "--sign", "-1",
            "--budget-tokens", "60", "--batch-size", "2", "--no-progress"]
    write_prompts(tmp_path / "all.jsonl", rows)
    assert cli_main(["--in", str(tmp_path / "all.jsonl"), "--out", str(tmp_path / "once.jsonl"), *args]) == 0
    # an interrupted run: the first batch written, one line of the second (batches of 2: a partly written batch),
    # half a line after it; the resumed run recomputes that batch whole and writes what is missing
    lines = (tmp_path / "once.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "twice.jsonl").write_text("".join(lines[:3]) + '{"id": "half')
    (tmp_path / "twice.jsonl.settings.json").write_bytes((tmp_path / "once.jsonl.settings.json").read_bytes())
    assert cli_main(["--in", str(tmp_path / "all.jsonl"), "--out", str(tmp_path / "twice.jsonl"), *args]) == 0
    assert (tmp_path / "twice.jsonl").read_bytes() == (tmp_path / "once.jsonl").read_bytes()
    out = [json.loads(line) for line in (tmp_path / "once.jsonl").read_text().splitlines()]
    assert [r["id"] for r in out] == [r["id"] for r in rows] and all(r["tokens_after"] <= 60 for r in out)
    # started on another input (its first 3 prompts), resumed on the whole: every prompt once, in the input's order
    write_prompts(tmp_path / "part.jsonl", rows[:3])
    assert cli_main(["--in", str(tmp_path / "part.jsonl"), "--out", str(tmp_path / "thrice.jsonl"), *args]) == 0
    assert cli_main(["--in", str(tmp_path / "all.jsonl"), "--out", str(tmp_path / "thrice.jsonl"), *args]) == 0
    again = [json.loads(line) for line in (tmp_path / "thrice.jsonl").read_text().splitlines()]
    assert [r["id"] for r in again] == [r["id"] for r in rows] and all(r["tokens_after"] <= 60 for r in again)
    assert "seconds" not in out[0]
    # another filter into the same file is refused, naming what differs; the file is left as it was
    before = (tmp_path / "once.jsonl").read_bytes()
    assert cli_main(["--in", str(tmp_path / "all.jsonl"), "--out", str(tmp_path / "once.jsonl"),
                     *[a if a != "60" else "61" for a in args]]) == 2
    assert (tmp_path / "once.jsonl").read_bytes() == before


def test_python_m_entry_point(tmp_path):
    write_prompts(tmp_path / "in.jsonl", [{"id": "a", "query": "def route(x):\n",
                                           "chunks": ["def route(x): pass\n", "import os\n"]}])
    done = subprocess.run([sys.executable, "-m", "deltalens.filter", "--in", str(tmp_path / "in.jsonl"), "--out",
                           str(tmp_path / "out.jsonl"), "--scorer", "bm25", "--rate", "0.7", "--no-progress"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    r = json.loads((tmp_path / "out.jsonl").read_text())
    assert r["kept"] == [0] and r["ranks"] == [1, 2]


def test_the_readme_example_runs(study, capsys):
    """The README's filter example, executed as written, its MODEL line pointed at the tiny model."""
    import re

    readme = (project_root() / "README.md").read_text()
    block = re.search(r"<!-- filter-example[^>]*-->\n```python\n(.*?)```", readme, re.S)
    assert block, "README.md: the filter example (after <!-- filter-example -->) is missing"
    root, _, _ = study
    code, n = re.subn(r'^MODEL = "[^"]*"', f"MODEL = {str(root / 'lm')!r}", block.group(1), flags=re.M)
    assert n == 1
    code, n = re.subn(r"layer=\d+", "layer=0", code)   # the tiny model's layer (the README's is the committed model's)
    assert n == 1
    exec(compile(code, "README.md (filter example)", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    before, after, ratio = printed[0].rsplit("] ", 1)[1].split()
    assert int(after) <= 0.5 * int(before) and float(ratio) == pytest.approx(int(after) / int(before), abs=0.006)
    assert printed[-1].startswith("[") and printed[-2].endswith("return ")   # bm25's kept list; the prompt's end


def test_the_filter_benchmark_runs_every_scorer_side_by_side(study, tmp_path):
    import importlib.util

    root, _, _ = study
    spec = importlib.util.spec_from_file_location("bench_filter", project_root() / "bench/bench_filter.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "filter_speed.json"
    r = bench.main(["--model", str(root / "lm"), "--target-model", str(root / "lm"), "--dataset", str(root / "ctx"),
                    "--split", "dev", "--prompts", "3", "--repeats", "1", "--out", str(out)])
    rows = {row["scorer"]: row for row in json.loads(out.read_text())["scorers"]}
    assert rows.keys() == {row["scorer"] for row in r["scorers"]} >= {"bm25", "tfidf", "random", "delta",
                                                                      "self_information", "leave_one_out"}
    assert rows["delta"]["scoring_forwards_per_prompt"] == 1.0          # one forward per prompt for all its chunks
    assert rows["bm25"]["scoring_forwards_per_prompt"] == 0.0
    assert rows["leave_one_out"]["scoring_forwards_per_prompt"] > 1.0   # one more per chunk
    assert rows["bm25"]["time_vs_bm25"] == 1.0 and all(v["filter_seconds"] > 0 for v in rows.values())


def test_the_llmlingua_shim_returns_its_dict_plus_kept_ids_and_never_exceeds_target_token(study):
    from deltalens.filter.llmlingua import PromptCompressor

    _, ds, model = study
    p = prompt_of(ds, ds.samples["sample_id"].iloc[0])
    contexts = [c.text for c in p.chunks]
    comp = PromptCompressor(ContextFilter("delta", model, layer=1))
    tok = model[1]
    count = lambda text: len(tok(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    full = count("\n\n".join(["Complete the code."] + contexts + [p.query]))
    for target in (0, 30, full // 3, full // 2, full):
        res = comp.compress_prompt(contexts, instruction="Complete the code.", question=p.query, target_token=target)
        assert {"compressed_prompt", "origin_tokens", "compressed_tokens", "ratio", "rate", "saving",
                "kept_ids"} <= res.keys()
        assert res["origin_tokens"] == full and res["compressed_tokens"] == count(res["compressed_prompt"])
        assert res["compressed_tokens"] <= max(target, count("Complete the code.\n\n" + p.query))
        assert res["compressed_prompt"] == "\n\n".join(["Complete the code."] + [contexts[i] for i in res["kept_ids"]]
                                                       + [p.query])
        assert res["ratio"] == f"{full / res['compressed_tokens']:.1f}x"
    by_rate = comp.compress_prompt(contexts, question=p.query, rate=0.5)
    assert sum(count(contexts[i]) for i in by_rate["kept_ids"]) <= 0.5 * sum(count(c) for c in contexts)
    forced = comp.compress_prompt(contexts, question=p.query, target_token=1, force_context_ids=[2])
    assert forced["kept_ids"] == [2]
    with pytest.raises(ValueError, match="rank_method"):
        comp.compress_prompt(contexts, question=p.query, rank_method="longllmlingua")


def test_the_langchain_compressor_returns_the_callers_documents_with_scores():
    documents = pytest.importorskip("langchain_core.documents")
    from deltalens.filter.adapters import langchain_compressor

    docs = [documents.Document(page_content=t, metadata={"source": f"m{i}.py", "mine": i}, id=f"d{i}")
            for i, t in enumerate(["def route(x): pass\n", "import os\n", "def route_all(xs): pass\n"])]
    f = ContextFilter("bm25")
    compressor = langchain_compressor(f, rate=0.9)
    assert isinstance(compressor, documents.BaseDocumentCompressor)
    kept = compressor.compress_documents(docs, "def handler(x):\n    return route(")
    direct = f.filter([{"text": d.page_content, "path": d.metadata["source"]} for d in docs],
                      "def handler(x):\n    return route(", rate=0.9)
    assert [d.id for d in kept] == [docs[i].id for i in direct.kept] and len(kept) < len(docs)
    for d in kept:
        i = d.metadata["deltalens_index"]
        assert d.page_content == docs[i].page_content and d.metadata["mine"] == i
        assert d.metadata["deltalens_score"] == direct.scores[i] and d.metadata["deltalens_rank"] == direct.ranks[i]
    assert all("deltalens_score" not in d.metadata for d in docs)   # the caller's documents are left as they were
    with pytest.raises(ValueError, match="exactly one"):
        langchain_compressor(f)


def test_the_llamaindex_postprocessor_returns_the_callers_nodes_with_scores():
    schema = pytest.importorskip("llama_index.core.schema")
    from deltalens.filter.adapters import llamaindex_postprocessor

    nodes = [schema.NodeWithScore(node=schema.TextNode(text=t, metadata={"file_path": f"m{i}.py"}), score=0.0)
             for i, t in enumerate(["def route(x): pass\n", "import os\n", "def route_all(xs): pass\n"])]
    f = ContextFilter("tfidf")
    post = llamaindex_postprocessor(f, rate=0.9, order="score")
    kept = post.postprocess_nodes(nodes, query_str="def handler(x):\n    return route(")
    direct = f.filter([n.node.get_content() for n in nodes], "def handler(x):\n    return route(", rate=0.9,
                      order="score")
    assert len(kept) == len(direct.kept) and all(k.node is nodes[i].node for k, i in zip(kept, direct.kept))  # same nodes
    assert [k.score for k in kept] == [direct.scores[i] for i in direct.kept]
    with pytest.raises(ValueError, match="needs the query"):
        post.postprocess_nodes(nodes)


@pytest.mark.parametrize("device", ["cpu", "auto", "cuda"])
def test_every_device_filters_or_says_why_not(study, device):
    import torch

    root, ds, _ = study
    p = prompt_of(ds, ds.samples["sample_id"].iloc[0])
    if device == "cuda" and not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU is visible"):
            ContextFilter("delta", str(root / "lm"), layer=1, device=device)
        return
    f = ContextFilter("delta", str(root / "lm"), layer=1, device=device)
    r = f.filter_many([p], rate=0.5)[0]
    cpu = ContextFilter("delta", str(root / "lm"), layer=1).filter_many([p], rate=0.5)[0]
    np.testing.assert_allclose(r.scores, cpu.scores, rtol=1e-3, atol=1e-5)
