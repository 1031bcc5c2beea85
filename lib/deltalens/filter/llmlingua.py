"""An LLMLingua-compatible shim: ``compress_prompt(context=[...], question=..., rate=... | target_token=...)`` on a
:class:`~.context_filter.ContextFilter`, returning LLMLingua's dict plus what LLMLingua does not return.

LLMLingua's ``PromptCompressor.compress_prompt`` joins instruction, context and question with blank lines and
returns ``compressed_prompt``, ``origin_tokens``, ``compressed_tokens``, ``ratio`` ("2.0x"), ``rate`` ("50.0%") and
``saving`` (its GPT-4 price line). This shim returns the same keys, computed the same way, and adds ``kept_ids``
(the kept contexts, in their order), ``scores`` and ``ranks`` (every context's), ``compressed_prompt_list`` (the kept
contexts) and ``settings``. Differences, on purpose: contexts are kept or left out whole (never cut inside, so code
stays code); token counts are in the filter's tokenizer (the target model's), never another one; ``target_token``
bounds the *whole* compressed prompt (instruction and question included) and is never exceeded, except by
``force_context_ids``.
"""

from __future__ import annotations

from ..core.params import ParameterError
from .context_filter import ContextFilter

SEPARATOR = "\n\n"


class PromptCompressor:
    """``PromptCompressor(filter)``: LLMLingua's call on a deltalens filter (any scorer)."""

    def __init__(self, context_filter: ContextFilter):
        if not isinstance(context_filter, ContextFilter):
            raise ParameterError(f"PromptCompressor takes a ContextFilter, not {type(context_filter).__name__}")
        self.filter = context_filter

    def compress_prompt(self, context: list[str] | str, instruction: str = "", question: str = "",
                        rate: float = 0.5, target_token: int = -1, force_context_ids: list[int] | None = None,
                        concate_question: bool = True, rank_method: str | None = None, **ignored) -> dict:
        """Keep the contexts the filter ranks first: ``rate`` of the contexts' tokens, or with ``target_token``
        a whole prompt of at most that many tokens (-1: unset, as in LLMLingua). ``rank_method`` (LLMLingua's ranking choice) is refused unless
        it names this filter's scorer: the scorer is chosen when the filter is built. Other LLMLingua options
        (token-level compression, dynamic ratios, ...) do not apply to whole-context filtering and are ignored."""
        contexts = [context] if isinstance(context, str) else list(context)
        if not all(isinstance(c, str) for c in contexts):
            raise ParameterError("compress_prompt: context must be a string or a list of strings")
        if rank_method is not None and rank_method != self.filter.scorer.name:
            raise ParameterError(f"compress_prompt: rank_method={rank_method!r}, but this filter scores with "
                                 f"{self.filter.scorer.name!r}; build the ContextFilter with the scorer you want")
        count = self.filter.counter.sizes
        head = [instruction] if instruction else []
        tail = [question] if question and concate_question else []
        origin = sum(count([SEPARATOR.join(head + contexts + tail)]))
        if target_token is not None and target_token != -1:  # -1: unset, as in LLMLingua
            fixed = sum(count([SEPARATOR.join(head + tail)])) if head or tail else 0
            # each kept context adds itself and one separator
            sep = count([SEPARATOR])[0] if self.filter.counter.tokenizer is not None else len(SEPARATOR)
            budget = {"budget_tokens": max(0, int(target_token) - fixed - sep * len(contexts))}
        else:
            budget = {"rate": rate}
        query = SEPARATOR.join([s for s in (instruction, question) if s])
        forced = list(force_context_ids or [])
        r = self.filter.filter(contexts, query, keep=forced, **budget)
        kept = list(r.kept)
        while True:  # pieces counted alone can tokenize differently once joined: the joined prompt is what counts
            compressed = SEPARATOR.join(head + [contexts[i] for i in kept] + tail)
            n = sum(count([compressed])) if compressed else 0
            droppable = [i for i in kept if i not in forced]
            if "budget_tokens" not in budget or n <= target_token or not droppable:
                break
            kept.remove(max(droppable, key=lambda i: r.ranks[i]))   # the worst-ranked kept context goes first
        kept_contexts = [contexts[i] for i in kept]
        ratio = 1 if n == 0 else origin / n
        return {"compressed_prompt": compressed, "compressed_prompt_list": kept_contexts, "origin_tokens": origin,
                "compressed_tokens": n, "ratio": f"{ratio:.1f}x", "rate": f"{1 / ratio * 100:.1f}%",
                "saving": f", Saving ${(origin - n) * 0.06 / 1000:.1f} in GPT-4.",
                "kept_ids": kept, "scores": r.scores, "ranks": r.ranks, "settings": r.scorer}
