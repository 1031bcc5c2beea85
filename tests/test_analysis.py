"""The main analysis: chunk table, dev-chosen scores reported on test, bootstrap intervals, filtering, the results
table and the README section; notebook 04 on a tiny fixture with its recorded metrics checked against a direct
computation."""

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from deltalens import analysis as an
from deltalens.analysis.filtering import keep_by_budget
from deltalens.analysis.readme import END, START, update_readme
from deltalens.context import build, load, load_params
from deltalens.core.paths import project_root
from deltalens.extract import run as ex
from deltalens.labeling.pipeline import reference_scores
from deltalens.tools.smoke import run_notebook

from tiny_lm import save_tiny_lm


def test_path_distance():
    assert an.path_distance("a/b/x.py", "a/b/y.py", True) == 0
    assert an.path_distance("a/b/x.py", "a/c/y.py", True) == 2
    assert an.path_distance("x.py", "a/b/y.py", True) == 2
    assert an.path_distance("a/x.py", "a/y.py", False) == 4  # another project: far away


def test_keep_by_budget_takes_top_scores_that_fit():
    scores, tokens = np.array([0.9, 0.1, 0.5, np.nan]), np.array([50, 10, 30, 10])
    assert keep_by_budget(scores, tokens, 0.0) == frozenset()
    assert keep_by_budget(scores, tokens, 1.0) == frozenset({0, 1, 2, 3})
    assert keep_by_budget(scores, tokens, 0.5) == frozenset({0})           # 50 of 100 tokens
    assert keep_by_budget(scores, tokens, 0.45) == frozenset({2, 1})       # 0 does not fit, 2 and 1 do
    assert keep_by_budget(-scores, tokens, 0.2) == frozenset({1, 3})      # NaN ranks last, still kept when it fits


def test_evaluate_matches_sklearn_and_choose_on_dev_looks_only_at_dev():
    rng = np.random.default_rng(0)
    n = 400
    t = pd.DataFrame({"sample_id": np.repeat(np.arange(40), 10).astype(str), "split": np.repeat(["dev", "test"], 200),
                      "relevant": rng.random(n) < 0.2, "project": np.repeat(np.arange(8), 50).astype(str)})
    t["good"] = t["relevant"] + rng.normal(0, 0.8, n)
    t["bad"] = -t["good"]
    r = an.evaluate(t, "good", "relevant", split="test", n_boot=50)
    te = t[t["split"] == "test"]
    assert r["auc"] == pytest.approx(roc_auc_score(te["relevant"], te["good"]))
    assert r["pr_auc"] == pytest.approx(average_precision_score(te["relevant"], te["good"]))
    assert r["auc_lo"] < r["auc"] < r["auc_hi"] and r["n"] == 200
    ch = an.choose_on_dev(t, ["bad"], name="x")
    assert ch.sign == -1.0 and ch.dev_auc > 0.5
    flipped = t.copy()
    flipped.loc[flipped["split"] == "test", "bad"] *= -1  # changing test rows does not change the choice
    assert an.choose_on_dev(flipped, ["bad"]).sign == -1.0


def test_what_a_score_is_comes_from_its_kind_never_from_its_label():
    """Renaming every label (display only) leaves the best pair and the filter's scores as they were."""
    from dataclasses import replace

    choices = [an.Choice("Δ best (r)", "delta:r:L0:mean", 1.0, 0.6, dev_sample_auc=0.60, kind="delta_best"),
               an.Choice("Δ best within prompt (r)", "delta:r:L1:mean", 1.0, 0.6, dev_sample_auc=0.65,
                         kind="delta_within"),
               an.Choice("hidden attention from the target line (r)", "hattn:r:L0:target", 1.0, 0.9,
                         dev_sample_auc=0.95, kind="upper_bound"),
               an.Choice("BM25", "bm25", 1.0, 0.7, dev_sample_auc=0.70, kind="baseline"),
               an.Choice("random", "random", 1.0, 0.5, dev_sample_auc=0.50, kind="random")]
    d, b = an.best_pair(choices)
    assert (d.column, b.column) == ("delta:r:L1:mean", "bm25")  # never the target-reading upper bound
    kept = {col for col, _ in an.filter_scores(choices, "r").values()}
    assert kept == {"delta:r:L0:mean", "bm25", "random", "relevant"}
    renamed = [replace(c, name=f"score {i}") for i, c in enumerate(choices)]
    d2, b2 = an.best_pair(renamed)
    assert (d2.column, b2.column) == (d.column, b.column)
    assert {col for col, _ in an.filter_scores(renamed, "r").values()} == kept
    with pytest.raises(ValueError, match="kind"):
        an.Choice("x", "bm25", 1.0, 0.5, kind="not a kind")


