"""Filtering, the end use: keep the top-scored context chunks within a token budget and measure the LM's loss and
greedy exact match on the target line. One curve per score; the same LM that produced Δ scores the completions.

For a budget b (share of the prompt's context tokens), chunks are taken in descending score order while the kept
tokens stay within ``b`` x the tokens of all chunks (a chunk that does not fit is skipped; a later, smaller one may
still fit). Budget 0 is the query alone, 1 the full prompt. Identical kept sets are evaluated once per sample.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import extract as ex

DEFAULT_BUDGETS = (0.0, 0.1, 0.25, 0.5, 1.0)


def keep_by_budget(scores: np.ndarray, n_tokens: np.ndarray, budget: float) -> frozenset[int]:
    """Chunk positions kept under ``budget`` (see the module docstring); NaN scores rank last."""
    scores, n_tokens = np.asarray(scores, float), np.asarray(n_tokens, float)
    limit = budget * np.nansum(n_tokens)
    order = np.argsort(np.where(np.isnan(scores), np.inf, -scores), kind="stable")
    kept, used = [], 0.0
    for i in order:
        if n_tokens[i] > 0 and used + n_tokens[i] <= limit + 1e-9:
            kept.append(int(i))
            used += n_tokens[i]
    return frozenset(kept)


def filtering_curves(lm, tokenizer, ds, table: pd.DataFrame, scores: dict[str, tuple[str, float]], run: str,
                     sample_ids: list[str], cfg: ex.ExtractConfig, budgets=DEFAULT_BUDGETS,
                     progress: bool = True) -> pd.DataFrame:
    """One row per (score, budget, sample): kept share of context tokens, target loss, greedy exact match.

    ``scores``: name -> (column of ``table``, sign). ``run``: the extraction run whose ``n_tokens:<run>`` column
    measures chunk sizes (chunks it dropped by truncation are never kept)."""
    from tqdm.auto import tqdm

    ex.set_scan(lm, cfg.use_mambapy)
    rows, cache = [], {}
    tok_col = f"n_tokens:{run}"
    if tok_col not in table.columns:
        raise ValueError(f"the chunk table has no {tok_col!r}: extraction run {run!r} is not in it")
    for sid in tqdm(sample_ids, desc="filtering", unit="sample", disable=not progress):
        g = table[table["sample_id"] == sid].sort_values("chunk_index")
        sample = ds.sample(sid)
        n_tok = g[tok_col].fillna(0).to_numpy(float)
        idx = g["chunk_index"].to_numpy()
        total = n_tok.sum()
        for name, (col, sign) in scores.items():
            values = sign * g[col].to_numpy(float)
            for b in budgets:
                kept = keep_by_budget(values, n_tok, b)
                key = (sid, kept)
                if key not in cache:
                    drop = [int(i) for k, i in enumerate(idx) if k not in kept]
                    cache[key] = ex.target_metrics(lm, ex.encode(tokenizer, sample, cfg, drop=drop))
                loss, exact = cache[key]
                rows.append({"score": name, "budget": b, "sample_id": sid, "kept_share": n_tok[list(kept)].sum() / total
                             if total else 0.0, "n_kept": len(kept), "loss": loss, "exact_match": exact})
    return pd.DataFrame(rows)


def summarize_curves(curves: pd.DataFrame) -> pd.DataFrame:
    """Mean loss, exact-match rate and kept share per (score, budget)."""
    return (curves.groupby(["score", "budget"], sort=False)
            .agg(loss=("loss", "mean"), exact_match=("exact_match", "mean"), kept_share=("kept_share", "mean"),
                 samples=("sample_id", "nunique")).reset_index())
