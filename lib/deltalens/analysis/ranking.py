"""Scores judged the way a filter uses them, with uncertainty that respects the data's clusters.

A filter ranks the chunks *within one prompt* and keeps the top ones, so besides the pooled ROC-AUC (all chunks of
all prompts in one ranking) every score is measured inside each prompt:

* ``sample_auc`` — the mean over prompts of the ROC-AUC among that prompt's chunks (prompts with both classes);
* ``recall@k`` — the share of a prompt's relevant chunks among its ``k`` top-scored chunks (prompts with a relevant
  chunk), and ``ndcg@k`` with binary gains. Ties are broken by a seeded random order, never by row order.

Uncertainty: :func:`~deltalens.core.bootstrap.cluster_resamples` (the project's one bootstrap) draws projects with replacement, then samples within each drawn project
(a chunk stays with its prompt), and represents each resample as a multiplicity per prompt. Every score is measured
on the *same* resamples, so the difference of two scores (:func:`paired_difference`) is a paired one, with its own
interval; verdicts are read from that interval, never from two overlapping ones.

The lexical shortcut (:func:`name_in_query`): a chunk that defines a name already written in the query (the file
prefix) is easy for any lexical score; :func:`strata_table` reports every score for the relevant chunks of each
stratum against all irrelevant chunks.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from ..core.bootstrap import Resamples, cluster_resamples, interval

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
METRICS = ("auc", "sample_auc", "recall@k", "ndcg@k")


# ---- per-prompt metrics ----------------------------------------------------------------------------------------------
def _frame(samples, y, s, tiebreak) -> pd.DataFrame:
    f = pd.DataFrame({"sample": np.asarray(samples), "y": np.asarray(y, float), "s": np.asarray(s, float),
                      "tb": np.asarray(tiebreak, float)})
    return f[~f["y"].isna() & ~f["s"].isna()]


def per_sample(samples, y, s, metric: str, k: int = 2, tiebreak=None) -> pd.Series:
    """One value per prompt (NaN where the metric is undefined for it), indexed by sample id.

    ``metric``: ``sample_auc`` | ``recall@k`` | ``ndcg@k`` (``k`` is the argument)."""
    if tiebreak is None:
        tiebreak = np.random.default_rng(0).random(len(np.asarray(s)))
    f = _frame(samples, y, s, tiebreak)
    g = f.groupby("sample", sort=False)
    if metric == "sample_auc":
        rank = g["s"].rank(method="average")  # ties count one half, as in ROC-AUC
        pos_rank = (rank * f["y"]).groupby(f["sample"], sort=False).sum()
        npos = f["y"].groupby(f["sample"], sort=False).sum()
        nneg = f["y"].groupby(f["sample"], sort=False).size() - npos
        out = (pos_rank - npos * (npos + 1) / 2) / (npos * nneg)
        return out.where((npos > 0) & (nneg > 0))
    if metric not in ("recall@k", "ndcg@k"):
        raise ValueError(f"metric={metric!r}; allowed: sample_auc, recall@k, ndcg@k")
    f = f.sort_values(["sample", "s", "tb"], ascending=[True, False, False])
    f["position"] = f.groupby("sample", sort=False).cumcount()  # 0 = top-scored
    top = f[f["position"] < k]
    hits = top.groupby("sample", sort=False)["y"].sum()
    npos = f.groupby("sample", sort=False)["y"].sum()
    if metric == "recall@k":
        return (hits / npos).where(npos > 0)
    dcg = (top["y"] / np.log2(top["position"] + 2)).groupby(top["sample"], sort=False).sum()
    ideal = npos.clip(upper=k).map(lambda m: float(np.sum(1 / np.log2(np.arange(m) + 2))))
    return (dcg / ideal).where(npos > 0)


def _weighted_mean(values: pd.Series, res: Resamples) -> np.ndarray:
    """(n_boot,) resampled means of per-prompt values (NaN prompts left out of numerator and denominator)."""
    v = values.reindex(res.sample_ids).to_numpy(float)
    ok = ~np.isnan(v)
    w = res.weights[:, ok].astype(float)
    den = w.sum(1)
    return np.where(den > 0, (w * v[ok]).sum(1) / np.where(den > 0, den, 1), np.nan)


def _pooled(fn, samples, y, s, res: Resamples) -> np.ndarray:
    keep = ~np.isnan(y) & ~np.isnan(s)
    yy, ss, w = y[keep].astype(bool), s[keep], res.row_weights(np.asarray(samples)[keep])
    out = np.full(res.n_boot, np.nan)
    for b in range(res.n_boot):
        m = w[b] > 0
        if yy[m].any() and not yy[m].all():
            out[b] = fn(yy[m], ss[m], sample_weight=w[b][m])
    return out


def metric_values(t: pd.DataFrame, score: np.ndarray, truth: str, metric: str, res: Resamples | None, k: int = 2,
                  tiebreak: np.ndarray | None = None) -> tuple[float, np.ndarray | None]:
    """(the metric on the rows of ``t``, its values under each resample or None). ``score`` is already signed."""
    y = t[truth].to_numpy(float)
    s = np.asarray(score, float)
    samples = t["sample_id"].to_numpy()
    if metric in ("auc", "pr_auc"):
        fn = roc_auc_score if metric == "auc" else average_precision_score
        keep = ~np.isnan(y) & ~np.isnan(s)
        yy = y[keep].astype(bool)
        point = float(fn(yy, s[keep])) if yy.any() and not yy.all() else float("nan")
        return point, (None if res is None else _pooled(fn, samples, y, s, res))
    if tiebreak is None and "random" in t.columns:
        tiebreak = t["random"].to_numpy()
    values = per_sample(samples, y, s, metric, k, tiebreak)
    point = float(values.mean()) if values.notna().any() else float("nan")
    return point, (None if res is None else _weighted_mean(values, res))


# ---- tables ------------------------------------------------------------------------------------------------------------
def signed(t: pd.DataFrame, column: str, sign: float) -> np.ndarray:
    return sign * t[column].to_numpy(float)


def ranking_table(t: pd.DataFrame, scores: dict[str, tuple[str | np.ndarray, float]], truth: str = "relevant",
                  split: str = "test", k: int = 2, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """One row per score: pooled ROC-AUC, mean per-prompt ROC-AUC, recall@k, nDCG@k on ``split``, each with a 95 %
    projects-then-samples bootstrap interval. ``scores``: name -> (column or per-row array of ``t``, sign)."""
    mask = (t["split"] == split).to_numpy() if split else np.ones(len(t), bool)
    tt = t[mask]
    res = cluster_resamples(tt["sample_id"], tt["project"], n_boot, seed)
    rows = []
    for name, (col, sign) in scores.items():
        s = sign * (tt[col].to_numpy(float) if isinstance(col, str) else np.asarray(col, float)[mask])
        row = {"score": name, "n_chunks": int((~np.isnan(s) & tt[truth].notna().to_numpy()).sum())}
        for metric in METRICS:
            point, boot = metric_values(tt, s, truth, metric, res, k)
            lo, hi = interval(boot)
            row.update({metric: point, f"{metric}_lo": lo, f"{metric}_hi": hi})
        rows.append(row)
    out = pd.DataFrame(rows)
    out.attrs.update(k=k, n_boot=n_boot, split=split, samples=int(tt["sample_id"].nunique()),
                     projects=int(tt["project"].nunique()))
    return out


def paired_difference(t: pd.DataFrame, a: tuple[str | np.ndarray, float], b: tuple[str | np.ndarray, float],
                      truth: str = "relevant", split: str = "test", metric: str = "sample_auc", k: int = 2,
                      n_boot: int = 1000, seed: int = 0) -> dict:
    """Score ``a`` minus score ``b`` on the same chunks and the same resamples: the difference, its 95 % interval and
    a verdict (``a better`` when the interval is above 0, ``b better`` below, else ``not distinguishable``)."""
    mask = (t["split"] == split).to_numpy() if split else np.ones(len(t), bool)
    tt = t[mask]
    both = np.ones(len(tt), bool)
    arrays = []
    for col, sign in (a, b):
        s = sign * (tt[col].to_numpy(float) if isinstance(col, str) else np.asarray(col, float)[mask])
        both &= ~np.isnan(s)
        arrays.append(s)
    tt = tt[both]
    arrays = [s[both] for s in arrays]
    res = cluster_resamples(tt["sample_id"], tt["project"], n_boot, seed)
    (pa, ba), (pb, bb) = (metric_values(tt, s, truth, metric, res, k) for s in arrays)
    lo, hi = interval(ba - bb)
    verdict = "a better" if lo > 0 else "b better" if hi < 0 else "not distinguishable"
    return {"metric": metric, "a": pa, "b": pb, "diff": pa - pb, "diff_lo": lo, "diff_hi": hi, "verdict": verdict,
            "n_chunks": int(len(tt)), "samples": int(tt["sample_id"].nunique()), "projects": int(tt["project"].nunique())}


# ---- the lexical shortcut ----------------------------------------------------------------------------------------------
def name_in_query(ds) -> pd.Series:
    """Per (sample_id, chunk_index): does the chunk define a name that the query (the file prefix before the target
    line) already contains as an identifier?"""
    idents = {sid: set(IDENTIFIER.findall(prefix or "")) for sid, prefix in zip(ds.samples["sample_id"], ds.samples["prefix"])}
    c = ds.chunks
    values = [bool(set(defines if defines is not None else ()) & idents[sid])
              for sid, defines in zip(c["sample_id"], c["defines"])]
    return pd.Series(values, index=pd.MultiIndex.from_arrays([c["sample_id"], c["chunk_index"]]), name="name_in_query")


def strata_table(t: pd.DataFrame, scores: dict[str, tuple[str | np.ndarray, float]], truth: str = "relevant",
                 split: str = "test", n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Pooled ROC-AUC of every score for the relevant chunks of each ``name_in_query`` stratum against *every*
    irrelevant chunk (the stratum is a property of the relevant chunk: can the query's words find it?), with
    bootstrap intervals, the stratum's share of the relevant chunks, and of the irrelevant chunks that also define a
    name of the query (the lexical decoys)."""
    if "name_in_query" not in t:
        raise ValueError("the chunk table has no name_in_query column (analysis.chunk_table adds it)")
    mask = (t["split"] == split).to_numpy() if split else np.ones(len(t), bool)
    y_all = t[truth].to_numpy(float)
    inq = t["name_in_query"].fillna(False).to_numpy(bool)
    positives = mask & (y_all == 1)
    negatives = mask & (y_all == 0)
    rows = []
    for stratum in (True, False):
        m = negatives | (positives & (inq == stratum))
        tt = t[m]
        res = cluster_resamples(tt["sample_id"], tt["project"], n_boot, seed)
        for name, (col, sign) in scores.items():
            s = sign * (tt[col].to_numpy(float) if isinstance(col, str) else np.asarray(col, float)[m])
            point, boot = metric_values(tt, s, truth, "auc", res)
            lo, hi = interval(boot)
            rows.append({"score": name, "name_in_query": stratum, "auc": point, "auc_lo": lo, "auc_hi": hi,
                         "relevant": int((positives & (inq == stratum)).sum()), "irrelevant": int(negatives.sum()),
                         "share_of_relevant": float((positives & (inq == stratum)).sum() / max(1, positives.sum())),
                         "share_of_irrelevant_with_name_in_query": float((negatives & inq).sum() / max(1, negatives.sum()))})
    return pd.DataFrame(rows)
