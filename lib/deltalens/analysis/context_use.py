"""Does the model read its context? Measured from the extraction's own outputs (``samples.parquet``,
``chunk_lm.parquet``), with uncertainty that respects the data's clusters.

* **Context gain** per sample = target-line loss without any chunk − with all chunks (nats/token; positive: the
  chunks help), and greedy exact match with vs without the chunks, per extraction run (model × prompt order).
* **Leave-one-out** per chunk: signed gain = loss without the chunk − loss with all chunks (a chunk can hurt),
  summarised per static category (relevant / related / distractor / injected).

Intervals: a two-stage bootstrap — resample projects, then samples within each drawn project (chunks stay with
their sample) — so a project with many samples cannot narrow the interval on its own (the test split has 6).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..core.bootstrap import cluster_resamples, interval
from ..core.chunk_columns import CHUNK_LM, SAMPLES
from ..core.paths import resolve

CATEGORIES = ("relevant", "related", "distractor", "injected")


def cluster_bootstrap_mean(values: np.ndarray, samples: np.ndarray, projects: np.ndarray, n_boot: int = 1000,
                           seed: int = 0) -> tuple[float, float, float]:
    """(mean, 2.5 %, 97.5 %) of ``values`` under a projects-then-samples bootstrap
    (:func:`~deltalens.core.bootstrap.cluster_resamples`). ``samples`` / ``projects`` give each value's sample and
    project (several values may share a sample: they are drawn together); NaN values are left out."""
    values, samples, projects = np.asarray(values, float), np.asarray(samples), np.asarray(projects)
    keep = ~np.isnan(values)
    values, samples, projects = values[keep], samples[keep], projects[keep]
    if not len(values):
        return float("nan"), float("nan"), float("nan")
    weights = cluster_resamples(samples, projects, n_boot, seed).row_weights(samples)  # (n_boot, n_values)
    lo, hi = interval(weights @ values / weights.sum(1))
    return float(values.mean()), lo, hi


def run_samples(ds, run_dir) -> pd.DataFrame:
    """The run's per-sample records joined with split and project."""
    s = pd.read_parquet(resolve(run_dir) / SAMPLES)
    meta = ds.samples.set_index("sample_id")[["split", "project"]]
    return s.join(meta, on="sample_id")


