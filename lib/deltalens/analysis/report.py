"""The main analysis in words and files: the within-prompt, paired and lexical-strata tables and the results table
as markdown, the conclusions written from the numbers, and the results folder (``results.md``, ``metrics.json``,
``filtering_curves.parquet``, ``chunk_table.parquet``) written atomically (:mod:`deltalens.core.runinfo`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..core import chunk_columns as cc
from ..core.chunk_columns import ScoreColumn
from ..core.paths import resolve
from ..core.runinfo import atomic_write, write_json
from .scores import DELTA_KINDS, HIDDEN_ATTENTION, UPPER_BOUND, Choice

RESULTS_FILES = {"results": "results.md", "metrics": "metrics.json", "filtering_curves": "filtering_curves.parquet",
                 "chunk_table": "chunk_table.parquet"}
JUDGE_CURVES = "second_lm_filtering_curves.parquet"   # written when a second LM completed (AnalysisResults.judge_curves)


def _is_helps(truth: str) -> bool:
    return cc.family_of(truth) == cc.HELPS


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
    loo = {t: g.set_index("score") for t, g in scores.groupby("truth") if _is_helps(t)}
    head = "| score | ROC-AUC, relevant (test) [95 % CI] | PR-AUC (chance {:.3f}) |".format(main["pr_chance"].iloc[0])
    head += "".join(f" ROC-AUC, helps ({ScoreColumn.parse(t).run}) |" for t in loo) + " chosen on dev |"
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
    delta = main[main["kind"].isin(DELTA_KINDS).to_numpy(bool)]
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
        rnd = paired[(paired["a"] == paired.attrs["delta"]) & (paired["b_kind"] == "random")]
        if len(rnd):
            r = rnd.iloc[0]
            lines.append(f"- Against random ranking: {r['diff']:+.3f} [{r['diff_lo']:+.3f}, {r['diff_hi']:+.3f}] "
                         f"({'above chance' if r['verdict'] == 'a better' else 'not above chance' if r['verdict'] != 'b better' else 'below chance'}).")
        for _, r in paired[paired["b_kind"].isin((HIDDEN_ATTENTION, UPPER_BOUND))].iterrows():
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
    helps = scores[scores["truth"].map(_is_helps).astype(bool)]
    for truth, g in helps.groupby("truth"):
        g, run = g.set_index("score"), ScoreColumn.parse(truth).run
        if len(g) and g["auc"].notna().any():
            best = g["auc"].idxmax()
            lines.append(f"- Against the model's own leave-one-out labels ({run}; {g['positives'].iloc[0]} of "
                         f"{g['n'].iloc[0]} chunks help), the best score is {best} ({_fmt(g.loc[best])}).")
        elif len(g):
            lines.append(f"- Leave-one-out ({run}): {g['positives'].max()} of {g['n'].max()} chunks lower the "
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
    """Strict JSON (NaN -> null), written atomically (:mod:`deltalens.core.runinfo`)."""
    return write_json(resolve(path), obj)


def records(df: pd.DataFrame) -> list[dict]:
    return [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()} for r in df.to_dict("records")]


def _diff(r, key: str) -> str:
    v, lo, hi = r[key], r[f"{key}_lo"], r[f"{key}_hi"]
    return "–" if pd.isna(v) else f"{v:+.3f} [{lo:+.3f}, {hi:+.3f}]"


JUDGE_MIN_GAIN = 0.05   # nats/token: below this context gain of the completing LM, filtering cannot show a difference


def judge_markdown(diffs: pd.DataFrame, judge: str, scorer_model: str, delta_scores: list[str],
                   delta_models: dict[str, str] | None = None) -> str:
    """The filtering curves with a second LM completing (:func:`deltalens.analysis.filtering.budget_differences`):
    one row per score and budget strictly between 0 and 1, the paired differences against the reference score and
    the full prompt, then one generated sentence per Δ score and budget. ``delta_models``: the model each Δ score
    comes from, so that a Δ of the completing LM itself (self-filtering) is told from another model's (the thesis'
    setting: a small Mamba filters for a different LM)."""
    delta_models = delta_models or {}

    def source(name: str) -> str:
        m = delta_models.get(name)
        if m is None:
            return ""
        return (" (the completing LM's own Δ)" if Path(m).name == Path(judge).name
                else f" (Δ of `{m}`, a different model from the completing LM)")

    ref, n_boot = diffs.attrs.get("reference"), diffs.attrs.get("n_boot")
    n = int(diffs["samples"].iloc[0]) if len(diffs) else 0
    base = diffs[diffs["budget"] == 0.0]
    full = diffs[diffs["budget"] == 1.0]
    title = ("Filtering judged by the completing LM" if Path(judge).name == Path(scorer_model).name
             else "Filtering for a second LM")
    out = [f"**{title}** (`{judge}` completes the target line; the chunks are ranked by scores of "
           f"`{scorer_model}`'s run and the baselines, and the budget is counted in the completing LM's tokenizer; "
           f"{n} test samples; differences are paired on the same samples, {n_boot} resamples of projects, then "
           "samples). Target-line loss in nats/token, lower is better:", ""]
    if len(base) and len(full):
        gain = base["loss"].iloc[0] - full["loss"].iloc[0]
        out += [f"Without any chunk the loss is {base['loss'].iloc[0]:.3f} (exact match {base['exact_match'].iloc[0]:.3f}); "
                f"with every chunk {full['loss'].iloc[0]:.3f} (exact match {full['exact_match'].iloc[0]:.3f}): the "
                f"completing LM's context gain on these samples is {gain:+.3f} nats/token."
                + (" No filter can move its loss by much more than that, so "
                   "these rows cannot tell the filters apart until the completing LM reads its context."
                   if gain < JUDGE_MIN_GAIN else ""), ""]
    out += [f"| score | budget | kept share | loss | loss − {ref} [95 % CI] | loss − full prompt [95 % CI] | "
            f"exact match | exact match − {ref} |", "|---|---|---|---|---|---|---|---|"]
    mid = diffs[(diffs["budget"] > 0) & (diffs["budget"] < 1)]
    for _, r in mid.iterrows():
        out.append(f"| {r['score']} | {r['budget']:g} | {r['kept_share']:.2f} | {r['loss']:.3f} | "
                   f"{_diff(r, 'loss_vs_ref') if r['score'] != ref else '–'} | {_diff(r, 'loss_vs_full')} | "
                   f"{r['exact_match']:.3f} | {_diff(r, 'exact_match_vs_ref') if r['score'] != ref else '–'} |")
    said = []
    for name in delta_scores:
        for _, r in mid[mid["score"] == name].iterrows():
            lo, hi = r["loss_vs_ref_lo"], r["loss_vs_ref_hi"]
            verdict = (f"better than {ref}" if hi < 0 else f"worse than {ref}" if lo > 0
                       else f"not distinguishable from {ref}")
            said.append(f"at budget {r['budget']:g}, {name}{source(name)} keeps chunks that are {verdict} for the completing LM "
                        f"(loss difference {_diff(r, 'loss_vs_ref')})")
    if said:
        out += ["", "From these numbers: " + "; ".join(said) + "."]
    return "\n".join(out) + "\n"


def results_document(context_md: str, scores: pd.DataFrame, filtering: pd.DataFrame | None, meta: dict,
                     ranking_md: str, answer: str, judge_md: str = "") -> str:
    """results.md: whether the models read their context, the results table (:func:`results_markdown`), the
    within-prompt tables (:func:`ranking_markdown`), the filtering for a second LM (:func:`judge_markdown`, when
    measured) and the answer (:func:`conclusions`)."""
    return ("**Does the model read its context?** (test split)\n\n" + context_md + "\n"
            + results_markdown(scores, filtering, meta) + "\n" + ranking_md + "\n"
            + (judge_md + "\n" if judge_md else "") + "**Answer, from these numbers:**\n\n" + answer + "\n")


@dataclass
class AnalysisResults:
    """Everything part 4 measured, named: what :func:`write_results` saves. The tables are test-split tables of
    :mod:`.scores`, :mod:`.ranking` and :mod:`.context_use`; ``choices`` are the dev choices behind them."""

    meta: dict                          # split sizes, runs, truths, resamples (:func:`~.table.split_meta`)
    params: dict                        # the notebook's parameters
    table: pd.DataFrame                 # the chunk table (one row per sample x chunk)
    context_gain: pd.DataFrame          # per run: context gain and exact match with / without the chunks
    loo_tables: dict[str, pd.DataFrame]  # per leave-one-out run: the signed gain per chunk category
    context_md: str                     # the two above as markdown
    choices: list[Choice]               # every dev choice (layer, statistic, sign)
    scores: pd.DataFrame                # every score against every ground truth
    per_category: pd.DataFrame          # relevant vs each kind of irrelevant chunk
    by_layer: pd.DataFrame              # raw Δ ROC-AUC per run, layer and statistic
    within_prompt: pd.DataFrame         # mean ROC-AUC, recall@k, nDCG@k inside each prompt
    paired: pd.DataFrame                # paired differences, pairs fixed on dev
    strata: pd.DataFrame                # the lexical strata
    ranking_md: str                     # the three above as markdown
    curves: pd.DataFrame                # filtering: one row per score, budget and sample
    filtering: pd.DataFrame             # filtering: the curves summarised per score and budget
    judge_curves: pd.DataFrame | None = None       # filtering with a second LM completing (None: not measured)
    judge_differences: pd.DataFrame | None = None  # its paired differences per score and budget
    judge_md: str = ""                              # the two above as markdown

    @property
    def answer(self) -> str:
        """The conclusions, written from the numbers (:func:`conclusions`)."""
        return conclusions(self.scores, self.per_category, self.curves, self.paired, self.strata)

    def document(self) -> str:
        """``results.md`` (:func:`results_document`)."""
        return results_document(self.context_md, self.scores, self.filtering, self.meta, self.ranking_md,
                                self.answer, self.judge_md)

    def metrics(self) -> dict:
        """``metrics.json``: every table as records, the parameters and the dev choices."""
        return {"meta": self.meta, "params": self.params, "scores": records(self.scores),
                "per_category": records(self.per_category), "auc_by_layer": records(self.by_layer),
                "filtering": records(self.filtering), "choices": [vars(c) for c in self.choices],
                "context_gain": records(self.context_gain),
                "leave_one_out_by_category": {name: records(v) for name, v in self.loo_tables.items()},
                "within_prompt": records(self.within_prompt), "paired_differences": records(self.paired),
                "lexical_strata": records(self.strata),
                **({} if self.judge_differences is None else
                   {"second_lm_filtering": {**self.judge_differences.attrs,
                                            "rows": records(self.judge_differences)}})}


def write_results(out_dir: str | Path, results: AnalysisResults) -> dict[str, Path]:
    """The results folder, each file written atomically: ``results.md`` (:meth:`AnalysisResults.document`),
    ``metrics.json`` (:meth:`AnalysisResults.metrics`), ``filtering_curves.parquet`` (one row per score, budget and
    sample) and ``chunk_table.parquet``. Returns {kind: path} (:data:`RESULTS_FILES`)."""
    if not isinstance(results, AnalysisResults):
        raise TypeError(f"write_results: results must be an AnalysisResults, not {type(results).__name__}")
    out = resolve(out_dir)
    paths = {k: out / name for k, name in RESULTS_FILES.items()}
    document = results.document()
    atomic_write(paths["results"], lambda p: p.write_text(document))
    save_json(results.metrics(), paths["metrics"])
    atomic_write(paths["filtering_curves"], lambda p: results.curves.to_parquet(p, index=False))
    atomic_write(paths["chunk_table"], lambda p: results.table.to_parquet(p, index=False))
    if results.judge_curves is not None:
        paths["judge_curves"] = out / JUDGE_CURVES
        atomic_write(paths["judge_curves"], lambda p: results.judge_curves.to_parquet(p, index=False))
    return paths
