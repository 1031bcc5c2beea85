"""The hidden attention of Mamba-1 mixers (Ali et al., "The Hidden Attention of Mamba Models", 2024): a
model-internal baseline score per source token, computed from the scan inputs that
``capture_delta(model, ssm_inputs=True)`` hands a reducer (:class:`deltalens.delta.capture.SSMInputs`).

Maths
-----
A Mamba-1 selective scan, per channel c (d_inner of them) with state n (d_state), from h_{-1} = 0::

    h_t = exp(Δ_t A) ⊙ h_{t-1} + (Δ_t u_t) B_t ;    y_t = C_t · h_t + D ⊙ u_t          (before the gate y * silu(z))

unrolls into a data-controlled linear attention::

    y_t[c]    = Σ_{j≤t} α_c(t, j) u_j[c] + D[c] u_t[c]
    α_c(t, j) = Σ_n C_t[n] · exp(S_t[c,n] − S_j[c,n]) · Δ_j[c] B_j[n],      S_j[c,n] = Σ_{k≤j} Δ_k[c] A[c,n]

(the discretisation of transformers' ``mamba_selective_scan`` and mambapy's ``selective_scan``: deltaA = exp(Δ A),
deltaB_u = Δ B u). Reduced over channels to one mass per source token j, summed over a set Q of query positions::

    kind 'alpha':    mass(j) = Σ_{t∈Q, t≥j} mean_c |α_c(t, j)|
    kind 'alpha_u':  mass(j) = Σ_{t∈Q, t≥j} mean_c |α_c(t, j) · u_j[c]|     (what token j actually writes into y_t)

The skip term D u_t is no attention to a token and is left out of α. A query position listed twice counts twice.

Computation (never the full L × L × d_inner × d_state tensor)
-------------------------------------------------------------
Since A does not depend on time, S_j[c,n] = A[c,n] · P_j[c] with P_j = Σ_{k≤j} Δ_k: one cumulative sum over Δ.
Per batch row, per channel chunk, per block of nearby queries (distinct positions within ``max_span`` of the block's
first query a, at most ``max_queries`` of them; query sets evaluated together share their blocks)::

    sources j ≤ a:       exp(S_t − S_j) = exp(S_t − S_a) · exp(S_a − S_j)     both ≤ 1 since Δ > 0, A < 0: one exp
                         per (j, c, n) for the whole block, then the n-contraction as a batched matmul over channels
    sources a < j ≤ t:   exp(S_t − S_j) directly, then set to 0 for j > t (no overflow, no NaN)

Numerical range: P is a float64 cumulative sum ((d_inner, T), small); the differences P_t − P_j are cast to float32
and multiplied by A before the exp. A float32 cumsum would lose |P_t| · 6e-8 in absolute terms in every difference,
so decays between nearby tokens would carry an error that grows with the position; in float64 the difference is exact
to float32 precision. Every exponent is ≤ 0, and exponents below ``EXP_FLOOR`` = −40 are raised to it (exp(−40) =
4.2e-18 instead of 0 or a float32 denormal, which is a slow path on CPUs): this changes an α term by at most
4.2e-18 · |C_t[n] Δ_j B_j[n]|, far below float32 resolution of the terms that matter. Everything else is float32.

Cost
----
Per query position: L × d_inner × d_state multiply-adds (the n-contraction over all sources j ≤ t). Exponentials:
T × d_inner × d_state per query block (T = the block's last query + 1) plus k × span × d_inner × d_state for the
block's near sources, not L × d_inner × d_state per query. Memory per channel chunk c: (c, d_state, T) float32 for
Δ_j B_j and the source factors, (c, k, T) for the block's α (k queries).

Speed: ``bench/bench_hidden_attention.py`` (a forward with and without this reducer on every layer).

Usage::

    reducer = hidden_attention_reducer({"prefix_end": [[90, 91, 92]], "target": [[93, 94, 95, 96]]},
                                       kinds=("alpha", "alpha_u"))
    with torch.no_grad(), capture_delta(model, reduce=reducer, ssm_inputs=True) as rec:
        model(tokens)
    rec.last()[layer]["target:alpha"]            # (B, L) per mixer
"""

from __future__ import annotations

import numbers
from collections import Counter
from typing import Callable, Iterator

import torch

from .capture import SSMInputs

KINDS = ("alpha", "alpha_u")


def _check(inp: SSMInputs, query_sets: dict[str, list[list[int]]]) -> None:
    if inp.granularity != "channel":
        raise ValueError(f"hidden attention needs per-channel SSM inputs, got granularity {inp.granularity!r}")
    if inp.recurrent_step:
        raise ValueError("these SSM inputs come from a recurrent step: the state carried in from earlier calls is not "
                         "part of them, so their hidden attention would be incomplete; capture a full-sequence forward")
    batch, length, _ = inp.delta.shape
    for name, rows in query_sets.items():
        if len(rows) != batch:
            raise ValueError(f"query positions {name!r} have {len(rows)} rows, the inputs have batch size {batch}")
        for b, row in enumerate(rows):
            bad = [t for t in row if not isinstance(t, numbers.Integral) or isinstance(t, bool) or not 0 <= t < length]
            if bad:
                raise ValueError(f"query positions {name!r}[{b}]: {bad[:5]} not positions in 0..{length - 1}")


