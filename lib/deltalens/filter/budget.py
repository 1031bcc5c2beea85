"""Which chunks fit: the one budget rule of the project, used by a user's filter and by part 4's filtering curves.

Chunks are taken in descending score order while the kept tokens stay within the limit; a chunk that does not fit is
skipped (a later, smaller one may still fit). NaN scores (chunks the scorer could not see) rank last; ties keep the
chunks' order. Forced chunks are kept first, whatever their size: only they can take the kept tokens past the limit.
"""

from __future__ import annotations

import numpy as np


def rank_order(scores) -> np.ndarray:
    """Chunk positions from the best score to the worst: NaN last, ties in chunk order."""
    scores = np.asarray(scores, float)
    return np.argsort(np.where(np.isnan(scores), np.inf, -scores), kind="stable")


def select_within_budget(scores, n_tokens, limit: float, forced=()) -> frozenset[int]:
    """Chunk positions kept under ``limit`` tokens (see the module docstring). Chunks of 0 tokens are never kept
    (truncated away, or empty), unless forced."""
    scores, n_tokens = np.asarray(scores, float), np.asarray(n_tokens, float)
    if scores.shape != n_tokens.shape:
        raise ValueError(f"select_within_budget: {scores.shape[0]} scores for {n_tokens.shape[0]} chunks")
    kept = [int(i) for i in dict.fromkeys(forced)]
    used = float(n_tokens[kept].sum()) if kept else 0.0
    for i in rank_order(scores):
        if int(i) in kept:
            continue
        if n_tokens[i] > 0 and used + n_tokens[i] <= limit + 1e-9:
            kept.append(int(i))
            used += n_tokens[i]
    return frozenset(kept)
