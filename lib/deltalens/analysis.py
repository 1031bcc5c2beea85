"""The main analysis (notebook 04): every relevance score of every context chunk side by side, against every
ground truth, with bootstrap intervals; whatever is chosen (layer, statistic, sign) is chosen on dev, reported on test.

The chunk table (:func:`chunk_table`) has one row per (sample, chunk) and these columns:

* ``split, project, category, relevant`` — from the dataset (ground truth 1: ``relevant``);
* ``delta:<run>:L<layer>:<stat>`` — Δ statistics of each extraction run (model x prompt order), stat in mean /
  mean_log / l2 / max;
* ``decim:<run>:L<layer>:<pct>`` — DeciMamba's decimation rule: the share of the chunk's tokens among the top
  ``pct`` % of the prompt's tokens by the L2 norm of Δ in that layer (the tokens its decimation would keep);
* ``hattn:<run>:L<layer>:prefix_end|target`` — the hidden attention (Ali et al.) a run computed in the same forward:
  the attention mass the last prefix positions (a score a filter could use) or the target-line positions (an upper
  bound, like leave-one-out: it needs the target) give the chunk's tokens;
* ``selfinfo:<run>`` — the chunk's self-information under the same LM (mean token NLL in context; Selective-Context);
  ``loss_gain:<run>`` — how much the target-line loss rises without the chunk (ground truth 2: ``helps:<run>`` is
  ``loss_gain > helps_threshold``, on the samples with leave-one-out);
* ``bm25, tfidf, embedding`` — similarity to the query (the reference labelers' scores);
* ``length`` (characters), ``path_distance`` (directory steps between the chunk's file and the completion file; other
  projects count as far away), ``random`` (seeded);
* ``llm:<labeler>`` — a generative labeler's labels (1 / 0, NaN where it gave none): a score, and ground truth 3;
* ``name_in_query`` — the chunk defines a name the query already contains (the lexical shortcut's stratum);
* ``inprompt_rank:<delta column>``, ``inprompt_z:<delta column>`` — Δ normalised inside its prompt (percentile rank,
  z-score), added by :func:`add_within_prompt`: score variants for a filter that only compares chunks of one prompt.

Intervals everywhere are a projects-then-samples bootstrap (:mod:`deltalens.ranking`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from .metrics import auc, pr_auc
from .paths import resolve
from .ranking import cluster_resamples, interval, metric_values, name_in_query

STATS = ("mean", "mean_log", "l2", "max")
HIDDEN_ATTENTION = ("ha_prefix_end", "ha_target")  # chunk_delta.parquet columns -> hattn:<run>:L<layer>:prefix_end|target
BASELINES = ("bm25", "tfidf", "embedding")


# ---- the chunk table -------------------------------------------------------------------------------------------------
def path_distance(a: str, b: str, same_project: bool) -> int:
    """Directory steps from file ``a`` to file ``b`` (0: same directory); another project: both depths + 2."""
    da, db = PurePosixPath(a).parent.parts, PurePosixPath(b).parent.parts
    if not same_project:
        return len(da) + len(db) + 2
    common = 0
    for x, y in zip(da, db):
        if x != y:
            break
        common += 1
    return len(da) + len(db) - 2 * common


def chunk_table(ds, runs: dict[str, str | Path] | None = None, labels_dir: str | Path | None = None, seed: int = 0,
                helps_threshold: float = 0.01, common_samples: bool = True) -> pd.DataFrame:
    """One row per (sample, chunk) with every score and ground truth (see the module docstring).

    ``common_samples``: keep only the samples that every extraction run covered, so that every score is measured on
    the same chunks (the runs may extract a subset of the dataset; ``t.attrs['dropped_samples']`` says how many)."""
    s = ds.samples.set_index("sample_id")
    t = ds.chunks[["sample_id", "chunk_index", "category", "project", "path", "text"]].rename(
        columns={"project": "chunk_project", "path": "chunk_path"})
    t["split"] = t["sample_id"].map(s["split"])
    t["project"] = t["sample_id"].map(s["project"])
    t["relevant"] = t["category"] == "relevant"
    t["length"] = t["text"].str.len().astype(float)
    t["path_distance"] = [float(path_distance(p, s.at[sid, "path"], cp == s.at[sid, "project"]))
                          for sid, p, cp in zip(t["sample_id"], t["chunk_path"], t["chunk_project"])]
    t["random"] = np.random.default_rng(seed).random(len(t))
    t = t.drop(columns=["text"]).set_index(["sample_id", "chunk_index"])
    t["name_in_query"] = name_in_query(ds).reindex(t.index)
    for name, d in (runs or {}).items():
        d = resolve(d)
        for f in ("chunk_delta.parquet", "chunk_lm.parquet"):
            if not (d / f).is_file():
                raise FileNotFoundError(f"extraction run {name!r}: {d / f} is missing (run the extraction and its merge)")
        cd = pd.read_parquet(d / "chunk_delta.parquet")
        ha = [c for c in HIDDEN_ATTENTION if c in cd.columns]
        dec = [c for c in cd.columns if c.startswith("decimate_")]
        wide = cd.pivot_table(index=["sample_id", "chunk_index"], columns="layer", values=list(STATS) + ha + dec,
                              dropna=False)
        family = {**{s: "delta" for s in STATS}, **{h: "hattn" for h in ha}, **{d: "decim" for d in dec}}
        short = {**{s: s for s in STATS}, **{h: h[3:] for h in ha}, **{d: d[len("decimate_"):] for d in dec}}
        wide.columns = [f"{family[stat]}:{name}:L{layer}:{short[stat]}" for stat, layer in wide.columns]
        order = list(STATS) + [h[3:] for h in ha] + [d[len("decimate_"):] for d in dec]
        fam_order = ("delta", "decim", "hattn")
        wide = wide[sorted(wide.columns, key=lambda c: (fam_order.index(c.split(":")[0]), int(c.split(":")[2][1:]),
                                                        order.index(c.split(":")[3])))]
        lm = pd.read_parquet(d / "chunk_lm.parquet").set_index(["sample_id", "chunk_index"])
        extra = pd.DataFrame({f"selfinfo:{name}": lm["self_information"], f"loss_gain:{name}": lm["loss_gain"],
                              f"n_tokens:{name}": lm["n_tokens"].astype(float)})
        extra[f"helps:{name}"] = np.where(lm["loss_gain"].isna(), np.nan, (lm["loss_gain"] > helps_threshold).astype(float))
        t = t.join(wide).join(extra)
    dropped = 0
    if runs and common_samples:
        covered = None
        for name, d in runs.items():
            ids = set(pd.read_parquet(resolve(d) / "chunk_lm.parquet", columns=["sample_id"])["sample_id"])
            covered = ids if covered is None else covered & ids
        keep = t.index.get_level_values("sample_id").isin(covered)
        dropped = t[~keep].index.get_level_values("sample_id").nunique()
        t = t[keep]
    if labels_dir is not None:
        ld = resolve(labels_dir)
        metrics = ld / "metrics.json"
        if metrics.is_file():  # labels and scores of another dataset must not be joined by (sample_id, chunk_index)
            import json

            from .context.schema import dataset_fingerprint

            fp = json.loads(metrics.read_text()).get("dataset_fingerprint")
            if fp is not None and fp != dataset_fingerprint(ds):
                raise ValueError(f"labels_dir={str(labels_dir)!r} holds labels of another dataset (fingerprint "
                                 f"{fp[:12]} vs {dataset_fingerprint(ds)[:12]}); run the labeling notebook on this "
                                 "dataset (make labeling) or point labels_dir at its output")
        if (ld / "reference_scores.parquet").is_file():
            ref = pd.read_parquet(ld / "reference_scores.parquet").set_index(["sample_id", "chunk_index"])
            t = t.join(ref[[c for c in BASELINES if c in ref.columns]])
        if (ld / "labels.parquet").is_file():
            lab = pd.read_parquet(ld / "labels.parquet")
            lab = lab[(lab["kind"] != "reference") & lab["label"].notna()]
            for name, g in lab.groupby("labeler"):
                t[f"llm:{name}"] = g.set_index(["sample_id", "chunk_index"])["label"].astype(float).reindex(t.index)
    t = t.reset_index()
    t.attrs["dropped_samples"] = int(dropped)
    return t


def delta_columns(t: pd.DataFrame, run: str | None = None) -> list[str]:
    return [c for c in t.columns if c.startswith("delta:") and (run is None or c.split(":")[1] == run)]


def runs_of(t: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(c.split(":")[1] for c in delta_columns(t)))


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
    within prompts; ``chosen_by`` names the dev metric that chose it."""
    name: str
    column: str
    sign: float
    dev_auc: float
    candidates: int = 1
    note: str = ""
    dev_sample_auc: float = float("nan")
    chosen_by: str = "auc"


