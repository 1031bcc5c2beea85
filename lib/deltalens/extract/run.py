"""Δ from a pretrained Mamba LM per context chunk: resumable, shardable extraction over a code-context dataset.

For every sample (in a deterministic order, shard ``i/n`` takes every n-th one) the prompt is laid out
(:mod:`deltalens.lm.prompts`: context first or query first, then the target line), tokenized with offsets, truncated
by a recorded policy, and run once through the model's backbone under :func:`deltalens.delta.capture.capture_delta` with a
reducer that keeps per-token channel statistics only (mean, mean log, L2 norm, max of Δ over channels) — full Δ of
a layer lives only inside its hook. Per chunk, those statistics are averaged over the chunk's tokens. The same
forward gives the LM's loss on the target line and each chunk's self-information (mean NLL of its tokens in
context: the Selective-Context / LLMLingua score), with ``lm_head`` applied in slices so the logits of a 65k
vocabulary are never materialised for the whole prompt; with ``leave_one_out``, one more forward per chunk gives the
loss without that chunk (a model-grounded relevance label: how much the chunk helps). The model, its dtype, scan
path and the batched forwards live in :mod:`deltalens.lm.runtime`: the full prompts of a group of samples go through
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

This module is the run loop (kept with the ``forward_all`` it calls: tests replace ``run.forward_all`` to make a
forward fail), one sample's example view and the CLI; the rest lives by job in the other modules of
:mod:`deltalens.extract`, whose ``__init__`` re-exports what notebook 03 calls.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..context.subsets import hash_subset
from ..core import chunk_columns as cc
from ..core.chunk_columns import DELTA_STATS
from ..core.params import ParameterError
from ..core.paths import resolve
from ..core.runinfo import atomic_write, package_versions
from ..delta.adapters import ssm_input_families
from ..lm.forward import auto_batch_tokens, estimate_hours, forward_all, forward_sample, peak_memory_mb
from ..lm.loading import ModelLoadError, load_lm, model_facts, set_scan
from ..lm.prompts import encode, encode_variants
from .chunk_stats import chunk_lm_rows, chunk_rows
from .config import ExtractConfig, config_from_params, process_shard, select_samples
from .folder import check_run_json, finished_parts, merge

KAGGLE_SESSION_HOURS = 12.0


class ExtractionError(RuntimeError):
    """A forward failed on some samples; the message names them and what to do (finished samples are kept)."""


def _versions() -> dict:
    return package_versions(("torch", "transformers", "tokenizers", "mambapy", "mamba_ssm", "causal_conv1d"))


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


def _run_group(lm, group: list[dict], cfg: ExtractConfig, budget: int, global_masks: dict | None = None) -> None:
    """The forwards of a group of samples: their full prompts batched with capture, their variants (without any
    chunk; without each chunk) batched without; results are put into each sample's dict."""
    sids = [g["sid"] for g in group]
    try:
        full = forward_all(lm, [g["enc"] for g in group], batch_tokens=budget, layers=cfg.layers, token_nll=True,
                           hidden_attention=cfg.hidden_attention, global_masks=global_masks)
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


def _nan_to_none(x: float) -> float | None:
    """JSON has no NaN: a sample without name tokens records null."""
    return None if math.isnan(x) else x


def _write_sample(parts: Path, g: dict, cfg: ExtractConfig, layer_ids: list[int], seconds: float,
                  trained_len: int | None = None) -> dict:
    k, sid, enc, res = g["k"], g["sid"], g["enc"], g["result"]
    lm_rows = chunk_lm_rows(enc, res.token_nll, res.target_loss, {ci: r.target_loss for ci, r in g["loo"].items()})
    rows = chunk_rows(sid, enc, res.stats, layer_ids)
    atomic_write(cc.part_file(parts, k, "parquet"), lambda p: rows.to_parquet(p, index=False))
    if cfg.save_token_stats:
        from safetensors.torch import save_file

        tensors = {s: torch.from_numpy(np.stack([st[s] for st in res.stats])) for s in DELTA_STATS}
        tensors["input_ids"] = enc.input_ids[0].cpu()
        atomic_write(cc.part_file(parts, k, "tokens.safetensors"), lambda p: save_file(tensors, str(p)))
    record = {"position": k, "sample_id": sid, "n_tokens": enc.n_tokens, "n_tokens_full": enc.n_tokens_full,
              "truncated": bool(enc.dropped or enc.cut_tokens), "dropped_chunks": enc.dropped,
              "cut_tokens": enc.cut_tokens, "target_tokens": enc.target_tokens[1] - enc.target_tokens[0],
              "target_loss": res.target_loss, "exact_match": res.exact_match,
              "target_loss_no_context": g["no_context"].target_loss,
              "exact_match_no_context": g["no_context"].exact_match,
              "context_gain": g["no_context"].target_loss - res.target_loss, "leave_one_out": g["is_loo"],
              "name_tokens": len(enc.name_tokens), "name_accuracy": _nan_to_none(res.name_accuracy),
              "name_accuracy_no_context": _nan_to_none(g["no_context"].name_accuracy),
              "over_trained_length": bool(trained_len is not None and enc.n_tokens > trained_len),
              "seconds": seconds, "chunks": lm_rows}
    atomic_write(cc.part_file(parts, k, "json"), lambda p: p.write_text(json.dumps(record)))
    return record