def test_update_readme_replaces_only_the_marked_section(tmp_path):
    readme, results = tmp_path / "README.md", tmp_path / "results.md"
    readme.write_text(f"# x\nintro\n{START}\nold\n{END}\nafter\n")
    results.write_text("| a | b |\n")
    assert update_readme(readme, results)
    text = readme.read_text()
    assert "old" not in text and "| a | b |" in text and text.startswith("# x\nintro\n") and text.endswith("after\n")
    assert not update_readme(readme, results)  # unchanged the second time
    with pytest.raises(ValueError, match="no <!-- results:start -->"):
        update_readme(results, results)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """A tiny end-to-end fixture: dataset, LM, two extraction runs (one with leave-one-out), reference scores."""
    root = tmp_path_factory.mktemp("pipe")
    build(load_params(project_root() / "params/dataset/smoke.yaml", {"out": str(root / "ctx"), "samples_per_project": 4}),
          progress=False)
    ds = load(root / "ctx")
    save_tiny_lm(root / "lm", list(ds.chunks["text"][:150]), "mamba")
    lm, tok = ex.load_lm(str(root / "lm"))
    runs = {}
    for order in ("context_first", "query_first"):
        cfg = ex.ExtractConfig(model=str(root / "lm"), out_dir=str(root / order), order=order, max_tokens=100_000,
                               leave_one_out=order == "context_first", loo_samples=6,
                               hidden_attention=4 if order == "context_first" else 0)
        ex.extract(cfg, ds=ds, lm=lm, tokenizer=tok, progress=False)
        ex.merge(cfg.out_dir)
        runs[f"tiny/{order}"] = str(root / order)
    # a Mamba-2 model (Δ per head) through the same extraction, so notebook 04 meets per-head runs too (issue 14)
    save_tiny_lm(root / "lm2", list(ds.chunks["text"][:150]), "mamba2")
    cfg = ex.ExtractConfig(model=str(root / "lm2"), out_dir=str(root / "mamba2"), max_tokens=100_000)
    ex.extract(cfg, ds=ds, progress=False)
    ex.merge(cfg.out_dir)
    runs["tiny2/mamba2"] = str(root / "mamba2")
    (root / "labels").mkdir()
    scores = reference_scores(ds, ["bm25", "tfidf"], 30, progress=False)
    scores.to_parquet(root / "labels/reference_scores.parquet", index=False)
    return root, ds, runs


def test_chunk_table_joins_every_source(pipeline):
    root, ds, runs = pipeline
    t = an.chunk_table(ds, runs, root / "labels")
    assert len(t) == len(ds.chunks)
    assert len(an.delta_columns(t, "tiny/context_first")) == 2 * 4  # 2 layers x 4 statistics
    assert t["helps:tiny/context_first"].notna().sum() > 0 and "helps:tiny/query_first" in t
    lm_rows = pd.read_parquet(root / "context_first/chunk_lm.parquet")
    merged = t.merge(lm_rows, on=["sample_id", "chunk_index"])
    np.testing.assert_allclose(merged["selfinfo:tiny/context_first"], merged["self_information"])
    with pytest.raises(FileNotFoundError, match="extraction run 'nope'"):
        an.chunk_table(ds, {"nope": root / "missing"})