def choose_on_dev(t: pd.DataFrame, columns: list[str], truth: str = "relevant", name: str = "",
                  signs: tuple[float, ...] = (1.0, -1.0), note: str = "", metric: str = "auc") -> Choice:
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
                  metric)


def add_within_prompt(t: pd.DataFrame, columns: list[str] | None = None) -> pd.DataFrame:
    """``t`` with Δ normalised inside each prompt: ``inprompt_rank:<col>`` (percentile rank among the prompt's chunks)
    and ``inprompt_z:<col>`` (z-score; 0 where the prompt's chunks are all equal). Default columns: every Δ column."""
    columns = delta_columns(t) if columns is None else columns
    g = t.groupby("sample_id")
    new = {}
    for c in columns:
        new[f"inprompt_rank:{c}"] = g[c].rank(pct=True)
        mean, std = g[c].transform("mean"), g[c].transform("std", ddof=0)
        new[f"inprompt_z:{c}"] = ((t[c] - mean) / std.where(std > 0)).fillna(0.0).where(t[c].notna())
    return pd.concat([t, pd.DataFrame(new, index=t.index)], axis=1)


def within_prompt_columns(t: pd.DataFrame, run: str | None = None) -> list[str]:
    return [c for c in t.columns if c.startswith(("inprompt_rank:", "inprompt_z:"))
            and (run is None or c.split(":")[2] == run)]


