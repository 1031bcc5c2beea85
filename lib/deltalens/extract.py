"""Δ from a pretrained Mamba LM per context chunk: resumable, shardable extraction over a code-context dataset.

For every sample (in a deterministic order, shard ``i/n`` takes every n-th one) the prompt is laid out
(:mod:`deltalens.prompts`: context first or query first, then the target line), tokenized with offsets, truncated
by a recorded policy, and run once through the model's backbone under :func:`deltalens.capture.capture_delta` with a
reducer that keeps per-token channel statistics only (mean, mean log, L2 norm, max of Δ over channels) — full Δ of
a layer lives only inside its hook. Per chunk, those statistics are averaged over the chunk's tokens. The same
forward gives the LM's loss on the target line and each chunk's self-information (mean NLL of its tokens in
context: the Selective-Context / LLMLingua score), with ``lm_head`` applied in slices so the logits of a 65k
vocabulary are never materialised for the whole prompt; with ``leave_one_out``, one more forward per chunk gives the
loss without that chunk (a model-grounded relevance label: how much the chunk helps). The model, its dtype, scan
path and the batched forwards live in :mod:`deltalens.lm_runtime`: the full prompts of a group of samples go through
the model as batches with capture, their leave-one-out variants as batches without.

Output folder (``out_dir``)::

    run.json                      parameters, model facts, dataset fingerprint, versions, runtime (resume refuses a
                                  mismatch once a sample is finished)
    shard-<i>-of-<n>/sessions.jsonl      every (re)start: scan path, dtype, autocast, batch_tokens, device, versions
    shard-<i>-of-<n>/parts/<k>.parquet   chunk x layer statistics of sample k   } a sample is finished when its
    shard-<i>-of-<n>/parts/<k>.json      sample record (+ leave-one-out losses) } .json exists (written last)
    shard-<i>-of-<n>/parts/<k>.tokens.safetensors   per-token statistics (optional: save_token_stats)
    chunk_delta.parquet (chunk x layer), chunk_lm.parquet (per chunk: tokens, self-information, leave-one-out),
    samples.parquet, merged.json                                           written by :func:`merge`

An interrupted run started again skips every finished sample; :func:`merge` joins the shards and checks that every
selected sample is there exactly once.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .lm_runtime import (DTYPES, HIDDEN_ATTENTION_STATS, SCANS, ModelLoadError, auto_batch_tokens,  # noqa: F401
                         estimate_hours, forward_all, forward_sample, load_lm, model_facts, peak_memory_mb, set_scan,
                         target_metrics)
from .params import ParameterError, check_bool, check_choice, check_int
from .paths import resolve
from .runinfo import atomic_write, package_versions
from .prompts import ORDERS, TRUNCATION, Encoded, encode, encode_variants  # noqa: F401
from .scores import DELTA_SCORES

STATS = ("mean", "mean_log", "l2", "max")
assert set(STATS) == set(DELTA_SCORES)
KAGGLE_SESSION_HOURS = 12.0


class ExtractionError(RuntimeError):
    """A forward failed on some samples; the message names them and what to do (finished samples are kept)."""


@dataclass
class ExtractConfig:
    model: str = "data/models/code-lm"     # local path or hub id (e.g. tiiuae/falcon-mamba-7b)
    dataset_dir: str = "data/processed/context"
    out_dir: str = "data/processed/delta/code-lm/context_first"
    order: str = "context_first"            # context_first | query_first
    query_chars: int = 800                  # query_first: characters of the prefix tail put first
    max_tokens: int = 8192
    truncation: str = "drop_chunks"         # drop_chunks (leading chunks first) | left (keep the last tokens) | error
    layers: list[int] | None = None         # None = every SSM layer; else indices 0..n-1 over the SSM layers
    split: str | None = None                # None = both splits
    max_samples: int | None = None          # a fixed pseudo-random subset (by hash of the sample id; None = all)
    shard: str = "0/1"                      # i/n: this run takes samples k with k % n == i
    leave_one_out: bool = False             # one more forward per chunk: loss without it
    loo_samples: int | None = None          # leave-one-out on this many of the samples only (hash subset; None = all)
    loo_split: str | None = None            # leave-one-out only on the samples of this split (None = every split)
    save_token_stats: bool = False          # per-token statistics per sample (safetensors)
    dtype: str = "float32"                  # float32 | bfloat16 | float16 | half (bf16 where native, else fp16) | auto
    device: str = "cpu"                     # cpu | cuda | cuda:1 | auto (cuda when available)
    device_map: str | None = None           # "auto" spreads one model over several GPUs (accelerate)
    allow_download: bool = False            # hub ids: try the hub after the local cache (Kaggle: true)
    scan: str = "auto"                      # auto | cuda_kernels | mambapy | sequential | chunked (Mamba-2; lm_runtime)
    batch_tokens: int | str = "auto"        # padded tokens per forward (auto: from the free memory)
    hidden_attention: int = 0               # > 0: per chunk, the hidden-attention mass (Ali et al.) from the last k
                                            # prefix positions and from the target line (Mamba-1 families only)

    def check(self) -> "ExtractConfig":
        check_choice("order", self.order, ORDERS)
        check_choice("truncation", self.truncation, TRUNCATION)
        check_choice("dtype", self.dtype, DTYPES)
        check_choice("scan", self.scan, SCANS)
        check_int("max_tokens", self.max_tokens, minimum=16)
        check_int("query_chars", self.query_chars, minimum=0)
        check_int("hidden_attention", self.hidden_attention, minimum=0)
        if self.batch_tokens != "auto":
            check_int("batch_tokens", self.batch_tokens, minimum=1)
        for name in ("leave_one_out", "save_token_stats", "allow_download"):
            check_bool(name, getattr(self, name))
        for name in ("model", "dataset_dir", "out_dir"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ParameterError(f"parameter {name}={getattr(self, name)!r}: expected a non-empty path")
        check_choice("device_map", self.device_map, (None, "auto", "balanced", "balanced_low_0", "sequential"))
        if not isinstance(self.device, str) or not re.fullmatch(r"cpu|auto|cuda(:\d+)?", self.device):
            raise ParameterError(f"parameter device={self.device!r} is not allowed; allowed: cpu, cuda, cuda:N, auto")
        for name in ("split", "loo_split"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise ParameterError(f"parameter {name}={getattr(self, name)!r}: expected null, 'dev' or 'test'")
        for name in ("max_samples", "loo_samples"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), minimum=1)
        if self.layers is not None and (not isinstance(self.layers, list) or not all(isinstance(i, int) for i in self.layers)):
            raise ParameterError(f"parameter layers={self.layers!r}: expected null or a list of layer indices")
        parse_shard(self.shard)
        return self

    def run_key(self) -> dict:
        """What must agree between a run folder and a resumed / sibling-shard run."""
        d = asdict(self)
        for k in ("shard", "device", "device_map", "allow_download", "out_dir", "dataset_dir", "scan", "batch_tokens"):
            d.pop(k)
        return d


def parse_shard(spec: str) -> tuple[int, int]:
    """``"i/n"`` -> (i, n) with 0 <= i < n."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(spec))
    if not m or int(m.group(2)) < 1 or int(m.group(1)) >= int(m.group(2)):
        raise ParameterError(f"parameter shard={spec!r}: expected 'i/n' with 0 <= i < n, e.g. '0/1' or '1/4'")
    return int(m.group(1)), int(m.group(2))


