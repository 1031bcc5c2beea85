"""Run a generative labeler over prompts through the answer store, and turn stored answers into labels.

:func:`label_prompts` asks only what the store lacks, up to ``concurrency`` requests at once, with a progress bar;
each answer is stored the moment it arrives. A :class:`~.base.TransientLabelerError` (retries exhausted) counts
the prompt as failed and goes on; a :class:`~.base.LabelerFatalError` (wrong key, unknown model) stops the run;
Ctrl-C stops it too — in every case, what finished stays stored and the next run asks only the rest.
"""

from __future__ import annotations

import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .base import LABEL_COLUMNS, GenerativeLabeler, LabelerFatalError, LabelPrompt, TransientLabelerError
from .parse import parse_answer
from .store import AnswerStore
from .templates import get_template


@dataclass
class RunReport:
    labeler: str
    model: str
    prompts: int = 0
    cached: int = 0          # already in the store: not asked
    answered: int = 0        # asked and stored in this run
    failed: list[tuple[str, str]] = field(default_factory=list)  # (sample_id, error) after retries
    fatal: str | None = None  # the error that stopped the run
    seconds: float = 0.0

    @property
    def missing(self) -> int:
        return self.prompts - self.cached - self.answered

    def summary(self) -> str:
        s = (f"{self.labeler} ({self.model}): {self.prompts} prompts, {self.cached} already stored, "
             f"{self.answered} asked now, {len(self.failed)} failed, {self.missing} without answer")
        return s + (f"; STOPPED: {self.fatal}" if self.fatal else "")


def label_prompts(labeler: GenerativeLabeler, prompts: list[LabelPrompt], store: AnswerStore, *,
                  concurrency: int | None = None, progress: bool = True) -> RunReport:
    """Ask ``labeler`` every prompt whose answer is not stored yet (see the module docstring)."""
    report = RunReport(labeler=labeler.name, model=labeler.model, prompts=len(prompts))
    todo = [p for p in prompts if store.key_of(labeler.name, labeler.model, p) not in store]
    report.cached = len(prompts) - len(todo)
    if not todo:
        return report
    start = time.perf_counter()
    check = getattr(labeler, "check", None)
    if callable(check):
        try:
            check()
        except LabelerFatalError as e:
            report.fatal = str(e)
            return report
    workers = max(1, min(concurrency or labeler.max_concurrency, labeler.max_concurrency, len(todo)))
    bar = tqdm(total=len(todo), desc=f"label {labeler.name}", disable=not progress, unit="prompt")
    pending_prompts = iter(todo)
    pool = ThreadPoolExecutor(max_workers=workers)
    running: dict = {}
    interrupted = False

    def submit_next() -> None:
        p = next(pending_prompts, None)
        if p is not None:
            running[pool.submit(labeler.complete, p)] = p

    for _ in range(workers):
        submit_next()
    try:
        while running:
            done, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for fut in done:
                p = running.pop(fut)
                try:
                    completion = fut.result()
                except TransientLabelerError as e:
                    report.failed.append((p.sample_id, str(e)))
                except LabelerFatalError as e:
                    report.fatal = report.fatal or str(e)
                else:
                    store.put(labeler=labeler.name, kind=labeler.kind, model=labeler.model, prompt=p, completion=completion)
                    report.answered += 1
                bar.update(1)
                if report.fatal is None:
                    submit_next()
    except KeyboardInterrupt:
        interrupted = True  # what finished is stored; requests in flight are abandoned, asked again next run
        raise
    finally:
        pool.shutdown(wait=not interrupted, cancel_futures=True)
        bar.close()
        report.seconds = time.perf_counter() - start
    return report


def answers_to_labels(prompts: list[LabelPrompt], store: AnswerStore, labeler: str, model: str, kind: str) -> pd.DataFrame:
    """The labels table (:data:`~.base.LABEL_COLUMNS`) of one labeler over ``prompts``, one row per chunk.

    Prompts without a stored answer get rows with label <NA> and status 'unanswered', so coverage stays visible."""
    rows = []
    for p in prompts:
        rec = store.get(store.key_of(labeler, model, p))
        fmt = get_template(p.template).answer_format
        parsed = parse_answer(rec["text"], p.chunk_ids, fmt) if rec is not None else None
        for cid in p.chunk_ids:
            lab = parsed.labels.get(cid) if parsed else None
            conf = parsed.confidence.get(cid) if parsed else None
            rows.append({
                "labeler": labeler, "kind": kind, "model": model, "template": p.template, "sample_id": p.sample_id,
                "chunk_index": cid - 1, "label": pd.NA if lab is None else lab,
                "confidence": np.nan if conf is None else conf, "score": np.nan,
                "status": parsed.status if parsed else "unanswered",
            })
    return labels_frame(rows)


def labels_frame(rows: list[dict] | pd.DataFrame) -> pd.DataFrame:
    """A labels table with LABEL_COLUMNS in order and stable dtypes (label: nullable boolean)."""
    df = pd.DataFrame(rows, columns=list(LABEL_COLUMNS)) if not isinstance(rows, pd.DataFrame) else rows[list(LABEL_COLUMNS)].copy()
    df["label"] = df["label"].astype("boolean")
    df["chunk_index"] = df["chunk_index"].astype("int64")
    for c in ("confidence", "score"):
        df[c] = df[c].astype("float64")
    for c in ("labeler", "kind", "model", "template", "sample_id", "status"):
        df[c] = df[c].astype(object)
    return df


def answer_stats(prompts: list[LabelPrompt], store: AnswerStore, labeler: str, model: str) -> pd.DataFrame:
    """One row per prompt: parse status, problems, token counts and seconds (NaN when unanswered)."""
    rows = []
    for p in prompts:
        rec = store.get(store.key_of(labeler, model, p))
        if rec is None:
            rows.append({"labeler": labeler, "sample_id": p.sample_id, "status": "unanswered", "problems": "",
                         "prompt_tokens": np.nan, "completion_tokens": np.nan, "seconds": np.nan})
            continue
        parsed = parse_answer(rec["text"], p.chunk_ids, get_template(p.template).answer_format)
        rows.append({"labeler": labeler, "sample_id": p.sample_id, "status": parsed.status,
                     "problems": "; ".join(parsed.problems),
                     "prompt_tokens": np.nan if rec.get("prompt_tokens") is None else rec["prompt_tokens"],
                     "completion_tokens": np.nan if rec.get("completion_tokens") is None else rec["completion_tokens"],
                     "seconds": rec.get("seconds", np.nan)})
    return pd.DataFrame(rows)