def standard_choices(t: pd.DataFrame, truth: str = "relevant") -> list[Choice]:
    """The scores compared in the main table, each chosen on dev where anything is chosen."""
    out = []
    for run in runs_of(t):
        cols = delta_columns(t, run)
        out.append(choose_on_dev(t, cols + within_prompt_columns(t, run), truth, f"Δ best ({run})",
                                 note="layer, statistic, normalisation and sign chosen on dev (pooled ROC-AUC)"))
        out.append(choose_on_dev(t, cols, truth, f"Δ best within prompt ({run})", metric="sample_auc",
                                 note="layer, statistic and sign chosen on dev (mean ROC-AUC within prompts)"))
        l2 = [c for c in cols if c.endswith(":l2")]
        out.append(choose_on_dev(t, l2, truth, f"DeciMamba L2 Δ ({run})", signs=(1.0,),
                                 note="layer chosen on dev; high L2 norm = important"))
        dec = [c for c in t.columns if c.startswith(f"decim:{run}:")]
        if dec:
            out.append(choose_on_dev(t, dec, truth, f"DeciMamba decimation ({run})", signs=(1.0,),
                                     note="share of the chunk's tokens DeciMamba keeps; layer and kept share chosen "
                                          "on dev"))
        out.append(choose_on_dev(t, [f"selfinfo:{run}"], truth, f"self-information ({run})",
                                 note="sign chosen on dev"))
        for where, label, note in (("prefix_end", "hidden attention from the prefix end",
                                    "layer and sign chosen on dev"),
                                   ("target", "hidden attention from the target line",
                                    "upper bound (uses the target); layer and sign chosen on dev")):
            cols = [c for c in t.columns if c.startswith(f"hattn:{run}:") and c.endswith(f":{where}")]
            if cols:  # both signs: whether more or less attention mass marks relevant chunks is an empirical question
                out.append(choose_on_dev(t, cols, truth, f"{label} ({run})", note=note))
    for b in BASELINES:
        if b in t.columns:
            out.append(choose_on_dev(t, [b], truth, b.upper() if b != "embedding" else "embedding cosine", signs=(1.0,)))
    out.append(choose_on_dev(t, ["length"], truth, "chunk length", note="sign chosen on dev"))
    out.append(choose_on_dev(t, ["path_distance"], truth, "path distance", signs=(-1.0,), note="closer = relevant"))
    out.append(choose_on_dev(t, ["random"], truth, "random", signs=(1.0,)))
    for c in [c for c in t.columns if c.startswith("llm:")]:
        out.append(Choice(f"LLM labels: {c[4:]}", c, 1.0, np.nan, note="labels as a 0/1 score"))
    return out


