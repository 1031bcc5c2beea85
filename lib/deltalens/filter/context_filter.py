"""``ContextFilter``: keep the context chunks of a prompt that a scorer ranks first, within a token budget counted in
the target model's tokenizer.

    from deltalens.filter import ContextFilter
    f = ContextFilter("delta", model="models/code-lm-hybrid-attnfirst", layer=3, statistic="mean", sign=-1)
    # or the choice notebook 04 made on dev:  f = ContextFilter.from_analysis("reports/analysis/metrics.json")
    r = f.filter(["def route(e): ...", {"text": "class Router: ...", "path": "app/router.py"}],
                 query="def handler(event):\n", rate=0.5)
    r.kept, r.scores, r.ranks, r.tokens_before, r.tokens_after, r.ratio, r.prompt

Whole chunks only: a chunk is kept or left out, never cut. The budget (``budget_tokens``, or ``rate`` x the tokens of
all chunks) is counted per chunk text, alone, in ``tokenizer`` (default: the scoring LM's; text scorers without one
count characters and take ``rate`` only) and never exceeded, except by the chunks a prompt forces (``keep``). The
rule: :func:`deltalens.filter.budget.select_within_budget`. Nothing is fetched at import or from the network: models
and tokenizers load from local folders (or the local Hugging Face cache).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..core.chunk_columns import DECIM, DELTA, HATTN, LOSS_GAIN, SELFINFO, ScoreColumn
from ..core.params import ParameterError, check_choice, check_float, check_int
from .budget import rank_order, select_within_budget
from .prompts import FilterPrompt, check_unique, make_prompt
from .scorers import LM_SCORERS, check_prompts, make_scorer

ORDERS = ("original", "score")   # the kept chunks in the prompt's order, or best first


@dataclass
class FilterResult:
    """One filtered prompt. Lists over *all* chunks (``scores``, ``ranks``, ``n_tokens``) are in the prompt's chunk
    order; ``kept`` / ``chunks`` are the kept ones in the requested ``order``."""

    id: str
    kept: list[int]                 # positions of the kept chunks
    chunks: list[str]               # their texts, in the same order
    scores: list[float | None]      # every chunk's score (None: the scorer could not see it, e.g. truncated away)
    ranks: list[int]                # every chunk's rank, 1 = considered first (NaN last, ties in chunk order)
    n_tokens: list[int]             # every chunk's size in ``unit``
    tokens_before: int              # all chunks
    tokens_after: int               # the kept chunks
    limit: float                    # the budget, in ``unit``
    ratio: float                    # tokens_after / tokens_before (1.0 when there is nothing to count)
    forced: list[int]               # chunks kept whatever the budget
    over_budget: bool               # the forced chunks alone exceed the limit
    unscored: list[int]             # chunks without a score
    unit: str                       # what the sizes count ("tokens: <tokenizer>" or "characters")
    prompt: str                     # the filtered prompt: the kept chunks in the prompt's order, then the query
    scorer: dict                    # the scorer's settings
    seconds: float                  # scoring and selection, per prompt (a batch's time shared by its prompts)

    def to_dict(self, timing: bool = True) -> dict:
        """A JSON-ready dict; without ``timing`` the same input gives the same dict, byte for byte once dumped."""
        d = asdict(self)
        if not timing:
            d.pop("seconds")
        return d


class TokenCounter:
    """Sizes of texts in a tokenizer's tokens (no special tokens), or in characters when there is none."""

    def __init__(self, tokenizer=None):
        if isinstance(tokenizer, (str, Path)):
            from transformers import AutoTokenizer

            try:
                tokenizer = AutoTokenizer.from_pretrained(str(tokenizer), local_files_only=True)
            except (OSError, ValueError) as e:
                raise ParameterError(f"parameter tokenizer={str(tokenizer)!r}: no tokenizer there (a local folder "
                                     f"with tokenizer files; nothing is downloaded) ({type(e).__name__})") from None
        self.tokenizer = tokenizer
        name = None if tokenizer is None else getattr(tokenizer, "name_or_path", None) or type(tokenizer).__name__
        self.unit = "characters" if tokenizer is None else f"tokens: {name}"

    def sizes(self, texts: list[str]) -> list[int]:
        if self.tokenizer is None:
            return [len(t) for t in texts]
        if not texts:
            return []
        return [len(ids) for ids in self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]]


