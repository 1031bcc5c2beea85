"""Context-augmented training data for the local code LM: prompts laid out exactly like the evaluation prompts.

A plain code LM trained on short windows of single files never sees a prompt in which reading a preceding chunk
pays, so it ignores the chunks of an evaluation prompt — and its Δ has nothing to select. Here the project's own
context builder (:mod:`deltalens.context.build`, not a second one) makes code-completion samples from the *training*
corpus: standard-library packages (each one project) and installed distributions that the evaluation dataset does
not use. Every sample has chunks that define what its target line uses (relevant), chunks from imported modules
(related), unrelated chunks of the same project (distractors) and code of other projects (injected); it is laid out
by :func:`deltalens.lm.prompts.encode` in both prompt orders the extraction offers — headers + chunks, then the file
prefix and the target line — and becomes one training sequence.

Leak guard: a distribution the evaluation dataset uses is refused by name, and every file of the training samples
is checked against the evaluation distributions' files (same path or same bytes, as for the plain corpus); a hit
stops the build. ``held_out_fraction`` of the training projects (by the builder's split) are never trained on: the
context gain measured on them during training is a check on projects the model has not seen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..core.params import ParameterError, check_float, check_int
from ..lm.prompts import ORDERS, LayoutPolicy, encode
from .corpus import MIN_COPY_BYTES, ExclusionSet, normalise_name, stdlib_root

DEFAULT_BUILD = {"n_chunks": 8, "max_relevant": 2, "max_related": 2, "n_injected": 2, "chunk_chars": 600,
                 "min_chunk_chars": 80, "prefix_chars": 800, "suffix_chars": 0, "samples_per_project": 60,
                 "max_samples_per_file": 3}


@dataclass(frozen=True)
class ContextDataConfig:
    share: float = 0.0                          # share of training sequences that are prompts (0: a plain code LM)
    orders: tuple[str, ...] = ORDERS           # prompt orders, alternated
    stdlib_packages: tuple[str, ...] = ()      # standard-library packages, each one project
    installed: tuple[str, ...] = ()            # installed distributions, each one project (never evaluation ones)
    build: dict = field(default_factory=dict)  # context-builder parameters over DEFAULT_BUILD
    held_out_fraction: float = 0.2             # share of these projects never trained on (held-out context gain)
    query_chars: int = 800                     # query_first: characters of the prefix tail put first
    eval_samples: int = 48                     # held-out prompts for the context gain in training.json
    loss: str = "all"                          # all: every token of a prompt is scored; query: only the file prefix
                                               # and the target line (where reading the chunks pays)

    def __post_init__(self) -> None:
        where = "context"
        check_float("share", self.share, minimum=0, where=where)
        if self.share >= 1:
            raise ParameterError(f"{where}: parameter share={self.share}; allowed: 0 <= share < 1 (plain windows keep "
                                 "it a code LM)")
        for name in ("orders", "stdlib_packages", "installed"):
            value = getattr(self, name)
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
                raise ParameterError(f"{where}: parameter {name}={value!r}; allowed: a list of names")
            object.__setattr__(self, name, tuple(value))
        bad = [o for o in self.orders if o not in ORDERS]
        if bad or not self.orders:
            raise ParameterError(f"{where}: parameter orders={list(self.orders)!r}; allowed: a non-empty list of {list(ORDERS)}")
        if not isinstance(self.build, dict):
            raise ParameterError(f"{where}: parameter build={self.build!r}; allowed: a mapping of builder parameters")
        check_float("held_out_fraction", self.held_out_fraction, minimum=0, exclusive=True, where=where)
        if self.held_out_fraction >= 1:
            raise ParameterError(f"{where}: parameter held_out_fraction={self.held_out_fraction}; allowed: (0, 1)")
        check_int("query_chars", self.query_chars, minimum=0, where=where)
        check_int("eval_samples", self.eval_samples, minimum=1, where=where)
        if self.loss not in ("all", "query"):
            raise ParameterError(f"{where}: parameter loss={self.loss!r}; allowed: ['all', 'query']")
        if self.share > 0 and len(self.stdlib_packages) + len(self.installed) < 4:
            raise ParameterError(f"{where}: share={self.share} needs at least 4 projects (stdlib_packages + "
                                 "installed): two per split, so that injected chunks exist on both sides")

    @property
    def enabled(self) -> bool:
        return self.share > 0


def build_params(cfg: ContextDataConfig, excluded: list[str], seed: int):
    """The :class:`deltalens.context.build_params.BuildParams` of the training samples; refuses evaluation projects."""
    from ..context.build_params import BuildParams

    clash = sorted({normalise_name(d) for d in cfg.installed} & set(excluded))
    if clash:
        raise ParameterError(f"context: parameter installed lists {clash}, which the evaluation dataset uses "
                             f"(excluded: {excluded}); remove them")
    root = stdlib_root()
    dirs = []
    for pkg in cfg.stdlib_packages:
        d = root / pkg
        if not (d / "__init__.py").is_file():
            raise ParameterError(f"context: parameter stdlib_packages: {pkg!r} is not a package of {root}")
        dirs.append(str(d))
    kw = {**DEFAULT_BUILD, **cfg.build, "seed": seed, "installed": list(cfg.installed), "project_dirs": dirs,
          "repos_dirs": [], "test_fraction": cfg.held_out_fraction, "min_samples": 1, "min_projects": 4,
          "out": "unused"}
    return BuildParams.from_dict(kw)


def build_training_contexts(cfg: ContextDataConfig, excluded: list[str], seed: int, progress: bool = False):
    """The training code-completion samples (a :class:`ContextDataset`; split ``test`` = held-out projects), after
    the leak check of every file against the excluded (evaluation) distributions."""
    from ..context.build import build_dataset

    ds = build_dataset(build_params(cfg, excluded, seed), progress=progress)
    exclusion = ExclusionSet.build(excluded)
    hits = [(src["project"], f["path"], owner) for src in ds.manifest["sources"] for f in src["files"]
            if f["bytes"] >= MIN_COPY_BYTES and (owner := exclusion.digests.get(f["sha256"])) is not None]
    if hits:
        raise ParameterError(f"context: {len(hits)} training file(s) have the same bytes as files of evaluation "
                             f"distributions, e.g. {hits[:3]}; remove those projects")
    return ds


def context_sequences(ds, tokenizer, cfg: ContextDataConfig, max_tokens: int,
                      split: str = "dev") -> tuple[list[torch.Tensor], list[str], list[int]]:
    """(one 1-D token tensor per (sample of ``split``, order): the evaluation layout, at most ``max_tokens`` tokens —
    leading chunks dropped first, as the extraction truncates, then the prompt's start cut when even the query alone
    is too long —, the ids of the samples whose target line does not fit at all: left out and reported, and per
    sequence the first position whose token is scored: 0, or with ``loss: query`` the start of the file prefix)."""
    out, skipped, starts = [], [], []
    ids = ds.samples.loc[ds.samples["split"] == split, "sample_id"]
    for sid in ids:
        sample = ds.sample(sid)
        for order in cfg.orders:
            tokens, start = encode_prompt(tokenizer, sample, order, cfg.query_chars, max_tokens, cfg.loss)
            if tokens is None:
                skipped.append(f"{sid} ({order})")
                continue
            out.append(tokens)
            starts.append(start)
    return out, skipped, starts


def encode_prompt(tokenizer, sample: dict, order: str, query_chars: int, max_tokens: int,
                  loss: str = "all") -> tuple[torch.Tensor | None, int]:
    """(tokens, first scored position) of ``sample`` in the evaluation layout at most ``max_tokens`` long: leading
    chunks dropped first, as the extraction truncates, then the prompt's start cut; (None, 0) when the target line
    does not fit at all. The scored position is 0, or with ``loss: query`` the start of the file prefix."""
    for truncation in ("drop_chunks", "left"):
        try:
            enc = encode(tokenizer, sample, LayoutPolicy(order, query_chars, max_tokens, truncation))
        except ParameterError:
            continue
        return enc.input_ids[0], (enc.prefix_tokens[0] if loss == "query" and enc.prefix_tokens else 0)
    return None, 0


def summary(ds, seqs: list[torch.Tensor], skipped: list[str]) -> dict:
    """What the training samples hold (for training.json)."""
    counts = ds.manifest["counts"]
    return {"samples": int(len(ds)), "samples_per_split": counts["samples_per_split"], "skipped_too_long": skipped,
            "chunks_per_category": counts["chunks_per_category"], "projects": [s["project"] for s in ds.manifest["sources"]],
            "splits": ds.manifest["splits"], "sequences": len(seqs),
            "mean_tokens": float(sum(len(s) for s in seqs) / max(1, len(seqs))),
            "max_tokens": int(max((len(s) for s in seqs), default=0))}


def eval_project_files(dataset_dir: str | Path) -> set[str]:
    """sha256 of every file of an evaluation dataset (its manifest), for the leak tests."""
    import json

    from ..core.paths import resolve

    m = json.loads((resolve(dataset_dir) / "manifest.json").read_text())
    return {f["sha256"] for src in m["sources"] for f in src["files"] if f["bytes"] >= MIN_COPY_BYTES}
