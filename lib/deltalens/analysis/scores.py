"""Scores of the main analysis measured against the ground truths: ROC-AUC / PR-AUC on a split with
projects-then-samples bootstrap intervals (:func:`evaluate`), every choice (layer, statistic, normalisation, sign)
made on dev (:func:`choose_on_dev`, :func:`standard_choices`), CatBoost trained on the dev projects, the score tables
reported on test, the scores a filter is tried with, and the paired comparisons whose pairs are fixed on dev.

The names of the chosen scores (``Δ best (<run>)`` ...) are made here from the ``*_LABEL`` formats, for display
only: what a score is (a Δ score, an upper bound that reads the target, a baseline ...) is its ``Choice.kind``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..core import chunk_columns as cc
from ..core.bootstrap import cluster_resamples, interval
from ..core.chunk_columns import ScoreColumn
from ..core.metrics import auc, pr_auc
from .ranking import metric_values
from .table import BASELINES, delta_columns, runs_of, within_prompt_columns

DELTA_BEST_LABEL = "Δ best ({run})"
DELTA_WITHIN_LABEL = "Δ best within prompt ({run})"
DECIMAMBA_L2_LABEL = "DeciMamba L2 Δ ({run})"
DECIMATION_LABEL = "DeciMamba decimation ({run})"
LONGMAMBA_LABEL = "LongMamba global channels ({run})"
SELFINFO_LABEL = "self-information ({run})"
# What a score is, as a field of its Choice (never read back from its label): the Δ scores (the dev-chosen best, the
# best within prompts, the published rules: DeciMamba's L2 and decimation, LongMamba's channels), the scores that
# read the target line (upper bounds, not filters), and the rest.
DELTA_BEST, DELTA_WITHIN, DELTA_RULE = "delta_best", "delta_within", "delta_rule"
DELTA_KINDS = (DELTA_BEST, DELTA_WITHIN, DELTA_RULE)
HIDDEN_ATTENTION, UPPER_BOUND = "hidden_attention", "upper_bound"
KINDS = (*DELTA_KINDS, "selfinfo", HIDDEN_ATTENTION, UPPER_BOUND, "baseline", "control", "random", "llm", "learned",
         "score")
HATTN_LABELS = {"prefix_end": "hidden attention from the prefix end", "target": "hidden attention from the target line"}
ORACLE = "oracle (ground truth)"


def hattn_label(where: str, run: str) -> str:
    """The name of run ``run``'s hidden-attention score from ``where`` (prefix_end | target)."""
    return f"{HATTN_LABELS[where]} ({run})"


def _is_llm(column: str) -> bool:
    return cc.family_of(column) == cc.LLM


# ---- metrics ---------------------------------------------------------------------------------------------------------
def evaluate(t: pd.DataFrame, score: str | np.ndarray, truth: str, *, split: str | None = "test", sign: float = 1.0,
             n_boot: int = 200, seed: int = 0, mask: np.ndarray | None = None, metric: str = "auc") -> dict:
    """ROC-AUC and PR-AUC of ``sign * score`` against the boolean ``truth`` column, with 95 % intervals from a
    bootstrap over projects, then samples within them; rows where score or truth is missing are left out (``n`` says
    how many were used). ``metric='sample_auc'`` also gives the mean ROC-AUC within each prompt (key ``sample_auc``)."""
    values = t[score].to_numpy(float) if isinstance(score, str) else np.asarray(score, float)
    y = t[truth].to_numpy(float)
    keep = ~np.isnan(values) & ~np.isnan(y)
    if split is not None:
        keep &= (t["split"] == split).to_numpy()
    if mask is not None:
        keep &= mask
    tt = t[keep]
    v, yy = sign * values[keep], y[keep].astype(bool)
    out = {"n": int(keep.sum()), "positives": int(yy.sum()), "auc": auc(yy, v), "pr_auc": pr_auc(yy, v),
           "pr_chance": float(yy.mean()) if len(yy) else np.nan}
    if metric == "sample_auc":
        out["sample_auc"] = metric_values(tt, v, truth, "sample_auc", None)[0] if len(tt) else np.nan
    if n_boot and len(yy) and 0 < yy.sum() < len(yy):
        res = cluster_resamples(tt["sample_id"], tt["project"], n_boot, seed)
        out["auc_lo"], out["auc_hi"] = interval(metric_values(tt, v, truth, "auc", res)[1])
        out["pr_lo"], out["pr_hi"] = interval(metric_values(tt, v, truth, "pr_auc", res)[1])
    else:
        out.update(auc_lo=np.nan, auc_hi=np.nan, pr_lo=np.nan, pr_hi=np.nan)
    return out


