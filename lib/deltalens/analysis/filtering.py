"""Filtering, the end use: keep the top-scored context chunks within a token budget and measure the LM's loss and
greedy exact match on the target line. One curve per score; the same LM that produced Δ scores the completions.

For a budget b (share of the prompt's context tokens), chunks are taken in descending score order while the kept
tokens stay within ``b`` x the tokens of all chunks (a chunk that does not fit is skipped; a later, smaller one may
still fit). Budget 0 is the query alone, 1 the full prompt. Identical kept sets are evaluated once per sample.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..context.subsets import hash_subset
from ..core.chunk_columns import N_TOKENS, ScoreColumn
from ..filter.budget import select_within_budget
from ..lm.forward import forward_all
from ..lm.loading import set_scan
from ..lm.prompts import LayoutPolicy, encode

DEFAULT_BUDGETS = (0.0, 0.1, 0.25, 0.5, 1.0)


def keep_by_budget(scores: np.ndarray, n_tokens: np.ndarray, budget: float) -> frozenset[int]:
    """Chunk positions kept under ``budget`` (a share of all chunks' tokens): the filter's own rule,
    :func:`deltalens.filter.budget.select_within_budget`; NaN scores rank last."""
    return select_within_budget(scores, n_tokens, budget * np.nansum(np.asarray(n_tokens, float)))


def filter_sample_ids(table: pd.DataFrame, k: int | None, split: str = "test") -> list[str]:
    """The samples of ``split`` the curves are measured on: ``k`` of them as a fixed hash subset
    (:func:`deltalens.context.subsets.hash_subset`), in the chunk table's order."""
    ids = list(table.loc[table["split"] == split, "sample_id"].unique())
    keep = hash_subset(ids, k)
    return [s for s in ids if s in keep]


def filtering_curves(lm, tokenizer, ds, table: pd.DataFrame, scores: dict[str, tuple[str, float]], run: str,
                     sample_ids: list[str], policy: LayoutPolicy, budgets=DEFAULT_BUDGETS, progress: bool = True,
                     scan: str = "auto", batch_tokens: int | str = "auto",
                     chunk_tokens: pd.Series | None = None) -> pd.DataFrame:
    """One row per (score, budget, sample): kept share of context tokens, target loss, greedy exact match.

    ``scores``: name -> (column of ``table``, sign). ``run``: the extraction run whose ``n_tokens:<run>`` column
    measures chunk sizes (chunks it dropped by truncation are never kept), unless ``chunk_tokens`` (indexed like
    ``table``; :func:`chunk_token_counts`) gives them — a second LM completing counts the budget in its own
    tokenizer. ``policy``: the run's layout (an extraction config's ``.layout``). The distinct kept sets of a sample
    go through the model as one batch."""
    from tqdm.auto import tqdm

    set_scan(lm, scan)
    rows = []
    tok_col = ScoreColumn(N_TOKENS, run).name
    if chunk_tokens is None and tok_col not in table.columns:
        raise ValueError(f"the chunk table has no {tok_col!r}: extraction run {run!r} is not in it")
    for sid in tqdm(sample_ids, desc="filtering", unit="sample", disable=not progress):
        g = table[table["sample_id"] == sid].sort_values("chunk_index")
        sample = ds.sample(sid)
        n_tok = (g[tok_col] if chunk_tokens is None else chunk_tokens.loc[g.index]).fillna(0).to_numpy(float)
        idx = g["chunk_index"].to_numpy()
        total = n_tok.sum()
        plan = [(name, b, keep_by_budget(sign * g[col].to_numpy(float), n_tok, b))
                for name, (col, sign) in scores.items() for b in budgets]
        distinct = list(dict.fromkeys(kept for _, _, kept in plan))
        encs = [encode(tokenizer, sample, policy, drop=[int(i) for k, i in enumerate(idx) if k not in kept])
                for kept in distinct]
        results = dict(zip(distinct, forward_all(lm, encs, batch_tokens=batch_tokens, capture=False)))
        for name, b, kept in plan:
            r = results[kept]
            rows.append({"score": name, "budget": b, "sample_id": sid, "kept_share": n_tok[list(kept)].sum() / total
                         if total else 0.0, "n_kept": len(kept), "loss": r.target_loss, "exact_match": r.exact_match})
    return pd.DataFrame(rows)


def summarize_curves(curves: pd.DataFrame) -> pd.DataFrame:
    """Mean loss, exact-match rate and kept share per (score, budget)."""
    return (curves.groupby(["score", "budget"], sort=False)
            .agg(loss=("loss", "mean"), exact_match=("exact_match", "mean"), kept_share=("kept_share", "mean"),
                 samples=("sample_id", "nunique")).reset_index())


def chunk_token_counts(ds, table: pd.DataFrame, tokenizer) -> pd.Series:
    """Every chunk's size in ``tokenizer``'s tokens (its text alone, no special tokens: the filter's count,
    :class:`deltalens.filter.TokenCounter`), indexed like ``table``."""
    from ..filter.context_filter import TokenCounter

    texts = ds.chunks.set_index(["sample_id", "chunk_index"])["text"]
    keys = pd.MultiIndex.from_arrays([table["sample_id"], table["chunk_index"]])
    missing = ~keys.isin(texts.index)
    if missing.any():
        raise ValueError(f"{int(missing.sum())} chunk-table rows are not chunks of the dataset, e.g. "
                         f"{keys[missing][0]}")
    return pd.Series(TokenCounter(tokenizer).sizes(list(texts.loc[keys])), index=table.index, dtype=float)


def budget_differences(curves: pd.DataFrame, projects: pd.Series, reference: str, n_boot: int = 1000,
                       seed: int = 0) -> pd.DataFrame:
    """Paired differences per (score, budget) on the same samples: the score's target loss and exact match minus
    ``reference``'s at the same budget, and minus the full prompt's (budget 1), each with a 95 % interval from a
    projects-then-samples bootstrap (:func:`deltalens.core.bootstrap.cluster_resamples`; ``projects``: sample id ->
    project). Negative loss differences: the score's kept chunks serve the completing LM better."""
    from ..core.bootstrap import cluster_resamples, interval

    if reference not in set(curves["score"]):
        raise ValueError(f"budget_differences: reference score {reference!r} is not in the curves")
    if 1.0 not in set(curves["budget"]):
        raise ValueError("budget_differences: the curves have no budget 1.0 (the full prompt)")
    c = curves.assign(exact_match=curves["exact_match"].astype(float))
    wide = c.pivot_table(index="sample_id", columns=["score", "budget"], values=["loss", "exact_match"],
                         aggfunc="first")
    samples = wide.index.to_numpy()
    w = cluster_resamples(samples, projects.loc[samples].to_numpy(), n_boot, seed).row_weights(samples)
    w = w.astype(float)

    def paired(d: np.ndarray) -> tuple[float, float, float]:
        ok = ~np.isnan(d)
        den = w[:, ok].sum(1)
        boot = np.where(den > 0, w[:, ok] @ d[ok] / np.where(den > 0, den, 1), np.nan)
        lo, hi = interval(boot)
        return float(np.nanmean(d)), lo, hi

    full = {m: wide[(m, reference, 1.0)].to_numpy(float) for m in ("loss", "exact_match")}
    rows = []
    for score in dict.fromkeys(c["score"]):
        for budget in sorted(set(c["budget"])):
            row = {"score": score, "budget": budget, "samples": len(samples),
                   "kept_share": float(c[(c["score"] == score) & (c["budget"] == budget)]["kept_share"].mean())}
            for m in ("loss", "exact_match"):
                mine = wide[(m, score, budget)].to_numpy(float)
                row[m] = float(np.nanmean(mine))
                for name, other in (("ref", wide[(m, reference, budget)].to_numpy(float)), ("full", full[m])):
                    d, lo, hi = paired(mine - other)
                    row.update({f"{m}_vs_{name}": d, f"{m}_vs_{name}_lo": lo, f"{m}_vs_{name}_hi": hi})
            rows.append(row)
    out = pd.DataFrame(rows)
    out.attrs.update(reference=reference, n_boot=n_boot)
    return out