def process_shard(shard: str, environ=os.environ) -> tuple[int, int]:
    """Combine the ``i/n`` shard with the data-parallel process of ``accelerate launch`` / ``torchrun``
    (``RANK`` / ``WORLD_SIZE``): process r of w takes sub-shard ``i*w + r`` of ``n*w``."""
    i, n = parse_shard(shard)
    world, rank = int(environ.get("WORLD_SIZE", 1)), int(environ.get("RANK", 0))
    return i * world + rank, n * world


DECIMATION_SHARES = (0.1, 0.25, 0.5)  # DeciMamba's rule: a layer keeps the top share of the prompt's tokens by ||Δ||


def decimation_kept(l2: np.ndarray, share: float) -> np.ndarray:
    """(L,) bool: the ``share`` of the prompt's tokens with the largest L2 norm of Δ (at least one; ties by
    position) — the tokens DeciMamba's decimation would keep in this layer."""
    k = max(1, int(round(share * len(l2))))
    kept = np.zeros(len(l2), bool)
    kept[np.argsort(-np.asarray(l2, float), kind="stable")[:k]] = True
    return kept


def chunk_rows(sample_id: str, enc: Encoded, stats: list[dict], layer_ids: list[int]) -> pd.DataFrame:
    """chunk x layer rows: the mean of each per-token Δ statistic over the chunk's tokens; the share of the chunk's
    tokens that DeciMamba's decimation keeps (``decimate_<pct>``: top share of the whole prompt's tokens by the L2
    norm of Δ, per layer); the sum of the hidden-attention masses where they were computed (NaN for left-out
    chunks)."""
    rows = []
    for li, st in zip(layer_ids, stats):
        kept = {q: decimation_kept(st["l2"], q) for q in DECIMATION_SHARES}
        for ci, r in enumerate(enc.chunk_tokens):
            n = 0 if r is None else r[1] - r[0]
            row = {"sample_id": sample_id, "chunk_index": ci, "layer": li, "n_tokens": n}
            for s in STATS:
                row[s] = float(st[s][r[0]:r[1]].mean()) if n else np.nan
            for q, mask in kept.items():
                row[f"decimate_{round(100 * q)}"] = float(mask[r[0]:r[1]].mean()) if n else np.nan
            for s in HIDDEN_ATTENTION_STATS:  # the mass the query positions give the chunk: a sum over its tokens
                if s in st:
                    row[s] = float(st[s][r[0]:r[1]].sum()) if n else np.nan
            rows.append(row)
    return pd.DataFrame(rows)


