"""How good are the labels? Precision / recall / F1 against the dataset's ground truth, the thesis' check on
injected chunks, results per chunk category, Cohen's kappa between labelers and with the truth, and cost.

Ground truth: a chunk is relevant iff its category is ``relevant`` (it defines a name the target line uses).
Metrics of a labeler are computed on the chunks it labeled (``coverage`` says how many that is); ``recall_strict``
counts chunks it left unlabeled as missed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import cohen_kappa_score, confusion_matrix, precision_recall_fscore_support

from ..context.schema import CATEGORIES

TRUTH = "ground truth"


def ground_truth(ds) -> pd.DataFrame:
    """sample_id, chunk_index, split, category, relevant (bool) for every chunk of a ContextDataset."""
    t = ds.chunks[["sample_id", "chunk_index", "category"]].merge(ds.samples[["sample_id", "split"]], on="sample_id")
    t["relevant"] = t["category"] == "relevant"
    return t[["sample_id", "chunk_index", "split", "category", "relevant"]]


def join_truth(labels: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """Labels with split, category and relevant joined on (sample_id, chunk_index); a label whose chunk is not in
    the dataset is an error (it would otherwise vanish from every metric)."""
    j = labels.merge(truth, on=["sample_id", "chunk_index"], how="left", validate="many_to_one")
    orphans = j[j["category"].isna()]
    if len(orphans):
        r = orphans.iloc[0]
        raise ValueError(f"{len(orphans)} label row(s) name chunks not in the dataset, e.g. labeler {r['labeler']!r} "
                         f"sample {r['sample_id']!r} chunk {r['chunk_index']}")
    return j


def _select(j: pd.DataFrame, split: str | None, samples) -> pd.DataFrame:
    if split is not None:
        j = j[j["split"] == split]
    if samples is not None:
        j = j[j["sample_id"].isin(set(samples))]
    return j


def label_quality(labels: pd.DataFrame, truth: pd.DataFrame, split: str | None = "test", samples=None) -> pd.DataFrame:
    """One row per labeler: samples, chunks, coverage, precision, recall, F1, recall_strict, injected_rejected
    (share of injected chunks labeled NOT relevant — the thesis' check), distractor_rejected, relevant_share,
    kappa with the ground truth, and score_auc (threshold-free ROC-AUC of the score, reference labelers only)."""
    j = _select(join_truth(labels, truth), split, samples)
    rows = []
    for name, g in j.groupby("labeler", sort=False):
        lab = g[g["label"].notna()]
        y, p = lab["relevant"].to_numpy(bool), lab["label"].to_numpy(bool)
        prec, rec, f1, _ = precision_recall_fscore_support(y, p, average="binary", zero_division=0) if len(lab) else (np.nan,) * 4
        inj = lab[lab["category"] == "injected"]
        dis = lab[lab["category"] == "distractor"]
        rows.append({
            "labeler": name, "kind": g["kind"].iloc[0], "samples": g["sample_id"].nunique(), "chunks": len(g),
            "coverage": len(lab) / len(g), "precision": prec, "recall": rec, "f1": f1,
            "recall_strict": (p & y).sum() / max(1, g["relevant"].sum()),
            "injected_rejected": float((~inj["label"].to_numpy(bool)).mean()) if len(inj) else np.nan,
            "distractor_rejected": float((~dis["label"].to_numpy(bool)).mean()) if len(dis) else np.nan,
            "relevant_share": float(p.mean()) if len(lab) else np.nan,
            "kappa_truth": _kappa(y, p),
            "score_auc": _score_auc(g),
        })
    return pd.DataFrame(rows)


def _score_auc(g: pd.DataFrame) -> float:
    """ROC-AUC of the thresholded score (reference labelers; NaN for labelers without a score)."""
    from ..core.metrics import auc

    s = g[g["score"].notna()]
    if len(s) < len(g) or s["relevant"].nunique() < 2:
        return np.nan
    return float(auc(s["relevant"].to_numpy(int), s["score"].to_numpy(float)))


def _kappa(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or (len(set(a.tolist())) < 2 and len(set(b.tolist())) < 2):
        return np.nan
    return float(cohen_kappa_score(a, b))


def per_category(labels: pd.DataFrame, truth: pd.DataFrame, split: str | None = "test", samples=None) -> pd.DataFrame:
    """Share of chunks labeled relevant, per labeler and chunk category (ground truth: 1 for relevant, 0 else)."""
    j = _select(join_truth(labels, truth), split, samples)
    j = j[j["label"].notna()]
    out = (j.assign(labeled_relevant=j["label"].astype(bool)).groupby(["labeler", "category"], sort=False)
           .agg(labeled_relevant=("labeled_relevant", "mean"), chunks=("labeled_relevant", "size")).reset_index())
    labeler_order = {n: i for i, n in enumerate(dict.fromkeys(labels["labeler"]))}
    category_order = {c: i for i, c in enumerate(CATEGORIES)}
    out = out.assign(_l=out["labeler"].map(labeler_order), _c=out["category"].map(category_order))
    return out.sort_values(["_l", "_c"]).drop(columns=["_l", "_c"]).reset_index(drop=True)


def agreement(labels: pd.DataFrame, truth: pd.DataFrame, split: str | None = "test", samples=None) -> pd.DataFrame:
    """Cohen's kappa between every pair of labelers and the ground truth, on the chunks both labeled
    (NaN when they share fewer than 2 chunks or neither varies)."""
    j = _select(join_truth(labels, truth), split, samples)
    wide = j.pivot_table(index=["sample_id", "chunk_index"], columns="labeler", values="label", aggfunc="first")
    truth_col = j.drop_duplicates(["sample_id", "chunk_index"]).set_index(["sample_id", "chunk_index"])["relevant"]
    wide[TRUTH] = truth_col.reindex(wide.index)
    names = [TRUTH] + [n for n in dict.fromkeys(j["labeler"])]
    k = pd.DataFrame(np.nan, index=names, columns=names)
    for a in names:
        for b in names:
            both = wide[[a, b]].dropna() if a != b else wide[[a]].dropna()
            if a == b:
                k.loc[a, b] = 1.0 if len(both) else np.nan
            else:
                k.loc[a, b] = _kappa(both[a].to_numpy(bool), both[b].to_numpy(bool))
    return k


def confusions(labels: pd.DataFrame, truth: pd.DataFrame, split: str | None = "test", samples=None) -> dict[str, np.ndarray]:
    """{labeler: 2x2 counts [[TN, FP], [FN, TP]]} on labeled chunks (rows: truth, columns: label)."""
    j = _select(join_truth(labels, truth), split, samples)
    out = {}
    for name, g in j.groupby("labeler", sort=False):
        g = g[g["label"].notna()]
        out[name] = confusion_matrix(g["relevant"].to_numpy(bool), g["label"].to_numpy(bool), labels=[False, True])
    return out


def cost_table(stats: pd.DataFrame) -> pd.DataFrame:
    """Per generative labeler: answers, share of each parse status, unparseable share (malformed + empty among
    answers), mean prompt / completion tokens and seconds per sample."""
    rows = []
    for name, g in stats.groupby("labeler", sort=False):
        answered = g[g["status"] != "unanswered"]
        n = max(1, len(answered))
        row = {"labeler": name, "prompts": len(g), "answered": len(answered)}
        for s in ("ok", "partial", "malformed", "empty"):
            row[f"share_{s}"] = (answered["status"] == s).sum() / n if len(answered) else np.nan
        row["unparseable_share"] = answered["status"].isin(["malformed", "empty"]).sum() / n if len(answered) else np.nan
        for c in ("prompt_tokens", "completion_tokens", "seconds"):
            row[f"mean_{c}"] = float(answered[c].mean()) if len(answered) and answered[c].notna().any() else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def conclusions(quality: pd.DataFrame, cost: pd.DataFrame, skipped: dict[str, str], split: str | None) -> str:
    """Markdown conclusions written from the numbers."""
    where = f"the {split} split" if split else "all samples"
    if quality.empty:
        return f"No labeler produced labels on {where}."
    q = quality.sort_values("f1", ascending=False)
    best = q.iloc[0]
    lines = [f"On {where}, the best labeler by F1 is **{best['labeler']}** (F1 {best['f1']:.3f}, precision "
             f"{best['precision']:.3f}, recall {best['recall']:.3f}, kappa with the ground truth {best['kappa_truth']:.3f})."]
    for _, r in q.iterrows():
        auc = f", ROC-AUC of its score {r['score_auc']:.3f}" if pd.notna(r.get("score_auc")) else ""
        lines.append(f"- {r['labeler']} ({r['kind']}, {r['samples']} samples): F1 {r['f1']:.3f}{auc}; rejects "
                     f"{r['injected_rejected']:.1%} of injected chunks and {r['distractor_rejected']:.1%} of "
                     f"same-project distractors; labels {r['relevant_share']:.1%} of chunks relevant"
                     + (f"; coverage {r['coverage']:.1%}" if r["coverage"] < 1 else "") + ".")
    gaps = q[(q["injected_rejected"] - q["distractor_rejected"]) > 0.05]
    if len(gaps):
        lines.append(f"Injected code from other projects is easier to reject than same-project distractors for "
                     f"{', '.join(gaps['labeler'])}: the hard negatives are the distractors.")
    for _, r in cost.iterrows():
        if r["answered"]:
            lines.append(f"- {r['labeler']}: {r['answered']}/{r['prompts']} prompts answered, "
                         f"{r['unparseable_share']:.1%} unparseable, {r['share_partial']:.1%} partial, "
                         f"{r['mean_seconds']:.1f} s and {r['mean_prompt_tokens']:.0f} prompt tokens per sample.")
    if skipped:
        lines.append("Skipped labelers (not configured here): " + "; ".join(skipped.values()) + ".")
    return "\n".join(lines)