def is_delta_score(name: str) -> bool:
    return name.startswith(("Δ best", "DeciMamba"))


def uses_target(name: str) -> bool:
    """Scores that read the target line (upper bounds, not filters): never the baseline Δ is compared against."""
    return name.startswith("hidden attention from the target line")


def learned_scores(t: pd.DataFrame, truth: str = "relevant", seed: int = 0, iterations: int = 300) -> dict[str, np.ndarray]:
    """CatBoost probabilities on Δ features, on baseline features and on both, trained on the dev split's projects
    only and predicting the test split's (dev and test never mix; dev rows get NaN)."""
    from catboost import CatBoostClassifier

    base = [c for c in (*BASELINES, "length", "path_distance") if c in t.columns] + \
           [c for c in t.columns if c.startswith("selfinfo:")]
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
            if ch.column == truth or (ch.column.startswith("llm:") and truth.startswith("llm:")):
                continue
            r = evaluate(t, ch.column, truth, split=split, sign=ch.sign, n_boot=n_boot, seed=seed)
            rows.append({"score": ch.name, "truth": truth, "column": ch.column, "sign": ch.sign, "dev_auc": ch.dev_auc,
                         "note": ch.note, **r})
        for name, pred in (learned or {}).items():
            if truth != "relevant":
                continue
            r = evaluate(t, pred, truth, split=split, n_boot=n_boot, seed=seed)
            rows.append({"score": name, "truth": truth, "column": "", "sign": 1.0, "dev_auc": np.nan,
                         "note": LEARNED_NOTE, **r})
    return pd.DataFrame(rows)


def auc_by_layer(t: pd.DataFrame, truth: str = "relevant", split: str = "test") -> pd.DataFrame:
    """Raw (unsigned) ROC-AUC of every Δ statistic of every run and layer: below 0.5 means low Δ = relevant."""
    rows = []
    for c in delta_columns(t):
        _, run, layer, stat = c.split(":")
        rows.append({"run": run, "layer": int(layer[1:]), "stat": stat,
                     "auc": evaluate(t, c, truth, split=split, n_boot=0)["auc"]})
    return pd.DataFrame(rows)


def per_category(t: pd.DataFrame, choices: list[Choice], split: str = "test", n_boot: int = 200, seed: int = 0) -> pd.DataFrame:
    """ROC-AUC of each score for relevant chunks against each other category alone (related / distractor / injected):
    does a score reject code from other projects but not same-project distractors?"""
    rows = []
    for neg in ("related", "distractor", "injected"):
        mask = t["category"].isin(["relevant", neg]).to_numpy()
        for ch in choices:
            if ch.column.startswith("llm:"):
                continue
            r = evaluate(t, ch.column, "relevant", split=split, sign=ch.sign, n_boot=n_boot, seed=seed, mask=mask)
            rows.append({"score": ch.name, "negatives": neg, "auc": r["auc"], "auc_lo": r["auc_lo"],
                         "auc_hi": r["auc_hi"], "n": r["n"]})
    return pd.DataFrame(rows)