@pytest.mark.notebook
def test_analysis_notebook_tiny(pipeline):
    root, ds, runs = pipeline
    params = {"dataset_dir": str(root / "ctx"), "runs": runs, "labels_dir": str(root / "labels"),
              "model": str(root / "lm"), "filter_run": "tiny/context_first", "filter_samples": 3,
              "budgets": [0.0, 0.5, 1.0], "n_boot": 20, "catboost_iterations": 20, "out_dir": str(root / "out"),
              "figures_dir": str(root / "fig"), "progress": False, "judge_model": str(root / "lm2"),
              "default_choice": None}
    run_notebook("notebooks/04_analysis.ipynb", root / "04.ipynb", params)
    m = json.loads((root / "out/metrics.json").read_text())
    t = an.add_within_prompt(an.chunk_table(ds, runs, root / "labels"))
    test = t[t["split"] == "test"]
    rec = {(r["score"], r["truth"]): r for r in m["scores"]}
    # a fixed-sign baseline: the recorded AUC is sklearn's on the test rows
    assert rec[("BM25", "relevant")]["auc"] == pytest.approx(roc_auc_score(test["relevant"], test["bm25"]))
    # the dev-chosen Δ score of each run (Mamba-1, and Mamba-2 with Δ per head): brute force over dev rows, then its
    # AUC on test
    dev = t[t["split"] == "dev"]
    assert json.loads((root / "mamba2/run.json").read_text())["key"]["model_facts"]["delta_granularity"] == "head"
    for run in ("tiny/context_first", "tiny2/mamba2"):
        cands = [(c, sg, roc_auc_score(dev["relevant"], sg * dev[c]))
                 for c in an.delta_columns(t, run) + an.within_prompt_columns(t, run) for sg in (1, -1)]
        col, sign, _ = max(cands, key=lambda x: x[2])
        best = rec[(f"Δ best ({run})", "relevant")]
        assert (best["column"], best["sign"]) == (col, sign)
        assert best["auc"] == pytest.approx(roc_auc_score(test["relevant"], sign * test[col]))
    # leave-one-out ground truth is evaluated where it exists
    assert ("BM25", "helps:tiny/context_first") in rec
    # filtering: the full budget is the full prompt, so its loss is the extraction's own target loss
    curves = pd.read_parquet(root / "out/filtering_curves.parquet")
    samples = pd.read_parquet(root / "context_first/samples.parquet").set_index("sample_id")
    full = curves[curves["budget"] == 1.0]
    np.testing.assert_allclose(full["loss"], samples.loc[full["sample_id"], "target_loss"].to_numpy(), rtol=1e-4)
    assert (curves.groupby(["sample_id", "budget"])["loss"].nunique()[lambda s: s.index.get_level_values(1) == 0.0] == 1).all()
    assert set(curves["score"]) >= {"random", "BM25", "oracle (ground truth)", "Δ best (tiny/query_first)"}
    results = (root / "out/results.md").read_text()
    assert "| BM25 |" in results and "Filtering (3 test samples" in results
    # within-prompt metrics: BM25's mean ROC-AUC within prompts is sklearn's per test prompt, averaged
    within = {r["score"]: r for r in m["within_prompt"]}
    per_prompt = [roc_auc_score(g["relevant"], g["bm25"]) for _, g in test.groupby("sample_id")
                  if 0 < g["relevant"].sum() < len(g)]
    assert within["BM25"]["sample_auc"] == pytest.approx(np.mean(per_prompt))
    # the paired comparison's pair was fixed on dev and its difference is a - b on test
    paired = m["paired_differences"]
    assert paired and all(r["diff"] == pytest.approx(r["a_value"] - r["b_value"]) for r in paired)
    assert all(r["diff_lo"] <= r["diff"] + 1e-9 <= r["diff_hi"] + 2e-9 or r["verdict"] != "not distinguishable"
               for r in paired)
    assert "**Paired differences**" in results and "**The lexical shortcut**" in results
    with pytest.raises(TypeError, match="AnalysisResults"):  # the results travel as one named object
        an.write_results(root / "out2", results)
    # filtering for a second LM (the Mamba-2 model completes what the Mamba-1 run's scores keep): the budget counted
    # in its tokenizer, and every difference paired on the same samples
    judge = pd.read_parquet(root / "out/second_lm_filtering_curves.parquet")
    second = m["second_lm_filtering"]
    assert second["reference"] == "TFIDF" and "**Filtering for a second LM**" in results
    from deltalens.analysis.filtering import chunk_token_counts
    from deltalens.lm.loading import load_lm

    jtok = load_lm(str(root / "lm2"))[1]
    counts = chunk_token_counts(ds, t, jtok)
    sid = judge["sample_id"].iloc[0]
    g = t[t["sample_id"] == sid].sort_values("chunk_index")
    assert counts.loc[g.index].tolist() == [len(jtok(x, add_special_tokens=False)["input_ids"])
                                            for x in ds.chunks.set_index(["sample_id", "chunk_index"]).loc[
                                                list(zip(g["sample_id"], g["chunk_index"])), "text"]]
    wide = judge.pivot_table(index="sample_id", columns=["score", "budget"], values="loss")
    for r in second["rows"]:
        direct = (wide[(r["score"], r["budget"])] - wide[("TFIDF", r["budget"])]).mean()
        assert r["loss_vs_ref"] == pytest.approx(direct, abs=1e-9)
        assert r["loss_vs_full"] == pytest.approx((wide[(r["score"], r["budget"])] - wide[("TFIDF", 1.0)]).mean())
    assert (judge[judge["budget"] == 1.0].groupby("sample_id")["loss"].nunique() == 1).all()
    # the hidden-attention baseline of the same forward: a dev-chosen score, compared with Δ by a paired difference
    ha = rec[("hidden attention from the prefix end (tiny/context_first)", "relevant")]
    assert ha["column"].startswith("hattn:tiny/context_first:L") and ha["column"].endswith(":prefix_end")
    assert ha["auc"] == pytest.approx(roc_auc_score(test["relevant"], ha["sign"] * test[ha["column"]]))
    ha_cands = [(c, sg, roc_auc_score(dev["relevant"], sg * dev[c])) for c in t.columns
                if c.startswith("hattn:tiny/context_first:") and c.endswith(":prefix_end") for sg in (1, -1)]
    assert (ha["column"], ha["sign"]) == max(ha_cands, key=lambda x: x[2])[:2]  # layer and sign chosen on dev
    assert any(r["b"] == "hidden attention from the prefix end (tiny/context_first)" for r in paired)
    assert ("hidden attention from the target line (tiny/query_first)", "relevant") not in rec  # not computed there
    # DeciMamba's decimation rule: layer and kept share chosen on dev among the run's decim columns
    dm = rec[("DeciMamba decimation (tiny/context_first)", "relevant")]
    dm_cands = [(c, roc_auc_score(dev["relevant"], dev[c])) for c in t.columns if c.startswith("decim:tiny/context_first:")]
    assert len(dm_cands) == 2 * 3 and dm["column"] == max(dm_cands, key=lambda x: x[1])[0]
    strata = m["lexical_strata"]
    assert {r["name_in_query"] for r in strata} == {True, False}
    for f in ("scores_relevant.png", "delta_auc_by_layer.png", "per_category.png", "filtering.png"):
        assert (root / "fig" / f).stat().st_size > 0
    # the context gain and leave-one-out figures equal a recomputation from the saved parquet files
    meta = ds.samples.set_index("sample_id")
    for row in m["context_gain"]:
        s = pd.read_parquet(runs[row["run"]] + "/samples.parquet")
        s = s[s["sample_id"].map(meta["split"]) == "test"]
        direct = (s["target_loss_no_context"] - s["target_loss"]).mean()
        assert row["context_gain"] == pytest.approx(direct) and row["samples"] == len(s)
        assert row["gain_lo"] <= row["context_gain"] <= row["gain_hi"]
        assert row["exact_match_with"] == pytest.approx(s["exact_match"].mean())
        named = s.dropna(subset=["name_accuracy", "name_accuracy_no_context"])
        assert row["name_samples"] == len(named) > 0
        assert row["name_accuracy_with"] == pytest.approx(named["name_accuracy"].mean())
        assert row["name_accuracy_gain"] == pytest.approx((named["name_accuracy"]
                                                            - named["name_accuracy_no_context"]).mean())
        assert row["name_gain_lo"] <= row["name_accuracy_gain"] <= row["name_gain_hi"]
        assert f"**{row['context_gain']:.3f}**" in results
    loo = m["leave_one_out_by_category"]["tiny/context_first"]
    lm_rows = pd.read_parquet(root / "context_first/chunk_lm.parquet").dropna(subset=["loss_gain"])
    j = lm_rows.merge(ds.chunks[["sample_id", "chunk_index", "category"]], on=["sample_id", "chunk_index"])
    j = j[j["sample_id"].map(meta["split"]) == "test"]
    for r in loo:
        g = j if r["category"] == "all" else j[j["category"] == r["category"]]
        assert r["mean_gain"] == pytest.approx(g["loss_gain"].mean()) and r["chunks"] == len(g)
        assert f"{r['mean_gain']:.4f}" in results