@dataclass
class PreparedRun:
    """What a run needs once its inputs are checked and its folder is pinned (:func:`prepare_run`)."""

    ds: object
    lm: object
    tokenizer: object
    facts: dict                  # model_facts(lm)
    layer_ids: list[int]         # the model's own numbers of the captured layers
    budget: int                  # padded tokens per forward
    parts: Path                  # this shard's parts/ folder
    runtime: dict                # scan, dtype, batch_tokens, shard, device name, start time
    mine: list[tuple[int, str]]  # (position, sample id) of this shard
    loo_ids: set[str]            # the samples with leave-one-out
    global_masks: dict | None    # LongMamba's channel masks (None: not asked)
    device: torch.device


def prepare_run(cfg: ExtractConfig, ds=None, lm=None, tokenizer=None) -> PreparedRun:
    """Check ``cfg`` against the dataset and the model before any forward, pin the run folder (``run.json``: refused
    when finished samples were made with other parameters), record this session, measure the global channels when
    asked, and choose this shard's samples and the leave-one-out subset."""
    from ..context import load
    from ..context.schema import dataset_fingerprint

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
    offered = ssm_input_families()
    if cfg.hidden_attention and facts.get("mixer_family") not in offered:
        raise ParameterError(f"parameter hidden_attention={cfg.hidden_attention}: the hidden attention is computed for "
                             f"the mixer families whose scan inputs the capture hands out ({', '.join(offered)}); "
                             f"this model's are {facts.get('mixer_family')}; set hidden_attention: 0")
    out = resolve(cfg.out_dir)
    key = {**cfg.run_key(), "dataset": dataset_fingerprint(ds), "model_facts": facts}
    check_run_json(out, key, n)
    parts = cc.shard_dir(out, i, n) / cc.PARTS
    parts.mkdir(parents=True, exist_ok=True)
    masks = None
    if cfg.global_channels:  # LongMamba's global channels, measured once on dev prompts (saved in the run folder)
        from ..lm.global_channels import run_masks

        masks = run_masks(lm, tokenizer, ds, cfg.layout, cfg.global_channels, cfg.global_calibration, out,
                          layers=mixers)
    device = next(lm.parameters()).device
    runtime = {**choice.as_dict(), "batch_tokens": budget, "shard": f"{i}/{n}",
               "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
               "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if not (out / cc.RUN_JSON).is_file() or not finished_parts(out):
        atomic_write(out / cc.RUN_JSON, lambda p: p.write_text(json.dumps(
            {"key": key, "config": asdict(cfg), "versions": _versions(), "runtime": runtime, "sample_ids": ids},
            indent=1)))
    with open(parts.parent / cc.SESSIONS, "a") as f:  # every (re)start: which path, dtype and scan ran
        f.write(json.dumps({**runtime, "versions": _versions()}) + "\n")
    mine = [(k, s) for k, s in enumerate(ids) if k % n == i]
    loo_pool = ids if cfg.loo_split is None else [s for s in ids if s in set(
        ds.samples.loc[ds.samples["split"] == cfg.loo_split, "sample_id"])]
    if cfg.leave_one_out and cfg.loo_split is not None and not loo_pool:
        raise ParameterError(f"parameter loo_split={cfg.loo_split!r}: no selected sample is in that split "
                             f"(splits: {sorted(ds.samples['split'].unique())})")
    loo_ids = hash_subset(loo_pool, cfg.loo_samples) if cfg.leave_one_out else set()
    return PreparedRun(ds, lm, tokenizer, facts, layer_ids, budget, parts, runtime, mine, loo_ids, masks, device)


def sample_groups(run: PreparedRun, todo: list[tuple[int, str]], cfg: ExtractConfig,
                  max_group_samples: int) -> Iterator[list[dict]]:
    """The samples left to do, encoded (full prompt, without any chunk, without each chunk), in groups of at most
    ``max_group_samples`` samples and about ``run.budget`` tokens."""
    group: list[dict] = []
    for pos, (k, sid) in enumerate(todo):
        enc, none, loo = encode_variants(run.tokenizer, run.ds.sample(sid), cfg.layout, sid in run.loo_ids)
        variants = [(-1, none), *loo]  # key -1: without any chunk (the context gain)
        group.append({"k": k, "sid": sid, "enc": enc, "variants": variants, "is_loo": sid in run.loo_ids})
        group_tokens = sum(g["enc"].n_tokens + sum(e.n_tokens for _, e in g["variants"]) for g in group)
        if group_tokens < run.budget and len(group) < max_group_samples and pos < len(todo) - 1:
            continue
        yield group
        group = []


def extract(cfg: ExtractConfig, ds=None, lm=None, tokenizer=None, progress: bool = True,
            max_group_samples: int = 8) -> RunSummary:
    """Run (or resume) the extraction of ``cfg``'s shard; see the module docstring. Samples go through the model in
    groups (at most ``max_group_samples``, about ``batch_tokens`` tokens), each written as soon as its group is done."""
    from tqdm.auto import tqdm

    run = prepare_run(cfg, ds, lm, tokenizer)
    todo = [(k, s) for k, s in run.mine if not cc.part_file(run.parts, k, "json").is_file()]
    summary = RunSummary(run.runtime["shard"], len(run.mine), len(run.mine) - len(todo), 0, 0, 0.0, 0.0, 0,
                         run.runtime)
    start = time.perf_counter()
    bar = tqdm(total=len(todo), desc=f"extract Δ {run.runtime['shard']}", unit="sample", disable=not progress)
    for group in sample_groups(run, todo, cfg, max_group_samples):
        t = time.perf_counter()
        _run_group(run.lm, group, cfg, run.budget, run.global_masks)
        seconds = (time.perf_counter() - t) / len(group)
        for g in group:
            record = _write_sample(run.parts, g, cfg, run.layer_ids, seconds, run.facts["trained_length"])
            summary.over_trained_length += record["over_trained_length"]
            summary.done_now += 1
            summary.tokens += record["n_tokens"] + sum(e.n_tokens for _, e in g["variants"])
            summary.truncated += record["truncated"]
        summary.seconds = time.perf_counter() - start
        if summary.first_tokens_per_second is None:
            summary.first_tokens_per_second = summary.tokens_per_second
            n_chunks = run.ds.samples.set_index("sample_id")["n_chunks"]
            forwards = {sid: 2 + (int(n_chunks[sid]) if sid in run.loo_ids else 0) for _, sid in todo}  # full, none, LOO
            done_ids = [sid for _, sid in todo[:summary.done_now]]
            summary.eta_hours, msg = time_estimate(
                summary.tokens_per_second, summary.tokens, summary.done_now, len(todo) - summary.done_now,
                sum(forwards[s] for s in done_ids), sum(forwards[s] for _, s in todo[summary.done_now:]))
            if progress or summary.eta_hours > KAGGLE_SESSION_HOURS:
                bar.write(msg)
        bar.update(summary.done_now - bar.n)
        bar.set_postfix(tok_s=f"{summary.tokens_per_second:.0f}", peak_mb=f"{peak_memory_mb(run.device):.0f}")
    bar.close()
    if summary.over_trained_length:
        import warnings

        warnings.warn(f"{summary.over_trained_length} of {summary.done_now} prompts are longer than the "
                      f"{run.facts['trained_length']} tokens the model was trained on: its Δ and losses there are "
                      "outside its training length (recorded per sample as over_trained_length)", stacklevel=2)
    summary.seconds = time.perf_counter() - start
    summary.peak_memory_mb = peak_memory_mb(run.device)
    return summary


@torch.no_grad()
def example(lm, tokenizer, sample: dict, cfg: ExtractConfig) -> dict:
    """Per-token statistics of one sample for reading: tokens (text pieces from the offsets), per layer
    {stat: (L,)}, and for every token the chunk index it belongs to (-1: headers, query, target)."""
    set_scan(lm, cfg.scan)
    enc = encode(tokenizer, sample, cfg.layout)
    stats, loss, _ = forward_sample(lm, enc)
    ids = enc.input_ids[0].tolist()
    tokens = [tokenizer.decode([t]) for t in ids]
    owner = np.full(len(ids), -1)
    for ci, r in enumerate(enc.chunk_tokens):
        if r is not None:
            owner[r[0]:r[1]] = ci
    return {"tokens": tokens, "stats": stats, "chunk_of_token": owner, "target_tokens": enc.target_tokens,
            "target_loss": loss, "encoded": enc}


def example_view(ds, lm, tokenizer, cfg: ExtractConfig, sample_id: str | None = None,
                 layers: list[int] | None = None) -> dict:
    """:func:`example` of one sample of ``ds`` (``sample_id``; None: the first test sample, else the first sample),
    with ``sample_id``, the ``relevant`` chunk indices, ``marks`` (per token: in a relevant chunk) and the ``layers``
    to show (None: up to 4, evenly spaced over the captured layers)."""
    test_ids = ds.samples.loc[ds.samples["split"] == "test", "sample_id"]
    sid = sample_id or (test_ids.iloc[0] if len(test_ids) else ds.samples["sample_id"].iloc[0])
    sample = ds.sample(sid)
    out = example(lm, tokenizer, sample, cfg)
    relevant = {c["chunk_index"] for c in sample["chunks"] if c["category"] == "relevant"}
    n_layers = len(out["stats"])
    shown = layers or sorted(set(np.linspace(0, n_layers - 1, min(4, n_layers)).round().astype(int).tolist()))
    return {**out, "sample_id": sid, "relevant": sorted(relevant),
            "marks": np.isin(out["chunk_of_token"], list(relevant)), "layers": shown}


# ---- command line -------------------------------------------------------------------------------------------------
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
