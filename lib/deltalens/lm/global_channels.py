"""LongMamba's selection rule: Δ restricted to the *global* channels, those whose memory decays slowly.

LongMamba (Ye et al., 2025, arXiv:2504.16053) splits a Mamba layer's hidden channels into *local* channels, whose
cumulative decay wipes their state within a short span, and *global* channels, whose state survives the whole
training length and which carry the long-range information; it then keeps in the global channels only the tokens
with large Δ (the critical tokens). As a chunk score: the mean Δ over a chunk's tokens, over the global channels only.

Which channels are global is measured on data, per layer, as the log of the slowest state's cumulative decay over a
whole prompt (Mamba-1: per channel d; Mamba-2: per head, where A and Δ are per head)::

    A_slow[d]      = max_n A[d, n] = -min_n exp(A_log[d, n])      # the slowest-decaying state of channel d (A < 0)
    log_decay[d]   = mean over prompts of  A_slow[d] * Σ_t Δ[t, d]   # = log Π_t exp(Δ_t A_slow), <= 0
    global(share)  = the ceil(share * D) channels with the largest log_decay (closest to 0: slowest decay)

The calibration prompts are dev prompts (never test): the share of global channels, the layer and the sign are
chosen on dev like every other score.
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np
import torch

from ..core.chunk_columns import GLOBAL_CHANNELS, global_column
from ..delta.capture import capture_delta, find_mixers

SHARES = (0.05, 0.1, 0.25)  # candidate shares of global channels; the analysis chooses one on dev


def slowest_rate(mixer: torch.nn.Module) -> torch.Tensor:
    """A_slow per channel (A_log (D, N): Mamba-1) or per head (A_log (H,): Mamba-2), float32, all < 0."""
    a_log = getattr(mixer, "A_log", None)
    if a_log is None:
        raise ValueError(f"{type(mixer).__name__} has no A_log: LongMamba's global channels need the SSM's decay rates")
    a = -torch.exp(a_log.detach().float())
    return a.max(dim=-1).values if a.dim() == 2 else a.reshape(-1)


@torch.no_grad()
def log_decay(model: torch.nn.Module, prompts: Iterable[torch.Tensor]) -> np.ndarray:
    """(n_mixers, D): the mean over ``prompts`` (each (1, L) token ids, one forward each: no padding) of
    A_slow · Σ_t Δ_t, per layer and channel (or head)."""
    mixers = [m for _, m in find_mixers(model)]
    rates = torch.stack([slowest_rate(m) for m in mixers])  # (n_mixers, D)
    total, n = torch.zeros_like(rates, dtype=torch.float64), 0
    for ids in prompts:
        with capture_delta(model, reduce=lambda d: d.float().sum(dim=1)) as rec:  # (1, D) per layer: Σ_t Δ_t
            model(ids)
        sums = torch.stack([s[0] for s in rec.last()]).to(torch.float64)  # (n_mixers, D)
        if sums.shape != rates.shape:
            raise ValueError(f"Δ has width {tuple(sums.shape)} but the decay rates {tuple(rates.shape)}")
        total += rates.to(torch.float64) * sums
        n += 1
    if n == 0:
        raise ValueError("log_decay: no calibration prompt given")
    return (total / n).numpy()


def global_masks(decay: np.ndarray, shares: Iterable[float] = SHARES) -> dict[float, np.ndarray]:
    """{share: (n_layers, D) bool}: per layer the ceil(share * D) channels with the slowest decay (ties: lower index)."""
    decay = np.asarray(decay, dtype=np.float64)
    if decay.ndim != 2:
        raise ValueError(f"decay has shape {decay.shape}; expected (n_layers, D)")
    out = {}
    for share in shares:
        if not 0 < share <= 1:
            raise ValueError(f"global-channel share {share!r}; allowed: 0 < share <= 1")
        k = max(1, math.ceil(share * decay.shape[1]))
        order = np.argsort(-decay, axis=1, kind="stable")[:, :k]
        mask = np.zeros(decay.shape, dtype=bool)
        np.put_along_axis(mask, order, True, axis=1)
        out[float(share)] = mask
    return out


def global_token_stats(delta: torch.Tensor, layer_masks: dict[float, torch.Tensor]) -> dict[str, torch.Tensor]:
    """(B, L, D) Δ of one layer -> {``global_<pct>`` (:func:`deltalens.core.chunk_columns.global_column`): (B, L)
    mean Δ over that share's global channels}."""
    return {global_column(s): delta[..., m.to(delta.device)].mean(dim=-1) for s, m in layer_masks.items()}


def calibration_ids(ds, n: int) -> list[str]:
    """``n`` dev samples (a stable hash subset) whose prompts measure the decay: never a test sample."""
    from ..context.subsets import hash_subset

    dev = sorted(ds.samples.loc[ds.samples["split"] == "dev", "sample_id"])
    if not dev:
        raise ValueError("global channels are chosen on dev prompts, but the dataset has no dev split "
                         f"(splits: {sorted(ds.samples['split'].unique())})")
    keep = hash_subset(dev, n)
    return [s for s in dev if s in keep]


def run_masks(lm, tokenizer, ds, policy, shares, n_prompts: int, out_dir, layers=None) -> dict[float, np.ndarray]:
    """LongMamba's masks for an extraction run: {share: (n captured layers, D) bool}. Measured once on ``n_prompts``
    dev prompts laid out by ``policy`` and saved in ``out_dir`` (:data:`chunk_columns.GLOBAL_CHANNELS`, with the
    log decays and the calibration sample ids); a resumed run reads them back instead of measuring again."""
    import json
    from pathlib import Path

    from safetensors.numpy import load_file, save_file

    from ..core.runinfo import atomic_write
    from .prompts import encode

    path = Path(out_dir) / GLOBAL_CHANNELS
    shares = [float(q) for q in shares]
    if path.is_file():
        saved = load_file(str(path))
        decay = saved["log_decay"]
    else:
        ids = calibration_ids(ds, n_prompts)
        device = next(lm.parameters()).device
        decay = log_decay(lm, (encode(tokenizer, ds.sample(s), policy).input_ids.to(device) for s in ids))
        tensors = {"log_decay": decay.astype(np.float64)}
        tensors.update({f"mask_{global_column(q)}": m.astype(np.uint8) for q, m in global_masks(decay, shares).items()})
        meta = {"calibration_sample_ids": json.dumps(ids), "shares": json.dumps(shares)}
        atomic_write(path, lambda p: save_file(tensors, str(p), metadata=meta))
    masks = global_masks(decay, shares)
    return {q: m if layers is None else m[list(layers)] for q, m in masks.items()}
