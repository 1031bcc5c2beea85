"""The names of the per-token Δ statistics: a shared value type, below both their maths
(:mod:`deltalens.delta.scores`) and the chunk-table contract (:mod:`deltalens.core.chunk_columns`), so neither
imports the other and an edit of the contract does not rerun part 1."""

DELTA_STATS = ("mean", "mean_log", "l2", "max")
"""The per-token Δ statistics of :func:`deltalens.delta.scores.delta_scores`, in the order of extraction's files and
the chunk table."""
DELTA_SCORES = ("mean", "max", "l2", "mean_log")
"""The same statistics in the synthetic part's order (rows of its tables and figures)."""
assert sorted(DELTA_STATS) == sorted(DELTA_SCORES)
