"""The append-only answer store: one JSON line per answer, written (and fsync'ed) the moment it arrives.

Each record is keyed by ``(labeler, model, template, prompt_hash)``; a run asks only the prompts whose key is not
stored yet, so a run stopped at any point (Ctrl-C, crash, kill) and started again asks nothing twice and loses
nothing that finished. Records hold the raw answer text, token counts, latency and a UTC timestamp — never an API
key.

Reading is tolerant and honest: a last line torn by a kill is skipped (it was never a finished answer, so it is
asked again) and counted in :attr:`AnswerStore.problems`, as are unreadable lines and duplicate keys (first kept).
Appending after a torn line first ends that line, so a torn write never corrupts the next record.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import threading
from pathlib import Path

from .base import Completion, LabelPrompt

RECORD_FIELDS = ("key", "labeler", "kind", "model", "template", "prompt_hash", "sample_id", "text", "prompt_tokens",
                 "completion_tokens", "seconds", "finish_reason", "created")


def answer_key(labeler: str, model: str, template: str, prompt_hash: str) -> str:
    return hashlib.sha256("\x1f".join((labeler, model, template, prompt_hash)).encode()).hexdigest()


class AnswerStore:
    """Append-only JSONL store of raw answers; thread-safe appends."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._records: dict[str, dict] = {}
        self.problems: list[str] = []
        self._load()

    # ---- reading -----------------------------------------------------------------------------------------------
    def _load(self) -> None:
        if not self.path.exists():
            return
        raw = self.path.read_bytes()
        lines = raw.split(b"\n")
        last = len(lines) - 1
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                if not isinstance(rec, dict) or any(f not in rec for f in ("key", "labeler", "model", "text")):
                    raise ValueError("not an answer record")
            except ValueError as e:
                torn = n - 1 == last  # no newline after it: the write was cut off
                self.problems.append(f"{self.path}:{n}: {'torn last line (interrupted write), will be asked again' if torn else f'unreadable line skipped ({e})'}")
                continue
            if rec["key"] in self._records:
                self.problems.append(f"{self.path}:{n}: duplicate answer for key {rec['key'][:12]} (first kept)")
                continue
            self._records[rec["key"]] = rec

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, key: str) -> bool:
        return key in self._records

    def get(self, key: str) -> dict | None:
        return self._records.get(key)

    def records(self, labeler: str | None = None) -> list[dict]:
        return [r for r in self._records.values() if labeler is None or r["labeler"] == labeler]

    # ---- writing -----------------------------------------------------------------------------------------------
    def put(self, *, labeler: str, kind: str, model: str, prompt: LabelPrompt, completion: Completion) -> dict:
        """Append one answer (durably) and return its record; an already stored key is kept, not duplicated."""
        key = answer_key(labeler, model, prompt.template, prompt.prompt_hash)
        rec = {
            "key": key, "labeler": labeler, "kind": kind, "model": model, "template": prompt.template,
            "prompt_hash": prompt.prompt_hash, "sample_id": prompt.sample_id, "text": completion.text,
            "prompt_tokens": completion.prompt_tokens, "completion_tokens": completion.completion_tokens,
            "seconds": round(float(completion.seconds), 4), "finish_reason": completion.finish_reason,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        line = (json.dumps(rec, ensure_ascii=False) + "\n").encode()
        with self._lock:
            if key in self._records:
                return self._records[key]
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "ab") as f:
                if f.tell() > 0 and not self._ends_with_newline():
                    f.write(b"\n")  # end a torn line so this record starts on its own line
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
            self._records[key] = rec
        return rec

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"

    def key_of(self, labeler: str, model: str, prompt: LabelPrompt) -> str:
        return answer_key(labeler, model, prompt.template, prompt.prompt_hash)