# ---- within-prompt ranking, paired comparisons, lexical strata --------------------------------------------------------
def ranking_scores(choices: list[Choice], learned: dict[str, np.ndarray] | None = None) -> dict[str, tuple]:
    """name -> (column or per-row array, sign): every chosen score and every learned one (LLM labels left out)."""
    out = {c.name: (c.column, c.sign) for c in choices if not c.column.startswith("llm:")}
    out.update({name: (pred, 1.0) for name, pred in (learned or {}).items()})
    return out


def best_pair(choices: list[Choice]) -> tuple[Choice, Choice]:
    """(the Δ score, the non-Δ baseline) with the best dev mean ROC-AUC within prompts: both chosen on dev."""
    delta = [c for c in choices if is_delta_score(c.name) and not np.isnan(c.dev_sample_auc)]
    base = [c for c in choices if not is_delta_score(c.name) and c.name != "random" and not c.column.startswith("llm:")
            and not uses_target(c.name) and not np.isnan(c.dev_sample_auc)]
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
    by_name = {c.name: c for c in choices}
    pairs = [(d.name, b.name, m) for m in METRICS]
    if "random" in by_name:
        pairs.append((d.name, "random", "sample_auc"))
    for run in runs_of(t):
        name = f"Δ best within prompt ({run})"
        if name in by_name and name != d.name:
            pairs.append((name, b.name, "sample_auc"))
    for label in ("hidden attention from the prefix end", "hidden attention from the target line"):
        for run in runs_of(t):
            h = f"{label} ({run})"
            if h in by_name and h != b.name:
                pairs.append((d.name, h, "sample_auc"))
    scores = ranking_scores(choices, learned)
    if learned and {"CatBoost on Δ + baselines", "CatBoost on baselines"} <= set(learned):
        pairs += [("CatBoost on Δ + baselines", "CatBoost on baselines", m) for m in ("auc", "sample_auc")]
    rows = []
    for a_name, b_name, metric in pairs:
        r = paired_difference(t, scores[a_name], scores[b_name], truth, "test", metric, k, n_boot, seed)
        rows.append({"a": a_name, "b": b_name, **{k_: v for k_, v in r.items() if k_ not in ("a", "b")},
                     "a_value": r["a"], "b_value": r["b"]})
    out = pd.DataFrame(rows)
    out.attrs.update(k=k, n_boot=n_boot, delta=d.name, baseline=b.name)
    return out


_METRIC_NAMES = {"auc": "pooled ROC-AUC", "sample_auc": "mean ROC-AUC within prompts", "recall@k": "recall@{k}",
                 "ndcg@k": "nDCG@{k}", "pr_auc": "PR-AUC"}


def metric_name(metric: str, k: int) -> str:
    return _METRIC_NAMES.get(metric, metric).format(k=k)


def _ci(r, key: str) -> str:
    v, lo, hi = r[key], r.get(f"{key}_lo", np.nan), r.get(f"{key}_hi", np.nan)
    if pd.isna(v):
        return "–"
    return f"{v:.3f} [{lo:.3f}, {hi:.3f}]" if pd.notna(lo) else f"{v:.3f}"


