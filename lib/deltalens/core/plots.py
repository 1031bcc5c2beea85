"""Figures: Δ map, token diagram, ROC curves, training curve. Each returns a matplotlib Figure; ``save`` writes PNG."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

IMPORTANT_COLOR = "#f5c518"


def save(fig: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def delta_map(delta: np.ndarray, tokens: np.ndarray, important: np.ndarray, title: str = "") -> plt.Figure:
    """Δ of one sequence and one layer: token position down, every Δ channel across (no averaging).

    Rows of important tokens are marked in yellow on the left edge."""
    L, D = delta.shape
    fig, ax = plt.subplots(figsize=(min(14, 3 + D / 16), min(12, 2 + L / 6)))
    sns.heatmap(delta, ax=ax, cmap="viridis", cbar_kws={"label": "Δ"}, xticklabels=max(1, D // 16), yticklabels=False)
    for t in np.flatnonzero(important):
        ax.add_patch(plt.Rectangle((-max(1, D / 40), t), max(1, D / 40), 1, color=IMPORTANT_COLOR, clip_on=False))
    ax.set_yticks(np.arange(L) + 0.5)
    ax.set_yticklabels([f"{i}:{tok}" for i, tok in enumerate(tokens)], fontsize=6)
    ax.set_xlabel("Δ channel (d_inner)")
    ax.set_ylabel("position:token (yellow = important)")
    ax.set_title(title)
    return fig


def token_diagram(delta: np.ndarray, tokens: np.ndarray, important: np.ndarray, title: str = "") -> plt.Figure:
    """Three aligned rows: tokens (important highlighted), mean Δ per token, max Δ per token."""
    L = len(tokens)
    fig, axes = plt.subplots(3, 1, figsize=(min(16, 2 + L / 4), 5), sharex=True, gridspec_kw={"height_ratios": [1, 2, 2]})
    ax = axes[0]
    for i, tok in enumerate(tokens):
        ax.add_patch(plt.Rectangle((i - 0.5, 0), 1, 1, color=IMPORTANT_COLOR if important[i] else "#eeeeee", ec="white"))
        ax.text(i, 0.5, str(tok), ha="center", va="center", fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_yticks([])
    ax.set_ylabel("token")
    colors = [IMPORTANT_COLOR if imp else "#4c72b0" for imp in important]
    axes[1].bar(np.arange(L), delta.mean(1), color=colors)
    axes[1].set_ylabel("mean Δ")
    axes[2].bar(np.arange(L), delta.max(1), color=colors)
    axes[2].set_ylabel("max Δ")
    axes[2].set_xlabel("position")
    axes[2].set_xlim(-0.5, L - 0.5)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def roc_plot(curves: dict[str, tuple[np.ndarray, np.ndarray, float]], title: str = "") -> plt.Figure:
    fig, ax = plt.subplots(figsize=(6, 6))
    for name, (fpr, tpr, a) in curves.items():
        style = "--" if name.startswith(("control", "CatBoost control")) else "-"
        ax.plot(fpr, tpr, style, label=f"{name} (AUC {a:.3f})", lw=1.2)
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(fontsize=6, loc="lower right")
    return fig


def training_curve(curve: pd.DataFrame | dict[int, pd.DataFrame], target: float, title: str = "") -> plt.Figure:
    """Train-batch and held-out loss per step; a dict {seed: curve} draws every seed in its own colour."""
    curves = curve if isinstance(curve, dict) else {None: curve}
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for i, (seed, c) in enumerate(curves.items()):
        tag = "" if seed is None else f" (seed {seed})"
        ax.semilogy(c.step, c.train_loss, lw=0.6, alpha=0.4, color=f"C{i}", label=f"train batch{tag}")
        ev = c.dropna(subset=["eval_loss"])
        ax.semilogy(ev.step, ev.eval_loss, "o-", ms=2, color=f"C{i}", label=f"held-out{tag}")
    ax.axhline(target, color="red", ls="--", lw=0.8, label=f"target {target:.0e}")
    ax.set_xlabel("step")
    ax.set_ylabel("answer cross-entropy")
    ax.set_title(title)
    ax.legend(fontsize=7)
    return fig


def auc_bars(aucs: pd.DataFrame, probes: pd.DataFrame, population: str, title: str = "") -> plt.Figure:
    """Δ-score AUCs per layer next to the control and probe AUCs for one population."""
    sub = aucs[aucs.population == population].dropna(subset=["auc"])
    pr = probes[probes.population == population].dropna(subset=["auc"])
    fig, ax = plt.subplots(figsize=(8, 3.5))
    if len(sub):
        sns.barplot(data=sub, x="score", y="auc", hue="layer", ax=ax)
    for i, (_, r) in enumerate(pr.iterrows()):
        ax.axhline(r.auc, ls=["--", ":", "-.", "-"][i % 4], lw=1, color=f"C{i + 4}", label=f"{r.features}: {r.auc:.3f}")
    ax.set_ylim(0.0, 1.02)
    ax.set_title(title)
    ax.legend(fontsize=6, loc="lower right")
    return fig


# ---- labeling (notebook 02) ------------------------------------------------------------------------------------
def confusion_grid(confusions: dict[str, np.ndarray], title: str = "") -> plt.Figure:
    """One 2x2 confusion matrix per labeler (rows: ground truth, columns: label), counts and row shares."""
    n = max(1, len(confusions))
    cols = min(4, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, (name, cm) in zip(axes.flat, confusions.items()):
        share = cm / np.maximum(1, cm.sum(axis=1, keepdims=True))
        annot = np.array([[f"{cm[i, j]}\n{share[i, j]:.0%}" for j in range(2)] for i in range(2)])
        sns.heatmap(share, annot=annot, fmt="", cmap="Blues", vmin=0, vmax=1, cbar=False, ax=ax,
                    xticklabels=["not rel.", "relevant"], yticklabels=["not rel.", "relevant"])
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("label")
        ax.set_ylabel("ground truth")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def category_bars(per_category: pd.DataFrame, title: str = "") -> plt.Figure:
    """Share of chunks labeled relevant per chunk category, one bar group per labeler."""
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * per_category["labeler"].nunique() + 3), 3.8))
    sns.barplot(per_category, x="labeler", y="labeled_relevant", hue="category", ax=ax)
    ax.set_ylabel("share labeled relevant")
    ax.set_ylim(0, 1)
    ax.set_xlabel("")
    ax.tick_params(axis="x", rotation=20)
    ax.set_title(title)
    ax.legend(title="category", fontsize=8, bbox_to_anchor=(1.01, 1), loc="upper left")
    return fig


def kappa_heatmap(kappa: pd.DataFrame, title: str = "") -> plt.Figure:
    """Cohen's kappa between labelers and the ground truth."""
    fig, ax = plt.subplots(figsize=(1.0 * len(kappa) + 2.5, 0.8 * len(kappa) + 1.5))
    sns.heatmap(kappa.astype(float), annot=True, fmt=".2f", cmap="RdBu_r", vmin=-1, vmax=1, ax=ax, square=True)
    ax.set_title(title)
    return fig