# ---- the run ------------------------------------------------------------------------------------------------------
def hash_subset(ids: list[str], k: int | None) -> set[str]:
    """The ``k`` ids with the smallest sha256: a fixed pseudo-random subset, spread over projects and splits, that
    does not depend on the order, the seed or the machine."""
    import hashlib

    if k is None:
        return set(ids)
    return set(sorted(ids, key=lambda s: hashlib.sha256(s.encode()).hexdigest())[:k])


def select_samples(ds, split: str | None, max_samples: int | None) -> list[str]:
    """The samples of ``split`` (None: all), ``max_samples`` of them as a :func:`hash_subset`, in dataset order."""
    s = ds.samples if split is None else ds.samples[ds.samples["split"] == split]
    if split is not None and s.empty:
        raise ParameterError(f"parameter split={split!r}: no samples in it (splits: {sorted(ds.samples['split'].unique())})")
    ids = list(s["sample_id"])
    keep = hash_subset(ids, max_samples)
    return [i for i in ids if i in keep]


def _versions() -> dict:
    return package_versions(("torch", "transformers", "tokenizers", "mambapy", "mamba_ssm", "causal_conv1d"))


def _finished(out: Path) -> list[Path]:
    return sorted(out.glob("shard-*-of-*/parts/*.json"))


def _check_run_json(out: Path, key: dict, n_shards: int) -> None:
    """Refuse a folder that holds finished samples of a run with other parameters or another shard count; a folder
    with no finished sample does not pin anything (a run that failed on its first sample can be rerun corrected)."""
    f = out / "run.json"
    done = _finished(out)
    if f.is_file() and done:
        old = json.loads(f.read_text())
        if old.get("key") != json.loads(json.dumps(key)):
            diff = {k: (old.get("key", {}).get(k), v) for k, v in json.loads(json.dumps(key)).items()
                    if old.get("key", {}).get(k) != v}
            raise ParameterError(f"{out} holds {len(done)} finished samples of a run with other parameters {diff} "
                                 "(stored, given); use another out_dir, or delete that folder to start over")
    counts = {int(m.group(1)) for p in done if (m := re.search(r"shard-\d+-of-(\d+)", str(p.relative_to(out))))}
    if counts - {n_shards}:
        raise ParameterError(f"{out} holds finished samples split into {sorted(counts)} shards, and this run uses "
                             f"{n_shards}; keep the shard count of that run (shard: i/{sorted(counts)[0]}) or use "
                             "another out_dir")


@dataclass
class RunSummary:
    shard: str
    selected: int
    done_before: int
    done_now: int
    tokens: int
    seconds: float
    peak_memory_mb: float
    truncated: int
    runtime: dict | None = None             # scan path, dtype, autocast, batch_tokens, device name
    over_trained_length: int = 0            # samples whose prompt is longer than the model's training sequences
    first_tokens_per_second: float | None = None   # measured on the first batch of samples
    eta_hours: float | None = None          # estimated after the first batch, for every sample of this shard

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else float("nan")


