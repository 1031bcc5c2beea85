"""The one bootstrap (core.bootstrap) and the three places that read it: part 1's AUC intervals
(core.metrics.bootstrap_ci), part 4's rankings (analysis.ranking) and the context gain (analysis.context_use)."""

import numpy as np
import pytest

from deltalens.analysis.context_use import cluster_bootstrap_mean
from deltalens.core.bootstrap import cluster_resamples, interval
from deltalens.core.metrics import auc, bootstrap_auc, bootstrap_ci


def test_one_stage_draws_each_sample_whole_and_in_sorted_order():
    groups = np.array(["c", "a", "b", "a", "c", "c"])
    res = cluster_resamples(groups, n_boot=200, seed=3)
    assert list(res.sample_ids) == ["a", "b", "c"]          # sorted: row order never changes the draws
    assert (res.weights.sum(1) == 3).all()                  # three samples drawn with replacement
    rw = res.row_weights(groups)
    assert rw.shape == (200, 6)
    np.testing.assert_array_equal(rw[:, 1], rw[:, 3])       # both rows of sample "a" weigh the same
    shuffled = cluster_resamples(groups[::-1], n_boot=200, seed=3)
    np.testing.assert_array_equal(res.weights, shuffled.weights)
    with pytest.raises(ValueError, match="not in the resamples"):
        res.row_weights(np.array(["a", "z"]))


def test_two_stage_draws_whole_projects():
    samples = np.array([f"s{i}" for i in range(9)])
    projects = np.array(["p"] * 2 + ["q"] * 3 + ["r"] * 4)
    res = cluster_resamples(samples, projects, n_boot=400, seed=0)
    for p, n in (("p", 2), ("q", 3), ("r", 4)):
        assert (res.weights[:, res.projects == p].sum(1) % n == 0).all()
    # a project can be left out of a resample, which a one-stage bootstrap over samples never does to 4 samples
    assert (res.weights[:, res.projects == "r"].sum(1) == 0).any()


def test_bootstrap_ci_equals_resampling_rows_by_hand():
    """The interval from weights equals the textbook one: draw groups with replacement, concatenate their rows."""
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(30), 5)
    labels = rng.random(150) < 0.3
    scores = labels + rng.normal(0, 1.0, 150)
    uniq = np.unique(groups)
    members = [np.flatnonzero(groups == g) for g in uniq]
    draw = np.random.default_rng(7)
    by_hand = [auc(labels[idx], scores[idx]) for idx in
               (np.concatenate([members[i] for i in draw.integers(0, len(uniq), len(uniq))]) for _ in range(100))]
    assert bootstrap_ci(auc, labels, scores, groups, n=100, seed=7) == pytest.approx(interval(np.array(by_hand)),
                                                                                      abs=1e-12)
    lo, hi = bootstrap_auc(labels, scores, groups, n=100, seed=7)
    assert lo < auc(labels, scores) < hi


def test_bootstrap_ci_leaves_out_resamples_where_the_metric_is_undefined():
    groups = np.arange(4)
    labels = np.array([True, False, False, False])   # resamples without group 0 have one class: AUC is NaN
    lo, hi = bootstrap_ci(auc, labels, np.array([0.9, 0.1, 0.2, 0.3]), groups, n=50, seed=0)
    assert (lo, hi) == (1.0, 1.0)
    assert np.isnan(bootstrap_ci(auc, np.zeros(4, bool), np.arange(4.0), groups, n=20)[0])


def test_cluster_bootstrap_mean_is_the_weighted_mean_of_the_same_resamples():
    rng = np.random.default_rng(2)
    samples = np.repeat(np.arange(20), 3)
    projects = np.where(samples < 8, "a", np.where(samples < 15, "b", "c"))
    values = rng.normal(size=60)
    mean, lo, hi = cluster_bootstrap_mean(values, samples, projects, n_boot=300, seed=4)
    w = cluster_resamples(samples, projects, 300, 4).row_weights(samples)
    boot = np.array([np.repeat(values, wb).mean() for wb in w])
    assert mean == pytest.approx(values.mean())
    assert (lo, hi) == pytest.approx(interval(boot), abs=1e-12)
