"""Synthetic tasks with a per-token ground truth of importance.

Every task draws a :class:`TaskBatch` (``draw_batch``; a "sample" in this project is a dataset record): the model
reads ``inputs`` left to right and must emit ``targets`` at the ``answer`` positions (the output at position t is
scored against ``targets[t]``; no shift). ``important`` marks the tokens that the model must keep in its state to
answer; ``data`` marks the tokens that are *candidates* for being important (the non-noise content tokens), so that
one can ask the harder question "among the data tokens, which ones matter?" -- the only question that a token-
identity rule cannot answer by itself.

Tasks (Gu & Dao 2023, appendix E.1, and one added here):

* ``selective_copying`` -- ``n_data`` data tokens (values 1..vocab_size-2) scattered over ``seq_len + n_data``
  noise slots (value 0), then ``n_data`` markers (value vocab_size-1); the answer is the data tokens in order
  (state-spaces/s4 ``copying.py`` layout). Important = the data tokens. Token identity alone gives ROC-AUC 1.
* ``induction_heads`` -- ``seq_len`` random tokens (values 0..vocab_size-2); a trigger (vocab_size-1) is placed once
  in the body and again at the end; the answer, at the last position, is the token that followed the first trigger.
  Important = that token. Its identity says nothing, but the previous token (the trigger) does.
* ``query_copying`` -- importance decided by long-range context: a query token at position 0 names one of
  ``n_classes`` token classes; ``n_keep`` tokens of that class and ``n_distractors`` tokens of other classes are
  scattered in noise; the answer is the queried class' tokens in order. Important = the tokens of the queried class.
  Neither token identity nor a short window can tell them apart from the distractors; only the query can.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar

import torch

from ..core.params import ParameterError, check_int

IGNORE_INDEX = -100


@dataclass(frozen=True)
class TaskBatch:
    inputs: torch.Tensor  # (B, T) long
    targets: torch.Tensor  # (B, T) long, IGNORE_INDEX where not an answer
    answer: torch.Tensor  # (B, T) bool, positions whose output is scored
    important: torch.Tensor  # (B, T) bool, tokens the model must keep
    data: torch.Tensor  # (B, T) bool, content tokens (important or distractor)
    context: torch.Tensor  # (B, T) bool, the context to filter: every position but answers / markers and the query


@dataclass(frozen=True)
class Task:
    """Base class: a frozen, validated parameter set with a ``draw_batch`` method."""

    name: ClassVar[str]
    seq_len: int

    def __post_init__(self) -> None:
        for f in fields(self):
            check_int(f.metadata.get("alias", f.name), getattr(self, f.name), minimum=1, where=f"task {self.name!r}")
        self.validate()

    def validate(self) -> None:  # pragma: no cover - overridden
        pass

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    @property
    def total_len(self) -> int:
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        return {"task": self.name, **{f.metadata.get("alias", f.name): getattr(self, f.name) for f in fields(self)}}

    def with_seq_len(self, seq_len: int) -> "Task":
        return replace(self, seq_len=seq_len)

    def draw_batch(self, batch_size: int, generator: torch.Generator) -> TaskBatch:
        raise NotImplementedError


def _scatter_positions(batch: int, slots: int, k: int, g: torch.Generator) -> torch.Tensor:
    """``k`` distinct sorted positions in ``range(slots)`` for each row: (batch, k)."""
    return torch.rand(batch, slots, generator=g).argsort(dim=1)[:, :k].sort(dim=1).values


@dataclass(frozen=True)
class SelectiveCopying(Task):
    name: ClassVar[str] = "selective_copying"
    seq_len: int = 64  # noise slots L; the body has L + n_data positions
    vocab_size_: int = field(default=8, metadata={"alias": "vocab_size"})
    n_data: int = 4

    def validate(self) -> None:
        if self.vocab_size_ < 3:
            raise ParameterError(
                f"task 'selective_copying': vocab_size={self.vocab_size_} is too small; allowed: >= 3 "
                "(noise token 0, at least one data token, the marker token)"
            )
        if self.n_data > self.seq_len:
            raise ParameterError(
                f"task 'selective_copying': n_data={self.n_data} data tokens for seq_len={self.seq_len} noise positions; "
                f"allowed: n_data <= seq_len"
            )

    @property
    def vocab_size(self) -> int:
        return self.vocab_size_

    @property
    def total_len(self) -> int:
        return self.seq_len + 2 * self.n_data

    def draw_batch(self, batch_size: int, generator: torch.Generator) -> TaskBatch:
        B, L, M, A = batch_size, self.seq_len, self.n_data, self.vocab_size_
        body = L + M
        inputs = torch.zeros(B, self.total_len, dtype=torch.long)
        values = torch.randint(1, A - 1, (B, M), generator=generator)
        pos = _scatter_positions(B, body, M, generator)
        inputs.scatter_(1, pos, values)
        inputs[:, body:] = A - 1
        targets = torch.full_like(inputs, IGNORE_INDEX)
        targets[:, body:] = values
        answer = torch.zeros_like(inputs, dtype=torch.bool)
        answer[:, body:] = True
        important = torch.zeros_like(answer).scatter_(1, pos, True)
        return TaskBatch(inputs, targets, answer, important, important.clone(), ~answer)


@dataclass(frozen=True)
class InductionHeads(Task):
    name: ClassVar[str] = "induction_heads"
    seq_len: int = 64  # total length, the final trigger included
    vocab_size_: int = field(default=16, metadata={"alias": "vocab_size"})

    def validate(self) -> None:
        if self.vocab_size_ < 3:
            raise ParameterError(
                f"task 'induction_heads': vocab_size={self.vocab_size_} is too small; allowed: >= 3 "
                "(at least two content tokens and the trigger token)"
            )
        if self.seq_len < 4:
            raise ParameterError(f"task 'induction_heads': seq_len={self.seq_len} is too short; allowed: >= 4")

    @property
    def vocab_size(self) -> int:
        return self.vocab_size_

    @property
    def total_len(self) -> int:
        return self.seq_len

    def draw_batch(self, batch_size: int, generator: torch.Generator) -> TaskBatch:
        B, T, V = batch_size, self.seq_len, self.vocab_size_
        trigger = V - 1
        inputs = torch.randint(0, V - 1, (B, T), generator=generator)
        p = torch.randint(0, T - 2, (B, 1), generator=generator)  # first trigger; its value sits at p + 1 <= T - 2
        inputs.scatter_(1, p, trigger)
        inputs[:, -1] = trigger
        value = inputs.gather(1, p + 1)
        targets = torch.full_like(inputs, IGNORE_INDEX)
        targets[:, -1:] = value
        answer = torch.zeros_like(inputs, dtype=torch.bool)
        answer[:, -1] = True
        important = torch.zeros_like(answer).scatter_(1, p + 1, True)
        data = inputs != trigger
        data[:, -1] = False
        return TaskBatch(inputs, targets, answer, important, data, ~answer)


@dataclass(frozen=True)
class QueryCopying(Task):
    name: ClassVar[str] = "query_copying"
    seq_len: int = 64  # noise slots L; the body has L + n_keep + n_distractors positions
    n_classes: int = 2
    tokens_per_class: int = 4
    n_keep: int = 4
    n_distractors: int = 4

    # vocabulary layout: 0 noise | 1 marker | 2..2+K-1 query tokens | data tokens, class c = a block of C tokens
    @property
    def vocab_size(self) -> int:
        return 2 + self.n_classes + self.n_classes * self.tokens_per_class

    @property
    def total_len(self) -> int:
        return 1 + self.seq_len + self.n_keep + self.n_distractors + self.n_keep

    def validate(self) -> None:
        if self.n_classes < 2:
            raise ParameterError(
                f"task 'query_copying': n_classes={self.n_classes} is too small; allowed: >= 2 "
                "(with one class the query carries no information)"
            )
        if self.n_keep + self.n_distractors > self.seq_len:
            raise ParameterError(
                f"task 'query_copying': n_keep + n_distractors = {self.n_keep + self.n_distractors} data tokens for "
                f"seq_len={self.seq_len} noise positions; allowed: n_keep + n_distractors <= seq_len"
            )

    def draw_batch(self, batch_size: int, generator: torch.Generator) -> TaskBatch:
        B, L, K, C = batch_size, self.seq_len, self.n_classes, self.tokens_per_class
        keep, dis = self.n_keep, self.n_distractors
        n_data = keep + dis
        body = L + n_data
        data_base = 2 + K
        query = torch.randint(0, K, (B, 1), generator=generator)
        other = (query + torch.randint(1, K, (B, dis), generator=generator)) % K  # never the queried class
        classes = torch.cat([query.expand(B, keep), other], dim=1)  # (B, n_data)
        values = data_base + classes * C + torch.randint(0, C, (B, n_data), generator=generator)
        # shuffle the order of kept / distractor tokens, then scatter them into the body in that order
        order = torch.rand(B, n_data, generator=generator).argsort(dim=1)
        values, classes = values.gather(1, order), classes.gather(1, order)
        pos = 1 + _scatter_positions(B, body, n_data, generator)
        inputs = torch.zeros(B, self.total_len, dtype=torch.long)
        inputs[:, 0:1] = 2 + query
        inputs.scatter_(1, pos, values)
        inputs[:, 1 + body:] = 1
        kept = classes == query
        # the answers: kept values in order of position (stable sort puts kept tokens first, in order)
        rank = (~kept).to(torch.int8).argsort(dim=1, stable=True)[:, :keep]
        targets = torch.full_like(inputs, IGNORE_INDEX)
        targets[:, 1 + body:] = values.gather(1, rank)
        answer = torch.zeros_like(inputs, dtype=torch.bool)
        answer[:, 1 + body:] = True
        important = torch.zeros_like(answer).scatter_(1, pos, kept)
        data = torch.zeros_like(answer).scatter_(1, pos, True)
        context = ~answer
        context[:, 0] = False  # the query decides what matters; it is not context to be filtered
        return TaskBatch(inputs, targets, answer, important, data, context)


TASKS: dict[str, type[Task]] = {t.name: t for t in (SelectiveCopying, InductionHeads, QueryCopying)}


def make_task(task: str, **params: Any) -> Task:
    """Build a task by name; every parameter is checked before anything runs."""
    if not isinstance(task, str) or task not in TASKS:
        raise ParameterError(f"task={task!r} is unknown; allowed: {sorted(TASKS)}")
    cls = TASKS[task]
    allowed = {f.metadata.get("alias", f.name): f.name for f in fields(cls)}
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ParameterError(f"task {task!r}: unknown parameter(s) {unknown}; allowed: {sorted(allowed)}")
    return cls(**{allowed[k]: v for k, v in params.items()})