@dataclass
class Choice:
    """A score chosen on dev: column, sign (+1: high = relevant), the dev ROC-AUC (pooled) and the dev mean ROC-AUC
    within prompts; ``chosen_by`` names the dev metric that chose it; ``kind`` (one of :data:`KINDS`) says what the
    score is, so that renaming its label can never change a conclusion."""
    name: str
    column: str
    sign: float
    dev_auc: float
    candidates: int = 1
    note: str = ""
    dev_sample_auc: float = float("nan")
    chosen_by: str = "auc"
    kind: str = "score"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Choice {self.name!r}: kind {self.kind!r} is none of {KINDS}")

    @property
    def run(self) -> str | None:
        """The extraction run the score's column belongs to (None: a score of no run, e.g. BM25)."""
        col = ScoreColumn.try_parse(self.column)
        return None if col is None else col.run


def choose_on_dev(t: pd.DataFrame, columns: list[str], truth: str = "relevant", name: str = "",
                  signs: tuple[float, ...] = (1.0, -1.0), note: str = "", metric: str = "auc",
                  kind: str = "score") -> Choice:
    """The (column, sign) with the best dev ``metric`` (``auc``: pooled ROC-AUC; ``sample_auc``: mean ROC-AUC within
    prompts): only dev rows are looked at. Flipping the sign gives 1 - either metric."""
    best = None
    for c in columns:
        a = evaluate(t, c, truth, split="dev", n_boot=0, metric=metric)[metric]
        for sg in signs:
            v = a if sg > 0 else 1 - a
            if not np.isnan(v) and (best is None or v > best[2]):
                best = (c, sg, v)
    if best is None:
        raise ValueError(f"choose_on_dev({name!r}): no candidate has a dev ROC-AUC (no dev rows with both classes)")
    dev = evaluate(t, best[0], truth, split="dev", n_boot=0, sign=best[1], metric="sample_auc")
    return Choice(name or best[0], best[0], best[1], dev["auc"], len(columns) * len(signs), note, dev["sample_auc"],
                  metric, kind)


def standard_choices(t: pd.DataFrame, truth: str = "relevant") -> list[Choice]:
    """The scores compared in the main table, each chosen on dev where anything is chosen."""
    out = []
    for run in runs_of(t):
        cols = delta_columns(t, run)
        out.append(choose_on_dev(t, cols + within_prompt_columns(t, run), truth, DELTA_BEST_LABEL.format(run=run),
                                 note="layer, statistic, normalisation and sign chosen on dev (pooled ROC-AUC)",
                                 kind=DELTA_BEST))
        out.append(choose_on_dev(t, cols, truth, DELTA_WITHIN_LABEL.format(run=run), metric="sample_auc",
                                 note="layer, statistic and sign chosen on dev (mean ROC-AUC within prompts)",
                                 kind=DELTA_WITHIN))
        l2 = cc.select(cols, cc.DELTA, run, stat="l2")
        out.append(choose_on_dev(t, l2, truth, DECIMAMBA_L2_LABEL.format(run=run), signs=(1.0,),
                                 note="layer chosen on dev; high L2 norm = important", kind=DELTA_RULE))
        dec = cc.select(t.columns, cc.DECIM, run)
        if dec:
            out.append(choose_on_dev(t, dec, truth, DECIMATION_LABEL.format(run=run), signs=(1.0,),
                                     note="share of the chunk's tokens DeciMamba keeps; layer and kept share chosen "
                                          "on dev", kind=DELTA_RULE))
        glob = cc.select(t.columns, cc.GLOBAL, run)
        if glob:
            out.append(choose_on_dev(t, glob, truth, LONGMAMBA_LABEL.format(run=run), signs=(1.0,),
                                     note="mean Δ over the slowest-decaying channels (measured on dev prompts); layer "
                                          "and share chosen on dev; high Δ = important", kind=DELTA_RULE))
        out.append(choose_on_dev(t, [ScoreColumn(cc.SELFINFO, run).name], truth, SELFINFO_LABEL.format(run=run),
                                 note="sign chosen on dev", kind="selfinfo"))
        for where, note, kind in (("prefix_end", "layer and sign chosen on dev", HIDDEN_ATTENTION),
                                  ("target", "upper bound (uses the target); layer and sign chosen on dev",
                                   UPPER_BOUND)):
            cols = cc.select(t.columns, cc.HATTN, run, stat=where)
            if cols:  # both signs: whether more or less attention mass marks relevant chunks is an empirical question
                out.append(choose_on_dev(t, cols, truth, hattn_label(where, run), note=note, kind=kind))
    for b in BASELINES:
        if b in t.columns:
            out.append(choose_on_dev(t, [b], truth, b.upper() if b != "embedding" else "embedding cosine", signs=(1.0,),
                                     kind="baseline"))
    out.append(choose_on_dev(t, ["length"], truth, "chunk length", note="sign chosen on dev", kind="control"))
    out.append(choose_on_dev(t, ["path_distance"], truth, "path distance", signs=(-1.0,), note="closer = relevant",
                             kind="control"))
    out.append(choose_on_dev(t, ["random"], truth, "random", signs=(1.0,), kind="random"))
    for c in cc.select(t.columns, cc.LLM):
        out.append(Choice(f"LLM labels: {ScoreColumn.parse(c).run}", c, 1.0, np.nan, note="labels as a 0/1 score",
                          kind="llm"))
    return out


