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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .context.schema import DEFAULT_HEADER
from .params import ParameterError

ORDERS = ("context_first", "query_first")
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