def _blocks(queries, max_queries: int, max_span: int) -> list[list[int]]:
    """Sorted distinct positions, grouped greedily: a block spans at most ``max_span`` and holds ``max_queries``."""
    blocks: list[list[int]] = []
    for t in sorted({int(t) for t in queries}):
        if blocks and t - blocks[-1][0] <= max_span and len(blocks[-1]) < max_queries:
            blocks[-1].append(t)
        else:
            blocks.append([t])
    return blocks


# exponents below this are raised to it: exp(-40) = 4.2e-18 instead of values that underflow into float32 denormals
# (a slow path on CPUs) or 0; products of two such factors (1.8e-35) stay normal too
EXP_FLOOR = -40.0


def _decay(exponent: torch.Tensor) -> torch.Tensor:
    """exp(max(exponent, EXP_FLOOR)), in place on ``exponent`` (a fresh tensor)."""
    return exponent.clamp_(min=EXP_FLOOR).exp_()


def _alpha_blocks(inp: SSMInputs, b: int, queries, chunk: int, max_queries: int,
                  max_span: int) -> Iterator[tuple[list[int], slice, list[tuple[int, torch.Tensor]]]]:
    """α of batch row ``b`` for the distinct ``queries``, block by block and channel chunk by channel chunk.

    Yields (block: the block's k query positions, ascending; channels: a slice of d_inner; parts: [(start, alpha)]
    with alpha (c, k, width), alpha[c, i, j] = α_c(block[i], start + j), 0 for start + j > block[i]); the parts
    cover the sources 0 .. block[-1] (sources j <= block[0], then the rest).
    """
    blocks = _blocks(queries, max_queries, max_span)
    if not blocks:
        return
    end = blocks[-1][-1] + 1                                                 # T: positions after the last query unused
    # time last and contiguous: the broadcast products below then come out contiguous in the same layout
    delta = inp.delta[b, :end].float().T.contiguous()                        # (d_inner, T)
    Bt = inp.B[b, :end].float().T.contiguous()                               # (N, T)
    C, A = inp.C[b].float(), inp.A.float()                                   # (L, N), (d_inner, N)
    # S_j[c, n] = A[c, n] · P_j[c] with P_j = Σ_{k≤j} Δ_k: the cumulative sum runs over Δ alone, in float64
    P = torch.cumsum(delta.double(), dim=1)                                  # (d_inner, T)
    d_inner, dev = delta.shape[0], delta.device
    for c0 in range(0, d_inner, chunk):
        ch = slice(c0, min(d_inner, c0 + chunk))
        Ac = A[ch, :, None]                                                  # (c, N, 1)
        dB = delta[ch, None, :] * Bt[None]                                   # (c, N, T)  Δ_j B_j
        for block in blocks:
            a, last = block[0], block[-1]
            q = torch.tensor(block, device=dev)                              # (k,)
            Pq = P[ch][:, q]                                                 # (c, k)
            # sources j <= a: exp(S_t - S_j) = exp(S_t - S_a) · exp(S_a - S_j), both factors <= 1
            src = _decay(Ac * (P[ch, a, None] - P[ch, : a + 1]).float()[:, None, :]) * dB[:, :, : a + 1]  # (c, N, a+1)
            qry = C[q].T[None] * _decay(Ac * (Pq - P[ch, a, None]).float()[:, None, :])                  # (c, N, k)
            parts = [(0, torch.bmm(qry.transpose(1, 2), src))]                                           # (c, k, a+1)
            if last > a:  # sources a < j <= last, masked to j <= t
                gap = (Pq[:, :, None] - P[ch, None, a + 1: last + 1]).float()        # (c, k, last-a)  P_t - P_j
                future = torch.arange(a + 1, last + 1, device=dev)[None, :] > q[:, None]  # (k, last-a)
                decay = _decay(Ac[:, :, :, None] * gap[:, None])                     # (c, N, k, last-a)
                decay = decay.masked_fill_(future, 0.0)                              # j > t: no attention
                near = torch.einsum("cnkj,cnj,kn->ckj", decay, dB[:, :, a + 1: last + 1], C[q])  # (c, k, last-a)
                parts.append((a + 1, near))
            yield block, ch, parts


