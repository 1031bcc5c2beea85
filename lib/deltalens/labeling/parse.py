"""Answers -> labels, as far as an answer goes; every problem is counted, nothing is dropped silently.

:func:`parse_answer` reads the raw text of a generative labeler's answer for the chunk numbers it was shown and
returns a :class:`ParsedAnswer`: a label per chunk number it could read, confidences where given, and the problems
(missing ids, ids that were not in the prompt, entries it could not read, duplicates with conflicting labels).

Readers are tried in order: the template's own format (``RELEVANT: 2, 5`` for ``list``), a JSON value anywhere in
the text (fenced or not; ``{"chunks": [{"id", "relevant", "confidence"}]}``, a list of such objects,
``{"1": true}``, ``{"1": {"relevant": true}}`` or ``{"relevant": [..], "irrelevant": [..]}``), then line/object
patterns (``Chunk 3: relevant``, ``"id": 3, "relevant": false`` in truncated JSON).

Status: ``ok`` (every chunk labeled, no problem), ``partial`` (some labels, some problems), ``malformed`` (text but
no label), ``empty`` (blank answer).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

STATUSES = ("ok", "partial", "malformed", "empty")

_TRUE = {"true", "yes", "relevant", "1", "y", "needed", "required"}
_FALSE = {"false", "no", "irrelevant", "not relevant", "not_relevant", "0", "n", "not needed", "unrelated"}


@dataclass
class ParsedAnswer:
    labels: dict[int, bool] = field(default_factory=dict)
    confidence: dict[int, float] = field(default_factory=dict)
    status: str = "malformed"
    missing: list[int] = field(default_factory=list)
    extra: list[int] = field(default_factory=list)
    invalid: int = 0        # entries that could not be read (bad id, bad value)
    conflicts: list[int] = field(default_factory=list)  # ids given twice with different labels (first kept)
    reader: str = ""        # which reader succeeded: list | json | lines | ''

    @property
    def problems(self) -> list[str]:
        out = []
        if self.status == "empty":
            out.append("empty answer")
        elif not self.labels:
            out.append("no label could be read")
        if self.missing and self.labels:
            out.append(f"no label for chunk(s) {self.missing}")
        if self.extra:
            out.append(f"id(s) not in the prompt: {self.extra}")
        if self.invalid:
            out.append(f"{self.invalid} entr{'y' if self.invalid == 1 else 'ies'} could not be read")
        if self.conflicts:
            out.append(f"conflicting labels for chunk(s) {self.conflicts} (first kept)")
        if self.reader == "lines":
            out.append("not in the requested format (read line by line)")
        return out


def _bool(v) -> bool | None:
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)) and v in (0, 1):
        return bool(v)
    if isinstance(v, str):
        s = v.strip().lower()
        if s in _TRUE:
            return True
        if s in _FALSE:
            return False
    return None


def _int(v) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str):
        m = re.fullmatch(r"\s*(?:chunk\s*#?\s*)?(\d+)\s*", v, re.I)
        if m:
            return int(m.group(1))
    return None


def _conf(v) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        return None
    try:
        x = float(v)
    except ValueError:
        return None
    if 1 < x <= 100:  # a percentage
        x /= 100
    return x if 0 <= x <= 1 else None


def _entries_from_json(obj) -> list[tuple] | None:
    """(id, label, confidence) entries from a decoded JSON value, or None if it has no recognisable shape."""
    if isinstance(obj, dict):
        for key in ("chunks", "labels", "answer", "results"):
            if key in obj and isinstance(obj[key], (list, dict)):
                return _entries_from_json(obj[key])
        if "relevant" in obj and isinstance(obj["relevant"], list):
            entries = [(i, True, None) for i in obj["relevant"]]
            for key in ("irrelevant", "not_relevant", "not relevant"):
                if isinstance(obj.get(key), list):
                    entries += [(i, False, None) for i in obj[key]]
            return entries
        if obj and all(_int(k) is not None for k in obj):
            out = []
            for k, v in obj.items():
                if isinstance(v, dict):
                    out.append((k, v.get("relevant", v.get("label")), v.get("confidence")))
                else:
                    out.append((k, v, None))
            return out
        return None
    if isinstance(obj, list):
        if obj and all(isinstance(e, dict) for e in obj):
            return [(e.get("id", e.get("chunk")), e.get("relevant", e.get("label")), e.get("confidence")) for e in obj]
        if all(_int(e) is not None for e in obj):  # a bare list of ids = the relevant ones
            return [(e, True, None) for e in obj]
    return None


def _json_values(text: str) -> list:
    """Every JSON object/array that decodes at some position of ``text``, most answer-like first: values inside
    ```json fences, then objects, then lists of objects, then bare lists (an index like ``rows[0]`` in prose
    before the real answer must not win)."""
    dec = json.JSONDecoder()

    def scan(t: str) -> list:
        found, pos = [], 0
        for m in re.finditer(r"[\[{]", t):
            if m.start() < pos:
                continue  # inside a value already decoded
            try:
                value, end = dec.raw_decode(t, m.start())
            except json.JSONDecodeError:
                continue
            found.append(value)
            pos = end
        return found

    fenced = [v for block in _FENCE.findall(text) for v in scan(block)]
    rest = scan(text)
    rank = lambda v: 0 if isinstance(v, dict) else 1 if v and all(isinstance(e, dict) for e in v) else 2  # noqa: E731
    return fenced + sorted(rest, key=rank)


_LINE = re.compile(r"(?:chunk\s*#?\s*)?\b(\d+)\b\s*[:=\-–)\]]*\s*\**\s*(not relevant|irrelevant|relevant|yes|no|true|false)\b", re.I)
_OBJ = re.compile(r'"(?:id|chunk)"\s*:\s*"?(\d+)"?\s*,\s*"(?:relevant|label)"\s*:\s*"?(true|false|yes|no|relevant|irrelevant)"?'
                  r'(?:\s*,\s*"confidence"\s*:\s*([0-9.]+))?', re.I)
# 'RELEVANT:' at the start of a line (optionally bold), so 'NOT RELEVANT:' / 'IRRELEVANT:' lines never match
_LIST = re.compile(r"^[\s*#>-]*RELEVANT\s*\**\s*:\s*\**([^\n]*)", re.I | re.M)
_FENCE = re.compile(r"```(?:json)?\s*\n(.*?)```", re.S | re.I)


def _read(text: str, answer_format: str, chunk_ids: tuple[int, ...]) -> tuple[list[tuple], str, bool]:
    """(entries, reader, complete): complete = entries cover every chunk by construction (list format)."""
    if answer_format == "list":
        m = _LIST.search(text)
        if m:
            body = m.group(1).strip().strip(".").strip()
            if re.fullmatch(r"(none|nothing|-|\[\]|)", body, re.I):
                return [], "list", True
            return [(int(t), True, None) for t in re.findall(r"\d+", body)], "list", True
    for value in _json_values(text):
        entries = _entries_from_json(value)
        if entries is not None:
            complete = isinstance(value, (dict, list)) and all(e[1] is True for e in entries) and answer_format == "list"
            return entries, "json", complete
    entries = [(m.group(1), m.group(2), m.group(3)) for m in _OBJ.finditer(text)]
    if entries:
        return entries, "lines", False
    entries = [(m.group(1), m.group(2), None) for m in _LINE.finditer(text)]
    return entries, ("lines" if entries else ""), False


def parse_answer(text: str | None, chunk_ids: tuple[int, ...] | list[int], answer_format: str = "json") -> ParsedAnswer:
    """Labels from one answer (see the module docstring). ``chunk_ids``: the numbers shown in the prompt."""
    ids = tuple(int(i) for i in chunk_ids)
    out = ParsedAnswer()
    if text is None or not text.strip():
        out.status, out.missing = "empty", list(ids)
        return out
    entries, out.reader, complete = _read(text, answer_format, ids)
    allowed = set(ids)
    for raw_id, raw_label, raw_conf in entries:
        i, lab = _int(raw_id), _bool(raw_label)
        if i is None or lab is None:
            out.invalid += 1
            continue
        if i not in allowed:
            if i not in out.extra:
                out.extra.append(i)
            continue
        if i in out.labels:
            if out.labels[i] != lab and i not in out.conflicts:
                out.conflicts.append(i)
            continue
        out.labels[i] = lab
        c = _conf(raw_conf) if raw_conf is not None else None
        if c is not None:
            out.confidence[i] = c
    if complete:  # list format: every chunk not listed is not relevant
        for i in ids:
            out.labels.setdefault(i, False)
    out.labels = {i: out.labels[i] for i in ids if i in out.labels}
    out.missing = [i for i in ids if i not in out.labels]
    if not out.labels and not (complete and not ids):
        out.status = "malformed"
    elif out.missing or out.extra or out.invalid or out.conflicts or out.reader == "lines":
        out.status = "partial"
    else:
        out.status = "ok"
    return out