def context_gain_table(ds, runs: dict, split: str = "test", n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """One row per run: samples, projects, mean target loss with / without the chunks, the context gain with its
    project-clustered 95 % CI, exact match with / without, and how many prompts exceeded the trained length."""
    rows = []
    for name, d in runs.items():
        s = run_samples(ds, d)
        s = s[s["split"] == split]
        if "context_gain" not in s.columns:
            raise ValueError(f"run {name!r} ({d}) has no context_gain: extract it again with this version")
        gain, lo, hi = cluster_bootstrap_mean(s["context_gain"], s["sample_id"], s["project"], n_boot, seed)
        em_gain = cluster_bootstrap_mean(s["exact_match"].astype(float) - s["exact_match_no_context"].astype(float),
                                         s["sample_id"], s["project"], n_boot, seed)
        rows.append({"run": name, "samples": len(s), "projects": s["project"].nunique(),
                     "loss_with": s["target_loss"].mean(), "loss_without": s["target_loss_no_context"].mean(),
                     "context_gain": gain, "gain_lo": lo, "gain_hi": hi,
                     "exact_match_with": s["exact_match"].mean(), "exact_match_without": s["exact_match_no_context"].mean(),
                     "exact_match_gain_lo": em_gain[1], "exact_match_gain_hi": em_gain[2],
                     "over_trained_length": int(s["over_trained_length"].sum()) if "over_trained_length" in s else None,
                     **name_accuracy_row(s, n_boot, seed)})
    return pd.DataFrame(rows)


def name_accuracy_row(s: pd.DataFrame, n_boot: int, seed: int) -> dict:
    """Identifier-token accuracy with / without the chunks (teacher-forced argmax on the target line's tokens of the
    names it takes from its relevant chunks), over the samples that have such tokens, and the paired difference's
    project-clustered CI. NaN for a run extracted before the column existed (extract it again to get it)."""
    keys = ("name_samples", "name_accuracy_with", "name_accuracy_without", "name_accuracy_gain",
            "name_gain_lo", "name_gain_hi")
    if "name_accuracy" not in s.columns:
        return dict.fromkeys(keys, float("nan"))
    has = s.dropna(subset=["name_accuracy", "name_accuracy_no_context"])
    with_, without = has["name_accuracy"].astype(float), has["name_accuracy_no_context"].astype(float)
    gain, lo, hi = cluster_bootstrap_mean(with_ - without, has["sample_id"], has["project"], n_boot, seed)
    return dict(zip(keys, (len(has), with_.mean(), without.mean(), gain, lo, hi)))


def loo_by_category(ds, run_dir, split: str = "test", n_boot: int = 1000, seed: int = 0,
                    helps_threshold: float = 0.01) -> pd.DataFrame:
    """Signed leave-one-out gain per chunk category: mean with its project-clustered CI, the share of chunks that
    help (> ``helps_threshold``) and that hurt (< −``helps_threshold``)."""
    lm = pd.read_parquet(resolve(run_dir) / CHUNK_LM).dropna(subset=["loss_gain"])
    cats = ds.chunks[["sample_id", "chunk_index", "category"]]
    meta = ds.samples.set_index("sample_id")[["split", "project"]]
    j = lm.merge(cats, on=["sample_id", "chunk_index"]).join(meta, on="sample_id")
    j = j[j["split"] == split]
    rows = []
    for cat in [c for c in CATEGORIES if c in set(j["category"])] + ["all"]:
        g = j if cat == "all" else j[j["category"] == cat]
        mean, lo, hi = cluster_bootstrap_mean(g["loss_gain"], g["sample_id"], g["project"], n_boot, seed)
        rows.append({"category": cat, "chunks": len(g), "samples": g["sample_id"].nunique(), "mean_gain": mean,
                     "gain_lo": lo, "gain_hi": hi, "helps": float((g["loss_gain"] > helps_threshold).mean()),
                     "hurts": float((g["loss_gain"] < -helps_threshold).mean())})
    return pd.DataFrame(rows)


def context_use_markdown(gain: pd.DataFrame, loo: dict[str, pd.DataFrame], target: float = 0.1,
                         helps_threshold: float = 0.01) -> str:
    """README / results section: the context-gain table and the leave-one-out tables, with a verdict per run
    against the bar (CI lower bound above ``target`` nats/token); ``helps_threshold``: the one the leave-one-out
    tables were made with (:func:`loo_by_category`)."""
    lines = ["| run | test samples (projects) | target loss with chunks | without | context gain [95 % CI] | "
             "exact match with | without | identifier-token accuracy with / without (samples) [95 % CI of the "
             "difference] | prompts over trained length |", "|---|---|---:|---:|---|---:|---:|---|---:|"]
    for r in gain.itertuples():
        names = "n/a (extracted before the column)"
        if not np.isnan(r.name_samples) and r.name_samples > 0:  # NaN: a run extracted before the column
            names = (f"{r.name_accuracy_with:.1%} / {r.name_accuracy_without:.1%} ({r.name_samples}) "
                     f"[{r.name_gain_lo:+.1%}, {r.name_gain_hi:+.1%}]")
        lines.append(f"| {r.run} | {r.samples} ({r.projects}) | {r.loss_with:.3f} | {r.loss_without:.3f} | "
                     f"**{r.context_gain:.3f}** [{r.gain_lo:.3f}, {r.gain_hi:.3f}] | {r.exact_match_with:.1%} | "
                     f"{r.exact_match_without:.1%} | {names} | {r.over_trained_length} |")
    lines.append("")
    for r in gain.itertuples():
        verdict = ("reads its context: the CI's lower bound is above" if r.gain_lo > target else
                   "does NOT clear the bar: the CI's lower bound is not above")
        lines.append(f"- `{r.run}` {verdict} {target} nats/token ({r.gain_lo:.3f}).")
    for name, t in loo.items():
        lines += ["", f"Leave-one-out, `{name}` (signed gain in nats/token: loss without the chunk − with all chunks; "
                  "project-clustered 95 % CI):", "",
                  f"| category | chunks | mean gain [95 % CI] | share that helps (> {helps_threshold:g}) | "
                  f"share that hurts (< −{helps_threshold:g}) |",
                  "|---|---:|---|---:|---:|"]
        for r in t.itertuples():
            lines.append(f"| {r.category} | {r.chunks} | {r.mean_gain:.4f} [{r.gain_lo:.4f}, {r.gain_hi:.4f}] | "
                         f"{r.helps:.1%} | {r.hurts:.1%} |")
    return "\n".join(lines) + "\n"
