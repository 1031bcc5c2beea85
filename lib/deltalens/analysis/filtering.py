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
                     scan: str = "auto", batch_tokens: int | str = "auto") -> pd.DataFrame:
    """One row per (score, budget, sample): kept share of context tokens, target loss, greedy exact match.

    ``scores``: name -> (column of ``table``, sign). ``run``: the extraction run whose ``n_tokens:<run>`` column
    measures chunk sizes (chunks it dropped by truncation are never kept). ``policy``: the run's layout (an
    extraction config's ``.layout``). The distinct kept sets of a sample go through the model as one batch."""
    from tqdm.auto import tqdm

    set_scan(lm, scan)
    rows = []
    tok_col = ScoreColumn(N_TOKENS, run).name
    if tok_col not in table.columns:
        raise ValueError(f"the chunk table has no {tok_col!r}: extraction run {run!r} is not in it")
    for sid in tqdm(sample_ids, desc="filtering", unit="sample", disable=not progress):
        g = table[table["sample_id"] == sid].sort_values("chunk_index")
        sample = ds.sample(sid)
        n_tok = g[tok_col].fillna(0).to_numpy(float)
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