def time_estimate(tokens_per_second: float, tokens_done: int, samples_done: int, samples_left: int,
                  forwards_done: int | None = None, forwards_left: int | None = None,
                  limit_hours: float = KAGGLE_SESSION_HOURS) -> tuple[float, str]:
    """(hours for the samples left, a message; with a warning and a shard count when that exceeds ``limit_hours``).
    With forward counts (a sample with leave-one-out needs one forward per chunk more), the tokens left are the
    measured tokens per forward times the forwards left; else the measured tokens per sample times the samples left."""
    if forwards_done and forwards_left is not None:
        left = tokens_done / forwards_done * forwards_left
    else:
        left = tokens_done / max(samples_done, 1) * samples_left
    hours = estimate_hours(tokens_per_second, left)
    msg = (f"measured {tokens_per_second:,.0f} tokens/s on the first {samples_done} samples; the {samples_left} "
           f"samples left need about {hours:.2f} h")
    if hours > limit_hours:
        k = math.ceil(hours / (0.9 * limit_hours))
        msg += (f". WARNING: that exceeds a Kaggle session ({limit_hours:.0f} h): split the work with shard: 0/{k}, "
                f"1/{k}, ... (one session each; finished samples are kept, a session that stops can be resumed)")
    return hours, msg


def _run_group(lm, group: list[dict], cfg: ExtractConfig, budget: int) -> None:
    """The forwards of a group of samples: their full prompts batched with capture, their variants (without any
    chunk; without each chunk) batched without; results are put into each sample's dict."""
    sids = [g["sid"] for g in group]
    try:
        full = forward_all(lm, [g["enc"] for g in group], batch_tokens=budget, layers=cfg.layers, token_nll=True,
                           hidden_attention=cfg.hidden_attention)
        variants = iter(forward_all(lm, [e for g in group for _, e in g["variants"]], batch_tokens=budget,
                                    capture=False))
    except torch.OutOfMemoryError as e:
        raise ExtractionError(f"samples {sids}: out of memory in the forward ({str(e)[:200]}); set batch_tokens lower "
                              f"than {budget} (or max_tokens); finished samples are kept, rerun to resume") from e
    except RuntimeError as e:
        raise ExtractionError(f"samples {sids}: the forward failed ({type(e).__name__}: {str(e)[:300]}); finished "
                              "samples are kept. Try scan: sequential or dtype: float32 to narrow it down, and "
                              "report the message") from e
    for g, res in zip(group, full):
        g["result"] = res
        g["loo"] = {ci: next(variants) for ci, _ in g["variants"]}
        g["no_context"] = g["loo"].pop(-1)


def _write_sample(parts: Path, g: dict, cfg: ExtractConfig, layer_ids: list[int], seconds: float,
                  trained_len: int | None = None) -> dict:
    k, sid, enc, res = g["k"], g["sid"], g["enc"], g["result"]
    lm_rows = []
    for ci, r in enumerate(enc.chunk_tokens):
        n = 0 if r is None else r[1] - r[0]
        row = {"chunk_index": ci, "n_tokens": n,
               "self_information": float(np.nanmean(res.token_nll[r[0]:r[1]])) if n else None,
               "loss_without": None, "loss_gain": None}
        if ci in g["loo"]:
            without = g["loo"][ci].target_loss
            row.update(loss_without=without, loss_gain=without - res.target_loss)
        lm_rows.append(row)
    rows = chunk_rows(sid, enc, res.stats, layer_ids)
    atomic_write(parts / f"{k:06d}.parquet", lambda p: rows.to_parquet(p, index=False))
    if cfg.save_token_stats:
        from safetensors.torch import save_file

        tensors = {s: torch.from_numpy(np.stack([st[s] for st in res.stats])) for s in STATS}
        tensors["input_ids"] = enc.input_ids[0].cpu()
        atomic_write(parts / f"{k:06d}.tokens.safetensors", lambda p: save_file(tensors, str(p)))
    record = {"position": k, "sample_id": sid, "n_tokens": enc.n_tokens, "n_tokens_full": enc.n_tokens_full,
              "truncated": bool(enc.dropped or enc.cut_tokens), "dropped_chunks": enc.dropped,
              "cut_tokens": enc.cut_tokens, "target_tokens": enc.target_tokens[1] - enc.target_tokens[0],
              "target_loss": res.target_loss, "exact_match": res.exact_match,
              "target_loss_no_context": g["no_context"].target_loss,
              "exact_match_no_context": g["no_context"].exact_match,
              "context_gain": g["no_context"].target_loss - res.target_loss, "leave_one_out": g["is_loo"],
              "over_trained_length": bool(trained_len is not None and enc.n_tokens > trained_len),
              "seconds": seconds, "chunks": lm_rows}
    atomic_write(parts / f"{k:06d}.json", lambda p: p.write_text(json.dumps(record)))
    return record