def learned_scores(t: pd.DataFrame, truth: str = "relevant", seed: int = 0, iterations: int = 300) -> dict[str, np.ndarray]:
    """CatBoost probabilities on Δ features, on baseline features and on both, trained on the dev split's projects
    only and predicting the test split's (dev and test never mix; dev rows get NaN)."""
    from catboost import CatBoostClassifier

    base = [c for c in (*BASELINES, "length", "path_distance") if c in t.columns] + \
           cc.select(t.columns, cc.SELFINFO)
    sets = {"CatBoost on Δ": delta_columns(t), "CatBoost on baselines": base, "CatBoost on Δ + baselines": delta_columns(t) + base}
    y = t[truth].to_numpy(float)
    dev = (t["split"] == "dev").to_numpy() & ~np.isnan(y)
    test = (t["split"] == "test").to_numpy()
    overlap = set(t.loc[dev, "project"]) & set(t.loc[test, "project"])
    if overlap:
        raise ValueError(f"learned_scores: projects {sorted(overlap)[:3]} are in both dev and test; the CatBoost "
                         "comparison needs disjoint projects")
    out = {}
    for name, cols in sets.items():
        if not cols or len(np.unique(y[dev])) < 2:
            continue
        X = t[cols].to_numpy(float)
        clf = CatBoostClassifier(iterations=iterations, depth=4, learning_rate=0.08, random_seed=seed,
                                 thread_count=2, verbose=False, allow_writing_files=False)
        clf.fit(X[dev], y[dev].astype(int))
        pred = np.full(len(t), np.nan)
        pred[test] = clf.predict_proba(X[test])[:, 1]
        out[name] = pred
    return out


LEARNED_NOTE = "trained on the dev projects, scored on the test projects"


def score_table(t: pd.DataFrame, choices: list[Choice], truths: list[str], learned: dict[str, np.ndarray] | None = None,
                split: str = "test", n_boot: int = 200, seed: int = 0) -> pd.DataFrame:
    """Long table: one row per (score, ground truth) with ROC-AUC / PR-AUC and intervals on ``split``."""
    rows = []
    for truth in truths:
        for ch in choices:
            if ch.column == truth or (_is_llm(ch.column) and _is_llm(truth)):
                continue
            r = evaluate(t, ch.column, truth, split=split, sign=ch.sign, n_boot=n_boot, seed=seed)
            rows.append({"score": ch.name, "truth": truth, "column": ch.column, "sign": ch.sign, "dev_auc": ch.dev_auc,
                         "note": ch.note, "kind": ch.kind, **r})
        for name, pred in (learned or {}).items():
            if truth != "relevant":
                continue
            r = evaluate(t, pred, truth, split=split, n_boot=n_boot, seed=seed)
            rows.append({"score": name, "truth": truth, "column": "", "sign": 1.0, "dev_auc": np.nan,
                         "note": LEARNED_NOTE, "kind": "learned", **r})
    return pd.DataFrame(rows)


def auc_by_layer(t: pd.DataFrame, truth: str = "relevant", split: str = "test") -> pd.DataFrame:
    """Raw (unsigned) ROC-AUC of every Δ statistic of every run and layer: below 0.5 means low Δ = relevant."""
    rows = []
    for c in delta_columns(t):
        col = ScoreColumn.parse(c)
        rows.append({"run": col.run, "layer": col.layer, "stat": col.stat,
                     "auc": evaluate(t, c, truth, split=split, n_boot=0)["auc"]})
    return pd.DataFrame(rows)


def per_category(t: pd.DataFrame, choices: list[Choice], split: str = "test", n_boot: int = 200, seed: int = 0) -> pd.DataFrame:
    """ROC-AUC of each score for relevant chunks against each other category alone (related / distractor / injected):
    does a score reject code from other projects but not same-project distractors?"""
    rows = []
    for neg in ("related", "distractor", "injected"):
        mask = t["category"].isin(["relevant", neg]).to_numpy()
        for ch in choices:
            if _is_llm(ch.column):
                continue
            r = evaluate(t, ch.column, "relevant", split=split, sign=ch.sign, n_boot=n_boot, seed=seed, mask=mask)
            rows.append({"score": ch.name, "negatives": neg, "auc": r["auc"], "auc_lo": r["auc_lo"],
                         "auc_hi": r["auc_hi"], "n": r["n"]})
    return pd.DataFrame(rows)