def test_cluster_bootstrap_resamples_projects_then_samples():
    from deltalens.analysis.context_use import cluster_bootstrap_mean

    rng = np.random.default_rng(0)
    # two projects with very different means: the project-level resampling must widen the interval far beyond a
    # sample-level bootstrap of 200 values
    values = np.r_[rng.normal(0.0, 0.1, 100), rng.normal(1.0, 0.1, 100)]
    samples = np.arange(200)
    projects = np.array(["a"] * 100 + ["b"] * 100)
    mean, lo, hi = cluster_bootstrap_mean(values, samples, projects, n_boot=500, seed=0)
    assert mean == pytest.approx(values.mean()) and lo < 0.2 and hi > 0.8
    # values of one sample are drawn together; NaN values are left out
    mean2, lo2, hi2 = cluster_bootstrap_mean(np.append(values, np.nan), np.append(samples, 0), np.append(projects, "a"),
                                             500, 0)
    assert (mean2, lo2, hi2) == (mean, lo, hi)
    same = cluster_bootstrap_mean(np.ones(10), np.arange(10), np.zeros(10), 50, 0)
    assert same == (1.0, 1.0, 1.0)


def test_labels_of_another_dataset_are_refused(pipeline, tmp_path):
    root, ds, runs = pipeline
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels/metrics.json").write_text(json.dumps({"dataset_fingerprint": "0" * 64}))
    with pytest.raises(ValueError, match="labels of another dataset"):
        an.chunk_table(ds, runs, tmp_path / "labels")


