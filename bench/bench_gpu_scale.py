"""GPU scale benchmark: the project's own extraction on a model of falcon-mamba-7b's exact shape (or, with
``--shape mamba-codestral-7b``, Codestral Mamba's: Mamba-2, Δ per head) with random weights, no download, per scan
path and batching, with and without the Δ hooks, in one run; prints (and writes) one JSON.

    python bench/bench_gpu_scale.py --out reports/bench/gpu_scale.json            # a CUDA GPU, bf16 (make bench-gpu)
    python bench/bench_gpu_scale.py --shape mamba-codestral-7b --out reports/bench/gpu_scale_codestral.json
    python bench/bench_gpu_scale.py --tiny --out reports/bench/gpu_scale_tiny.json  # same code on the CPU, seconds

Measured, each as a ratio inside the same run (interleaved, so machine noise hits both sides alike):

* per scan path (``sequential``, ``mambapy``, ``cuda_kernels`` where importable) and per batching (one prompt per
  forward vs. ``batch_tokens: auto``): tokens/s with capture and without, peak GPU memory above the weights with
  and without capture;
* leave-one-out: seconds per sample for the full prompt + one variant per chunk, batched, on the auto-chosen path;
* ``extract()`` itself end to end on the auto path (what a user runs), and the hours the whole dataset would take
  without and with leave-one-out at the measured speeds.

The tokenizer is a byte-level BPE trained here on the dataset's own text (the real model's tokenizer cannot be
downloaded): token counts per prompt are close to, not equal to, falcon-mamba-7b's. Results are written after every
step, so a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from deltalens.context import load
from deltalens.extract import run as ex
from deltalens.lm import forward as fw
from deltalens.lm import loading as ld
from deltalens.lm.prompts import LayoutPolicy, encode, encode_variants

FALCON_MAMBA_7B = dict(hidden_size=4096, intermediate_size=8192, num_hidden_layers=64, state_size=16,
                       time_step_rank=256, vocab_size=65024, conv_kernel=4, use_conv_bias=True, use_bias=False,
                       layer_norm_epsilon=1e-5, mixer_rms_eps=1e-6, residual_in_fp32=True, tie_word_embeddings=False)
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, state_size=16, time_step_rank=8,
            vocab_size=1024, conv_kernel=4, use_conv_bias=True, use_bias=False, layer_norm_epsilon=1e-5,
            mixer_rms_eps=1e-6, residual_in_fp32=True, tie_word_embeddings=False)


# Codestral Mamba (mistralai/Mamba-Codestral-7B-v0.1, Mamba2ForCausalLM, 7.29 B parameters): Δ per head
MAMBA_CODESTRAL_7B = dict(hidden_size=4096, num_hidden_layers=64, state_size=128, num_heads=128, head_dim=64,
                          n_groups=8, expand=2, vocab_size=32768, conv_kernel=4, chunk_size=256, use_conv_bias=True,
                          use_bias=False, layer_norm_epsilon=1e-5, residual_in_fp32=True, tie_word_embeddings=False,
                          time_step_limit=(0.0, float("inf")))
TINY_MAMBA2 = dict(hidden_size=64, num_hidden_layers=2, state_size=16, num_heads=8, head_dim=16, n_groups=2, expand=2,
                   vocab_size=1024, conv_kernel=4, chunk_size=64, use_conv_bias=True, use_bias=False,
                   layer_norm_epsilon=1e-5, residual_in_fp32=True, tie_word_embeddings=False)
SHAPES = {"falcon-mamba-7b": (FALCON_MAMBA_7B, TINY, "sequential,mambapy,cuda_kernels"),
          "mamba-codestral-7b": (MAMBA_CODESTRAL_7B, TINY_MAMBA2, "chunked,cuda_kernels")}


def build_model(shape: dict, dtype: torch.dtype, device: str, seed: int = 0):
    from transformers import FalconMambaConfig, FalconMambaForCausalLM, Mamba2Config, Mamba2ForCausalLM

    torch.manual_seed(seed)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # initialise directly in the target dtype (no float32 copy of 7 B parameters)
    try:
        with torch.device(device):
            if "num_heads" in shape:
                lm = Mamba2ForCausalLM(Mamba2Config(**shape))
            else:
                lm = FalconMambaForCausalLM(FalconMambaConfig(**shape))
    finally:
        torch.set_default_dtype(default)
    return lm.eval()


def train_bpe(ds, vocab_size: int):
    from deltalens.codelm.tokenizer import TokenizerConfig, train_tokenizer

    texts = list(ds.chunks["text"]) + list(ds.samples["prefix"])
    return train_tokenizer(texts, TokenizerConfig(vocab_size=vocab_size))


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(lm, encs, device, **kw) -> tuple[float, float]:
    """(seconds, peak memory above what was allocated before, MB) of :func:`forward_all` over ``encs``."""
    _sync(device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    t = time.perf_counter()
    fw.forward_all(lm, encs, **kw)
    _sync(device)
    seconds = time.perf_counter() - t
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20 if device.startswith("cuda") else float("nan")
    return seconds, peak


def throughput(lm, encs, device, repeats: int, batch_tokens) -> dict:
    """Interleaved with / without capture: tokens/s, peak memory, their ratios."""
    tokens = sum(e.n_tokens for e in encs)
    secs, peaks = {"capture": [], "plain": []}, {"capture": [], "plain": []}
    for _ in range(repeats):
        for mode in ("plain", "capture"):
            s, p = timed(lm, encs, device, batch_tokens=batch_tokens, capture=mode == "capture", token_nll=True)
            secs[mode].append(s)
            peaks[mode].append(p)
    med = {m: statistics.median(v) for m, v in secs.items()}
    peak = {m: max(v) for m, v in peaks.items()}
    return {"tokens": tokens, "batch_tokens": batch_tokens, "seconds": med,
            "tokens_per_second_capture": tokens / med["capture"], "tokens_per_second_plain": tokens / med["plain"],
            "capture_time_ratio": med["capture"] / med["plain"], "peak_mb": peak,
            "capture_memory_ratio": peak["capture"] / peak["plain"] if peak["plain"] else float("nan")}


def loo_seconds(lm, tok, ds, sids, policy, device) -> dict:
    """Seconds per sample for what extraction does with leave-one-out: the full prompt with capture, then every
    chunk's variant without it, each group batched (batch_tokens auto)."""
    per = []
    for sid in sids:
        sample = ds.sample(sid)
        enc, _, loo = encode_variants(tok, sample, policy, leave_one_out=True)
        variants = [v for _, v in loo]
        _sync(device)
        t = time.perf_counter()
        fw.forward_all(lm, [enc], token_nll=True)
        fw.forward_all(lm, variants, capture=False)
        _sync(device)
        per.append({"sample_id": sid, "forwards": 1 + len(variants), "tokens": enc.n_tokens + sum(v.n_tokens for v in variants),
                    "seconds": time.perf_counter() - t})
    return {"per_sample": per, "seconds_per_sample": statistics.mean(p["seconds"] for p in per),
            "tokens_per_second": sum(p["tokens"] for p in per) / sum(p["seconds"] for p in per)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="a tiny model of the same family on the CPU (seconds)")
    ap.add_argument("--dataset", default="data/processed/context")
    ap.add_argument("--dtype", default=None, help="bfloat16 | float16 | float32 (default: bfloat16)")
    ap.add_argument("--device", default=None, help="default: cuda, or cpu with --tiny")
    ap.add_argument("--samples", type=int, default=4, help="test-split samples for the throughput runs")
    ap.add_argument("--loo-samples", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--shape", default="falcon-mamba-7b", choices=sorted(SHAPES),
                    help="the model's shape (random weights): falcon-mamba-7b (Mamba-1) or mamba-codestral-7b (Mamba-2)")
    ap.add_argument("--scans", default=None,
                    help="scan paths to measure (those that cannot run here are listed as skipped)")
    ap.add_argument("--unbatched-samples", type=int, default=1,
                    help="samples for the one-prompt-per-forward runs (slow on the sequential path)")
    ap.add_argument("--vocab", type=int, default=None, help="BPE vocabulary trained on the dataset (default 32000)")
    ap.add_argument("--no-fp16-check", dest="fp16_check", action="store_false",
                    help="skip the last step: the model cast to float16, one prompt per scan path")
    ap.add_argument("--out", default="reports/bench/gpu_scale.json")
    args = ap.parse_args(argv)
    device = args.device or ("cpu" if args.tiny else "cuda")
    dtype = getattr(torch, args.dtype or "bfloat16")
    full_shape, tiny_shape, default_scans = SHAPES[args.shape]
    shape = tiny_shape if args.tiny else full_shape
    args.scans = args.scans or default_scans
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result: dict = {"argv": sys.argv[1:] if argv is None else argv, "tiny": args.tiny, "shape_name": args.shape,
                    "shape": shape,
                    "dtype": str(dtype).replace("torch.", ""), "device": device,
                    "device_name": torch.cuda.get_device_name() if device.startswith("cuda") else
                    f"CPU {platform.machine()}, {torch.get_num_threads()} threads",
                    "versions": ex._versions(), "steps": {}}

    def save(step: str | None = None, value=None) -> None:
        if step:
            result["steps"][step] = value
            print(f"[{time.strftime('%H:%M:%S')}] {step}: {json.dumps(value, default=str)[:400]}", flush=True)
        out.write_text(json.dumps(result, indent=1, default=str))

    t0 = time.perf_counter()
    ds = load(args.dataset)
    tok = train_bpe(ds, args.vocab or (1000 if args.tiny else 32000))
    lm = build_model(shape, dtype, device)
    result["model"] = {**ld.model_facts(lm), "build_seconds": time.perf_counter() - t0}
    save("setup", result["model"])
    policy = LayoutPolicy(max_tokens=8192)
    test_ids = list(ds.samples.loc[ds.samples["split"] == "test", "sample_id"])
    sids = [s for s in test_ids if s in ex.hash_subset(test_ids, args.samples)]
    encs = [encode(tok, ds.sample(s), policy) for s in sids]
    warm = encode(tok, ds.sample(sids[0]), LayoutPolicy(max_tokens=256, truncation="left"))
    result["mean_tokens_per_prompt"] = statistics.mean(e.n_tokens for e in encs)

    measured = {}
    for scan in args.scans.split(","):
        try:
            choice = ld.set_scan(lm, scan)
        except Exception as e:  # a path that cannot run here (no kernels, no mambapy) is reported, not fatal
            save(f"{scan}: skipped", str(e))
            continue
        fw.forward_all(lm, [warm], token_nll=True)  # warm-up: lazy allocations, kernels, autocast caches
        budget = fw.auto_batch_tokens(lm, choice)
        one = max(e.n_tokens for e in encs)
        for name, subset, bt in (("one prompt per forward", encs[:args.unbatched_samples], one),
                                 ("batched", encs, budget)):
            try:
                r = {**choice.as_dict(), **throughput(lm, subset, device, args.repeats, bt)}
            except torch.OutOfMemoryError as e:  # reported, the run goes on
                r = {"error": f"out of memory: {str(e)[:200]}", "batch_tokens": bt}
                torch.cuda.empty_cache()
            if name == "batched" and "error" not in r:
                measured[scan] = r
            save(f"{scan}: {name}", r)

    choice = ld.set_scan(lm, "auto")
    result["auto_scan"] = choice.as_dict()
    try:
        save("loo (auto path)", loo_seconds(lm, tok, ds, sids[:args.loo_samples], policy, device))
    except Exception as e:  # noqa: BLE001 - recorded, the run goes on
        save("loo (auto path)", {"error": f"{type(e).__name__}: {str(e)[:300]}", "tokens_per_second": float("nan"),
                                 "seconds_per_sample": float("nan")})
    try:
        with tempfile.TemporaryDirectory() as d:
            cfg = ex.ExtractConfig(out_dir=d, split="test", max_samples=args.samples, dtype=result["dtype"],
                                   device=device, max_tokens=8192)
            s = ex.extract(cfg, ds=ds, lm=lm, tokenizer=tok, progress=False)
            save("extract() on the auto path", {"samples": s.done_now, "tokens": s.tokens, "seconds": s.seconds,
                                                "tokens_per_second": s.tokens_per_second, "runtime": s.runtime,
                                                "peak_memory_mb": s.peak_memory_mb})
    except Exception as e:  # noqa: BLE001
        save("extract() on the auto path", {"error": f"{type(e).__name__}: {str(e)[:300]}",
                                            "tokens_per_second": float("nan")})
    all_tokens = [encode(tok, ds.sample(s), policy) for s in ds.samples["sample_id"]]
    n_tok = sum(e.n_tokens for e in all_tokens)
    loo_tok = sum(e.n_tokens * (1 + sum(1 for r in e.chunk_tokens if r is not None and r[1] > r[0])) for e in all_tokens)
    extract_tps = result["steps"]["extract() on the auto path"]["tokens_per_second"]
    loo_tps = result["steps"]["loo (auto path)"]["tokens_per_second"]
    save("whole dataset estimate", {"samples": len(all_tokens), "tokens": n_tok, "hours_without_loo": n_tok / extract_tps / 3600,
                                    "loo_tokens": loo_tok, "hours_with_loo": loo_tok / loo_tps / 3600})
    if args.fp16_check and dtype != torch.float16:  # the floor: no crash in float16 on every path
        lm.to(torch.float16)
        checks = {}
        for scan in args.scans.split(","):
            try:
                ld.set_scan(lm, scan)
            except Exception as e:
                checks[scan] = f"skipped: {e}"[:160]
                continue
            try:
                r = fw.forward_all(lm, encs[:1], token_nll=True)[0]
                checks[scan] = {"target_loss": r.target_loss, "finite_stats": bool(all(
                    torch.isfinite(torch.from_numpy(v)).all() for d in r.stats for v in d.values()))}
            except Exception as e:
                checks[scan] = f"FAILED: {type(e).__name__}: {e}"[:300]
        save("float16 check", checks)
    result["summary"] = {
        "device_name": result["device_name"], "dtype": result["dtype"], "auto_scan": choice.scan,
        **{f"{k}_batched_tokens_per_second_capture": v["tokens_per_second_capture"] for k, v in measured.items()},
        **{f"{k}_capture_time_ratio": v["capture_time_ratio"] for k, v in measured.items()},
        **{f"{k}_capture_memory_ratio": v["capture_memory_ratio"] for k, v in measured.items()},
        "extract_tokens_per_second": extract_tps,
        "loo_seconds_per_sample": result["steps"]["loo (auto path)"]["seconds_per_sample"],
        "whole_dataset_hours_without_loo": result["steps"]["whole dataset estimate"]["hours_without_loo"],
        "whole_dataset_hours_with_loo": result["steps"]["whole dataset estimate"]["hours_with_loo"],
        "total_seconds": time.perf_counter() - t0,
    }
    save()
    print(json.dumps(result["summary"], indent=1))
    return result


if __name__ == "__main__":
    main()
