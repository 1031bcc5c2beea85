"""A context filter inside the retrieval frameworks people use: a LangChain document compressor and a LlamaIndex
node postprocessor. Each is built on demand (the framework is imported only then; neither is needed by deltalens).

    from deltalens.filter import ContextFilter
    from deltalens.filter.adapters import langchain_compressor, llamaindex_postprocessor
    f = ContextFilter("bm25", tokenizer="models/code-lm-hybrid-attnfirst")
    compressor = langchain_compressor(f, rate=0.5)        # ContextualCompressionRetriever(base_compressor=compressor, ...)
    post = llamaindex_postprocessor(f, budget_tokens=512)  # index.as_query_engine(node_postprocessors=[post])

Both return the caller's own documents / nodes, the kept ones only, in their original order (or best first with
``order="score"``): LangChain documents as copies whose metadata gains ``deltalens_score``, ``deltalens_rank`` and
``deltalens_index`` (the input is never modified); LlamaIndex nodes as the same node objects in new
``NodeWithScore`` wrappers whose score is the filter's. A document's path for the layout header is its
``metadata["source"]`` (LangChain's loaders) or ``metadata["file_path"]`` (LlamaIndex's readers), when present.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from ..core.params import ParameterError
from .context_filter import ContextFilter
from .prompts import DEFAULT_CHUNK_PATH


def _path(metadata: dict) -> str:
    return str(metadata.get("source") or metadata.get("file_path") or DEFAULT_CHUNK_PATH)


def _budget(rate, budget_tokens) -> dict:
    return {"rate": rate} if budget_tokens is None else {"budget_tokens": budget_tokens}


def _check(context_filter) -> None:
    if not isinstance(context_filter, ContextFilter):
        raise ParameterError(f"expected a deltalens ContextFilter, got {type(context_filter).__name__}")


@lru_cache(maxsize=1)
def _langchain_class():
    try:
        from langchain_core.documents import BaseDocumentCompressor
    except ImportError:
        raise ImportError("the LangChain adapter needs langchain-core (pip install langchain-core)") from None

    class DeltaLensCompressor(BaseDocumentCompressor):
        """Keeps the documents a deltalens ContextFilter ranks first, within its budget."""

        model_config = {"arbitrary_types_allowed": True}
        context_filter: Any
        rate: float | None = None
        budget_tokens: int | None = None
        order: str = "original"

        def compress_documents(self, documents, query: str, callbacks=None):
            docs = list(documents)
            chunks = [{"text": d.page_content, "path": _path(d.metadata)} for d in docs]
            r = self.context_filter.filter(chunks, query, order=self.order, **_budget(self.rate, self.budget_tokens))
            return [docs[i].model_copy(update={"metadata": {**docs[i].metadata, "deltalens_score": r.scores[i],
                                                             "deltalens_rank": r.ranks[i], "deltalens_index": i}})
                    for i in r.kept]

    return DeltaLensCompressor


def langchain_compressor(context_filter: ContextFilter, *, rate: float | None = None,
                         budget_tokens: int | None = None, order: str = "original"):
    """A LangChain ``BaseDocumentCompressor`` around ``context_filter`` (exactly one of ``rate`` and
    ``budget_tokens``, as :meth:`ContextFilter.filter`)."""
    _check(context_filter)
    context_filter.check_budget(budget_tokens, rate)
    return _langchain_class()(context_filter=context_filter, rate=rate, budget_tokens=budget_tokens, order=order)


@lru_cache(maxsize=1)
def _llamaindex_class():
    try:
        from llama_index.core.postprocessor.types import BaseNodePostprocessor
        from llama_index.core.schema import NodeWithScore
    except ImportError:
        raise ImportError("the LlamaIndex adapter needs llama-index-core (pip install llama-index-core)") from None

    class DeltaLensPostprocessor(BaseNodePostprocessor):
        """Keeps the nodes a deltalens ContextFilter ranks first, within its budget."""

        model_config = {"arbitrary_types_allowed": True}
        context_filter: Any
        rate: float | None = None
        budget_tokens: int | None = None
        order: str = "original"

        @classmethod
        def class_name(cls) -> str:
            return "DeltaLensPostprocessor"

        def _postprocess_nodes(self, nodes, query_bundle=None):
            if query_bundle is None:
                raise ParameterError("DeltaLensPostprocessor needs the query (query_bundle or query_str)")
            nodes = list(nodes)
            chunks = [{"text": n.node.get_content(), "path": _path(n.node.metadata)} for n in nodes]
            r = self.context_filter.filter(chunks, query_bundle.query_str, order=self.order,
                                           **_budget(self.rate, self.budget_tokens))
            return [NodeWithScore(node=nodes[i].node, score=r.scores[i]) for i in r.kept]

    return DeltaLensPostprocessor


def llamaindex_postprocessor(context_filter: ContextFilter, *, rate: float | None = None,
                             budget_tokens: int | None = None, order: str = "original"):
    """A LlamaIndex ``BaseNodePostprocessor`` around ``context_filter`` (exactly one of ``rate`` and
    ``budget_tokens``)."""
    _check(context_filter)
    context_filter.check_budget(budget_tokens, rate)
    return _llamaindex_class()(context_filter=context_filter, rate=rate, budget_tokens=budget_tokens, order=order)
