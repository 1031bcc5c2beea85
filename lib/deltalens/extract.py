"""Δ from a pretrained Mamba LM per context chunk: resumable, shardable extraction over a code-context dataset.

For every sample (in a deterministic order, shard ``i/n`` takes every n-th one) the prompt is laid out
(:mod:`deltalens.prompts`: context first or query first, then the target line), tokenized with offsets, truncated
by a recorded policy, and run once through the model's backbone under :func:`deltalens.capture.capture_delta` with a
reducer that keeps per-token channel statistics only (mean, mean log, L2 norm, max of Δ over channels) — full Δ of
a layer lives only inside its hook. Per chunk, those statistics are averaged over the chunk's tokens. The same
forward gives the LM's loss on the target line and each chunk's self-information (mean NLL of its tokens in
context: the Selective-Context / LLMLingua score), with ``lm_head`` applied in slices so the logits of a 65k
vocabulary are never materialised for the whole prompt; with ``leave_one_out``, one more forward per chunk gives the
loss without that chunk (a model-grounded relevance label: how much the chunk helps).

Output folder (``out_dir``)::

    run.json                      parameters, model facts, dataset fingerprint, versions (resume refuses a mismatch)
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
import os
import re
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .capture import capture_delta, find_mixers
from .params import ParameterError, check_choice, check_int
from .paths import resolve
from .prompts import ORDERS, layout, token_ranges
from .scores import token_stats

STATS = ("mean", "mean_log", "l2", "max")
TRUNCATION = ("drop_chunks", "left", "error")
DTYPES = ("float32", "bfloat16", "float16", "auto")


class ModelLoadError(RuntimeError):
    """The model could not be loaded; the message says what to pass instead."""


@dataclass
class ExtractConfig:
    model: str = "data/models/code-lm"     # local path or hub id (e.g. tiiuae/falcon-mamba-7b)
    dataset_dir: str = "data/processed/context"
    out_dir: str = "data/processed/delta/code-lm/context_first"
    order: str = "context_first"            # context_first | query_first
    query_chars: int = 800                  # query_first: characters of the prefix tail put first
    max_tokens: int = 8192
    truncation: str = "drop_chunks"         # drop_chunks (leading chunks first) | left (keep the last tokens) | error
    layers: list[int] | None = None         # None = every layer
    split: str | None = None                # None = both splits
    max_samples: int | None = None          # a fixed pseudo-random subset (by hash of the sample id; None = all)
    shard: str = "0/1"                      # i/n: this run takes samples k with k % n == i
    leave_one_out: bool = False             # one more forward per chunk: loss without it
    loo_samples: int | None = None          # leave-one-out on this many of the samples only (hash subset; None = all)
    save_token_stats: bool = False          # per-token statistics per sample (safetensors)
    dtype: str = "float32"                  # float32 | bfloat16 | float16 | auto
    device: str = "cpu"                     # cpu | cuda | cuda:1 | auto (cuda when available)
    device_map: str | None = None           # "auto" spreads one model over several GPUs (accelerate)
    allow_download: bool = False            # hub ids: try the hub after the local cache (Kaggle: true)
    use_mambapy: str | bool = "auto"        # transformers' own mambapy parallel scan instead of its sequential loop
                                            # (same Δ; auto = on for small models on the CPU, see set_scan)

    def check(self) -> "ExtractConfig":
        check_choice("order", self.order, ORDERS)
        check_choice("truncation", self.truncation, TRUNCATION)
        check_choice("dtype", self.dtype, DTYPES)
        check_choice("use_mambapy", self.use_mambapy, ("auto", True, False))
        check_int("max_tokens", self.max_tokens, minimum=16)
        check_int("query_chars", self.query_chars, minimum=0)
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
        for k in ("shard", "device", "device_map", "allow_download", "out_dir", "dataset_dir", "use_mambapy"):
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


# ---- model --------------------------------------------------------------------------------------------------------
def _device(device: str, environ=os.environ) -> str:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and int(environ.get("WORLD_SIZE", 1)) > 1:
        device = f"cuda:{int(environ.get('LOCAL_RANK', 0))}"
    return device


def load_lm(model: str, *, dtype: str = "float32", device: str = "cpu", device_map: str | None = None,
            allow_download: bool = False):
    """(model in eval mode, fast tokenizer) from a local path, the local Hugging Face cache, or — with
    ``allow_download`` — the hub. Clear errors for an unreachable id and for a model without Mamba mixers."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    local = Path(model).exists() or resolve(model).exists()
    path = str(resolve(model)) if local and not Path(model).exists() else model
    is_hub_id = re.fullmatch(r"[\w.-]+/[\w.-]+", model) is not None and not local
    if not local and not is_hub_id:
        raise ModelLoadError(f"parameter model={model!r}: no such local directory (and not a hub id like "
                             "'tiiuae/falcon-mamba-7b'); train the default model with `make code-lm`")
    torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
    kw = {"dtype": torch_dtype}
    if device_map:
        kw["device_map"] = device_map
    attempts = [True] if local or not allow_download else [True, False]
    err = None
    for local_only in attempts:
        try:
            tok = AutoTokenizer.from_pretrained(path, local_files_only=local_only)
            lm = AutoModelForCausalLM.from_pretrained(path, local_files_only=local_only, **kw)
            break
        except (OSError, ValueError) as e:
            err = e
    else:
        hint = ("the Hugging Face hub is not reachable from here: download the model elsewhere "
                "(`huggingface-cli download " + model + " --local-dir DIR`) and pass model=DIR"
                if is_hub_id and not allow_download else "check the path / id (and allow_download for the hub)")
        raise ModelLoadError(f"could not load model {model!r}: {hint}. ({type(err).__name__}: {str(err)[:300]})") from None
    if not getattr(tok, "is_fast", False):
        raise ModelLoadError(f"model {model!r}: its tokenizer is not a fast tokenizer; offsets are needed to map chunks "
                             "to tokens")
    try:
        find_mixers(lm)
    except ValueError as e:
        raise ModelLoadError(f"model {model!r}: {e}") from None
    if not device_map:
        lm = lm.to(_device(device))
    return lm.eval(), tok