def ranking_markdown(rank: pd.DataFrame, paired: pd.DataFrame, strata: pd.DataFrame) -> str:
    """The within-prompt table, the paired comparisons and the lexical strata, as markdown."""
    k = rank.attrs.get("k", 2)
    out = [f"**Within the prompt** (test: {rank.attrs.get('samples')} prompts from {rank.attrs.get('projects')} "
           f"projects; intervals: {rank.attrs.get('n_boot')} resamples of projects, then prompts):", "",
           f"| score | pooled ROC-AUC | mean ROC-AUC within prompts | recall@{k} | nDCG@{k} |", "|---|---|---|---|---|"]
    for _, r in rank.sort_values("sample_auc", ascending=False).iterrows():
        out.append(f"| {r['score']} | {_ci(r, 'auc')} | {_ci(r, 'sample_auc')} | {_ci(r, 'recall@k')} | "
                   f"{_ci(r, 'ndcg@k')} |")
    out += ["", f"**Paired differences** (a − b on the same chunks and resamples; pairs fixed on dev: the Δ score and "
            f"the baseline with the best dev mean ROC-AUC within prompts, {paired.attrs.get('delta')} and "
            f"{paired.attrs.get('baseline')}):", "",
            "| a | b | metric | a | b | a − b [95 % CI] | verdict |", "|---|---|---|---:|---:|---|---|"]
    for _, r in paired.iterrows():
        out.append(f"| {r['a']} | {r['b']} | {metric_name(r['metric'], k)} | {r['a_value']:.3f} | {r['b_value']:.3f} | "
                   f"{r['diff']:+.3f} [{r['diff_lo']:+.3f}, {r['diff_hi']:+.3f}] | {r['verdict']} |")
    if len(strata):
        yes, no = strata[strata["name_in_query"]].iloc[0], strata[~strata["name_in_query"]].iloc[0]
        out += ["", f"**The lexical shortcut**: {yes['share_of_relevant']:.0%} of the relevant test chunks define a name "
                f"the query (the file prefix) already contains; {yes['share_of_irrelevant_with_name_in_query']:.0%} of "
                "the irrelevant ones do. Pooled ROC-AUC of the relevant chunks of each stratum against every "
                "irrelevant chunk:", "",
                f"| score | name in query ({yes['relevant']} relevant) | name not in query ({no['relevant']} relevant) |",
                "|---|---|---|"]
        pv = strata.set_index(["score", "name_in_query"])
        for name in dict.fromkeys(strata["score"]):
            out.append(f"| {name} | {_ci(pv.loc[(name, True)], 'auc')} | {_ci(pv.loc[(name, False)], 'auc')} |")
    return "\n".join(out) + "\n"


# ---- saved results and conclusions ---------------------------------------------------------------------------------
def _fmt(r, key: str = "auc") -> str:
    lo, hi = (r["auc_lo"], r["auc_hi"]) if key == "auc" else (r["pr_lo"], r["pr_hi"])
    v = r[key]
    if pd.isna(v):
        return "–"
    return f"{v:.3f} [{lo:.3f}, {hi:.3f}]" if pd.notna(lo) else f"{v:.3f}"


def results_markdown(scores: pd.DataFrame, filtering: pd.DataFrame | None, meta: dict) -> str:
    """The results table (markdown) that the README shows: every score against the static ground truth on test,
    the leave-one-out ground truth where it exists, and the filtering curve at each budget."""
    main = scores[scores["truth"] == "relevant"].sort_values("auc", ascending=False)
    loo = {t: g.set_index("score") for t, g in scores.groupby("truth") if t.startswith("helps:")}
    head = "| score | ROC-AUC, relevant (test) [95 % CI] | PR-AUC (chance {:.3f}) |".format(main["pr_chance"].iloc[0])
    head += "".join(f" ROC-AUC, helps ({t[6:]}) |" for t in loo) + " chosen on dev |"
    lines = [head, "|" + "---|" * (4 + len(loo))]
    for _, r in main.iterrows():
        cells = [r["score"], _fmt(r), _fmt(r, "pr_auc")]
        cells += [_fmt(g.loc[r["score"]]) if r["score"] in g.index else "–" for g in loo.values()]
        cells.append(r["note"] or "")
        lines.append("| " + " | ".join(cells) + " |")
    out = [f"Test split: {meta.get('test_samples')} samples, {meta.get('test_chunks')} chunks "
           f"({meta.get('test_relevant')} relevant). Intervals: bootstrap over projects, then samples ({meta.get('n_boot')} resamples).",
           "", *lines]
    if filtering is not None and len(filtering):
        pv = filtering.pivot_table(index="score", columns="budget", values="loss", sort=False)
        em = filtering.pivot_table(index="score", columns="budget", values="exact_match", sort=False)
        out += ["", f"Filtering ({meta.get('filter_samples')} test samples, model {meta.get('filter_model')}): mean "
                "target-line loss (nats/token) / greedy exact match, keeping the top chunks within a share of the "
                "context tokens.", "",
                "| score | " + " | ".join(f"{b:.0%}" for b in pv.columns) + " |", "|---|" + "---|" * len(pv.columns)]
        for s in pv.index:
            out.append(f"| {s} | " + " | ".join(f"{pv.at[s, b]:.3f} / {em.at[s, b]:.0%}" for b in pv.columns) + " |")
    return "\n".join(out) + "\n"


