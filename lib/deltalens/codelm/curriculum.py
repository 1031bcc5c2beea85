"""The copying curriculum of the code LM (``curriculum:`` in ``params/codelm/*.yaml``): what share of the training
sequences teaches reading the context, annealed from the first step to the last toward plain code.

Each training sequence is one of (shares at training progress p in [0, 1], linear between ``[start, end]``):

* a **repeated span** (``spans``): code, a span of ``span_lengths`` tokens, other code (the distance), the same span
  again; scored on the repeat only (:func:`.recall.repeated_span`);
* a **repeated random span** (``random_spans``): the same with ``random_span_lengths`` tokens drawn uniformly from
  the vocabulary (special tokens excluded) — only the first occurrence predicts the repeat, so the loss is a pure
  copying signal: the induction task a small model learns in hundreds of steps, where copying code (whose bigrams
  already predict much of a repeat) takes far longer;
* **identifier pairs** (``pairs``): MQAR in code form, ``key = value`` lines of fresh names then ``assert key ==
  value`` for some keys; scored from the first queried value on (:func:`.recall.identifier_pairs`);
* a **prompt** (``context.share``, as without a curriculum), laid out like the evaluation prompts; a share
  ``renamed`` of them has the names its target line takes from its chunks renamed to fresh names
  (:func:`.recall.rename_sample`), new names at every draw, so they can only be copied, never memorised;
* else a **plain code window** (scored everywhere): what keeps it a code LM.

Every draw comes from the trainer's seeded generator, so a run is a function of its parameters. Renamed prompts are
built from the training projects' dev split only, like the plain prompts (the leak guard of :mod:`.context_data`).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

import torch

from ..core.params import ParameterError, check_int
from .context_data import encode_prompt

SHARES = ("renamed", "spans", "pairs", "random_spans")
MIXTURE = ("spans", "pairs", "random_spans")  # shares of all sequences (renamed is a share of the prompts)


@dataclass(frozen=True)
class CurriculumConfig:
    renamed: tuple[float, float] = (0.0, 0.0)  # share of the prompts renamed, at the first and at the last step
    spans: tuple[float, float] = (0.0, 0.0)    # share of all sequences that are repeated spans
    pairs: tuple[float, float] = (0.0, 0.0)    # share of all sequences that are identifier pairs
    span_lengths: tuple[int, ...] = (8, 16, 32, 64)  # tokens of a repeated span (drawn uniformly)
    pairs_range: tuple[int, int] = (8, 32)     # key-value pairs per sequence (drawn uniformly in this range)
    random_spans: tuple[float, float] = (0.0, 0.0)  # share of all sequences that are repeated random-token spans
    random_span_lengths: tuple[int, ...] = (32, 64, 128, 256)  # tokens of a random span (drawn uniformly)

    def __post_init__(self) -> None:
        where = "curriculum"
        for name in SHARES:
            v = getattr(self, name)
            if (not isinstance(v, (list, tuple)) or len(v) != 2
                    or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and 0 <= x <= 1 for x in v)):
                raise ParameterError(f"{where}: parameter {name}={v!r}; allowed: [start, end], two shares in [0, 1]")
            object.__setattr__(self, name, (float(v[0]), float(v[1])))
        for end in (0, 1):
            total = sum(getattr(self, n)[end] for n in MIXTURE)
            if total >= 1:
                raise ParameterError(f"{where}: {' + '.join(MIXTURE)} = {total:g} at the "
                                     f"{'first' if end == 0 else 'last'} step; allowed: < 1")
        for name in ("span_lengths", "random_span_lengths"):
            v = getattr(self, name)
            if not isinstance(v, (list, tuple)) or not v:
                raise ParameterError(f"{where}: parameter {name}={v!r}; allowed: a non-empty list of token counts")
            for x in v:
                check_int(name, x, minimum=1, where=where)
            object.__setattr__(self, name, tuple(v))
        r = self.pairs_range
        if not isinstance(r, (list, tuple)) or len(r) != 2:
            raise ParameterError(f"{where}: parameter pairs_range={r!r}; allowed: [min, max] pairs")
        for x in r:
            check_int("pairs_range", x, minimum=1, where=where)
        if r[0] > r[1]:
            raise ParameterError(f"{where}: parameter pairs_range={list(r)}; allowed: min <= max")
        object.__setattr__(self, "pairs_range", tuple(r))

    @property
    def enabled(self) -> bool:
        return any(any(getattr(self, n)) for n in SHARES)

    def at(self, progress: float) -> dict[str, float]:
        """The three shares at training progress ``progress`` (0: first step, 1: last), linear in between."""
        p = min(max(progress, 0.0), 1.0)
        return {n: getattr(self, n)[0] + (getattr(self, n)[1] - getattr(self, n)[0]) * p for n in SHARES}

    def content(self) -> dict:
        d = {k: list(v) for k, v in asdict(self).items()}
        if not any(self.random_spans):  # a curriculum without random spans keeps the key it had before they existed
            d.pop("random_spans")
            d.pop("random_span_lengths")
        return d


@dataclass
class Scored:
    """One training sequence: ``tokens`` (1-D, at most seq_len + 1) scored on targets ``tokens[start:end]``."""
    tokens: torch.Tensor
    start: int
    end: int
    kind: str


class CurriculumSampler:
    """Draws the training sequences of one step (see the module docstring); ``counts`` tallies the kinds drawn."""

    def __init__(self, cfg: CurriculumConfig, stream: torch.Tensor, prompts: list[tuple[dict, str]], tokenizer,
                 share: float, seq_len: int, query_chars: int, loss: str, gen: torch.Generator):
        if not prompts and share > 0:
            raise ParameterError("curriculum: no training prompt to draw (context.share > 0)")
        self.cfg, self.stream, self.prompts, self.tokenizer = cfg, stream, prompts, tokenizer
        self.share, self.seq_len, self.query_chars, self.loss, self.gen = share, seq_len, query_chars, loss, gen
        self.counts: dict[str, int] = {}
        self.rename_failures = 0
        self._ids: torch.Tensor | None = None  # the random spans' ids, made at the first random span

    def _uniform(self) -> float:
        return float(torch.rand((), generator=self.gen))

    def _int(self, n: int) -> int:
        return int(torch.randint(n, (), generator=self.gen))

    def draw(self, progress: float) -> Scored:
        from .recall import identifier_pairs, random_token_ids, rename_sample

        shares = self.cfg.at(progress)
        u = self._uniform()
        n = self.seq_len
        if u < shares["spans"]:
            return self._count(self._repeat(self.cfg.span_lengths, None, "span"))
        if u < shares["spans"] + shares["random_spans"]:
            if self._ids is None:
                self._ids = random_token_ids(self.tokenizer)
            return self._count(self._repeat(self.cfg.random_span_lengths, self._ids, "random_span"))
        if u < shares["spans"] + shares["random_spans"] + shares["pairs"]:
            rng = random.Random(self._int(2 ** 31))
            lo, hi = self.cfg.pairs_range
            k = rng.randint(lo, hi)
            text, spans = identifier_pairs(k, k, rng)
            enc = self.tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
            ids = enc["input_ids"][:n + 1]
            first = next((i for i, (s, e) in enumerate(enc["offset_mapping"]) if s >= spans[0][0]), len(ids))
            return self._count(Scored(torch.tensor(ids), min(first, len(ids) - 1), len(ids), "pairs"))
        if self.prompts and u < shares["spans"] + shares["random_spans"] + shares["pairs"] + self.share:
            sample, order = self.prompts[self._int(len(self.prompts))]
            kind = "prompt"
            if self._uniform() < shares["renamed"]:
                renamed = rename_sample(sample, random.Random(self._int(2 ** 31)))
                if renamed is None:
                    self.rename_failures += 1
                else:
                    sample, kind = renamed.sample, "renamed"
            tokens, start = encode_prompt(self.tokenizer, sample, order, self.query_chars, n + 1, self.loss)
            if tokens is not None:
                return self._count(Scored(tokens, start, tokens.numel(), kind))
        hi = self.stream.numel() - n - 1
        s = self._int(hi + 1)
        return self._count(Scored(self.stream[s:s + n + 1], 0, n + 1, "plain"))

    def _repeat(self, lengths: tuple[int, ...], random_ids: torch.Tensor | None, kind: str) -> Scored:
        """A span of one of ``lengths`` tokens (code, or ``random_ids``) repeated at a drawn distance, scored on
        the repeat (:func:`.recall.repeated_span`)."""
        from .recall import repeated_span

        n = self.seq_len
        span = min(lengths[self._int(len(lengths))], (n - 1) // 3)
        distance = 1 + self._int(max(1, n - 2 * span - 1))
        seq, a, b = repeated_span(self.stream, span, distance, n, self.gen, random_ids)
        return Scored(seq, a, b, kind)

    def _count(self, s: Scored) -> Scored:
        self.counts[s.kind] = self.counts.get(s.kind, 0) + 1
        return s