def hidden_attention_alpha(inp: SSMInputs, b: int, queries: list[int], *, chunk: int = 128, max_queries: int = 32,
                           max_span: int = 64) -> torch.Tensor:
    """α_c(t, j) per channel for batch row ``b``, one row per position t of ``queries`` (in the order given):
    (len(queries), L, d_inner), 0 for j > t. Memory: len(queries) × L × d_inner floats; for inspection and tests."""
    _check(inp, {"queries": [list(queries) if i == b else [] for i in range(inp.delta.shape[0])]})
    _, length, d_inner = inp.delta.shape
    out = inp.delta.new_zeros(len(queries), length, d_inner)                 # (k, L, d_inner)
    for block, ch, parts in _alpha_blocks(inp, b, queries, chunk, max_queries, max_span):
        for i, t in enumerate(block):
            for r in (r for r, s in enumerate(queries) if s == t):
                for start, alpha in parts:                                   # alpha (c, k, width)
                    out[r, start: start + alpha.shape[2], ch] = alpha[:, i].T
    return out


def hidden_attention_masses(inp: SSMInputs, query_sets: dict[str, list[list[int]]], kinds=("alpha",), *,
                            chunk: int = 128, max_queries: int = 32, max_span: int = 64) -> dict[str, torch.Tensor]:
    """{f"{set}:{kind}": (B, L)} for several query sets (name -> per-row positions) and kinds at once: per batch row
    b, the mass of each source token j summed over the set's positions in row b (see the module docstring); 0 for j
    after the row's last query of the set and for rows without one. α is computed once per row for the union of the
    sets' positions. ``chunk``: channels per step; ``max_queries`` / ``max_span``: size of a query block."""
    kinds = tuple(kinds)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise ValueError(f"kinds={kinds}: unknown {unknown}; allowed: {KINDS}")
    _check(inp, query_sets)
    batch, length, d_inner = inp.delta.shape
    mass = {(s, k): inp.delta.new_zeros(batch, length) for s in query_sets for k in kinds}  # (B, L) float32 each
    for b in range(batch):
        counts = {s: Counter(rows[b]) for s, rows in query_sets.items()}
        union = set().union(*(rows[b] for rows in query_sets.values()))
        u_abs = inp.u[b].float().abs().T.contiguous()                        # (d_inner, L)  |u_j[c]|
        for block, ch, parts in _alpha_blocks(inp, b, union, chunk, max_queries, max_span):
            weights = {s: inp.delta.new_tensor([count[t] for t in block]) for s, count in counts.items()}  # (k,) each
            for start, alpha in parts:
                size = alpha.abs()                                           # (c, k, width)  |α_c(t, j)|
                span = slice(start, start + size.shape[2])
                per_kind = {}                                                # kind -> (k, width): Σ over the chunk's c
                if "alpha" in kinds:
                    per_kind["alpha"] = size.sum(0)
                if "alpha_u" in kinds:
                    per_kind["alpha_u"] = (size * u_abs[ch, None, span]).sum(0)
                for s, w in weights.items():
                    if w.any():  # multiplicity of each block query in set s
                        for kind, part in per_kind.items():
                            mass[s, kind][b, span] += w @ part
    return {f"{s}:{k}": m / d_inner for (s, k), m in mass.items()}


def hidden_attention_rows(inp: SSMInputs, query_positions: list[list[int]], kind: str = "alpha",
                          **options) -> torch.Tensor:
    """(B, L): per batch row b, Σ over t in ``query_positions[b]`` of mean_c |α_c(t, j)| (``kind='alpha'``) or
    mean_c |α_c(t, j) u_j[c]| (``kind='alpha_u'``); 0 for j > max t. ``options``: chunk (channels per step, 128),
    max_queries (32) and max_span (64) of a query block."""
    return hidden_attention_masses(inp, {"q": query_positions}, (kind,), **options)[f"q:{kind}"]


def hidden_attention_reducer(query_sets: dict[str, list[list[int]]], kinds=("alpha",),
                             **options) -> Callable[[SSMInputs], dict[str, torch.Tensor]]:
    """A ``reduce`` for ``capture_delta(model, reduce=..., ssm_inputs=True)``: per mixer call,
    {f"{set}:{kind}": (B, L)} for every query set (name -> per-row positions, e.g. 'prefix_end': the last k tokens
    before the target line, a score a real filter could use; 'target': the positions predicting the target tokens,
    an upper bound like leave-one-out) and every kind ('alpha', 'alpha_u'). α is computed once for the union of the
    sets' positions. ``options`` as :func:`hidden_attention_rows`."""
    kinds = tuple(kinds)
    if not query_sets:
        raise ValueError("query_sets is empty")
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise ValueError(f"kinds={kinds}: unknown {unknown}; allowed: {KINDS}")

    def reduce(inp: SSMInputs) -> dict[str, torch.Tensor]:
        if not isinstance(inp, SSMInputs):
            raise TypeError(f"hidden_attention_reducer got {type(inp).__name__}, not SSMInputs: capture with "
                            "capture_delta(model, reduce=..., ssm_inputs=True)")
        return hidden_attention_masses(inp, query_sets, kinds, **options)

    return reduce
