"""Mimetic-style initialisation of Mamba-1 and Mamba-2 mixers (after Trockman et al., 2024, "Mimetic Initialization
Helps State Space Models Learn to Recall"): start the SSM close to linear attention, so that copying is easier to
learn.

A Mamba-2 head's output is a data-dependent attention over the past (SSD)::

    y_t = Σ_{s≤t} (C_t · B_s) · exp(A Σ_{s<k≤t} Δ_k) · Δ_s · x_s

Two changes make it mimic attention at initialisation:

* **C = B**: the rows of ``in_proj`` that produce C (and C's channels of the causal ``conv1d``) are copied from B's,
  so C_t · B_s is a positive-definite kernel of the two tokens — an attention score of "query" t and "key" s with
  tied projections, largest when the tokens are alike (what an induction head needs).
* **slow decay**: ``A_log`` is shifted by log(``a_scale``), i.e. A → ``a_scale`` · A, so exp(ΔA) ≈ 1 over the
  sequence: the attention does not fade with distance at the start (attention has no decay either).

A Mamba-1 mixer has the same form with Δ, B and C per channel: ``x_proj`` maps the convolved input to [Δ (low
rank) | B | C], so C = B is the copy of B's rows of ``x_proj`` (the convolution sits before it and is shared), and
A (d_inner × d_state, ``A_log``) is scaled the same way.

Everything else (Δ's bias, D, the gate, the output projection) keeps its default initialisation. Applies to every
module with Mamba-2's layout — transformers' ``Mamba2Mixer`` and ``BambaMixer`` (``in_proj`` → [gate, x, B, C, dt],
``conv1d`` over [x, B, C]) — and with Mamba-1's — mambapy's ``MambaBlock`` and transformers' ``MambaMixer`` /
``FalconMambaMixer`` (``x_proj`` → [Δ, B, C]) —; anything else is left alone. Used by ``model.init: mimetic`` in
``params/codelm/*.yaml`` and by ``bench/bench_induction_steps.py --init mimetic`` (issue 22: tried for the pure
SSMs).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def is_mamba2_mixer(m: nn.Module) -> bool:
    return all(hasattr(m, a) for a in ("in_proj", "conv1d", "A_log", "intermediate_size", "n_groups",
                                        "ssm_state_size", "num_heads"))


def mamba1_split(m: nn.Module) -> tuple[int, int] | None:
    """(Δ rank, d_state) of a Mamba-1 mixer — mambapy's ``MambaBlock`` (``config.dt_rank``, ``config.d_state``) or
    transformers' ``MambaMixer`` (``time_step_rank``, ``ssm_state_size``) —, None for anything else."""
    if not all(hasattr(m, a) for a in ("x_proj", "dt_proj", "A_log")):
        return None
    if hasattr(m, "time_step_rank") and hasattr(m, "ssm_state_size"):
        return int(m.time_step_rank), int(m.ssm_state_size)
    cfg = getattr(m, "config", None)
    if cfg is not None and hasattr(cfg, "dt_rank") and hasattr(cfg, "d_state"):
        return int(cfg.dt_rank), int(cfg.d_state)
    return None


def _copy_rows(layer: nn.Module, src: slice, dst: slice) -> None:
    """Output rows (channels) ``dst`` of a Linear / Conv1d layer become a copy of rows ``src``, bias included."""
    layer.weight[dst] = layer.weight[src]
    if layer.bias is not None:
        layer.bias[dst] = layer.bias[src]


@torch.no_grad()
def mimetic_init_(model: nn.Module, a_scale: float = 0.01) -> int:
    """Apply the two changes above to every Mamba-1 / Mamba-2 mixer of ``model`` in place; returns how many mixers
    changed (none: a ValueError, since the caller asked for an initialisation that did nothing)."""
    if not 0 < a_scale <= 1:
        raise ValueError(f"a_scale must be in (0, 1], got {a_scale}")
    n = 0
    for m in model.modules():
        split = mamba1_split(m)
        if split is not None:
            r, s = split
            _copy_rows(m.x_proj, slice(r, r + s), slice(r + s, r + 2 * s))  # x_proj rows: [Δ: r | B: s | C: s]
        elif is_mamba2_mixer(m):
            inner, g = m.intermediate_size, m.n_groups * m.ssm_state_size
            # in_proj rows: [gate: inner | x: inner | B: g | C: g | dt: heads]; conv1d channels: [x: inner | B | C]
            _copy_rows(m.in_proj, slice(2 * inner, 2 * inner + g), slice(2 * inner + g, 2 * inner + 2 * g))
            _copy_rows(m.conv1d, slice(inner, inner + g), slice(inner + g, inner + 2 * g))
        else:
            continue
        m.A_log += math.log(a_scale)
        n += 1
    if n == 0:
        raise ValueError(f"mimetic_init_: {type(model).__name__} has no Mamba-1 or Mamba-2 mixer "
                         "(x_proj / in_proj, conv1d, A_log, ...)")
    return n
