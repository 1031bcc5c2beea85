"""Instrument checks for "does this LM read its context?", before any recipe is blamed.

* :func:`copy_curve` — the copy gap: code, a span of ``L`` tokens, ``D`` tokens of other code, the same span again.
  A model that copies predicts the repeat far better than the first occurrence; the gap (first minus second, nats per
  token, the span's first token excluded from both: it cannot be inferred from the repeat's own start) is measured
  per span length and distance on held-out code, with a bootstrap interval over the sequences. With ``random_ids``
  the span is random tokens instead (source ``random``): nothing but copying predicts its repeat, so the gap is the
  pure induction signal (first occurrence at chance, ~ln V nats), where a code span's bigrams blur it.
* :func:`first_occurrence_gradient` — the loss on a repeated span must have a gradient into the embeddings of its
  first occurrence, on every scan path used in training; a zero there would mean the path cannot learn to copy
  (a detached state, a wrong mask), whatever the recipe.

The models are any ``forward(tokens) -> logits`` module: the trainer's models (:mod:`.model`, :mod:`.mamba2`,
:mod:`.hybrid`) or a transformers model wrapped by :class:`~.hf_lm.TransformersLM`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .recall import repeated_span


@dataclass(frozen=True)
class CopyPoint:
    source: str           # code: a span of held-out code; random: random tokens (the pure copying signal)
    span: int
    distance: int
    sequences: int
    loss_first: float     # nats/token on the first occurrence (its first token excluded)
    loss_repeat: float    # nats/token on the repeat (its first token excluded)
    gap: float            # loss_first - loss_repeat
    gap_lo: float         # 95 % bootstrap interval over the sequences
    gap_hi: float


def copy_sequences(stream: torch.Tensor, span: int, distance: int, n: int, seed: int,
                   random_ids: torch.Tensor | None = None) -> list[tuple[torch.Tensor, int, int]]:
    """``n`` sequences (tokens, start of the first occurrence, start of the repeat), just long enough for the span
    twice at ``distance`` with 16 tokens of lead; seeded, so every model sees the same sequences. ``random_ids``:
    the span is drawn from these ids (:func:`~.recall.repeated_span`)."""
    gen = torch.Generator().manual_seed(seed)
    total = 16 + 2 * span + distance
    out = []
    for _ in range(n):
        seq, rep, _ = repeated_span(stream, span, distance, total, gen, random_ids)
        out.append((seq, rep - distance - span, rep))
    return out


@torch.no_grad()
def copy_curve(model: nn.Module, stream: torch.Tensor, spans=(8, 16, 32, 64, 256), distances=(64, 512),
               n: int = 16, seed: int = 0, n_boot: int = 1000, random_ids: torch.Tensor | None = None
               ) -> list[CopyPoint]:
    """The copy gap for every (span, distance) of ``spans`` x ``distances`` on ``n`` held-out sequences each
    (``random_ids``: random-token spans, source ``random``)."""
    was = model.training
    model.eval()
    source = "code" if random_ids is None else "random"
    points = []
    for span in spans:
        for distance in distances:
            first, second = [], []
            for seq, a, b in copy_sequences(stream, span, distance, n, seed, random_ids):
                end = b + span
                logits = model(seq[None, :end - 1])[0]
                nll = F.cross_entropy(logits, seq[1:end], reduction="none")  # nll[t - 1] predicts seq[t]
                first.append(float(nll[a:a + span - 1].mean()))          # targets a+1 .. a+span-1
                second.append(float(nll[b:b + span - 1].mean()))
            gaps = np.array(first) - np.array(second)
            rng = np.random.default_rng(seed)
            boots = gaps[rng.integers(0, len(gaps), (n_boot, len(gaps)))].mean(1)
            points.append(CopyPoint(source, span, distance, n, float(np.mean(first)), float(np.mean(second)),
                                    float(gaps.mean()), float(np.quantile(boots, 0.025)),
                                    float(np.quantile(boots, 0.975))))
    model.train(was)
    return points


def embedding_of(model: nn.Module) -> nn.Embedding:
    """The token embedding of a trainer model (mambapy ``MambaLM``: ``embedding``; transformers: input embeddings)."""
    hf = getattr(model, "hf", model)
    if hasattr(hf, "get_input_embeddings"):
        return hf.get_input_embeddings()
    return model.embedding


def first_occurrence_gradient(model: nn.Module, seq: torch.Tensor, first: int, repeat: int, span: int) -> dict:
    """Norm of d(loss on the repeat) / d(embedded input) at the first occurrence, before it and between, in train
    mode (the path training uses). ``first_occurrence`` must be > 0 for the model to be able to learn copying."""
    emb = embedding_of(model)
    grads: dict[str, torch.Tensor] = {}

    def keep(_m, _inp, out):
        out.retain_grad()
        grads["out"] = out
        return out

    handle = emb.register_forward_hook(keep)
    was = model.training
    model.train()
    try:
        model.zero_grad(set_to_none=True)
        end = repeat + span
        logits = model(seq[None, :end - 1])[0]
        loss = F.cross_entropy(logits[repeat:end - 1], seq[repeat + 1:end])
        loss.backward()
        g = grads["out"].grad[0].norm(dim=-1)  # (positions,)
    finally:
        handle.remove()
        model.zero_grad(set_to_none=True)
        model.train(was)
    return {"first_occurrence": float(g[first:first + span].sum()), "before": float(g[:first].sum()),
            "between": float(g[first + span:repeat].sum()), "loss": loss.item()}