def extract(cfg: ExtractConfig, ds=None, lm=None, tokenizer=None, progress: bool = True,
            max_group_samples: int = 8) -> RunSummary:
    """Run (or resume) the extraction of ``cfg``'s shard; see the module docstring. Samples go through the model in
    groups (at most ``max_group_samples``, about ``batch_tokens`` tokens), each written as soon as its group is done."""
    from tqdm.auto import tqdm

    from .context import load
    from .context.schema import dataset_fingerprint

    cfg.check()
    i, n = process_shard(cfg.shard)
    ds = load(cfg.dataset_dir) if ds is None else ds  # validated: a broken dataset stops here
    ids = select_samples(ds, cfg.split, cfg.max_samples)
    if lm is None:
        lm, tokenizer = load_lm(cfg.model, dtype=cfg.dtype, device=cfg.device, device_map=cfg.device_map,
                                allow_download=cfg.allow_download)
    choice = set_scan(lm, cfg.scan)
    budget = auto_batch_tokens(lm, choice) if cfg.batch_tokens == "auto" else cfg.batch_tokens
    facts = model_facts(lm)
    mixers = list(range(facts["n_layers"])) if cfg.layers is None else list(cfg.layers)
    bad = [x for x in mixers if not 0 <= x < facts["n_layers"]]
    if bad:
        raise ParameterError(f"parameter layers={cfg.layers}: {bad} out of range; the model has {facts['n_layers']} "
                             "SSM layers (indices 0..n-1 over its SSM layers; a hybrid's attention layers do not count)")
    layer_ids = [facts["layer_ids"][i] for i in mixers]  # the model's own layer numbers (hybrids: with attention)
    if cfg.hidden_attention and facts.get("mixer_family") not in ("mambapy", "mamba", "falcon_mamba", "jamba"):
        raise ParameterError(f"parameter hidden_attention={cfg.hidden_attention}: the hidden attention is computed for "
                             f"Mamba-1 mixers (mamba, falcon_mamba, jamba); this model's are {facts.get('mixer_family')}"
                             "; set hidden_attention: 0")
    out = resolve(cfg.out_dir)
    key = {**cfg.run_key(), "dataset": dataset_fingerprint(ds), "model_facts": facts}
    _check_run_json(out, key, n)
    parts = out / f"shard-{i}-of-{n}" / "parts"
    parts.mkdir(parents=True, exist_ok=True)
    device = next(lm.parameters()).device
    runtime = {**choice.as_dict(), "batch_tokens": budget, "shard": f"{i}/{n}",
               "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
               "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if not (out / "run.json").is_file() or not _finished(out):
        atomic_write(out / "run.json", lambda p: p.write_text(json.dumps(
            {"key": key, "config": asdict(cfg), "versions": _versions(), "runtime": runtime, "sample_ids": ids},
            indent=1)))
    with open(parts.parent / "sessions.jsonl", "a") as f:  # every (re)start: which path, dtype and scan ran
        f.write(json.dumps({**runtime, "versions": _versions()}) + "\n")
    mine = [(k, s) for k, s in enumerate(ids) if k % n == i]
    loo_pool = ids if cfg.loo_split is None else [s for s in ids if s in set(
        ds.samples.loc[ds.samples["split"] == cfg.loo_split, "sample_id"])]
    if cfg.leave_one_out and cfg.loo_split is not None and not loo_pool:
        raise ParameterError(f"parameter loo_split={cfg.loo_split!r}: no selected sample is in that split "
                             f"(splits: {sorted(ds.samples['split'].unique())})")
    loo_ids = hash_subset(loo_pool, cfg.loo_samples) if cfg.leave_one_out else set()
    todo = [(k, s) for k, s in mine if not (parts / f"{k:06d}.json").is_file()]
    summary = RunSummary(f"{i}/{n}", len(mine), len(mine) - len(todo), 0, 0, 0.0, 0.0, 0, runtime)
    start = time.perf_counter()
    bar = tqdm(total=len(todo), desc=f"extract Δ {i}/{n}", unit="sample", disable=not progress)
    group: list[dict] = []
    for pos, (k, sid) in enumerate(todo):
        enc, none, loo = encode_variants(tokenizer, ds.sample(sid), cfg, sid in loo_ids)
        variants = [(-1, none), *loo]  # key -1: without any chunk (the context gain)
        group.append({"k": k, "sid": sid, "enc": enc, "variants": variants, "is_loo": sid in loo_ids})
        group_tokens = sum(g["enc"].n_tokens + sum(e.n_tokens for _, e in g["variants"]) for g in group)
        if group_tokens < budget and len(group) < max_group_samples and pos < len(todo) - 1:
            continue
        t = time.perf_counter()
        _run_group(lm, group, cfg, budget)
        seconds = (time.perf_counter() - t) / len(group)
        for g in group:
            record = _write_sample(parts, g, cfg, layer_ids, seconds, facts["trained_length"])
            summary.over_trained_length += record["over_trained_length"]
            summary.done_now += 1
            summary.tokens += record["n_tokens"] + sum(e.n_tokens for _, e in g["variants"])
            summary.truncated += record["truncated"]
        group = []
        summary.seconds = time.perf_counter() - start
        if summary.first_tokens_per_second is None:
            summary.first_tokens_per_second = summary.tokens_per_second
            n_chunks = ds.samples.set_index("sample_id")["n_chunks"]
            forwards = {sid: 2 + (int(n_chunks[sid]) if sid in loo_ids else 0) for _, sid in todo}  # full, no chunk, LOO
            done_ids = [sid for _, sid in todo[:summary.done_now]]
            summary.eta_hours, msg = time_estimate(
                summary.tokens_per_second, summary.tokens, summary.done_now, len(todo) - summary.done_now,
                sum(forwards[s] for s in done_ids), sum(forwards[s] for _, s in todo[summary.done_now:]))
            if progress or summary.eta_hours > KAGGLE_SESSION_HOURS:
                bar.write(msg)
        bar.update(summary.done_now - bar.n)
        bar.set_postfix(tok_s=f"{summary.tokens_per_second:.0f}", peak_mb=f"{peak_memory_mb(device):.0f}")
    bar.close()
    if summary.over_trained_length:
        import warnings

        warnings.warn(f"{summary.over_trained_length} of {summary.done_now} prompts are longer than the "
                      f"{facts['trained_length']} tokens the model was trained on: its Δ and losses there are "
                      "outside its training length (recorded per sample as over_trained_length)", stacklevel=2)
    summary.seconds = time.perf_counter() - start
    summary.peak_memory_mb = peak_memory_mb(device)
    return summary


def merge(out_dir: str | Path, allow_partial: bool = False) -> dict[str, Path]:
    """Join every shard of ``out_dir`` into chunk_delta / chunk_lm / samples parquet files; every selected sample must be
    there exactly once (``allow_partial``: write what is there and say what is missing)."""
    out = resolve(out_dir)
    if not (out / "run.json").is_file():
        raise FileNotFoundError(f"{out}: no run.json (not an extraction folder, or nothing was run yet)")
    run = json.loads((out / "run.json").read_text())
    ids = run["sample_ids"]
    records, frames, seen = [], [], {}
    for js in _finished(out):
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
                            columns=["sample_id", "chunk_index", "n_tokens", "self_information", "loss_without", "loss_gain"])
    for c in ("self_information", "loss_without", "loss_gain"):
        chunk_lm[c] = chunk_lm[c].astype("float64")
    paths = {"chunk_delta": out / "chunk_delta.parquet", "chunk_lm": out / "chunk_lm.parquet",
             "samples": out / "samples.parquet"}
    for name, df in (("chunk_delta", chunk), ("chunk_lm", chunk_lm), ("samples", samples)):
        atomic_write(paths[name], lambda p, df=df: df.to_parquet(p, index=False))
    sessions = [json.loads(line) for f in sorted(out.glob("shard-*-of-*/sessions.jsonl"))
                for line in f.read_text().splitlines() if line.strip()]
    (out / "merged.json").write_text(json.dumps({"samples": len(records), "missing": len(missing),
                                                 "chunk_rows": len(chunk),
                                                 "loo_chunks": int(chunk_lm["loss_gain"].notna().sum()),
                                                 "trained_length": run["key"]["model_facts"].get("trained_length"),
                                                 "over_trained_length": int(samples["over_trained_length"].sum())
                                                 if "over_trained_length" in samples else None,
                                                 "runtime": sessions}, indent=1))
    return paths


