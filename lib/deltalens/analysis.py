"""The main analysis (notebook 04): every relevance score of every context chunk side by side, against every
ground truth, with bootstrap intervals; whatever is chosen (layer, statistic, sign) is chosen on dev, reported on test.

The chunk table (:func:`chunk_table`) has one row per (sample, chunk) and these columns:

* ``split, project, category, relevant`` — from the dataset (ground truth 1: ``relevant``);
* ``delta:<run>:L<layer>:<stat>`` — Δ statistics of each extraction run (model x prompt order), stat in mean /
  mean_log / l2 / max;
* ``selfinfo:<run>`` — the chunk's self-information under the same LM (mean token NLL in context; Selective-Context);
  ``loss_gain:<run>`` — how much the target-line loss rises without the chunk (ground truth 2: ``helps:<run>`` is
  ``loss_gain > helps_threshold``, on the samples with leave-one-out);
* ``bm25, tfidf, embedding`` — similarity to the query (the reference labelers' scores);
* ``length`` (characters), ``path_distance`` (directory steps between the chunk's file and the completion file; other
  projects count as far away), ``random`` (seeded);
* ``llm:<labeler>`` — a generative labeler's labels (1 / 0, NaN where it gave none): a score, and ground truth 3.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from .metrics import auc, bootstrap_ci, pr_auc
from .paths import resolve

STATS = ("mean", "mean_log", "l2", "max")
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
    for name, d in (runs or {}).items():
        d = resolve(d)
        for f in ("chunk_delta.parquet", "chunk_lm.parquet"):
            if not (d / f).is_file():
                raise FileNotFoundError(f"extraction run {name!r}: {d / f} is missing (run the extraction and its merge)")
        cd = pd.read_parquet(d / "chunk_delta.parquet")
        wide = cd.pivot_table(index=["sample_id", "chunk_index"], columns="layer", values=list(STATS), dropna=False)
        wide.columns = [f"delta:{name}:L{layer}:{stat}" for stat, layer in wide.columns]
        wide = wide[sorted(wide.columns, key=lambda c: (int(c.split(":")[2][1:]), STATS.index(c.split(":")[3])))]
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
             n_boot: int = 200, seed: int = 0, mask: np.ndarray | None = None) -> dict:
    """ROC-AUC and PR-AUC of ``sign * score`` against the boolean ``truth`` column, with 95 % bootstrap intervals over
    samples; rows where score or truth is missing are left out (``n`` says how many were used)."""
    values = t[score].to_numpy(float) if isinstance(score, str) else np.asarray(score, float)
    y = t[truth].to_numpy(float)
    keep = ~np.isnan(values) & ~np.isnan(y)
    if split is not None:
        keep &= (t["split"] == split).to_numpy()
    if mask is not None:
        keep &= mask
    v, yy, g = sign * values[keep], y[keep].astype(bool), t["sample_id"].to_numpy()[keep]
    out = {"n": int(keep.sum()), "positives": int(yy.sum()), "auc": auc(yy, v), "pr_auc": pr_auc(yy, v),
           "pr_chance": float(yy.mean()) if len(yy) else np.nan}
    if n_boot and len(yy) and 0 < yy.sum() < len(yy):
        out["auc_lo"], out["auc_hi"] = bootstrap_ci(auc, yy, v, g, n_boot, seed)
        out["pr_lo"], out["pr_hi"] = bootstrap_ci(pr_auc, yy, v, g, n_boot, seed)
    else:
        out.update(auc_lo=np.nan, auc_hi=np.nan, pr_lo=np.nan, pr_hi=np.nan)
    return out


@dataclass
class Choice:
    """A score chosen on dev: column, sign (+1: high = relevant), and the dev ROC-AUC that chose it."""
    name: str
    column: str
    sign: float
    dev_auc: float
    candidates: int = 1
    note: str = ""


def choose_on_dev(t: pd.DataFrame, columns: list[str], truth: str = "relevant", name: str = "",
                  signs: tuple[float, ...] = (1.0, -1.0), note: str = "") -> Choice:
    """The (column, sign) with the best dev ROC-AUC: only dev rows are looked at."""
    best = None
    for c in columns:
        a = evaluate(t, c, truth, split="dev", n_boot=0)["auc"]
        for sg in signs:
            v = a if sg > 0 else 1 - a
            if not np.isnan(v) and (best is None or v > best[2]):
                best = (c, sg, v)
    if best is None:
        raise ValueError(f"choose_on_dev({name!r}): no candidate has a dev ROC-AUC (no dev rows with both classes)")
    return Choice(name or best[0], best[0], best[1], best[2], len(columns) * len(signs), note)


def standard_choices(t: pd.DataFrame, truth: str = "relevant") -> list[Choice]:
    """The scores compared in the main table, each chosen on dev where anything is chosen."""
    out = []
    for run in runs_of(t):
        cols = delta_columns(t, run)
        out.append(choose_on_dev(t, cols, truth, f"Δ best ({run})", note="layer, statistic and sign chosen on dev"))
        l2 = [c for c in cols if c.endswith(":l2")]
        out.append(choose_on_dev(t, l2, truth, f"DeciMamba L2 Δ ({run})", signs=(1.0,),
                                 note="layer chosen on dev; high L2 norm = important"))
        out.append(choose_on_dev(t, [f"selfinfo:{run}"], truth, f"self-information ({run})",
                                 note="sign chosen on dev"))
    for b in BASELINES:
        if b in t.columns:
            out.append(Choice(b.upper() if b != "embedding" else "embedding cosine", b, 1.0,
                              evaluate(t, b, truth, split="dev", n_boot=0)["auc"]))
    out.append(choose_on_dev(t, ["length"], truth, "chunk length", note="sign chosen on dev"))
    out.append(Choice("path distance", "path_distance", -1.0,
                      evaluate(t, "path_distance", truth, split="dev", n_boot=0, sign=-1.0)["auc"], note="closer = relevant"))
    out.append(Choice("random", "random", 1.0, evaluate(t, "random", truth, split="dev", n_boot=0)["auc"]))
    for c in [c for c in t.columns if c.startswith("llm:")]:
        out.append(Choice(f"LLM labels: {c[4:]}", c, 1.0, np.nan, note="labels as a 0/1 score"))
    return out


def learned_scores(t: pd.DataFrame, truth: str = "relevant", seed: int = 0, iterations: int = 300,
                   n_folds: int = 5) -> dict[str, np.ndarray]:
    """Out-of-fold CatBoost probabilities on Δ features, on baseline features and on both, cross-validated with folds
    grouped by project (a project's chunks are never in the fold that trains the model scoring them)."""
    from catboost import CatBoostClassifier
    from sklearn.model_selection import GroupKFold

    base = [c for c in (*BASELINES, "length", "path_distance") if c in t.columns] + \
           [c for c in t.columns if c.startswith("selfinfo:")]
    sets = {"CatBoost on Δ": delta_columns(t), "CatBoost on baselines": base, "CatBoost on Δ + baselines": delta_columns(t) + base}
    y = t[truth].to_numpy(float)
    groups = t["project"].to_numpy()
    folds = list(GroupKFold(n_splits=min(n_folds, len(np.unique(groups)))).split(t, y, groups))
    out = {}
    for name, cols in sets.items():
        if not cols:
            continue
        X = t[cols].to_numpy(float)
        pred = np.full(len(t), np.nan)
        for tr, te in folds:
            ok = ~np.isnan(y[tr])
            if len(np.unique(y[tr][ok])) < 2:
                continue
            clf = CatBoostClassifier(iterations=iterations, depth=4, learning_rate=0.08, random_seed=seed,
                                     thread_count=2, verbose=False, allow_writing_files=False)
            clf.fit(X[tr][ok], y[tr][ok].astype(int))
            pred[te] = clf.predict_proba(X[te])[:, 1]
        out[name] = pred
    return out


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
                         "note": "out-of-fold, folds grouped by project", **r})
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
           f"({meta.get('test_relevant')} relevant). Intervals: bootstrap over samples ({meta.get('n_boot')} resamples).",
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


