"""Prompt layouts for a pretrained LM over code-completion samples, with character spans, and spans -> tokens.

Two orders (an experimental factor: Mamba reads left to right, so Δ over a chunk can depend on the query only if the
query comes first):

* ``context_first`` — exactly the dataset's prompt: ``header + chunk`` for every chunk, then ``header(path) +
  prefix``, then the target line. This is how a completion prompt is normally laid out.
* ``query_first`` — a query block first (``# query: <path>`` + the last ``query_chars`` characters of the prefix), then
  the chunks, then ``header(path) + prefix + target`` as above. The prefix tail appears twice; the second copy keeps the
  target line's loss comparable with ``context_first``.

Every layout is ``LayoutPrompt(text, chunk_spans, prefix_span, target_span)``: ``text[s:e]`` is exactly the chunk
text / prefix / target line. ``drop`` leaves chunks out (leave-one-out, truncation) — their spans are ``None``.

:func:`encode` tokenizes a layout with chunk / target token ranges and applies a :class:`LayoutPolicy` (order, query
characters, the token limit and what to do past it); an extraction config works as a policy too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import torch

from ..context.schema import DEFAULT_HEADER
from ..core.params import ParameterError

ORDERS = ("context_first", "query_first")
TRUNCATION = ("drop_chunks", "left", "error")
QUERY_HEADER = "# query: {path}\n"


@dataclass(frozen=True)
class LayoutPrompt:
    text: str
    chunk_spans: tuple[tuple[int, int] | None, ...]  # per chunk_index; None = left out
    prefix_span: tuple[int, int]
    target_span: tuple[int, int]


def _tail(text: str, chars: int) -> str:
    if len(text) <= chars:
        return text
    tail = text[-chars:]
    return tail[tail.find("\n") + 1:] if "\n" in tail[:-1] else tail


def layout(sample: dict, order: str = "context_first", *, drop=(), query_chars: int = 800,
           header: str = DEFAULT_HEADER) -> LayoutPrompt:
    """The prompt of ``sample`` (a ``ContextDataset.sample`` dict) in ``order``, followed by its target line."""
    if order not in ORDERS:
        raise ParameterError(f"parameter order={order!r} is not allowed; allowed: {list(ORDERS)}")
    parts: list[str] = []
    pos = 0

    def add(s: str) -> tuple[int, int]:
        nonlocal pos
        parts.append(s)
        pos += len(s)
        return pos - len(s), pos

    if order == "query_first":
        add(QUERY_HEADER.format(path=sample["path"]))
        add(_tail(sample["prefix"], query_chars))
        add("\n")
    chunks = sorted(sample["chunks"], key=lambda c: c["chunk_index"])
    spans: list[tuple[int, int] | None] = []
    dropped = set(drop)
    for c in chunks:
        if c["chunk_index"] in dropped:
            spans.append(None)
            continue
        add(header.format(path=c["path"], project=c.get("project", "")))
        spans.append(add(c["text"]))
        add("\n")
    add(header.format(path=sample["path"], project=""))
    prefix_span = add(sample["prefix"])
    target_span = add(sample["target"])
    add("\n")
    return LayoutPrompt("".join(parts), tuple(spans), prefix_span, target_span)


def token_ranges(offsets: np.ndarray, spans) -> list[tuple[int, int] | None]:
    """Character spans -> token index ranges ``[start, end)`` from a fast tokenizer's offset mapping (n_tokens, 2).

    A token belongs to a span when its characters overlap it; a span with no token (empty text) gives an empty range
    at its position; ``None`` stays ``None``."""
    offsets = np.asarray(offsets)
    starts, ends = offsets[:, 0], offsets[:, 1]
    out = []
    for span in spans:
        if span is None:
            out.append(None)
            continue
        s, e = span
        inside = np.flatnonzero((starts < e) & (ends > s) & (ends > starts))
        if len(inside):
            out.append((int(inside[0]), int(inside[-1]) + 1))
        else:
            at = int(np.searchsorted(starts, s))
            out.append((at, at))
    return out


@dataclass(frozen=True)
class LayoutPolicy:
    """How a sample becomes a token sequence: prompt order, query characters, the token limit and the truncation
    (``drop_chunks``: leading chunks first; ``left``: keep the last tokens; ``error``)."""

    order: str = "context_first"
    query_chars: int = 800
    max_tokens: int = 8192
    truncation: str = "drop_chunks"


@dataclass
class Encoded:
    input_ids: torch.Tensor                       # (1, L)
    chunk_tokens: list[tuple[int, int] | None]    # per chunk_index
    target_tokens: tuple[int, int]
    n_tokens_full: int                            # before truncation
    dropped: list[int] = field(default_factory=list)   # chunks left out by truncation
    cut_tokens: int = 0                           # tokens cut from the left (truncation 'left')
    prefix_tokens: tuple[int, int] | None = None  # the file prefix (the query) before the target line
    name_tokens: list[int] = field(default_factory=list)  # target-line tokens inside a used name (identifier accuracy)

    @property
    def n_tokens(self) -> int:
        return int(self.input_ids.shape[1])


def name_token_positions(text: str, target_span: tuple[int, int], offsets: np.ndarray, names) -> list[int]:
    """Token positions of the target line (``text[target_span]``) that overlap an occurrence of one of ``names`` (the
    names the line takes from its relevant chunks: ``used_names``), matched as whole identifiers. These are the
    tokens that only reading the chunk can predict: identifier-token accuracy is measured on them."""
    a, b = target_span
    line = text[a:b]
    occ = [(a + m.start(), a + m.end()) for n in set(names or ()) if n
           for m in re.finditer(rf"(?<![A-Za-z0-9_]){re.escape(n)}(?![A-Za-z0-9_])", line)]
    if not occ:
        return []
    starts, ends = np.asarray(offsets)[:, 0], np.asarray(offsets)[:, 1]
    hit = np.zeros(len(starts), bool)
    for s, e in occ:
        hit |= (starts < e) & (ends > s) & (ends > starts)
    return [int(i) for i in np.flatnonzero(hit)]


def encode(tokenizer, sample: dict, policy: LayoutPolicy, drop=()) -> Encoded:
    """Tokenize the layout of ``sample`` with chunk / target token ranges, truncated per ``policy.truncation``
    (an extraction config hands its :attr:`~deltalens.extract.config.ExtractConfig.layout`)."""
    if not isinstance(policy, LayoutPolicy):
        raise TypeError(f"encode: policy must be a LayoutPolicy, got {type(policy).__name__} (an ExtractConfig: "
                        "pass its .layout)")
    dropped = list(drop)
    first = None
    order = sorted(c["chunk_index"] for c in sample["chunks"])
    while True:
        lp = layout(sample, policy.order, drop=dropped, query_chars=policy.query_chars)
        enc = tokenizer(lp.text, return_offsets_mapping=True, add_special_tokens=False)
        ids, offsets = enc["input_ids"], np.asarray(enc["offset_mapping"]).reshape(-1, 2)
        first = len(ids) if first is None else first
        if len(ids) <= policy.max_tokens:
            break
        if policy.truncation == "error":
            raise ParameterError(f"sample {sample['sample_id']!r}: {len(ids)} tokens > max_tokens={policy.max_tokens} "
                                 "(truncation='error'; use 'drop_chunks' or 'left', or raise max_tokens)")
        if policy.truncation == "left":
            cut = len(ids) - policy.max_tokens
            ranges = token_ranges(offsets, list(lp.chunk_spans) + [lp.prefix_span, lp.target_span])
            tgt, pre = ranges[-1], ranges[-2]
            if tgt[0] - cut < 1:
                raise ParameterError(f"sample {sample['sample_id']!r}: the target line does not fit in "
                                     f"max_tokens={policy.max_tokens}")
            chunks = [None if r is None or r[1] <= cut else (max(r[0] - cut, 0), r[1] - cut) for r in ranges[:-2]]
            names = name_token_positions(lp.text, lp.target_span, offsets, sample.get("used_names"))
            return Encoded(torch.tensor([ids[cut:]]), chunks, (tgt[0] - cut, tgt[1] - cut), first,
                           [i for i, (r, c) in enumerate(zip(ranges[:-2], chunks)) if r is not None and c is None], cut,
                           (max(pre[0] - cut, 0), pre[1] - cut), [i - cut for i in names])
        remaining = [i for i in order if i not in dropped]
        if not remaining:
            raise ParameterError(f"sample {sample['sample_id']!r}: even without any chunk the prompt has {len(ids)} "
                                 f"tokens > max_tokens={policy.max_tokens}")
        dropped.append(remaining[0])  # the chunk farthest from the target line
    ranges = token_ranges(offsets, list(lp.chunk_spans) + [lp.prefix_span, lp.target_span])
    return Encoded(torch.tensor([ids]), ranges[:-2], ranges[-1], first, [i for i in dropped if i not in drop], 0,
                   ranges[-2], name_token_positions(lp.text, lp.target_span, offsets, sample.get("used_names")))


def encode_variants(tokenizer, sample: dict, policy, leave_one_out: bool = False):
    """(the full prompt, the prompt without any chunk — the context gain —, and with ``leave_one_out`` one prompt
    without each chunk the full prompt kept, as ``[(chunk_index, Encoded)]``), all under ``policy``."""
    full = encode(tokenizer, sample, policy)
    none = encode(tokenizer, sample, policy, drop=[c["chunk_index"] for c in sample["chunks"]])
    loo = [(ci, encode(tokenizer, sample, policy, drop=[*full.dropped, ci]))
           for ci, r in enumerate(full.chunk_tokens) if leave_one_out and r is not None and r[1] > r[0]]
    return full, none, loo