def conclusions(scores: pd.DataFrame, per_cat: pd.DataFrame, filtering: pd.DataFrame | None,
                paired: pd.DataFrame | None = None, strata: pd.DataFrame | None = None) -> str:
    """The thesis' question answered from the numbers, including where Δ loses. Verdicts come from the paired
    differences (``paired``, :func:`comparisons`), whose pairs were fixed on dev."""
    main = scores[scores["truth"] == "relevant"].set_index("score")
    delta = main[main.index.map(is_delta_score).to_numpy(bool)]
    lines = []
    if paired is not None and len(paired):
        k = paired.attrs.get("k", 2)
        words = {"a better": "beats", "b better": "loses to", "not distinguishable": "is not distinguishable from"}
        head = paired[(paired["a"] == paired.attrs["delta"]) & (paired["b"] == paired.attrs["baseline"])]
        for _, r in head.iterrows():
            lines.append(f"- {metric_name(r['metric'], k)}: {r['a']} {r['a_value']:.3f} vs {r['b']} {r['b_value']:.3f}, "
                         f"difference {r['diff']:+.3f} [{r['diff_lo']:+.3f}, {r['diff_hi']:+.3f}]: Δ "
                         f"{words[r['verdict']]} the baseline.")
        primary = head[head["metric"] == "sample_auc"]
        if len(primary):
            r = primary.iloc[0]
            lines.insert(0, f"**Does Δ tell which context matters?** Chosen on dev, the best Δ score is {r['a']} and "
                            f"the best baseline {r['b']}; on test, within prompts, Δ {words[r['verdict']]} it (paired "
                            f"difference of the mean ROC-AUC {r['diff']:+.3f} [{r['diff_lo']:+.3f}, "
                            f"{r['diff_hi']:+.3f}], projects-then-prompts bootstrap). By metric:")
        rnd = paired[(paired["a"] == paired.attrs["delta"]) & (paired["b"] == "random")]
        if len(rnd):
            r = rnd.iloc[0]
            lines.append(f"- Against random ranking: {r['diff']:+.3f} [{r['diff_lo']:+.3f}, {r['diff_hi']:+.3f}] "
                         f"({'above chance' if r['verdict'] == 'a better' else 'not above chance' if r['verdict'] != 'b better' else 'below chance'}).")
        for _, r in paired[paired["b"].str.startswith("hidden attention")].iterrows():
            lines.append(f"- Against the {r['b']} ({metric_name(r['metric'], k)}): {r['a']} {r['a_value']:.3f} vs "
                         f"{r['b_value']:.3f}, difference {r['diff']:+.3f} [{r['diff_lo']:+.3f}, {r['diff_hi']:+.3f}]: "
                         f"Δ {words[r['verdict']]} it.")
        cb = paired[paired["a"] == "CatBoost on Δ + baselines"]
        for _, r in cb.iterrows():
            lines.append(f"- Adding the Δ features to CatBoost ({metric_name(r['metric'], k)}): {r['diff']:+.3f} "
                         f"[{r['diff_lo']:+.3f}, {r['diff_hi']:+.3f}] — "
                         f"{'they help' if r['verdict'] == 'a better' else 'they hurt' if r['verdict'] == 'b better' else 'no measurable help'}.")
    if strata is not None and len(strata) and paired is not None and len(paired):
        pv = strata.set_index(["score", "name_in_query"])
        for name in (paired.attrs["delta"], paired.attrs["baseline"]):
            if (name, True) in pv.index:
                lines.append(f"- {name} by stratum: name in query {_ci(pv.loc[(name, True)], 'auc')}, not in query "
                             f"{_ci(pv.loc[(name, False)], 'auc')} (pooled ROC-AUC).")
    cat = per_cat.pivot_table(index="score", columns="negatives", values="auc")
    if len(delta) and {"injected", "distractor"} <= set(cat.columns):
        for s in delta.index:
            if s in cat.index:
                lines.append(f"- {s}: relevant vs injected {cat.at[s, 'injected']:.3f}, vs same-project distractors "
                             f"{cat.at[s, 'distractor']:.3f}, vs related {cat.at[s, 'related']:.3f}.")
    cb = main[main.index.str.startswith("CatBoost")]
    if len(cb):
        lines.append("- Learned (trained on dev projects, scored on test): " + "; ".join(f"{k} {_fmt(r)}" for k, r in cb.iterrows()) + ".")
    helps = scores[scores["truth"].str.startswith("helps:")]
    for truth, g in helps.groupby("truth"):
        g = g.set_index("score")
        if len(g) and g["auc"].notna().any():
            best = g["auc"].idxmax()
            lines.append(f"- Against the model's own leave-one-out labels ({truth[6:]}; {g['positives'].iloc[0]} of "
                         f"{g['n'].iloc[0]} chunks help), the best score is {best} ({_fmt(g.loc[best])}).")
        elif len(g):
            lines.append(f"- Leave-one-out ({truth[6:]}): {g['positives'].max()} of {g['n'].max()} chunks lower the "
                         "target-line loss by more than the threshold, so this ground truth cannot rank the scores: "
                         "the LM does not use these chunks.")
    if filtering is not None and len(filtering):
        s = filtering.groupby(["score", "budget"])["loss"].mean().unstack()
        if 0.0 in s.columns and 1.0 in s.columns:
            gap = s[0.0].mean() - s[1.0].mean()
            if abs(gap) < 0.05:
                lines.append(f"- **The LM barely uses the context**: target-line loss {s[0.0].mean():.3f} without any "
                             f"chunk, {s[1.0].mean():.3f} with all of them (gap {gap:+.3f} nats/token). The filtering "
                             "curves cannot separate the scores with this model; they need an LM whose completions "
                             "depend on the context (e.g. falcon-mamba-7b, notebook 03 on a GPU).")
        mid = [b for b in s.columns if 0 < b < 1]
        if mid:
            b = mid[len(mid) // 2]
            order = s[b].sort_values()
            lines.append(f"- Filtering at {b:.0%} of the context tokens: lowest target loss with {order.index[0]} "
                         f"({order.iloc[0]:.3f}), highest with {order.index[-1]} ({order.iloc[-1]:.3f}); full context "
                         f"{s[1.0].mean():.3f}, no context {s[0.0].mean():.3f}." if 1.0 in s.columns and 0.0 in s.columns
                         else f"- Filtering at {b:.0%}: best {order.index[0]} ({order.iloc[0]:.3f}).")
    return "\n".join(lines)


def save_json(obj, path: str | Path) -> Path:
    """Strict JSON (NaN -> null), written atomically (:mod:`deltalens.runinfo`)."""
    from .runinfo import write_json

    return write_json(resolve(path), obj)


def records(df: pd.DataFrame) -> list[dict]:
    return [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()} for r in df.to_dict("records")]
