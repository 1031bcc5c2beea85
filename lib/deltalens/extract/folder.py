"""The extraction run folder: resume checks, the finished samples, the merge of the shards into the run's tables,
and a first look at a merged run (notebook 03's summary and its ``extraction.json``).

File names and columns: :mod:`deltalens.core.chunk_columns`. The first look measures the raw ROC-AUC of each Δ statistic
per layer on its own, not through :mod:`deltalens.analysis`: notebook 03's dependencies (the Makefile's, from
:mod:`deltalens.tools.deps`) must not include the analysis, or an edit of the analysis would rerun the extraction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..core import chunk_columns as cc
from ..core.metrics import auc
from ..core.params import ParameterError
from ..core.paths import resolve
from ..core.runinfo import atomic_write


def finished_parts(out: Path) -> list[Path]:
    return sorted(out.glob(cc.FINISHED_GLOB))


def check_run_json(out: Path, key: dict, n_shards: int) -> None:
    """Refuse a folder that holds finished samples of a run with other parameters or another shard count; a folder
    with no finished sample does not pin anything (a run that failed on its first sample can be rerun corrected)."""
    f = out / cc.RUN_JSON
    done = finished_parts(out)
    if f.is_file() and done:
        old = json.loads(f.read_text())
        if old.get("key") != json.loads(json.dumps(key)):
            diff = {k: (old.get("key", {}).get(k), v) for k, v in json.loads(json.dumps(key)).items()
                    if old.get("key", {}).get(k) != v}
            raise ParameterError(f"{out} holds {len(done)} finished samples of a run with other parameters {diff} "
                                 "(stored, given); use another out_dir, or delete that folder to start over")
    counts = {int(m.group(1)) for p in done if (m := cc.SHARD_COUNT.search(str(p.relative_to(out))))}
    if counts - {n_shards}:
        raise ParameterError(f"{out} holds finished samples split into {sorted(counts)} shards, and this run uses "
                             f"{n_shards}; keep the shard count of that run (shard: i/{sorted(counts)[0]}) or use "
                             "another out_dir")


def merge(out_dir: str | Path, allow_partial: bool = False) -> dict[str, Path]:
    """Join every shard of ``out_dir`` into chunk_delta / chunk_lm / samples parquet files; every selected sample must be
    there exactly once (``allow_partial``: write what is there and say what is missing)."""
    out = resolve(out_dir)
    if not (out / cc.RUN_JSON).is_file():
        raise FileNotFoundError(f"{out}: no run.json (not an extraction folder, or nothing was run yet)")
    run = json.loads((out / cc.RUN_JSON).read_text())
    ids = run["sample_ids"]
    records, frames, seen = [], [], {}
    for js in finished_parts(out):
        try:
            rec = json.loads(js.read_text())
            frame = pd.read_parquet(js.with_suffix(".parquet"))
        except (ValueError, OSError) as e:
            raise ValueError(f"{js} (or its .parquet) is unreadable ({type(e).__name__}: {e}); delete both files of "
                             "that sample and run the extraction again to redo it") from None
        if rec["position"] in seen:
            raise ValueError(f"sample {rec['sample_id']!r} extracted twice: {seen[rec['position']]} and {js}")
        seen[rec["position"]] = js
        if ids[rec["position"]] != rec["sample_id"]:
            raise ValueError(f"{js}: position {rec['position']} is {ids[rec['position']]!r} in run.json, not {rec['sample_id']!r}")
        records.append(rec)
        frames.append(frame)
    missing = [s for k, s in enumerate(ids) if k not in seen]
    if missing and not allow_partial:
        raise ValueError(f"{out}: {len(missing)} of {len(ids)} samples not extracted yet (e.g. {missing[:3]}); run the "
                         "missing shards or merge with allow_partial=True")
    records.sort(key=lambda r: r["position"])
    chunk = pd.concat(frames, ignore_index=True).sort_values(["sample_id", "layer", "chunk_index"], kind="stable") if frames else pd.DataFrame()
    samples = pd.DataFrame([{k: v for k, v in r.items() if k != "chunks"} for r in records])
    chunk_lm = pd.DataFrame([{"sample_id": r["sample_id"], **x} for r in records for x in r["chunks"]],
                            columns=list(cc.CHUNK_LM_COLUMNS))
    for c in ("self_information", "loss_without", "loss_gain"):
        chunk_lm[c] = chunk_lm[c].astype("float64")
    paths = {"chunk_delta": out / cc.CHUNK_DELTA, "chunk_lm": out / cc.CHUNK_LM, "samples": out / cc.SAMPLES}
    for name, df in (("chunk_delta", chunk), ("chunk_lm", chunk_lm), ("samples", samples)):
        atomic_write(paths[name], lambda p, df=df: df.to_parquet(p, index=False))
    sessions = [json.loads(line) for f in sorted(out.glob(cc.SESSIONS_GLOB))
                for line in f.read_text().splitlines() if line.strip()]
    (out / cc.MERGED_JSON).write_text(json.dumps({"samples": len(records), "missing": len(missing),
                                                 "chunk_rows": len(chunk),
                                                 "loo_chunks": int(chunk_lm["loss_gain"].notna().sum()),
                                                 "trained_length": run["key"]["model_facts"].get("trained_length"),
                                                 "over_trained_length": int(samples["over_trained_length"].sum())
                                                 if "over_trained_length" in samples else None,
                                                 "runtime": sessions}, indent=1))
    return paths


@dataclass
class FirstLook:
    """A merged run at a glance: its samples, the raw ROC-AUC of each Δ statistic per layer for the relevant chunks
    (test split when the run has test samples, else all), the leave-one-out gain per category (None without)."""
    samples: pd.DataFrame
    auc_by_layer: pd.DataFrame                # index: layer; one column per Δ statistic
    loo_by_category: pd.DataFrame | None      # describe() of loss_gain per chunk category
    loo_rows: int
    mean_loss_gain_by_category: dict


def first_look(ds, merged: dict[str, Path]) -> FirstLook:
    """:class:`FirstLook` of the merged outputs ``merged`` (:func:`merge`'s paths) of a run over dataset ``ds``."""
    chunk = pd.read_parquet(merged["chunk_delta"])
    samples = pd.read_parquet(merged["samples"])
    loo = pd.read_parquet(merged["chunk_lm"]).dropna(subset=["loss_gain"])
    truth = ds.chunks[["sample_id", "chunk_index", "category"]].merge(ds.samples[["sample_id", "split"]], on="sample_id")
    j = chunk.merge(truth, on=["sample_id", "chunk_index"]).dropna(subset=["mean"])
    j = j[j["split"] == "test"] if (j["split"] == "test").any() else j
    aucs = (j.groupby("layer").apply(lambda g: pd.Series({s: auc((g["category"] == "relevant").to_numpy(), g[s].to_numpy())
                                                        for s in cc.DELTA_STATS}), include_groups=False))
    lj = loo.merge(truth, on=["sample_id", "chunk_index"]) if len(loo) else None
    return FirstLook(samples, aucs, None if lj is None else lj.groupby("category")["loss_gain"].describe(), int(len(loo)),
                     lj.groupby("category")["loss_gain"].mean().to_dict() if lj is not None else {})


def save_extraction_summary(figures_dir: str | Path, look: FirstLook, summary, facts: dict, model: str,
                            order: str) -> Path:
    """``<figures_dir>/extraction.json``: the run's model, order and facts, its samples' loss and truncation, this
    session's speed and memory (``summary``: :class:`deltalens.extract.RunSummary`), the leave-one-out means per
    category, the first look's ROC-AUC by layer, and which ``deltalens`` ran (the checkout or an inlined copy)."""
    import deltalens

    samples = look.samples
    stats = {"model": model, "order": order, "facts": facts, "samples": int(len(samples)),
             "truncated": int(samples["truncated"].sum()), "mean_target_loss": float(samples["target_loss"].mean()),
             "tokens_per_second": summary.tokens_per_second, "peak_memory_mb": summary.peak_memory_mb,
             "runtime": summary.runtime, "eta_hours_after_first_batch": summary.eta_hours,
             "trained_length": facts["trained_length"], "over_trained_length": int(samples["over_trained_length"].sum()),
             "context_gain_mean": float(samples["context_gain"].mean()),
             "seconds_this_run": summary.seconds, "samples_this_run": summary.done_now,
             "loo_rows": look.loo_rows, "mean_loss_gain_by_category": look.mean_loss_gain_by_category,
             "auc_by_layer": look.auc_by_layer.reset_index().to_dict("records"), "deltalens_file": deltalens.__file__}
    text = json.dumps(stats, indent=1, default=float)
    return atomic_write(resolve(figures_dir) / "extraction.json", lambda p: p.write_text(text))