def set_scan(lm, use_mambapy: str | bool = "auto") -> bool:
    """Switch transformers' Mamba / FalconMamba mixers to mambapy's parallel scan (``use_mambapy``, a config option
    of the unmodified library). Δ is computed before the scan, so it is the same either way; only the speed changes.
    ``auto``: on for small models on the CPU (d_inner <= 128), where the sequential loop's per-token overhead
    dominates — measured here: 40x faster at d_inner 64, but 0.75x at d_inner 512 with ~4000-token prompts, where
    the parallel scan's (L, d_inner, d_state) tensors cost more than the loop."""
    from importlib.util import find_spec

    small = find_mixers(lm)[0][1].dt_proj.out_features <= 128
    on = (next(lm.parameters()).device.type == "cpu" and small) if use_mambapy == "auto" else bool(use_mambapy)
    on = on and find_spec("mambapy") is not None
    for _, mixer in find_mixers(lm):
        if hasattr(mixer, "use_mambapy"):
            mixer.use_mambapy = on
    if hasattr(lm.config, "use_mambapy"):
        lm.config.use_mambapy = on
    return on


def model_facts(lm) -> dict:
    mixers = find_mixers(lm)
    m0 = mixers[0][1]
    return {"architecture": type(lm).__name__, "n_layers": len(mixers), "d_inner": int(m0.dt_proj.out_features),
            "dtype": str(next(lm.parameters()).dtype).replace("torch.", ""),
            "n_parameters": int(sum(p.numel() for p in lm.parameters()))}


# ---- one sample ---------------------------------------------------------------------------------------------------
@dataclass
class Encoded:
    input_ids: torch.Tensor                       # (1, L)
    chunk_tokens: list[tuple[int, int] | None]    # per chunk_index
    target_tokens: tuple[int, int]
    n_tokens_full: int                            # before truncation
    dropped: list[int] = field(default_factory=list)   # chunks left out by truncation
    cut_tokens: int = 0                           # tokens cut from the left (truncation 'left')


