"""Per-chunk statistics of one extracted prompt, from its per-token statistics: what a run writes per sample.

* :func:`chunk_rows` — chunk x layer rows of ``chunk_delta.parquet``: the mean of each Δ statistic over the chunk's
  tokens, DeciMamba's kept share (:func:`decimation_kept`), LongMamba's global-channel Δ (where computed), the
  hidden-attention mass summed over the chunk;
* :func:`chunk_lm_rows` — per chunk rows of ``chunk_lm.parquet``: tokens, self-information (mean NLL of the chunk's
  tokens in context), the target-line loss without the chunk and the gain (leave-one-out).

Column names: :mod:`deltalens.core.chunk_columns`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..core.chunk_columns import DECIMATION_SHARES, DELTA_STATS, HIDDEN_ATTENTION, decimation_column, global_sources
from ..lm.prompts import Encoded


def decimation_kept(l2: np.ndarray, share: float) -> np.ndarray:
    """(L,) bool: the ``share`` of the prompt's tokens with the largest L2 norm of Δ (at least one; ties by
    position) — the tokens DeciMamba's decimation would keep in this layer."""
    k = max(1, int(round(share * len(l2))))
    kept = np.zeros(len(l2), bool)
    kept[np.argsort(-np.asarray(l2, float), kind="stable")[:k]] = True
    return kept


def chunk_rows(sample_id: str, enc: Encoded, stats: list[dict], layer_ids: list[int]) -> pd.DataFrame:
    """chunk x layer rows: the mean of each per-token Δ statistic over the chunk's tokens; the share of the chunk's
    tokens that DeciMamba's decimation keeps (``decimate_<pct>``: top share of the whole prompt's tokens by the L2
    norm of Δ, per layer); the sum of the hidden-attention masses where they were computed (NaN for left-out
    chunks)."""
    rows = []
    for li, st in zip(layer_ids, stats):
        kept = {q: decimation_kept(st["l2"], q) for q in DECIMATION_SHARES}
        for ci, r in enumerate(enc.chunk_tokens):
            n = 0 if r is None else r[1] - r[0]
            row = {"sample_id": sample_id, "chunk_index": ci, "layer": li, "n_tokens": n}
            for s in DELTA_STATS:
                row[s] = float(st[s][r[0]:r[1]].mean()) if n else np.nan
            for q, mask in kept.items():
                row[decimation_column(q)] = float(mask[r[0]:r[1]].mean()) if n else np.nan
            for s in global_sources(st):  # LongMamba's global channels: mean Δ over them, averaged over the chunk
                row[s] = float(st[s][r[0]:r[1]].mean()) if n else np.nan
            for s in HIDDEN_ATTENTION:  # the mass the query positions give the chunk: a sum over its tokens
                if s in st:
                    row[s] = float(st[s][r[0]:r[1]].sum()) if n else np.nan
            rows.append(row)
    return pd.DataFrame(rows)


def chunk_lm_rows(enc: Encoded, token_nll, target_loss: float, loss_without: dict[int, float]) -> list[dict]:
    """One dict per chunk (``chunk_lm.parquet`` without the sample id): its tokens in the prompt (0: truncated away),
    its self-information (None when truncated), and for the chunks in ``loss_without`` (chunk index -> target-line
    loss without that chunk) the loss without it and the gain over ``target_loss``."""
    rows = []
    for ci, r in enumerate(enc.chunk_tokens):
        n = 0 if r is None else r[1] - r[0]
        row = {"chunk_index": ci, "n_tokens": n,
               "self_information": float(np.nanmean(token_nll[r[0]:r[1]])) if n else None,
               "loss_without": None, "loss_gain": None}
        if ci in loss_without:
            without = loss_without[ci]
            row.update(loss_without=without, loss_gain=without - target_loss)
        rows.append(row)
    return rows
