"""DeciMamba's decimation rule as a chunk score: the share of a chunk's tokens among the prompt's top tokens by the
L2 norm of Δ, per layer (extract.chunk_rows), checked against a brute-force count."""

import numpy as np
import pytest

from deltalens.core import chunk_columns as cc
from deltalens.extract import chunk_stats
from deltalens.lm.prompts import Encoded


def test_decimation_kept_takes_the_top_share_with_ties_by_position():
    l2 = np.array([0.1, 0.9, 0.5, 0.9, 0.2, 0.3, 0.0, 0.8, 0.4, 0.6])
    kept = chunk_stats.decimation_kept(l2, 0.25)          # round(2.5) = 2 tokens: the two 0.9s
    assert kept.tolist() == [False, True, False, True] + [False] * 6
    assert chunk_stats.decimation_kept(l2, 0.01).sum() == 1  # at least one token
    assert chunk_stats.decimation_kept(l2, 0.5).sum() == 5


def test_chunk_rows_report_the_kept_share_of_each_chunk():
    import torch

    rng = np.random.default_rng(0)
    L = 40
    stats = [{s: rng.random(L).astype(np.float32) for s in cc.DELTA_STATS} for _ in range(2)]
    enc = Encoded(input_ids=torch.zeros(1, L, dtype=torch.long), chunk_tokens=[(0, 10), (10, 25), None],
                  target_tokens=(36, 40), n_tokens_full=L)
    rows = chunk_stats.chunk_rows("s", enc, stats, [0, 3])
    for _, r in rows.iterrows():
        st = stats[[0, 3].index(r["layer"])]
        for q in cc.DECIMATION_SHARES:
            col = f"decimate_{round(100 * q)}"
            if r["chunk_index"] == 2:
                assert np.isnan(r[col])
                continue
            a, b = enc.chunk_tokens[r["chunk_index"]]
            k = max(1, round(q * L))
            top = set(np.argsort(-st["l2"], kind="stable")[:k])
            assert r[col] == pytest.approx(sum(i in top for i in range(a, b)) / (b - a))