# ---- within-prompt ranking, paired comparisons, lexical strata --------------------------------------------------------
def ranking_scores(choices: list[Choice], learned: dict[str, np.ndarray] | None = None) -> dict[str, tuple]:
    """name -> (column or per-row array, sign): every chosen score and every learned one (LLM labels left out)."""
    out = {c.name: (c.column, c.sign) for c in choices if not _is_llm(c.column)}
    out.update({name: (pred, 1.0) for name, pred in (learned or {}).items()})
    return out


def best_pair(choices: list[Choice]) -> tuple[Choice, Choice]:
    """(the Δ score, the non-Δ baseline) with the best dev mean ROC-AUC within prompts: both chosen on dev."""
    delta = [c for c in choices if c.kind in DELTA_KINDS and not np.isnan(c.dev_sample_auc)]
    base = [c for c in choices if c.kind not in (*DELTA_KINDS, "random", "llm", UPPER_BOUND)
            and not np.isnan(c.dev_sample_auc)]
    if not delta or not base:
        raise ValueError("best_pair: needs at least one Δ score and one baseline with a dev ROC-AUC")
    return max(delta, key=lambda c: c.dev_sample_auc), max(base, key=lambda c: c.dev_sample_auc)


def comparisons(t: pd.DataFrame, choices: list[Choice], learned: dict[str, np.ndarray] | None = None,
                truth: str = "relevant", k: int = 2, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Paired differences on test (same chunks, same projects-then-samples resamples), every pair fixed on dev:
    the best Δ score vs the best baseline (each by dev mean ROC-AUC within prompts) on every metric; the best Δ vs
    random; each run's within-prompt Δ vs that baseline; CatBoost with vs without the Δ features."""
    from .ranking import METRICS, paired_difference

    d, b = best_pair(choices)
    of_kind = lambda kind, run: [c for c in choices if c.kind == kind and c.run == run]  # noqa: E731
    pairs = [(d.name, b.name, m) for m in METRICS]
    pairs += [(d.name, c.name, "sample_auc") for c in choices if c.kind == "random"]
    for run in runs_of(t):
        pairs += [(c.name, b.name, "sample_auc") for c in of_kind(DELTA_WITHIN, run) if c.name != d.name]
    for kind in (HIDDEN_ATTENTION, UPPER_BOUND):
        for run in runs_of(t):
            pairs += [(d.name, c.name, "sample_auc") for c in of_kind(kind, run) if c.name != b.name]
    kinds = {**{name: "learned" for name in (learned or {})}, **{c.name: c.kind for c in choices}}
    scores = ranking_scores(choices, learned)
    if learned and {"CatBoost on Δ + baselines", "CatBoost on baselines"} <= set(learned):
        pairs += [("CatBoost on Δ + baselines", "CatBoost on baselines", m) for m in ("auc", "sample_auc")]
    rows = []
    for a_name, b_name, metric in pairs:
        r = paired_difference(t, scores[a_name], scores[b_name], truth, "test", metric, k, n_boot, seed)
        rows.append({"a": a_name, "b": b_name, **{k_: v for k_, v in r.items() if k_ not in ("a", "b")},
                     "a_value": r["a"], "b_value": r["b"], "a_kind": kinds[a_name], "b_kind": kinds[b_name]})
    out = pd.DataFrame(rows)
    out.attrs.update(k=k, n_boot=n_boot, delta=d.name, baseline=b.name)
    return out


def filter_scores(choices: list[Choice], filter_run: str) -> dict[str, tuple[str, float]]:
    """The scores the filtering curves are drawn for, name -> (column, sign): the pooled Δ best of every run; the
    other scores of run ``filter_run`` (the LM the filter runs with), without the within-prompt Δ choice and the
    scores that read the target line; every score that belongs to no run (BM25 ... random); then the oracle (the
    ``relevant`` ground truth itself). LLM labels are left out."""
    out = {}
    for c in choices:
        if c.run is None:  # a score of no run
            keep = True
        elif c.kind in ("llm", DELTA_WITHIN, UPPER_BOUND):
            keep = False
        else:
            keep = c.kind == DELTA_BEST or c.run == filter_run
        if keep:
            out[c.name] = (c.column, c.sign)
    out[ORACLE] = ("relevant", 1.0)
    return out
