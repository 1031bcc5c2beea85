"""What every labeler shares: the prompt it is given, the completion it returns, and the errors it may raise.

Two kinds of labelers sit behind this package:

* **generative** labelers (:class:`GenerativeLabeler`): an OpenAI-compatible chat API, a local transformers model,
  or the manual paste-into-a-chat workflow. They turn a :class:`LabelPrompt` (chat messages built from a versioned
  template) into a :class:`Completion` (raw text + token counts + latency); :mod:`.parse` turns the text into labels
  and :mod:`.store` keeps every answer, so nothing is asked twice.
* **reference** labelers (:mod:`.reference`): BM25, TF-IDF and embedding similarity of each chunk to the query,
  thresholded; no prompt, no store.

Both end in the same labels table (:data:`LABEL_COLUMNS`), one row per (labeler, sample, chunk).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

# The labels table every labeler ends in (one row per labeler x sample x chunk).
LABEL_COLUMNS: dict[str, str] = {
    "labeler": "labeler name, e.g. 'bm25' or 'deepseek-v3'",
    "kind": "'reference' | 'openai' | 'transformers' | 'manual'",
    "model": "model id (API model name, local path, or the reference method)",
    "template": "prompt template name@version ('' for reference labelers)",
    "sample_id": "dataset sample",
    "chunk_index": "0-based position of the chunk in the sample (the prompt shows chunk_index + 1)",
    "label": "True = relevant, False = not relevant, <NA> = the answer gave no label for this chunk",
    "confidence": "labeler's confidence in [0, 1] when it gave one (NaN otherwise)",
    "score": "reference labelers: the similarity score that was thresholded (NaN for generative labelers)",
    "status": "parse status of the answer this label comes from: ok | partial | malformed | empty | reference",
}


class LabelerUnavailable(RuntimeError):
    """The labeler is not configured here (no endpoint, no model path); the message says how to enable it."""


class LabelerFatalError(RuntimeError):
    """An error that every further request would repeat (wrong key, unknown model, bad endpoint): the run stops,
    finished answers stay stored, and the message names what to fix."""


class TransientLabelerError(RuntimeError):
    """One request failed after all retries (rate limit, timeout, server error): the prompt is counted as failed,
    nothing is stored for it, and the next run asks it again."""


@dataclass(frozen=True)
class LabelPrompt:
    """One labeling request: chat ``messages`` for one sample, built from template ``template`` (name@version).

    The prompt numbers chunks 1..n in prompt order: ``chunk_ids[i]`` is the number shown for chunk_index i.
    ``prompt_hash`` (sha256 of template + messages) keys the answer store together with labeler and model.
    """

    sample_id: str
    template: str
    messages: tuple[dict, ...]
    chunk_ids: tuple[int, ...]
    prompt_hash: str

    @property
    def text(self) -> str:
        """All messages as one text (for the manual workflow and for models without a chat template)."""
        return "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in self.messages)


@dataclass(frozen=True)
class Completion:
    """A raw answer: text, token counts (None when the backend does not report them), seconds of wall time."""

    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    seconds: float = 0.0
    finish_reason: str | None = None


@runtime_checkable
class GenerativeLabeler(Protocol):
    """A labeler that answers chat messages. ``complete`` raises :class:`LabelerFatalError` or
    :class:`TransientLabelerError`; retries happen inside ``complete``."""

    kind: str           # 'openai' | 'transformers' | 'manual'
    name: str           # labeler name used in the store and in tables
    model: str          # model id
    max_concurrency: int  # how many requests may run at once (1 for local models)

    def complete(self, prompt: LabelPrompt) -> Completion: ...
