"""The manual workflow (the thesis' way): export prompts to files, paste each into a chat window, paste the answers
into one text file, import it into the answer store.

Export writes ``<dir>/<NNNN>-<hash12>.txt`` per prompt (the id line ``=== NNNN-hash12 ===`` on top) plus
``index.jsonl`` and an ``answers_template.txt`` holding every id line with room for the answer. The answers file
is that template filled in::

    === 0001-3fa2c41b9e07 ===
    {"chunks": [{"id": 1, "relevant": true}, ...]}
    === 0002-81c0d2a4f5b6 ===
    RELEVANT: 2, 5

Import reads it strictly: an id that is not among the exported prompts, an id given twice, or text before the first
id line is an error naming the file and line. An id line with nothing after it is imported as an empty answer
(counted as such). Already stored answers are kept (import is idempotent); a different text for a stored answer is
reported, never silently overwritten.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from .base import Completion, LabelPrompt
from .store import AnswerStore

_ID_LINE = re.compile(r"^===\s*(\S+)\s*===\s*$")


class ManualAnswersError(ValueError):
    """The answers file does not follow the format; the message names the file and line."""


def prompt_id(number: int, prompt: LabelPrompt) -> str:
    return f"{number:04d}-{prompt.prompt_hash[:12]}"


def export_prompts(prompts: list[LabelPrompt], directory: str | Path) -> Path:
    """Write one text file per prompt, ``index.jsonl`` and ``answers_template.txt`` into ``directory``."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    index, template = [], []
    for n, p in enumerate(prompts, start=1):
        pid = prompt_id(n, p)
        (d / f"{pid}.txt").write_text(f"=== {pid} ===\n{p.text}\n", encoding="utf-8")
        index.append({"id": pid, "sample_id": p.sample_id, "template": p.template, "prompt_hash": p.prompt_hash})
        template.append(f"=== {pid} ===\n\n")
    (d / "index.jsonl").write_text("".join(json.dumps(r) + "\n" for r in index), encoding="utf-8")
    (d / "answers_template.txt").write_text("".join(template), encoding="utf-8")
    return d


def read_answers(path: str | Path) -> dict[str, str]:
    """{prompt id: answer text} from an answers file (see the module docstring)."""
    return {k: text for k, (_, text) in _read_answers(Path(path)).items()}


def _read_answers(path: Path) -> dict[str, tuple[int, str]]:
    """{prompt id: (line number of its id line, answer text)}."""
    if not path.is_file():
        raise ManualAnswersError(f"{path}: answers file not found")
    answers: dict[str, list[str]] = {}
    lines: dict[str, int] = {}
    current = None
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        m = _ID_LINE.match(line)
        if m:
            current = m.group(1)
            if current in answers:
                raise ManualAnswersError(f"{path}:{n}: answer id {current} appears twice")
            answers[current] = []
            lines[current] = n
        elif current is None:
            if line.strip():
                raise ManualAnswersError(f"{path}:{n}: text before the first '=== <id> ===' line: {line[:60]!r}")
        else:
            answers[current].append(line)
    return {k: (lines[k], "\n".join(v).strip()) for k, v in answers.items()}


@dataclass
class ImportReport:
    imported: int = 0
    already_stored: int = 0
    changed: list[str] = field(default_factory=list)   # ids whose stored text differs (kept, not overwritten)
    not_answered: list[str] = field(default_factory=list)  # exported prompts absent from the answers file

    def summary(self) -> str:
        return (f"{self.imported} imported, {self.already_stored} already stored, {len(self.changed)} differing "
                f"from the stored text (kept), {len(self.not_answered)} prompts not in the answers file")


def import_answers(path: str | Path, prompts: list[LabelPrompt], store: AnswerStore, labeler: str, model: str) -> ImportReport:
    """Store the answers of ``path`` for ``prompts`` (numbered as at export) under ``labeler`` / ``model``."""
    with_lines = _read_answers(Path(path))
    answers = {k: text for k, (_, text) in with_lines.items()}
    ids = {prompt_id(n, p): p for n, p in enumerate(prompts, start=1)}
    unknown = [k for k in answers if k not in ids]
    if unknown:
        raise ManualAnswersError(f"{path}:{with_lines[unknown[0]][0]}: answer id {unknown[0]} is not among the "
                                 f"{len(ids)} exported prompts ({len(unknown)} unknown id(s) in all; were the prompts "
                                 "exported with other parameters or another template?)")
    rep = ImportReport()
    for pid, p in ids.items():
        if pid not in answers:
            rep.not_answered.append(pid)
            continue
        rec = store.get(store.key_of(labeler, model, p))
        if rec is not None:
            rep.already_stored += 1
            if rec["text"] != answers[pid]:
                rep.changed.append(pid)
            continue
        store.put(labeler=labeler, kind="manual", model=model, prompt=p, completion=Completion(text=answers[pid]))
        rep.imported += 1
    return rep
