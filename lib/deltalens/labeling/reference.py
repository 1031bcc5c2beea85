"""Reference (non-generative) labelers: a similarity score per chunk, thresholded into relevant / not relevant.

The scores come from :func:`deltalens.core.similarity.score_dataset` (BM25, TF-IDF, embedding cosine). For each method
one threshold is chosen on the ``fit_split`` (dev) rows only, against the ground truth relevant =
``category == "relevant"``, as the threshold of best F1 (:func:`choose_threshold`); it is then applied unchanged to
every row, so the test split is labelled by a rule that never saw its ground truth.

    from deltalens.core.similarity import score_dataset
    from deltalens.labeling.reference import reference_labels
    labels, thresholds = reference_labels(score_dataset(ds))
"""

from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from ..core.params import ParameterError
from ..core.similarity import METHOD_MODELS, METHODS
from .base import LABEL_COLUMNS

KIND = "reference"
STATUS = "reference"
SCORE_KEY_COLUMNS = ("sample_id", "chunk_index", "split", "category")


def choose_threshold(scores, labels) -> float:
    """The score threshold of best F1 for the rule ``relevant = score >= threshold``.

    Candidate thresholds and their precision / recall come from ``sklearn.metrics.precision_recall_curve``;
    F1 = 2PR / (P + R) (0 where P + R = 0). Among thresholds with the best F1 the highest is taken (fewer positives
    for the same F1). Raises ``ValueError`` for different lengths, no rows, non-finite scores or no positive label.
    """
    from sklearn.metrics import precision_recall_curve

    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel()
    if s.shape != y.shape:
        raise ValueError(f"choose_threshold: {s.size} scores but {y.size} labels")
    if s.size == 0:
        raise ValueError("choose_threshold: no rows")
    if not np.isfinite(s).all():
        raise ValueError(f"choose_threshold: {int((~np.isfinite(s)).sum())} score(s) are NaN or infinite")
    y = y.astype(bool)
    if not y.any():
        raise ValueError("choose_threshold: no positive label (F1 is undefined)")
    precision, recall, thresholds = precision_recall_curve(y, s)
    precision, recall = precision[:-1], recall[:-1]  # the last point (recall 0) has no threshold
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    best = np.flatnonzero(f1 >= f1.max() - 1e-12)  # equal F1 up to rounding
    return float(thresholds[best].max())


def _check_scores(scores: pd.DataFrame, methods: Iterable[str] | None) -> tuple[str, ...]:
    missing = [c for c in SCORE_KEY_COLUMNS if c not in scores.columns]
    if missing:
        raise ParameterError(f"reference_labels: the scores frame lacks column(s) {missing} "
                             f"(expected the output of deltalens.core.similarity.score_dataset)")
    available = [c for c in scores.columns if c not in SCORE_KEY_COLUMNS]
    if methods is None:
        methods = [m for m in METHODS if m in scores.columns]
        if not methods:
            raise ParameterError(f"reference_labels: the scores frame has no method column; allowed: {list(METHODS)}")
    elif isinstance(methods, str):
        methods = [methods]
    methods = tuple(dict.fromkeys(methods))
    if not methods:
        raise ParameterError(f"reference_labels: parameter methods=() is empty; allowed: a subset of {available}")
    for m in methods:
        if m not in available:
            raise ParameterError(f"reference_labels: parameter methods has {m!r}, which is not a score column; "
                                 f"allowed: {available}")
    return methods


def reference_labels(scores: pd.DataFrame, methods: str | Iterable[str] | None = None, fit_split: str = "dev",
                     models: Mapping[str, str] | None = None) -> tuple[pd.DataFrame, dict[str, float]]:
    """Threshold each method's score into labels: ``(labels, thresholds)``.

    ``scores``: the frame of :func:`deltalens.core.similarity.score_dataset` (``sample_id, chunk_index, split, category``
    and one column per method). ``methods``: the score columns to use (default: all of bm25 / tfidf / embedding
    present). The threshold of each method is :func:`choose_threshold` on the rows with ``split == fit_split`` only,
    with ground truth ``category == "relevant"``; it is applied to every row (``label = score >= threshold``).

    ``labels`` has exactly the columns of :data:`~deltalens.labeling.base.LABEL_COLUMNS`, one row per (method, chunk),
    methods in the given order and chunks in the order of ``scores``: labeler = the method, kind = 'reference',
    model = ``models[method]`` or ``scores.attrs['models'][method]`` or the method's default ('rank-bm25 BM25Okapi',
    'tfidf', the embedding model name), template = '', label (pandas 'boolean'; <NA> where the score is NaN),
    confidence NaN, score, status = 'reference'. ``thresholds`` maps method -> threshold.

    Raises :class:`~deltalens.core.params.ParameterError` (a ``ValueError``) for an unknown method, and when the fit split
    has no rows or no relevant chunk.
    """
    methods = _check_scores(scores, methods)
    fit = (scores["split"] == fit_split).to_numpy()
    if not fit.any():
        raise ParameterError(f"reference_labels: fit_split={fit_split!r} has no rows; splits in the scores: "
                             f"{sorted(scores['split'].unique().tolist())}")
    truth = (scores["category"] == "relevant").to_numpy()
    if not truth[fit].any():
        raise ParameterError(f"reference_labels: fit_split={fit_split!r} has no relevant chunk "
                             f"({int(fit.sum())} rows), so no threshold can be chosen on it")
    model_of = {**METHOD_MODELS, **scores.attrs.get("models", {}), **(models or {})}

    thresholds: dict[str, float] = {}
    frames = []
    for m in methods:
        values = scores[m].to_numpy(dtype=np.float64)
        try:
            thresholds[m] = choose_threshold(values[fit], truth[fit])
        except ValueError as e:
            raise ParameterError(f"reference_labels: method {m!r} on fit_split={fit_split!r}: {e}") from None
        label = pd.array(values >= thresholds[m], dtype="boolean")
        label[np.isnan(values)] = pd.NA  # no score, no label
        frames.append(pd.DataFrame({
            "labeler": m,
            "kind": KIND,
            "model": model_of.get(m, m),
            "template": "",
            "sample_id": scores["sample_id"].to_numpy(dtype=object),
            "chunk_index": scores["chunk_index"].to_numpy(dtype=np.int64),
            "label": label,
            "confidence": np.nan,
            "score": values,
            "status": STATUS,
        }, columns=list(LABEL_COLUMNS)))
    labels = pd.concat(frames, ignore_index=True)
    return labels, thresholds
