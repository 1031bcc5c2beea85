"""The chunk table of the main analysis: one row per (sample, chunk) with every score and ground truth.

Columns (names: :mod:`deltalens.core.chunk_columns`, the contract shared with extraction):

* ``split, project, category, relevant`` — from the dataset (ground truth 1: ``relevant``);
* ``delta:<run>:L<layer>:<stat>`` — Δ statistics of each extraction run (model x prompt order), stat in mean /
  mean_log / l2 / max;
* ``decim:<run>:L<layer>:<pct>`` — DeciMamba's decimation rule: the share of the chunk's tokens among the top
  ``pct`` % of the prompt's tokens by the L2 norm of Δ in that layer (the tokens its decimation would keep);
* ``hattn:<run>:L<layer>:prefix_end|target`` — the hidden attention (Ali et al.) a run computed in the same forward:
  the attention mass the last prefix positions (a score a filter could use) or the target-line positions (an upper
  bound, like leave-one-out: it needs the target) give the chunk's tokens;
* ``selfinfo:<run>`` — the chunk's self-information under the same LM (mean token NLL in context; Selective-Context);
  ``loss_gain:<run>`` — how much the target-line loss rises without the chunk (ground truth 2: ``helps:<run>`` is
  ``loss_gain > helps_threshold``, on the samples with leave-one-out); ``n_tokens:<run>`` — the chunk's tokens;
* ``bm25, tfidf, embedding`` — similarity to the query (the reference labelers' scores);
* ``length`` (characters), ``path_distance`` (directory steps between the chunk's file and the completion file; other
  projects count as far away), ``random`` (seeded);
* ``llm:<labeler>`` — a generative labeler's labels (1 / 0, NaN where it gave none): a score, and ground truth 3;
* ``name_in_query`` — the chunk defines a name the query already contains (the lexical shortcut's stratum);
* ``inprompt_rank:<delta column>``, ``inprompt_z:<delta column>`` — Δ normalised inside its prompt (percentile rank,
  z-score), added by :func:`add_within_prompt`: score variants for a filter that only compares chunks of one prompt.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from ..core import chunk_columns as cc
from ..core.chunk_columns import ScoreColumn
from ..core.paths import resolve
from .ranking import name_in_query

BASELINES = ("bm25", "tfidf", "embedding")


def path_distance(a: str, b: str, same_project: bool) -> int:
    """Directory steps from file ``a`` to file ``b`` (0: same directory); another project: both depths + 2."""
    da, db = PurePosixPath(a).parent.parts, PurePosixPath(b).parent.parts
    if not same_project:
        return len(da) + len(db) + 2
    common = 0
    for x, y in zip(da, db):
        if x != y:
            break
        common += 1
    return len(da) + len(db) - 2 * common


def _run_columns(name: str, d: Path, helps_threshold: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the per-layer columns, the per-chunk LM columns) of extraction run ``name`` in folder ``d``."""
    for f in (cc.CHUNK_DELTA, cc.CHUNK_LM):
        if not (d / f).is_file():
            raise FileNotFoundError(f"extraction run {name!r}: {d / f} is missing (run the extraction and its merge)")
    cd = pd.read_parquet(d / cc.CHUNK_DELTA)
    sources = (list(cc.DELTA_STATS) + [c for c in cc.HIDDEN_ATTENTION if c in cd.columns]
               + cc.decimation_sources(cd.columns) + cc.global_sources(cd.columns))
    wide = cd.pivot_table(index=["sample_id", "chunk_index"], columns="layer", values=sources, dropna=False)
    names, keys = [], []
    for src, layer in wide.columns:
        family, stat = cc.chunk_delta_column(src)
        names.append(ScoreColumn(family, name, int(layer), stat).name)
        keys.append((cc.LAYERED_FAMILIES.index(family), int(layer), sources.index(src)))  # family, layer, statistic
    wide.columns = names
    wide = wide[[n for _, n in sorted(zip(keys, names))]]
    lm = pd.read_parquet(d / cc.CHUNK_LM).set_index(["sample_id", "chunk_index"])
    extra = pd.DataFrame({ScoreColumn(cc.SELFINFO, name).name: lm["self_information"],
                          ScoreColumn(cc.LOSS_GAIN, name).name: lm["loss_gain"],
                          ScoreColumn(cc.N_TOKENS, name).name: lm["n_tokens"].astype(float)})
    extra[ScoreColumn(cc.HELPS, name).name] = np.where(lm["loss_gain"].isna(), np.nan,
                                                       (lm["loss_gain"] > helps_threshold).astype(float))
    return wide, extra