class ContextFilter:
    """A context filter from a scorer name (:data:`deltalens.filter.scorers.SCORERS`) and its options, or a scorer
    object. ``tokenizer``: where the budget is counted (a tokenizer or a local folder; default: the scoring LM's)."""

    def __init__(self, scorer: str = "delta", model=None, *, tokenizer=None, **options):
        self.scorer = make_scorer(scorer, model, **options) if isinstance(scorer, str) else scorer
        self.counter = TokenCounter(tokenizer if tokenizer is not None else getattr(self.scorer, "tokenizer", None))
        self.chosen: dict | None = None  # set by from_analysis: the dev choice behind the scorer

    # ---- built from the analysis' dev choice ------------------------------------------------------------------------
    @classmethod
    def from_analysis(cls, metrics: str | Path, choice: str = "delta_best", run: str | None = None, model=None,
                      **options) -> "ContextFilter":
        """The filter notebook 04 chose on dev: ``choice`` is a kind (``delta_best``, ``delta_within``,
        ``delta_rule``, ``selfinfo``, ``hidden_attention``, ``baseline``, ``random``) or the exact name of a score
        in its table; ``run`` (default: the analysis' ``filter_run``) picks among the runs; ``model`` (default: the
        run's own model, with its prompt order and token limit) scores."""
        from ..core.paths import resolve

        path = resolve(metrics)
        if not path.is_file():
            raise ParameterError(f"from_analysis: {str(metrics)!r} does not exist (notebook 04 writes "
                                 "reports/analysis/metrics.json)")
        m = json.loads(path.read_text())
        run = run or m.get("params", {}).get("filter_run")
        choices = m.get("choices", [])
        named = [c for c in choices if c["name"] == choice]
        if named:
            picked = named
        else:
            picked = [c for c in choices if c.get("kind") == choice
                      and (ScoreColumn.try_parse(c["column"]) is None or ScoreColumn.parse(c["column"]).run == run)]
        if len(picked) != 1:
            listed = sorted({c.get("kind") for c in choices}) + sorted(c["name"] for c in choices)
            raise ParameterError(f"from_analysis: {len(picked)} choices match choice={choice!r}, run={run!r} in "
                                 f"{path}; a kind or a name of: {listed}")
        c = picked[0]
        scorer, opts = scorer_of_column(c["column"], c["sign"])
        if scorer in LM_SCORERS:
            if model is None:
                from ..extract.config import config_from_run

                cfg = config_from_run(m["params"]["runs"][ScoreColumn.parse(c["column"]).run])
                model = cfg.model
                opts.update(order=cfg.order, query_chars=cfg.query_chars, max_tokens=cfg.max_tokens)
        f = cls(scorer, model, **{**opts, **options})
        f.chosen = {"metrics": str(path), "name": c["name"], "kind": c.get("kind"), "column": c["column"],
                    "sign": c["sign"], "dev_auc": c.get("dev_auc"), "dev_sample_auc": c.get("dev_sample_auc"),
                    "chosen_by": c.get("chosen_by")}
        return f

    def settings(self) -> dict:
        s = dict(self.scorer.settings(), unit=self.counter.unit)
        if self.chosen is not None:
            s["chosen_on_dev"] = self.chosen
        return s

    # ---- filtering --------------------------------------------------------------------------------------------------
    def filter(self, chunks: list, query: str, *, budget_tokens: int | None = None, rate: float | None = None,
               order: str = "original", keep=(), id: str = "prompt", path: str | None = None,
               target: str | None = None) -> FilterResult:
        """Filter one prompt: ``chunks`` (texts, or ``{"text", "path"}`` dicts) for ``query``; exactly one of
        ``budget_tokens`` and ``rate`` (a share of the chunks' tokens)."""
        row = {"id": id, "query": query, "chunks": list(chunks), "keep": list(keep)}
        if path is not None:
            row["path"] = path
        if target is not None:
            row["target"] = target
        return self.filter_many([row], budget_tokens=budget_tokens, rate=rate, order=order)[0]

    def filter_many(self, prompts: list, *, budget_tokens: int | None = None, rate: float | None = None,
                    order: str = "original", batch_size: int = 8, progress: bool = False) -> list[FilterResult]:
        """Filter many prompts (:class:`~.prompts.FilterPrompt` or dicts of its schema), ``batch_size`` at a time
        through the scorer (an LM scorer's forwards are batched within its memory budget). Every prompt is checked
        before the first forward."""
        from tqdm.auto import tqdm

        budget = self.check_budget(budget_tokens, rate)
        check_choice("order", order, ORDERS)
        check_int("batch_size", batch_size, minimum=1)
        prompts = [make_prompt(p, f"prompts[{i}]") for i, p in enumerate(prompts)]
        check_unique(prompts)
        check_prompts(self.scorer.name, prompts)
        settings = self.settings()
        out = []
        bar = tqdm(total=len(prompts), desc=f"filter ({self.scorer.name})", unit="prompt", disable=not progress)
        for a in range(0, len(prompts), batch_size):
            batch = prompts[a:a + batch_size]
            t0 = time.perf_counter()
            scores = self.scorer.score(batch)
            results = [self._select(p, s, budget, order, settings) for p, s in zip(batch, scores)]
            share = (time.perf_counter() - t0) / len(batch)
            for r in results:
                r.seconds = round(share, 6)
            out += results
            bar.update(len(batch))
        bar.close()
        return out

    def check_budget(self, budget_tokens, rate) -> tuple[str, float]:
        if (budget_tokens is None) == (rate is None):
            raise ParameterError("filter: give exactly one of budget_tokens (in the target model's tokens) and rate "
                                 f"(a share of the chunks' tokens); got budget_tokens={budget_tokens!r}, rate={rate!r}")
        if rate is not None:
            rate = check_float("rate", rate, minimum=0.0)
            if rate > 1:
                raise ParameterError(f"parameter rate={rate!r}: expected a share 0 <= rate <= 1")
            return "rate", float(rate)
        if self.counter.tokenizer is None:
            raise ParameterError(f"filter: budget_tokens needs a tokenizer to count in; scorer "
                                 f"{self.scorer.name!r} has none: pass tokenizer=<the target model's tokenizer or "
                                 "folder>, or use rate")
        return "tokens", float(check_int("budget_tokens", budget_tokens, minimum=0))

    def _select(self, p: FilterPrompt, scores: np.ndarray, budget: tuple[str, float], order: str,
                settings: dict) -> FilterResult:
        from ..lm.prompts import layout

        scores = np.asarray(scores, float)
        if scores.shape != (len(p.chunks),):
            raise RuntimeError(f"scorer {self.scorer.name!r} returned {scores.shape} scores for prompt {p.id!r} with "
                               f"{len(p.chunks)} chunks")
        sizes = self.counter.sizes([c.text for c in p.chunks])
        total = int(sum(sizes))
        limit = budget[1] * total if budget[0] == "rate" else budget[1]
        kept = select_within_budget(scores, np.asarray(sizes, float), limit, forced=p.keep)
        ranking = rank_order(scores)
        ranks = np.empty(len(ranking), int)
        ranks[ranking] = np.arange(1, len(ranking) + 1)
        kept_list = sorted(kept) if order == "original" else [int(i) for i in ranking if int(i) in kept]
        after = int(sum(sizes[i] for i in kept))
        forced_size = sum(sizes[i] for i in p.keep)
        lp = layout(p.sample(), "context_first", drop=[i for i in range(len(p.chunks)) if i not in kept])
        return FilterResult(
            id=p.id, kept=kept_list, chunks=[p.chunks[i].text for i in kept_list],
            scores=[None if np.isnan(s) else float(s) for s in scores], ranks=[int(r) for r in ranks],
            n_tokens=[int(n) for n in sizes], tokens_before=total, tokens_after=after, limit=float(limit),
            ratio=after / total if total else 1.0, forced=list(p.keep), over_budget=forced_size > limit + 1e-9,
            unscored=[i for i, s in enumerate(scores) if np.isnan(s)], unit=self.counter.unit,
            prompt=lp.text[:lp.target_span[0]], scorer=settings, seconds=0.0)


