"""Extraction benchmarks on the default code LM (or --model): capture overhead and peak memory against a plain
forward of the same model, as ratios measured in the same run; stored bytes per sample; tokens per second.

    python bench/bench_extract.py --out reports/bench/extract.json [--model DIR] [--device cuda]

* time: ``forward_sample`` with the Δ hooks (reduced to per-token statistics inside the hook) vs. the same call
  without hooks, interleaved (target ratio <= 1.05);
* memory: each variant in a fresh subprocess; the peak resident memory of the forward above the resident memory
  just before it (Linux: /proc/self/clear_refs resets the high-water mark), or torch.cuda peak on a GPU (target
  ratio <= 1.10);
* stored bytes: the parquet rows of one sample (layers x chunks) vs. what full Δ would take (layers x tokens x
  d_inner x 4 bytes).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from deltalens.context import load
from deltalens.extract import run as ex


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def memory_child(model: str, dataset: str, sample: int, capture: bool, device: str) -> None:
    """Runs in a subprocess: print the forward's peak memory above its baseline, in MB."""
    lm, tok = ex.load_lm(model, device=device)
    ex.set_scan(lm, "auto")
    ds = load(dataset)
    enc = ex.encode(tok, ds.sample(sample), ex.ExtractConfig().layout)
    short = ex.encode(tok, ds.sample(sample), ex.ExtractConfig(max_tokens=256, truncation="left").layout)
    ex.forward_sample(lm, short, capture=capture, token_nll=True)  # warm-up: lazy allocations, kernels
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        ex.forward_sample(lm, enc, capture=capture, token_nll=True)
        print((torch.cuda.max_memory_allocated() - base) / 2**20)
        return
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    base = _rss_kb("VmRSS")
    ex.forward_sample(lm, enc, capture=capture, token_nll=True)
    print((_rss_kb("VmHWM") - base) / 1024)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="data/models/code-lm")
    ap.add_argument("--dataset", default="data/processed/context")
    ap.add_argument("--out", default="reports/bench/extract.json")
    ap.add_argument("--samples", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--memory-child", nargs=2, metavar=("SAMPLE", "CAPTURE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(args.model, args.dataset, int(args.memory_child[0]), args.memory_child[1] == "1", args.device)
        return

    lm, tok = ex.load_lm(args.model, device=args.device)
    scan = ex.set_scan(lm, "auto")
    ds = load(args.dataset)
    facts = ex.model_facts(lm)
    encs = [ex.encode(tok, ds.sample(i), ex.ExtractConfig().layout) for i in range(args.samples)]
    tokens = sum(e.input_ids.shape[1] for e in encs)
    for e in encs[:2]:  # warm-up
        ex.forward_sample(lm, e, token_nll=True), ex.forward_sample(lm, e, capture=False, token_nll=True)
    times = {"plain": [], "capture": []}
    for _ in range(args.repeats):  # interleaved: machine noise hits both alike
        for mode in ("plain", "capture"):
            t = time.perf_counter()
            for e in encs:
                ex.forward_sample(lm, e, capture=mode == "capture", token_nll=True)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times[mode].append(time.perf_counter() - t)
    med = {m: statistics.median(v) for m, v in times.items()}

    longest = max(range(args.samples), key=lambda i: encs[i].input_ids.shape[1])
    mem = {}
    for capture in (0, 1):
        cmd = [sys.executable, __file__, "--model", args.model, "--dataset", args.dataset, "--device", args.device,
               "--threads", str(args.threads), "--memory-child", str(longest), str(capture)]
        mem["capture" if capture else "plain"] = float(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.split()[-1])

    with tempfile.TemporaryDirectory() as d:
        cfg = ex.ExtractConfig(model=args.model, dataset_dir=args.dataset, out_dir=d, max_samples=args.samples)
        ex.extract(cfg, ds=ds, lm=lm, tokenizer=tok, progress=False)
        parts = sorted(Path(d).glob("shard-*/parts/*.parquet"))
        stored = statistics.mean(p.stat().st_size for p in parts)
    full_delta = statistics.mean(e.input_ids.shape[1] for e in encs) * facts["n_layers"] * facts["d_inner"] * 4
    result = {
        "model": args.model, "facts": facts, "device": args.device, "scan": scan.as_dict(), "threads": args.threads,
        "machine": platform.processor() or platform.machine(), "samples": args.samples,
        "mean_tokens_per_sample": tokens / args.samples, "repeats": args.repeats,
        "seconds_median": med, "capture_time_ratio": med["capture"] / med["plain"], "time_target": 1.05,
        "tokens_per_second_plain": tokens / med["plain"], "tokens_per_second_capture": tokens / med["capture"],
        "forward_peak_mb": mem, "capture_memory_ratio": mem["capture"] / mem["plain"], "memory_target": 1.10,
        "stored_bytes_per_sample": stored, "full_delta_bytes_per_sample": full_delta,
        "stored_rows_per_sample": facts["n_layers"] * int(ds.samples["n_chunks"].iloc[:args.samples].mean()),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("capture_time_ratio", "capture_memory_ratio", "tokens_per_second_capture",
                                             "stored_bytes_per_sample", "full_delta_bytes_per_sample")}, indent=1))


if __name__ == "__main__":
    main()