def conclusions(scores: pd.DataFrame, per_cat: pd.DataFrame, filtering: pd.DataFrame | None) -> str:
    """The thesis' question answered from the numbers, including where Δ loses."""
    main = scores[scores["truth"] == "relevant"].set_index("score")
    delta = main[main.index.str.startswith(("Δ best", "DeciMamba"))]
    others = main[~main.index.str.startswith(("Δ best", "DeciMamba", "CatBoost", "LLM labels", "random"))]
    lines = []
    if len(delta) and len(others):
        bd, bo = delta["auc"].idxmax(), others["auc"].idxmax()
        d, o = delta.loc[bd], others.loc[bo]
        verdict = ("beats" if d["auc_lo"] > o["auc_hi"] else "loses to" if d["auc_hi"] < o["auc_lo"]
                   else "is not distinguishable from")
        lines.append(f"**Does Δ tell which context matters?** The best Δ score, {bd}, reaches ROC-AUC {_fmt(d)} on "
                     f"test; the best non-Δ score, {bo}, {_fmt(o)}. Δ {verdict} it (95 % intervals).")
        rnd = main.loc["random"] if "random" in main.index else None
        if rnd is not None:
            lines.append(f"Random ranking: {_fmt(rnd)}; every Δ score above it: "
                         f"{'yes' if (delta['auc_lo'] > rnd['auc_hi']).all() else 'no'}.")
    cat = per_cat.pivot_table(index="score", columns="negatives", values="auc")
    if len(delta) and {"injected", "distractor"} <= set(cat.columns):
        for s in delta.index:
            if s in cat.index:
                lines.append(f"- {s}: relevant vs injected {cat.at[s, 'injected']:.3f}, vs same-project distractors "
                             f"{cat.at[s, 'distractor']:.3f}, vs related {cat.at[s, 'related']:.3f}.")
    cb = main[main.index.str.startswith("CatBoost")]
    if len(cb):
        lines.append("- Learned (out-of-fold by project): " + "; ".join(f"{k} {_fmt(r)}" for k, r in cb.iterrows()) + ".")
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
    p = resolve(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(obj, indent=1, default=lambda x: None if isinstance(x, float) and np.isnan(x) else
                            x.item() if hasattr(x, "item") else str(x)))
    return p


def records(df: pd.DataFrame) -> list[dict]:
    return [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()} for r in df.to_dict("records")]