def scorer_of_column(column: str, sign: float) -> tuple[str, dict]:
    """(scorer name, options) that compute a chunk-table column for a user's prompt. Within-prompt normalisations
    (rank, z) keep the order inside a prompt, so they filter as their base column does."""
    if column in ("bm25", "tfidf", "embedding"):
        return column, {"sign": sign}
    if column == "random":
        return "random", {}
    col = ScoreColumn.try_parse(column)
    if col is not None:
        col = col.base()
        if col.family == DELTA:
            return "delta", {"layer": col.layer, "statistic": col.stat, "sign": sign}
        if col.family == DECIM:
            return "decimation", {"layer": col.layer, "statistic": col.stat, "sign": sign}
        if col.family == HATTN and col.stat == "prefix_end":
            return "hidden_attention", {"layer": col.layer, "statistic": col.stat, "sign": sign}
        if col.family == SELFINFO:
            return "self_information", {"sign": sign}
        if col.family == LOSS_GAIN:
            return "leave_one_out", {"sign": sign}
    raise ParameterError(f"the score column {column!r} has no filter for a user's prompt (it reads the target line, "
                         "needs the dataset, or is a control); filters: Δ, DeciMamba decimation, hidden attention "
                         "from the prefix end, self-information, leave-one-out, BM25, TF-IDF, embedding, random")
