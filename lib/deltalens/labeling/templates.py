"""Versioned labeling prompt templates and prompt building.

A template is identified by ``name@version``; changing its wording means a new version, so answers stored under the
old one are never mixed with answers to the new wording (the store keys answers by template and prompt hash).

Every template shows the chunks numbered 1..n in prompt order (number = chunk_index + 1), each under its file path,
then the tail of the file being edited with a ``<CURSOR>`` marker where the completion goes. The target line itself
is never shown (it is what the completion must produce). The answer format is either

* ``json``: one JSON object, ``{"chunks": [{"id": 1, "relevant": true, "confidence": 0.9}, ...]}``;
* ``list``: one line ``RELEVANT: 2, 5`` (or ``RELEVANT: none``), the format small local models manage best.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from ..core.params import ParameterError
from .base import LabelPrompt

CURSOR = "<CURSOR>"

_SYSTEM = ("You are an expert software engineer. You judge which pieces of repository context a developer needs "
           "in order to write the next line of code.")

_TASK = """Below are {n} context chunks from a code base, numbered 1 to {n}, followed by the file being edited. \
The next line of code must be written at the {cursor} marker.

A chunk is RELEVANT if it is needed to write that line correctly: for example it defines a function, class, method, \
constant or variable that the line will use. A chunk is NOT relevant if the line can be written without it, even if \
it comes from the same project or looks similar.

{chunks}

### File being edited: {path}
```python
{query}{cursor}
```
"""

_ANSWER_JSON = """Decide for EVERY chunk, 1 to {n}. Answer with JSON only, no other text, in exactly this form:
{{"chunks": [{{"id": 1, "relevant": true, "confidence": 0.9}}, {{"id": 2, "relevant": false, "confidence": 0.7}}]}}
"confidence" is your probability (0 to 1) that your decision is right."""

_ANSWER_LIST = """Answer with one line only, in exactly this form: RELEVANT: followed by the numbers of the relevant \
chunks separated by commas (for example "RELEVANT: 2, 5"), or "RELEVANT: none" if no chunk is relevant."""


@dataclass(frozen=True)
class Template:
    name: str
    version: int
    answer_format: str          # 'json' | 'list'
    max_chunk_chars: int = 2000  # longer chunks are cut (marked with '# ...')
    max_query_chars: int = 2000  # the tail of the prefix shown before the cursor
    system: str = _SYSTEM

    @property
    def id(self) -> str:
        return f"{self.name}@{self.version}"


TEMPLATES: dict[str, Template] = {t.id: t for t in (
    Template("json", 1, "json"),
    Template("list", 1, "list"),
)}
DEFAULT_TEMPLATE = "json@1"


def get_template(template: str | Template) -> Template:
    """A template by id (``json@1``) or by name (latest version)."""
    if isinstance(template, Template):
        return template
    if template in TEMPLATES:
        return TEMPLATES[template]
    versions = [t for t in TEMPLATES.values() if t.name == template]
    if versions:
        return max(versions, key=lambda t: t.version)
    raise ParameterError(f"parameter template={template!r} is not a known template; allowed: {sorted(TEMPLATES)}")


def _cut_head(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit].rsplit("\n", 1)[0] + "\n# ... (cut)"


def _cut_tail(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    tail = text[-limit:]
    return tail[tail.find("\n") + 1:] if "\n" in tail else tail


def render_chunks(chunks: list[dict], template: Template) -> str:
    parts = []
    for c in sorted(chunks, key=lambda c: c["chunk_index"]):
        body = _cut_head(c["text"].rstrip("\n"), template.max_chunk_chars)
        parts.append(f"### Chunk {c['chunk_index'] + 1} ({c['path']})\n```python\n{body}\n```")
    return "\n\n".join(parts)


def build_prompt(sample: dict, template: str | Template = DEFAULT_TEMPLATE) -> LabelPrompt:
    """The labeling prompt of one sample (a dict as returned by ``ContextDataset.sample``, with its ``chunks``)."""
    t = get_template(template)
    for field in ("sample_id", "path", "prefix", "chunks"):
        if field not in sample:
            raise ParameterError(f"sample {sample.get('sample_id', '?')!r}: missing field {field!r} for prompt building")
    chunks = sample["chunks"]
    n = len(chunks)
    user = _TASK.format(n=n, cursor=CURSOR, chunks=render_chunks(chunks, t), path=sample["path"],
                        query=_cut_tail(sample["prefix"], t.max_query_chars))
    user += "\n" + (_ANSWER_JSON if t.answer_format == "json" else _ANSWER_LIST).format(n=n)
    messages = ({"role": "system", "content": t.system}, {"role": "user", "content": user})
    digest = hashlib.sha256(json.dumps([t.id, messages], ensure_ascii=False, sort_keys=True).encode()).hexdigest()
    ids = tuple(int(c["chunk_index"]) + 1 for c in sorted(chunks, key=lambda c: c["chunk_index"]))
    return LabelPrompt(sample_id=sample["sample_id"], template=t.id, messages=messages, chunk_ids=ids, prompt_hash=digest)


def build_prompts(ds, sample_ids: list[str] | None = None, template: str | Template = DEFAULT_TEMPLATE) -> list[LabelPrompt]:
    """Prompts for ``sample_ids`` (default: every sample) of a ``ContextDataset``, in that order."""
    ids = list(ds.samples["sample_id"]) if sample_ids is None else list(sample_ids)
    known = set(ds.samples["sample_id"])
    unknown = [s for s in ids if s not in known]
    if unknown:
        raise ParameterError(f"sample id(s) not in the dataset: {unknown[:5]}{' ...' if len(unknown) > 5 else ''}")
    return [build_prompt(ds.sample(s), template) for s in ids]
