"""Per-token importance scores from Δ, and the control features that Δ has to beat.

Δ scores reduce the channel axis of Δ (..., L, d_inner) to one number per token:

* ``mean``     -- mean over channels (the thesis' "mean Δ")
* ``max``      -- max over channels (the thesis' "max Δ")
* ``l2``       -- L2 norm over channels (DeciMamba's token-importance score)
* ``mean_log`` -- mean of log Δ (a scale-free mean; Δ spans orders of magnitude across channels)

Controls: first-layer Δ is a function of the token and its short-conv window (d_conv - 1 previous tokens), so the
same information is available without any Mamba at all. ``window_features`` gives exactly that window as categorical
features; ``identity_rate`` is the simplest control score, P(important | token id), estimated on training sequences.
"""

from __future__ import annotations

import numpy as np
import torch


def delta_scores(delta: torch.Tensor) -> dict[str, torch.Tensor]:
    """Δ (..., d_inner) -> {score name: (...)}."""
    delta = delta.float()
    return {
        "mean": delta.mean(-1),
        "max": delta.amax(-1),
        "l2": delta.norm(dim=-1),
        "mean_log": delta.clamp_min(1e-30).log().mean(-1),
    }


def token_stats(delta: torch.Tensor) -> dict[str, torch.Tensor]:
    """A ``capture_delta`` reducer: keeps the per-token scores only (B, L) each, a few bytes per token."""
    return delta_scores(delta)


def window_features(inputs: torch.Tensor, window: int, pad: int = -1) -> np.ndarray:
    """(B, L) token ids -> (B, L, window + 1): the token itself and the ``window`` previous tokens (``pad`` before 0)."""
    x = inputs.numpy() if isinstance(inputs, torch.Tensor) else np.asarray(inputs)
    B, L = x.shape
    out = np.full((B, L, window + 1), pad, dtype=np.int64)
    for k in range(window + 1):
        out[:, k:, k] = x[:, : L - k]
    return out


def identity_rate(train_tokens: np.ndarray, train_labels: np.ndarray, tokens: np.ndarray, vocab_size: int) -> np.ndarray:
    """P(important | token id) from training tokens (Laplace-smoothed), looked up for ``tokens``."""
    pos = np.bincount(train_tokens, weights=train_labels.astype(float), minlength=vocab_size)
    tot = np.bincount(train_tokens, minlength=vocab_size)
    rate = (pos + 1.0) / (tot + 2.0)
    return rate[tokens]
