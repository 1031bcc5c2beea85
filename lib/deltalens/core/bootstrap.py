"""The one bootstrap of the project: resamples that respect the data's clusters, as weights.

:func:`cluster_resamples` draws, for each of ``n_boot`` resamples, how often every sample is taken:

* with ``projects``: two stages — projects with replacement, then samples with replacement within each drawn project
  (the chunks of a sample always travel together: :meth:`Resamples.row_weights`);
* without: one stage — samples (sequences, prompts) with replacement.

Every interval of the study is read from such weights: part 1's AUC intervals over sequences
(:func:`deltalens.core.metrics.bootstrap_ci`), part 4's metrics and paired differences
(:mod:`deltalens.analysis.ranking`) and the context gain (:mod:`deltalens.analysis.context_use`). Clusters are
ordered by their sorted ids, so the same data gives the same resamples in whatever order its rows come.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Resamples:
    """``weights[b, i]``: how often sample ``sample_ids[i]`` is drawn in resample ``b``."""

    sample_ids: np.ndarray   # (n_samples,)
    projects: np.ndarray     # (n_samples,) (one stage: the sample ids again)
    weights: np.ndarray      # (n_boot, n_samples) int

    @property
    def n_boot(self) -> int:
        return int(self.weights.shape[0])

    def row_weights(self, sample_of_row: np.ndarray) -> np.ndarray:
        """(n_boot, n_rows): each row (a chunk, a token) weighs what its sample weighs."""
        pos = pd.Index(self.sample_ids).get_indexer(sample_of_row)
        if (pos < 0).any():
            missing = sorted(set(np.asarray(sample_of_row)[pos < 0]))[:3]
            raise ValueError(f"rows of samples that are not in the resamples, e.g. {missing}")
        return self.weights[:, pos]


def cluster_resamples(sample_ids, projects=None, n_boot: int = 1000, seed: int = 0) -> Resamples:
    """Bootstrap weights over the unique samples given (one entry per row is fine): projects then samples within
    them when ``projects`` is given, else samples alone."""
    if projects is None:
        uniq = np.unique(np.asarray(sample_ids))
        rng = np.random.default_rng(seed)
        w = np.zeros((n_boot, len(uniq)), dtype=np.int64)
        for b in range(n_boot):
            np.add.at(w[b], rng.integers(0, len(uniq), len(uniq)), 1)
        return Resamples(uniq, uniq, w)
    pairs = pd.DataFrame({"s": np.asarray(sample_ids), "p": np.asarray(projects)}).drop_duplicates("s")
    clash = pairs.merge(pd.DataFrame({"s": sample_ids, "p2": projects}), on="s").query("p != p2")
    if len(clash):
        raise ValueError(f"sample {clash['s'].iloc[0]!r} is given two projects ({clash['p'].iloc[0]!r}, "
                         f"{clash['p2'].iloc[0]!r})")
    pairs = pairs.sort_values(["p", "s"]).reset_index(drop=True)
    members = [np.flatnonzero(pairs["p"].to_numpy() == p) for p in pairs["p"].unique()]
    rng = np.random.default_rng(seed)
    w = np.zeros((n_boot, len(pairs)), dtype=np.int64)
    for b in range(n_boot):
        for g in rng.integers(0, len(members), len(members)):
            np.add.at(w[b], members[g][rng.integers(0, len(members[g]), len(members[g]))], 1)
    return Resamples(pairs["s"].to_numpy(), pairs["p"].to_numpy(), w)


def interval(values: np.ndarray | None) -> tuple[float, float]:
    """The 95 % percentile interval of bootstrap values (NaNs left out; NaN when none is left)."""
    if values is None:
        return float("nan"), float("nan")
    v = np.asarray(values, float)
    v = v[~np.isnan(v)]
    if not len(v):
        return float("nan"), float("nan")
    lo, hi = np.percentile(v, [2.5, 97.5])
    return float(lo), float(hi)