def chunk_table(ds, runs: dict[str, str | Path] | None = None, labels_dir: str | Path | None = None, seed: int = 0,
                helps_threshold: float = 0.01, common_samples: bool = True) -> pd.DataFrame:
    """One row per (sample, chunk) with every score and ground truth (see the module docstring).

    ``common_samples``: keep only the samples that every extraction run covered, so that every score is measured on
    the same chunks (the runs may extract a subset of the dataset; ``t.attrs['dropped_samples']`` says how many)."""
    s = ds.samples.set_index("sample_id")
    t = ds.chunks[["sample_id", "chunk_index", "category", "project", "path", "text"]].rename(
        columns={"project": "chunk_project", "path": "chunk_path"})
    t["split"] = t["sample_id"].map(s["split"])
    t["project"] = t["sample_id"].map(s["project"])
    t["relevant"] = t["category"] == "relevant"
    t["length"] = t["text"].str.len().astype(float)
    t["path_distance"] = [float(path_distance(p, s.at[sid, "path"], cp == s.at[sid, "project"]))
                          for sid, p, cp in zip(t["sample_id"], t["chunk_path"], t["chunk_project"])]
    t["random"] = np.random.default_rng(seed).random(len(t))
    t = t.drop(columns=["text"]).set_index(["sample_id", "chunk_index"])
    t["name_in_query"] = name_in_query(ds).reindex(t.index)
    for name, d in (runs or {}).items():
        wide, extra = _run_columns(name, resolve(d), helps_threshold)
        t = t.join(wide).join(extra)
    dropped = 0
    if runs and common_samples:
        covered = None
        for name, d in runs.items():
            ids = set(pd.read_parquet(resolve(d) / cc.CHUNK_LM, columns=["sample_id"])["sample_id"])
            covered = ids if covered is None else covered & ids
        keep = t.index.get_level_values("sample_id").isin(covered)
        dropped = t[~keep].index.get_level_values("sample_id").nunique()
        t = t[keep]
    if labels_dir is not None:
        t = _join_labels(t, ds, labels_dir)
    t = t.reset_index()
    t.attrs["dropped_samples"] = int(dropped)
    return t


def _join_labels(t: pd.DataFrame, ds, labels_dir: str | Path) -> pd.DataFrame:
    """``t`` (indexed by sample and chunk) with the reference scores and the generative labelers' labels."""
    ld = resolve(labels_dir)
    metrics = ld / "metrics.json"
    if metrics.is_file():  # labels and scores of another dataset must not be joined by (sample_id, chunk_index)
        import json

        from ..context.schema import dataset_fingerprint

        fp = json.loads(metrics.read_text()).get("dataset_fingerprint")
        if fp is not None and fp != dataset_fingerprint(ds):
            raise ValueError(f"labels_dir={str(labels_dir)!r} holds labels of another dataset (fingerprint "
                             f"{fp[:12]} vs {dataset_fingerprint(ds)[:12]}); run the labeling notebook on this "
                             "dataset (make labeling) or point labels_dir at its output")
    if (ld / "reference_scores.parquet").is_file():
        ref = pd.read_parquet(ld / "reference_scores.parquet").set_index(["sample_id", "chunk_index"])
        t = t.join(ref[[c for c in BASELINES if c in ref.columns]])
    if (ld / "labels.parquet").is_file():
        lab = pd.read_parquet(ld / "labels.parquet")
        lab = lab[(lab["kind"] != "reference") & lab["label"].notna()]
        for name, g in lab.groupby("labeler"):
            labels = g.set_index(["sample_id", "chunk_index"])["label"].astype(float)
            t[ScoreColumn(cc.LLM, name).name] = labels.reindex(t.index)
    return t


# ---- the table's columns -------------------------------------------------------------------------------------------
def delta_columns(t: pd.DataFrame, run: str | None = None) -> list[str]:
    """The Δ columns (``delta:<run>:L<layer>:<stat>``) of ``t``, of every run or of one, in table order."""
    return cc.select(t.columns, cc.DELTA, run)


def runs_of(t: pd.DataFrame) -> list[str]:
    """The extraction runs with Δ columns in ``t``, in table order."""
    return list(dict.fromkeys(ScoreColumn.parse(c).run for c in delta_columns(t)))


def add_within_prompt(t: pd.DataFrame, columns: list[str] | None = None) -> pd.DataFrame:
    """``t`` with Δ normalised inside each prompt: ``inprompt_rank:<col>`` (percentile rank among the prompt's chunks)
    and ``inprompt_z:<col>`` (z-score; 0 where the prompt's chunks are all equal). Default columns: every Δ column."""
    columns = delta_columns(t) if columns is None else columns
    g = t.groupby("sample_id")
    new = {}
    for c in columns:
        col = ScoreColumn.parse(c)
        new[col.normalised("rank").name] = g[c].rank(pct=True)
        mean, std = g[c].transform("mean"), g[c].transform("std", ddof=0)
        new[col.normalised("z").name] = ((t[c] - mean) / std.where(std > 0)).fillna(0.0).where(t[c].notna())
    return pd.concat([t, pd.DataFrame(new, index=t.index)], axis=1)


def within_prompt_columns(t: pd.DataFrame, run: str | None = None) -> list[str]:
    """The within-prompt variants (``inprompt_rank:`` / ``inprompt_z:``) of ``t``, of every run or of one."""
    return [c for c in t.columns if (col := ScoreColumn.try_parse(c)) is not None and col.within is not None
            and (run is None or col.run == run)]


def ground_truths(t: pd.DataFrame) -> list[str]:
    """The ground truths the analysis reports: ``relevant``, every ``helps:<run>`` with a value (runs with
    leave-one-out), every ``llm:<labeler>``."""
    helps = [c for c in cc.select(t.columns, cc.HELPS) if t[c].notna().any()]
    return ["relevant"] + helps + cc.select(t.columns, cc.LLM)


def loo_runs(t: pd.DataFrame) -> list[str]:
    """The extraction runs of ``t`` with leave-one-out values (``loss_gain:<run>`` not all missing), in table order."""
    return [ScoreColumn.parse(c).run for c in cc.select(t.columns, cc.LOSS_GAIN) if t[c].notna().any()]


def split_meta(t: pd.DataFrame, n_boot: int, runs, truths: list[str]) -> dict:
    """What the results say about their test split: samples, chunks, relevant chunks; resamples, runs, truths."""
    test = t[t["split"] == "test"]
    return {"test_samples": int(test["sample_id"].nunique()), "test_chunks": int(len(test)),
            "test_relevant": int(test["relevant"].sum()), "n_boot": n_boot, "runs": list(runs), "truths": truths}