def encode(tokenizer, sample: dict, cfg: ExtractConfig, drop=()) -> Encoded:
    """Tokenize the layout of ``sample`` with chunk / target token ranges, truncated per ``cfg.truncation``."""
    dropped = list(drop)
    first = None
    order = sorted(c["chunk_index"] for c in sample["chunks"])
    while True:
        lp = layout(sample, cfg.order, drop=dropped, query_chars=cfg.query_chars)
        enc = tokenizer(lp.text, return_offsets_mapping=True, add_special_tokens=False)
        ids, offsets = enc["input_ids"], np.asarray(enc["offset_mapping"]).reshape(-1, 2)
        first = len(ids) if first is None else first
        if len(ids) <= cfg.max_tokens:
            break
        if cfg.truncation == "error":
            raise ParameterError(f"sample {sample['sample_id']!r}: {len(ids)} tokens > max_tokens={cfg.max_tokens} "
                                 "(truncation='error'; use 'drop_chunks' or 'left', or raise max_tokens)")
        if cfg.truncation == "left":
            cut = len(ids) - cfg.max_tokens
            ranges = token_ranges(offsets, list(lp.chunk_spans) + [lp.target_span])
            tgt = ranges[-1]
            if tgt[0] - cut < 1:
                raise ParameterError(f"sample {sample['sample_id']!r}: the target line does not fit in "
                                     f"max_tokens={cfg.max_tokens}")
            chunks = [None if r is None or r[1] <= cut else (max(r[0] - cut, 0), r[1] - cut) for r in ranges[:-1]]
            return Encoded(torch.tensor([ids[cut:]]), chunks, (tgt[0] - cut, tgt[1] - cut), first,
                           [i for i, (r, c) in enumerate(zip(ranges[:-1], chunks)) if r is not None and c is None], cut)
        remaining = [i for i in order if i not in dropped]
        if not remaining:
            raise ParameterError(f"sample {sample['sample_id']!r}: even without any chunk the prompt has {len(ids)} "
                                 f"tokens > max_tokens={cfg.max_tokens}")
        dropped.append(remaining[0])  # the chunk farthest from the target line
    ranges = token_ranges(offsets, list(lp.chunk_spans) + [lp.target_span])
    return Encoded(torch.tensor([ids]), ranges[:-1], ranges[-1], first, [i for i in dropped if i not in drop])


def _backbone_and_head(lm):
    return lm.base_model, lm.get_output_embeddings()


def _token_nll(head, hidden: torch.Tensor, ids: torch.Tensor, start: int, end: int, slice_len: int = 1024) -> np.ndarray:
    """NLL of tokens ``start..end-1`` given what precedes them, ``lm_head`` applied ``slice_len`` positions at a time."""
    out = []
    for a in range(start, end, slice_len):
        b = min(end, a + slice_len)
        logits = head(hidden[0, a - 1:b - 1]).float()
        out.append(torch.nn.functional.cross_entropy(logits, ids[0, a:b], reduction="none").cpu())
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.float32)


@torch.no_grad()
def forward_sample(lm, enc: Encoded, *, capture: bool = True, layers=None, token_nll: bool = False):
    """(per-layer token statistics {stat: (L,) float32 numpy} or None, mean NLL of the target line in nats/token,
    per-token NLL (L,) with NaN at position 0 — or None without ``token_nll``)."""
    backbone, head = _backbone_and_head(lm)
    device = next(lm.parameters()).device
    ids = enc.input_ids.to(device)
    t0, t1 = enc.target_tokens
    if capture:
        with capture_delta(lm, reduce=token_stats, layers=layers) as rec:
            hidden = backbone(input_ids=ids).last_hidden_state
        stats = [{k: v[0].float().numpy() for k, v in d.items()} for d in rec.last()]
    else:
        hidden, stats = backbone(input_ids=ids).last_hidden_state, None
    nll = None
    if token_nll:
        nll = np.concatenate([[np.nan], _token_nll(head, hidden, ids, 1, ids.shape[1])]).astype(np.float32)
        loss = float(nll[t0:t1].mean())
    else:
        loss = float(_token_nll(head, hidden, ids, t0, t1).mean())
    return stats, loss, nll