@torch.no_grad()
def example(lm, tokenizer, sample: dict, cfg: ExtractConfig) -> dict:
    """Per-token statistics of one sample for reading: tokens (text pieces from the offsets), per layer
    {stat: (L,)}, and for every token the chunk index it belongs to (-1: headers, query, target)."""
    set_scan(lm, cfg.scan)
    enc = encode(tokenizer, sample, cfg)
    stats, loss, _ = forward_sample(lm, enc)
    ids = enc.input_ids[0].tolist()
    tokens = [tokenizer.decode([t]) for t in ids]
    owner = np.full(len(ids), -1)
    for ci, r in enumerate(enc.chunk_tokens):
        if r is not None:
            owner[r[0]:r[1]] = ci
    return {"tokens": tokens, "stats": stats, "chunk_of_token": owner, "target_tokens": enc.target_tokens,
            "target_loss": loss, "encoded": enc}


# ---- command line -------------------------------------------------------------------------------------------------
def config_from_params(params: dict, **overrides) -> ExtractConfig:
    """An ExtractConfig from a parameter mapping (the notebook's parameters / a params YAML); unknown keys are an
    error naming them, keys that only the notebook uses (figures, examples, progress) are ignored."""
    notebook_only = {"example_sample", "example_layers", "figures_dir", "progress"}
    fields = set(ExtractConfig.__dataclass_fields__)
    merged = {**params, **{k: v for k, v in overrides.items() if v is not None}}
    if "use_mambapy" in merged:
        raise ParameterError(f"parameter use_mambapy={merged['use_mambapy']!r} was replaced by scan: auto | "
                             "cuda_kernels | mambapy | sequential (use_mambapy: true -> scan: mambapy, false -> "
                             "scan: sequential)")
    unknown = sorted(set(merged) - fields - notebook_only)
    if unknown:
        raise ParameterError(f"unknown extraction parameter(s) {unknown}; allowed: {sorted(fields | notebook_only)}")
    return ExtractConfig(**{k: v for k, v in merged.items() if k in fields}).check()