def test_judge_markdown_tells_self_filtering_from_another_model_s_delta():
    import pandas as pd

    from deltalens.analysis.report import judge_markdown

    def row(score, budget, loss, d):
        r = {"score": score, "budget": budget, "kept_share": budget, "loss": loss, "exact_match": 0.0, "samples": 4}
        for key, v in (("loss_vs_ref", d), ("loss_vs_full", loss - 3.0), ("exact_match_vs_ref", 0.0)):
            r.update({key: v, f"{key}_lo": v - 0.1, f"{key}_hi": v + 0.1})
        return r

    rows = [row(s, b, 4.0 if b == 0 else 3.0 if b == 1 else 3.5, 0.5 if s == "Δ own" else -0.5 if s == "Δ other" else 0.0)
            for s in ("TFIDF", "Δ own", "Δ other") for b in (0.0, 0.5, 1.0)]
    diffs = pd.DataFrame(rows)
    diffs.attrs.update(reference="TFIDF", n_boot=10)
    md = judge_markdown(diffs, "models/judge", "models/judge", ["Δ own", "Δ other"],
                        delta_models={"Δ own": "models/judge", "Δ other": "data/models/judge-plain"})
    assert md.startswith("**Filtering judged by the completing LM**")
    assert "Δ own (the completing LM's own Δ) keeps chunks that are worse than TFIDF" in md
    assert "Δ other (Δ of `data/models/judge-plain`, a different model from the completing LM) keeps chunks that are " \
           "better than TFIDF" in md
    assert "context gain on these samples is +1.000" in md
    assert judge_markdown(diffs, "models/second", "models/judge", ["Δ own"]).startswith("**Filtering for a second LM**")