@torch.no_grad()
def target_metrics(lm, enc: Encoded) -> tuple[float, bool]:
    """(mean NLL of the target line, greedy exact match): teacher-forced argmax equal to every target token is
    exactly what greedy decoding would produce, so one forward gives both."""
    backbone, head = _backbone_and_head(lm)
    ids = enc.input_ids.to(next(lm.parameters()).device)
    t0, t1 = enc.target_tokens
    hidden = backbone(input_ids=ids).last_hidden_state
    logits = head(hidden[0, t0 - 1:t1 - 1]).float()
    loss = torch.nn.functional.cross_entropy(logits, ids[0, t0:t1]).item()
    return loss, bool((logits.argmax(-1) == ids[0, t0:t1]).all())


def chunk_rows(sample_id: str, enc: Encoded, stats: list[dict], layer_ids: list[int]) -> pd.DataFrame:
    """chunk x layer rows: the mean of each per-token statistic over the chunk's tokens (NaN for left-out chunks)."""
    rows = []
    for li, st in zip(layer_ids, stats):
        for ci, r in enumerate(enc.chunk_tokens):
            n = 0 if r is None else r[1] - r[0]
            row = {"sample_id": sample_id, "chunk_index": ci, "layer": li, "n_tokens": n}
            for s in STATS:
                row[s] = float(st[s][r[0]:r[1]].mean()) if n else np.nan
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
    from importlib.metadata import version

    return {p: version(p) for p in ("torch", "transformers", "tokenizers")}


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def _check_run_json(out: Path, key: dict) -> None:
    f = out / "run.json"
    if f.is_file():
        old = json.loads(f.read_text())
        if old.get("key") != json.loads(json.dumps(key)):
            diff = {k: (old.get("key", {}).get(k), v) for k, v in json.loads(json.dumps(key)).items()
                    if old.get("key", {}).get(k) != v}
            raise ParameterError(f"{out} holds a run with other parameters {diff} (stored, given); use another "
                                 "out_dir or delete it")


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

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else float("nan")