def main(argv: list[str] | None = None) -> int:
    """python -m deltalens.extract run -p PARAMS [--shard i/n] [--out-dir DIR] | merge DIR [--allow-partial]"""
    import argparse

    import yaml

    ap = argparse.ArgumentParser(prog="python -m deltalens.extract", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="extract (or resume) one shard; with accelerate launch, one process per GPU")
    r.add_argument("-p", "--params", required=True, help="YAML of notebook 03's parameters")
    r.add_argument("--shard")
    r.add_argument("--out-dir")
    r.add_argument("--model")
    r.add_argument("--no-progress", action="store_true")
    m = sub.add_parser("merge", help="join the shards of an extraction folder")
    m.add_argument("out_dir")
    m.add_argument("--allow-partial", action="store_true")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "merge":
            paths = merge(args.out_dir, allow_partial=args.allow_partial)
            print(json.dumps({k: str(v) for k, v in paths.items()}, indent=1))
            return 0
        params = yaml.safe_load(resolve(args.params).read_text()) or {}
        cfg = config_from_params(params, shard=args.shard, out_dir=args.out_dir, model=args.model)
        s = extract(cfg, progress=not args.no_progress)
        print(f"shard {s.shard}: {s.done_now} samples now, {s.done_before} before; {s.tokens_per_second:.0f} tokens/s; "
              f"peak memory {s.peak_memory_mb:.0f} MB; scan {s.runtime['scan']}, {s.runtime['dtype']}, "
              f"batch_tokens {s.runtime['batch_tokens']}")
        return 0
    except (ParameterError, ModelLoadError, ExtractionError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=__import__("sys").stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
