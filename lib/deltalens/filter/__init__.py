"""Δ as a tool: filter the context chunks of a user's own prompts with any scorer the study compares.

Modules: :mod:`.context_filter` (``ContextFilter``: ``filter`` / ``filter_many`` / ``from_analysis``, and the
``FilterResult``), :mod:`.scorers` (Δ statistics, DeciMamba's decimation, hidden attention, self-information,
leave-one-out, BM25, TF-IDF, embedding, random), :mod:`.budget` (the one rule of what fits a token budget, also
part 4's), :mod:`.prompts` (the prompt schema and its JSONL file, checked line by line), :mod:`.cli`
(``python -m deltalens.filter``: resumable, append-only), :mod:`.llmlingua` (LLMLingua's ``compress_prompt`` call
on any filter, its dict plus the kept ids), :mod:`.adapters` (a LangChain document compressor and a LlamaIndex node
postprocessor, each framework imported only when its adapter is built).

    from deltalens.filter import ContextFilter
    f = ContextFilter.from_analysis("reports/analysis/metrics.json")     # the Δ score notebook 04 chose on dev
    r = f.filter(chunks, query=prefix, rate=0.5)                          # r.kept, r.scores, r.ranks, r.prompt, ...

May import: ``core``, ``delta``, ``context``, ``lm``, ``extract``.
"""

from .budget import rank_order, select_within_budget
from .context_filter import ContextFilter, FilterResult, TokenCounter, scorer_of_column
from .prompts import Chunk, FilterPrompt, PromptError, make_prompt, read_prompts
from .scorers import LM_SCORERS, SCORERS, TEXT_SCORERS, make_scorer

__all__ = ["ContextFilter", "FilterResult", "TokenCounter", "scorer_of_column", "select_within_budget",
           "rank_order", "Chunk", "FilterPrompt", "PromptError", "make_prompt", "read_prompts", "SCORERS",
           "LM_SCORERS", "TEXT_SCORERS", "make_scorer"]