def peak_memory_mb(device) -> float:
    if str(device).startswith("cuda"):
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def extract(cfg: ExtractConfig, ds=None, lm=None, tokenizer=None, progress: bool = True) -> RunSummary:
    """Run (or resume) the extraction of ``cfg``'s shard; see the module docstring."""
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
    set_scan(lm, cfg.use_mambapy)
    facts = model_facts(lm)
    layer_ids = list(range(facts["n_layers"])) if cfg.layers is None else list(cfg.layers)
    bad = [x for x in layer_ids if not 0 <= x < facts["n_layers"]]
    if bad:
        raise ParameterError(f"parameter layers={cfg.layers}: {bad} out of range; the model has {facts['n_layers']} layers")
    out = resolve(cfg.out_dir)
    key = {**cfg.run_key(), "dataset": dataset_fingerprint(ds), "model_facts": facts}
    _check_run_json(out, key)
    parts = out / f"shard-{i}-of-{n}" / "parts"
    parts.mkdir(parents=True, exist_ok=True)
    if not (out / "run.json").is_file():
        _atomic_write(out / "run.json", lambda p: p.write_text(json.dumps(
            {"key": key, "config": asdict(cfg), "versions": _versions(), "sample_ids": ids}, indent=1)))
    mine = [(k, s) for k, s in enumerate(ids) if k % n == i]
    loo_ids = hash_subset(ids, cfg.loo_samples) if cfg.leave_one_out else set()
    todo = [(k, s) for k, s in mine if not (parts / f"{k:06d}.json").is_file()]
    device = next(lm.parameters()).device
    summary = RunSummary(f"{i}/{n}", len(mine), len(mine) - len(todo), 0, 0, 0.0, 0.0, 0)
    start = time.perf_counter()
    bar = tqdm(todo, desc=f"extract Δ {i}/{n}", unit="sample", disable=not progress)
    for k, sid in bar:
        sample = ds.sample(sid)
        t = time.perf_counter()
        enc = encode(tokenizer, sample, cfg)
        stats, loss, nll = forward_sample(lm, enc, layers=cfg.layers, token_nll=True)
        lm_rows, n_loo = [], 0
        for ci, r in enumerate(enc.chunk_tokens):
            n = 0 if r is None else r[1] - r[0]
            row = {"chunk_index": ci, "n_tokens": n,
                   "self_information": float(np.nanmean(nll[r[0]:r[1]])) if n else None,
                   "loss_without": None, "loss_gain": None}
            if sid in loo_ids and n:
                enc_wo = encode(tokenizer, sample, cfg, drop=[*enc.dropped, ci])
                _, loss_wo, _ = forward_sample(lm, enc_wo, capture=False)
                row.update(loss_without=loss_wo, loss_gain=loss_wo - loss)
                n_loo += 1
            lm_rows.append(row)
        rows = chunk_rows(sid, enc, stats, layer_ids)
        _atomic_write(parts / f"{k:06d}.parquet", lambda p: rows.to_parquet(p, index=False))
        if cfg.save_token_stats:
            from safetensors.torch import save_file

            tensors = {s: torch.from_numpy(np.stack([st[s] for st in stats])) for s in STATS}
            tensors["input_ids"] = enc.input_ids[0].cpu()
            _atomic_write(parts / f"{k:06d}.tokens.safetensors", lambda p: save_file(tensors, str(p)))
        record = {"position": k, "sample_id": sid, "n_tokens": int(enc.input_ids.shape[1]),
                  "n_tokens_full": enc.n_tokens_full, "truncated": bool(enc.dropped or enc.cut_tokens),
                  "dropped_chunks": enc.dropped, "cut_tokens": enc.cut_tokens, "target_tokens": enc.target_tokens[1] - enc.target_tokens[0],
                  "target_loss": loss, "leave_one_out": sid in loo_ids, "seconds": time.perf_counter() - t,
                  "chunks": lm_rows}
        _atomic_write(parts / f"{k:06d}.json", lambda p: p.write_text(json.dumps(record)))
        summary.done_now += 1
        summary.tokens += record["n_tokens"] * (1 + n_loo)
        summary.truncated += record["truncated"]
        summary.seconds = time.perf_counter() - start
        bar.set_postfix(tok_s=f"{summary.tokens_per_second:.0f}", peak_mb=f"{peak_memory_mb(device):.0f}")
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
    for js in sorted(out.glob("shard-*-of-*/parts/*.json")):
        rec = json.loads(js.read_text())
        if rec["position"] in seen:
            raise ValueError(f"sample {rec['sample_id']!r} extracted twice: {seen[rec['position']]} and {js}")
        seen[rec["position"]] = js
        if ids[rec["position"]] != rec["sample_id"]:
            raise ValueError(f"{js}: position {rec['position']} is {ids[rec['position']]!r} in run.json, not {rec['sample_id']!r}")
        records.append(rec)
        frames.append(pd.read_parquet(js.with_suffix(".parquet")))
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
        _atomic_write(paths[name], lambda p, df=df: df.to_parquet(p, index=False))
    (out / "merged.json").write_text(json.dumps({"samples": len(records), "missing": len(missing),
                                                 "chunk_rows": len(chunk),
                                                 "loo_chunks": int(chunk_lm["loss_gain"].notna().sum())}, indent=1))
    return paths


@torch.no_grad()
def example(lm, tokenizer, sample: dict, cfg: ExtractConfig) -> dict:
    """Per-token statistics of one sample for reading: tokens (text pieces from the offsets), per layer
    {stat: (L,)}, and for every token the chunk index it belongs to (-1: headers, query, target)."""
    set_scan(lm, cfg.use_mambapy)
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
              f"peak memory {s.peak_memory_mb:.0f} MB")
        return 0
    except (ParameterError, ModelLoadError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=__import__("sys").stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
