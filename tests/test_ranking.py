"""Within-prompt metrics, the projects-then-samples resamples, paired differences, the lexical strata, CatBoost
trained on dev only (deltalens.analysis.ranking, deltalens.analysis)."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from deltalens import analysis as an
from deltalens.analysis import ranking as rk


def table(n_projects=4, per_project=(3, 5, 8, 4), chunks=6, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_projects):
        for s in range(per_project[p]):
            n_rel = 1 + (s % 2)
            for c in range(chunks):
                rel = c < n_rel
                rows.append({"sample_id": f"p{p}s{s}", "project": f"p{p}", "chunk_index": c,
                             "split": "dev" if p < 2 else "test", "relevant": rel,
                             "good": rel + rng.normal(0, 0.6), "noise": rng.random(), "random": rng.random(),
                             "name_in_query": bool(rel and s % 3 == 0)})
    return pd.DataFrame(rows)


def test_per_sample_auc_equals_sklearn_per_prompt():
    t = table()
    v = rk.per_sample(t["sample_id"], t["relevant"], t["good"], "sample_auc")
    for sid, g in t.groupby("sample_id"):
        assert v[sid] == pytest.approx(roc_auc_score(g["relevant"], g["good"]))


def test_recall_and_ndcg_at_k_by_hand_with_seeded_ties():
    # one prompt, 4 chunks, relevant = {0, 3}; scores tie chunks 1 and 3 at the top: the tiebreak decides
    sid = ["a"] * 4
    y = [1, 0, 0, 1]
    s = [0.5, 0.9, 0.1, 0.9]
    first = rk.per_sample(sid, y, s, "recall@k", k=1, tiebreak=[0, 0.2, 0, 0.1])  # chunk 1 wins the tie
    assert first["a"] == 0.0
    second = rk.per_sample(sid, y, s, "recall@k", k=1, tiebreak=[0, 0.1, 0, 0.2])  # chunk 3 wins it
    assert second["a"] == 0.5
    # k = 2, order 1, 3, 0, 2 -> gains 0, 1: dcg = 1/log2(3); ideal (2 relevant) = 1 + 1/log2(3)
    nd = rk.per_sample(sid, y, s, "ndcg@k", k=2, tiebreak=[0, 0.2, 0, 0.1])
    assert nd["a"] == pytest.approx((1 / np.log2(3)) / (1 + 1 / np.log2(3)))
    # a prompt without relevant chunks has no recall (NaN), and no within-prompt AUC either
    assert np.isnan(rk.per_sample(["b"] * 3, [0, 0, 0], [1, 2, 3], "recall@k", k=2)["b"])
    assert np.isnan(rk.per_sample(["b"] * 3, [0, 0, 0], [1, 2, 3], "sample_auc")["b"])
    with pytest.raises(ValueError, match="allowed"):
        rk.per_sample(sid, y, s, "mrr")


def test_cluster_resamples_draw_whole_projects_then_samples():
    t = table()
    res = rk.cluster_resamples(t["sample_id"], t["project"], n_boot=300, seed=1)
    assert res.weights.shape == (300, t["sample_id"].nunique())
    sizes = t.groupby("project")["sample_id"].nunique()
    for p, n in sizes.items():
        block = res.weights[:, res.projects == p].sum(1)
        assert (block % n == 0).all()      # a project is drawn k times -> k * its size sample draws
    assert (res.weights.sum(1) > 0).all()
    again = rk.cluster_resamples(t["sample_id"], t["project"], n_boot=300, seed=1)
    np.testing.assert_array_equal(res.weights, again.weights)
    with pytest.raises(ValueError, match="two projects"):
        rk.cluster_resamples(["a", "a"], ["p", "q"], 10)


def test_paired_difference_is_paired_and_reads_its_own_interval():
    t = table()
    same = rk.paired_difference(t, ("good", 1.0), ("good", 1.0), n_boot=200)
    assert same["diff"] == 0 and same["diff_lo"] == 0 and same["diff_hi"] == 0
    assert same["verdict"] == "not distinguishable"
    better = rk.paired_difference(t, ("good", 1.0), ("noise", 1.0), n_boot=200, metric="recall@k")
    direct = (rk.per_sample(t.loc[t.split == "test", "sample_id"], t.loc[t.split == "test", "relevant"],
                            t.loc[t.split == "test", "good"], "recall@k", 2, t.loc[t.split == "test", "random"]).mean())
    assert better["a"] == pytest.approx(direct)
    assert better["verdict"] == "a better" and better["diff_lo"] > 0
    assert better["projects"] == 2 and better["samples"] == 12
    flipped = rk.paired_difference(t, ("noise", 1.0), ("good", 1.0), n_boot=200, metric="recall@k")
    assert flipped["verdict"] == "b better"


def test_ranking_table_points_and_intervals():
    t = table()
    tab = rk.ranking_table(t, {"good": ("good", 1.0), "noise": ("noise", 1.0)}, n_boot=100)
    test = t[t.split == "test"]
    g = tab.set_index("score").loc["good"]
    assert g["auc"] == pytest.approx(roc_auc_score(test["relevant"], test["good"]))
    for m in rk.METRICS:
        assert g[f"{m}_lo"] <= g[m] + 1e-12 and g[m] <= g[f"{m}_hi"] + 1e-12
    assert tab.attrs["projects"] == 2


def test_strata_put_each_strata_relevant_chunks_against_every_irrelevant_one():
    t = table()
    st = rk.strata_table(t, {"good": ("good", 1.0)}, n_boot=50)
    test = t[t.split == "test"]
    neg = test[~test.relevant]
    for stratum in (True, False):
        pos = test[test.relevant & (test.name_in_query == stratum)]
        both = pd.concat([pos, neg])
        r = st[st.name_in_query == stratum].iloc[0]
        assert r["auc"] == pytest.approx(roc_auc_score(both["relevant"], both["good"]))
        assert r["relevant"] == len(pos)
        assert r["share_of_relevant"] == pytest.approx(len(pos) / test.relevant.sum())


def test_name_in_query_reads_identifiers_of_the_prefix():
    class DS:
        samples = pd.DataFrame({"sample_id": ["s"], "prefix": ["x = parse_header(line)\n# mentions Other"]})
        chunks = pd.DataFrame({"sample_id": ["s"] * 3, "chunk_index": [0, 1, 2],
                               "defines": [np.array(["parse_header"]), np.array(["parse"]), np.array(["Other", "y"])]})

    v = rk.name_in_query(DS())
    assert v.tolist() == [True, False, True]


def test_within_prompt_normalisation():
    t = table().rename(columns={"good": "delta:r:L0:mean"})
    t2 = an.add_within_prompt(t)
    z = t2.groupby("sample_id")["inprompt_z:delta:r:L0:mean"]
    assert np.allclose(z.mean(), 0, atol=1e-12)
    r = t2["inprompt_rank:delta:r:L0:mean"]
    assert r.between(0, 1).all()
    assert an.within_prompt_columns(t2, "r") == ["inprompt_rank:delta:r:L0:mean", "inprompt_z:delta:r:L0:mean"]
    # the within-prompt order is unchanged, so the within-prompt metrics are the same
    a = rk.per_sample(t2.sample_id, t2.relevant, t2["delta:r:L0:mean"], "sample_auc")
    b = rk.per_sample(t2.sample_id, t2.relevant, t2["inprompt_z:delta:r:L0:mean"], "sample_auc")
    pd.testing.assert_series_equal(a, b)


def test_catboost_is_trained_on_dev_projects_only():
    t = table().rename(columns={"good": "delta:r:L0:mean"})
    t["bm25"] = t["noise"]
    t["length"] = 1.0
    t["path_distance"] = 0.0
    learned = an.learned_scores(t, iterations=20)
    for pred in learned.values():
        assert np.isnan(pred[(t.split == "dev").to_numpy()]).all()
        assert not np.isnan(pred[(t.split == "test").to_numpy()]).any()
    leak = t.copy()
    leak.loc[leak.index[0], "project"] = "p3"  # a dev row of a test project
    with pytest.raises(ValueError, match="both dev and test"):
        an.learned_scores(leak, iterations=5)


def test_choose_on_dev_by_within_prompt_auc_looks_only_at_dev():
    t = table().rename(columns={"good": "delta:r:L0:mean", "noise": "delta:r:L1:mean"})
    test = t.split == "test"
    t.loc[test, "delta:r:L1:mean"] = t.loc[test, "relevant"] * 10.0  # perfect on test, noise on dev
    ch = an.choose_on_dev(t, ["delta:r:L0:mean", "delta:r:L1:mean"], metric="sample_auc")
    assert ch.column == "delta:r:L0:mean" and ch.chosen_by == "sample_auc"
    dev = t[~test]
    assert ch.dev_sample_auc == pytest.approx(
        np.mean([roc_auc_score(g.relevant, g["delta:r:L0:mean"]) for _, g in dev.groupby("sample_id")]))