# ---- main analysis (notebook 04) -------------------------------------------------------------------------------------
def auc_by_layer_plot(aucs: pd.DataFrame, title: str = "") -> plt.Figure:
    """Raw ROC-AUC of each Δ statistic by layer, one panel per extraction run (model x prompt order)."""
    runs = list(dict.fromkeys(aucs["run"]))
    fig, axes = plt.subplots(1, len(runs), figsize=(5 * len(runs), 3.6), squeeze=False, sharey=True)
    for ax, run in zip(axes[0], runs):
        sns.lineplot(aucs[aucs["run"] == run], x="layer", y="auc", hue="stat", marker="o", ax=ax)
        ax.axhline(0.5, color="grey", lw=0.8, ls="--")
        ax.set_title(run, fontsize=10)
        ax.set_ylabel("ROC-AUC (relevant, test)")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def score_bars(scores: pd.DataFrame, truth: str = "relevant", title: str = "") -> plt.Figure:
    """ROC-AUC with 95 % intervals of every score against one ground truth."""
    d = scores[scores["truth"] == truth].sort_values("auc")
    fig, ax = plt.subplots(figsize=(7, 0.32 * len(d) + 1.2))
    ax.errorbar(d["auc"], range(len(d)), xerr=[d["auc"] - d["auc_lo"], d["auc_hi"] - d["auc"]], fmt="o", capsize=3)
    ax.axvline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_yticks(range(len(d)))
    ax.set_yticklabels(d["score"], fontsize=8)
    ax.set_xlabel(f"ROC-AUC vs {truth} (test)")
    ax.set_title(title)
    return fig


def per_category_heatmap(per_cat: pd.DataFrame, title: str = "") -> plt.Figure:
    wide = per_cat.pivot_table(index="score", columns="negatives", values="auc", sort=False)
    fig, ax = plt.subplots(figsize=(5.5, 0.35 * len(wide) + 1.5))
    sns.heatmap(wide, annot=True, fmt=".2f", cmap="RdBu_r", vmin=0, vmax=1, center=0.5, ax=ax)
    ax.set_xlabel("relevant vs ...")
    ax.set_title(title)
    return fig


def filtering_plot(summary: pd.DataFrame, title: str = "") -> plt.Figure:
    """Target-line loss and greedy exact match against the kept share of context tokens, one line per score."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for ax, y, label in ((axes[0], "loss", "target-line loss (nats/token)"), (axes[1], "exact_match", "greedy exact match")):
        sns.lineplot(summary, x="budget", y=y, hue="score", marker="o", ax=ax)
        ax.set_xlabel("kept share of context tokens (budget)")
        ax.set_ylabel(label)
    axes[0].get_legend().remove()
    axes[1].legend(fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def dataset_overview(tables: dict[str, pd.DataFrame], chunks: pd.DataFrame, title: str = "") -> plt.Figure:
    """The code-context dataset at a glance (notebook 00): samples per project, chunks per sample by category, and
    the chunk length distribution per category. ``tables``: :func:`deltalens.context.stats.summary`; ``chunks``: the
    dataset's chunk table (``category``, ``text``)."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    tables["samples_per_project"].set_index("project")["samples"].plot.barh(ax=axes[0], title="samples per project")
    tables["chunks_per_category"]["per_sample"].plot.bar(ax=axes[1], title="chunks per sample, by category", rot=0)
    lengths = chunks.assign(chars=chunks["text"].str.len())
    for cat, g in lengths.groupby("category"):
        axes[2].hist(g["chars"], bins=30, alpha=0.5, label=cat)
    axes[2].set(title="chunk length (chars)", xlabel="characters")
    axes[2].legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
