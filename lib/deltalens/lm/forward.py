"""Batched forwards of a loaded LM (:mod:`deltalens.lm.loading`) that return Δ statistics (through
:func:`deltalens.delta.capture.capture_delta`), the target-line loss, greedy exact match and per-token NLL — with
``lm_head`` applied in slices, never on the whole prompt at once.

Batching: sequences are right-padded (the pad positions come after every real token, and every path is causal, so
real positions see exactly what they see alone; pad positions are cut off before any statistic). A batch holds at
most ``batch_tokens`` padded tokens; ``auto`` sizes it from the scan's transient memory per token (see
:func:`auto_batch_tokens`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..core.params import check_int
from ..delta.capture import capture_delta
from ..delta.scores import token_stats
from .loading import ScanChoice, model_facts, scan_of
from .prompts import Encoded

CPU_BATCH_BYTES = 3 * 2**30          # transient scan memory allowed per forward on the CPU (~28,000 padded tokens for
# the local code LM). bench/bench_cpu_scan.py: one forward of 28,000 tokens ran at 0.80-0.99x the speed of
# 1,000-9,400-token ones, but extract() (groups of <= 8 samples) gained nothing reliable from a 1 GiB cap (+4 % and
# +29 % in two interleaved runs; a make-all rerun with it was slower): the budget `make all` was timed with stays.
GPU_FREE_SHARE = 0.6                 # share of the free GPU memory a forward's transient tensors may take


def auto_batch_tokens(lm, choice: ScanChoice | None = None, free_bytes: int | None = None) -> int:
    """Padded tokens per forward such that one layer's transient scan tensors fit: per token the scan materialises
    float32 tensors of d_inner x d_state — 3 on the sequential path (discrete A, discrete B, ΔB·u), about 8 on the
    parallel one (those, pscan's two working copies padded to a power of two, the states), 1 with the kernels — plus
    a few d_inner-sized ones. The budget: a share of the free GPU memory, or a fixed amount on the CPU."""
    choice = choice or scan_of(lm)
    f = model_facts(lm)
    per_token = 4 * f["d_inner"] * ({"sequential": 3, "mambapy": 8, "cuda_kernels": 1, "chunked": 2,
                                      "none": 8}[choice.scan] * f["d_state"] + 8)
    if free_bytes is None:
        if choice.device == "cuda":
            free_bytes = int(torch.cuda.mem_get_info(next(lm.parameters()).device)[0] * GPU_FREE_SHARE)
        else:
            free_bytes = CPU_BATCH_BYTES
    return max(16, int(free_bytes // per_token))


def plan_batches(lengths: list[int], batch_tokens: int) -> list[list[int]]:
    """Indices of ``lengths`` grouped into batches, longest first, each with rows x longest <= ``batch_tokens`` (a
    sequence longer than that runs alone)."""
    check_int("batch_tokens", batch_tokens, minimum=1)
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    for i in order:
        if batches and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= batch_tokens:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


# ---- forwards -----------------------------------------------------------------------------------------------------
@dataclass
class ForwardResult:
    stats: list[dict] | None        # per captured layer {stat: (L,) float32 numpy}; None without capture
    target_loss: float              # mean NLL of the target line, nats/token
    exact_match: bool               # greedy decoding reproduces the target line (teacher-forced argmax)
    token_nll: np.ndarray | None    # (L,) NLL of every token given what precedes it, NaN at 0; None unless asked
    name_accuracy: float = float("nan")  # teacher-forced argmax accuracy on the target line's name tokens
    # (Encoded.name_tokens: the tokens of the names it takes from its relevant chunks); NaN when it has none


def _head_nll(head, hidden: torch.Tensor, ids: torch.Tensor, start: int, end: int, slice_len: int = 1024):
    """(NLL (end-start,), argmax-hit (end-start,)) of tokens ``start..end-1`` of one row, ``lm_head`` applied
    ``slice_len`` positions at a time, in the head's dtype (a backbone with ``residual_in_fp32`` returns float32)."""
    nll, hit = [], []
    dtype = head.weight.dtype
    for a in range(start, end, slice_len):
        b = min(end, a + slice_len)
        logits = head(hidden[a - 1:b - 1].to(dtype)).float()
        nll.append(torch.nn.functional.cross_entropy(logits, ids[a:b], reduction="none").cpu())
        hit.append((logits.argmax(-1) == ids[a:b]).cpu())
    if not nll:
        return np.zeros(0, np.float32), np.zeros(0, bool)
    return torch.cat(nll).numpy(), torch.cat(hit).numpy()


def hidden_attention_queries(encs: list[Encoded], prefix_tokens: int) -> dict[str, list[list[int]]]:
    """Per row, the query positions of the hidden attention (:mod:`deltalens.delta.hidden_attention`): ``prefix_end`` — the
    last ``prefix_tokens`` positions before the target line (where a completion starts; a score a real filter could
    use) — and ``target`` — the positions whose outputs predict the target-line tokens (an upper bound, like
    leave-one-out: it needs the target)."""
    out: dict[str, list[list[int]]] = {"prefix_end": [], "target": []}
    for e in encs:
        t0, t1 = e.target_tokens
        out["prefix_end"].append(list(range(max(0, t0 - prefix_tokens), t0)))
        out["target"].append(list(range(t0 - 1, t1 - 1)))
    return out


def _stats_reducer(encs: list[Encoded], hidden_attention: int, global_masks: dict | None = None):
    """``token_stats`` of Δ, plus with ``hidden_attention`` > 0 the per-token hidden-attention masses (kind 'alpha')
    from both query sets, as ``ha_prefix_end`` / ``ha_target``, plus with ``global_masks`` ({share: (n_layers, D)
    bool}, :mod:`deltalens.lm.global_channels`) the mean Δ over each share's global channels (``global_<pct>``): then one
    reducer per captured layer, in capture order."""
    masses = None
    if hidden_attention:
        from ..delta.hidden_attention import hidden_attention_reducer

        masses = hidden_attention_reducer(hidden_attention_queries(encs, hidden_attention), kinds=("alpha",))

    def make(layer_masks: dict | None):
        def reduce(inp):
            delta = inp.delta if masses is not None else inp
            out = token_stats(delta)
            if masses is not None:
                m = masses(inp)
                out.update(ha_prefix_end=m["prefix_end:alpha"], ha_target=m["target:alpha"])
            if layer_masks:
                out.update(global_token_stats(delta, layer_masks))
            return out

        return reduce

    if not global_masks:
        return make(None) if masses is not None else token_stats
    from .global_channels import global_token_stats
    n_layers = {np.asarray(m).shape[0] for m in global_masks.values()}
    if len(n_layers) != 1:
        raise ValueError(f"global_masks: the shares' masks cover different numbers of layers {sorted(n_layers)}")
    return [make({q: torch.as_tensor(np.asarray(m)[li]) for q, m in global_masks.items()})
            for li in range(n_layers.pop())]


@torch.no_grad()
def forward_batch(lm, encs: list[Encoded], *, capture: bool = True, layers=None,
                  token_nll: bool | list[bool] = False, hidden_attention: int = 0,
                  global_masks: dict | None = None) -> list[ForwardResult]:
    """One forward over ``encs`` as a right-padded batch (all rows must fit together: see :func:`plan_batches`).
    ``hidden_attention`` > 0 (Mamba-1 families): each layer's statistics also hold the hidden-attention mass per token
    from the last ``hidden_attention`` prefix positions and from the target-line positions. ``global_masks``
    ({share: (n captured layers, D) bool}): each layer's statistics also hold ``global_<pct>``, the mean Δ over that
    share's global channels (LongMamba's rule; :mod:`deltalens.lm.global_channels`)."""
    choice = scan_of(lm)
    want_nll = [token_nll] * len(encs) if isinstance(token_nll, bool) else list(token_nll)
    device = lm.get_input_embeddings().weight.device
    lengths = [int(e.input_ids.shape[1]) for e in encs]
    L = max(lengths)
    ids = torch.zeros(len(encs), L, dtype=torch.long)
    mask = torch.zeros(len(encs), L, dtype=torch.long)
    for r, e in enumerate(encs):
        ids[r, :lengths[r]] = e.input_ids[0]
        mask[r, :lengths[r]] = 1
    ids = ids.to(device)
    kw = {"input_ids": ids, "use_cache": False}
    if min(lengths) < L:
        kw["attention_mask"] = mask.to(device)
    backbone, head = lm.base_model, lm.get_output_embeddings()
    with choice.context():
        if capture:  # statistics stay on the device until the forward is done: no synchronisation per layer
            reduce = _stats_reducer(encs, hidden_attention, global_masks)
            with capture_delta(lm, reduce=reduce, layers=layers, to_cpu=False,
                               ssm_inputs=bool(hidden_attention)) as rec:
                hidden = backbone(**kw).last_hidden_state
            per_layer = [{k: v.float().cpu().numpy() for k, v in d.items()} for d in rec.last()]
        else:
            hidden, per_layer = backbone(**kw).last_hidden_state, None
    out = []
    for r, e in enumerate(encs):
        t0, t1 = e.target_tokens
        row_ids = ids[r]
        if want_nll[r]:
            nll, hit = _head_nll(head, hidden[r], row_ids, 1, lengths[r])
            nll = np.concatenate([[np.nan], nll]).astype(np.float32)
            tgt_nll, tgt_hit = nll[t0:t1], hit[t0 - 1:t1 - 1]
        else:
            nll = None
            tgt_nll, tgt_hit = _head_nll(head, hidden[r], row_ids, t0, t1)
        stats = None if per_layer is None else [{k: v[r, :lengths[r]] for k, v in d.items()} for d in per_layer]
        names = [p - t0 for p in e.name_tokens if t0 <= p < t1]
        name_acc = float(np.mean(tgt_hit[names])) if names else float("nan")
        out.append(ForwardResult(stats, float(np.mean(tgt_nll)), bool(np.all(tgt_hit)), nll, name_acc))
    return out


def forward_all(lm, encs: list[Encoded], *, batch_tokens: int | str = "auto", capture: bool = True, layers=None,
                token_nll: bool | list[bool] = False, hidden_attention: int = 0,
                global_masks: dict | None = None) -> list[ForwardResult]:
    """:func:`forward_batch` over any number of sequences, grouped by :func:`plan_batches`; results in input order."""
    budget = auto_batch_tokens(lm) if batch_tokens == "auto" else batch_tokens
    want = [token_nll] * len(encs) if isinstance(token_nll, bool) else list(token_nll)
    results: list[ForwardResult | None] = [None] * len(encs)
    for batch in plan_batches([int(e.input_ids.shape[1]) for e in encs], budget):
        for i, res in zip(batch, forward_batch(lm, [encs[i] for i in batch], capture=capture, layers=layers,
                                               token_nll=[want[i] for i in batch], hidden_attention=hidden_attention,
                                               global_masks=global_masks)):
            results[i] = res
    return results  # type: ignore[return-value]


def forward_sample(lm, enc: Encoded, *, capture: bool = True, layers=None, token_nll: bool = False):
    """One sequence: (per-layer token statistics or None, mean NLL of the target line, per-token NLL or None)."""
    r = forward_batch(lm, [enc], capture=capture, layers=layers, token_nll=token_nll)[0]
    return r.stats, r.target_loss, r.token_nll


def target_metrics(lm, enc: Encoded) -> tuple[float, bool]:
    """(mean NLL of the target line, greedy exact match): teacher-forced argmax equal to every target token is
    exactly what greedy decoding would produce, so one forward gives both."""
    r = forward_batch(lm, [enc], capture=False)[0]
    return r.target_loss, r.exact_match


def peak_memory_mb(device) -> float:
    import resource

    if str(device).startswith("cuda"):
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def estimate_hours(tokens_per_second: float, remaining_tokens: float) -> float:
    return remaining_tokens / tokens_per_second / 3600 if tokens_per_second > 0 else math.inf
