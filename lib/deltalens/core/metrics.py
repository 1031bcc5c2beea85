"""Metrics shared by every notebook: ROC-AUC (scikit-learn), bootstrap intervals, CatBoost probes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import accuracy_score, average_precision_score, roc_auc_score, roc_curve

from .bootstrap import cluster_resamples, interval


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC-AUC, or NaN when only one class is present (e.g. 'data tokens' of Selective Copying are all important)."""
    labels = np.asarray(labels).astype(bool)
    if labels.all() or not labels.any():
        return float("nan")
    return float(roc_auc_score(labels, scores))


def roc(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    fpr, tpr, _ = roc_curve(np.asarray(labels).astype(bool), scores)
    return fpr, tpr


def pr_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """PR-AUC (average precision), or NaN when there is no positive; its chance level is the positive share."""
    labels = np.asarray(labels).astype(bool)
    if not labels.any():
        return float("nan")
    return float(average_precision_score(labels, scores))


def bootstrap_auc(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray, n: int = 200, seed: int = 0) -> tuple[float, float]:
    """95 % interval of ROC-AUC, resampling whole groups (sequences / samples), not tokens."""
    return bootstrap_ci(auc, labels, scores, groups, n, seed)


def bootstrap_ci(metric, labels: np.ndarray, scores: np.ndarray, groups: np.ndarray, n: int = 200, seed: int = 0) -> tuple[float, float]:
    """95 % percentile interval of ``metric(labels, scores)``, resampling whole groups (sequences / samples) with
    :func:`~deltalens.core.bootstrap.cluster_resamples`; resamples where the metric is NaN are left out."""
    labels, scores, groups = map(np.asarray, (labels, scores, groups))
    weights = cluster_resamples(groups, n_boot=n, seed=seed).row_weights(groups)  # (n, n_rows)
    rows = np.arange(len(groups))
    values = np.array([metric(labels[idx], scores[idx]) for idx in (np.repeat(rows, w) for w in weights)])
    return interval(values)


@dataclass
class ProbeResult:
    accuracy: float
    auc: float
    majority_accuracy: float  # accuracy of always predicting the majority class: what accuracy must beat
    proba: np.ndarray  # held-out P(important)


def catboost_probe(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_test: np.ndarray,
    y_test: np.ndarray,
    cat_features: list[int] | None = None,
    iterations: int = 200,
    seed: int = 0,
    threads: int = 2,
) -> ProbeResult:
    """Fit CatBoost on training sequences' tokens, report accuracy and ROC-AUC on held-out sequences' tokens."""
    from catboost import CatBoostClassifier

    y_train = np.asarray(y_train).astype(int)
    y_test = np.asarray(y_test).astype(int)
    majority = float(max(y_test.mean(), 1 - y_test.mean()))
    if len(np.unique(y_train)) < 2:
        return ProbeResult(float("nan"), float("nan"), majority, np.full(len(y_test), float(y_train[0])))
    clf = CatBoostClassifier(
        iterations=iterations, depth=6, learning_rate=0.1, random_seed=seed, thread_count=threads,
        verbose=False, allow_writing_files=False,
    )
    clf.fit(X_train, y_train, cat_features=cat_features)
    proba = clf.predict_proba(X_test)[:, 1]
    return ProbeResult(float(accuracy_score(y_test, proba > 0.5)), auc(y_test, proba), majority, proba)
