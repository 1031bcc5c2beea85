"""Which scan should the CPU extraction use for the local code LM? Each path's tokens/s on the workload ``extract()``
runs (batched prompts of the local evaluation profile, Δ captured, per-token NLL), side by side in one run, and how
far apart their chunk statistics are.

    python bench/bench_cpu_scan.py --out reports/bench/cpu_scan.json [--model DIR] [--samples 24] [--repeats 3]

Measured per scan (``sequential``: transformers' loop over tokens; ``mambapy``: its parallel scan) and per batch
size (``--batch-tokens``, in padded tokens per forward, ``auto`` being what extraction uses): median seconds over
``--repeats`` interleaved rounds, tokens/s, and the ratio to the sequential path at the same batch size. The chunk
statistics of the two paths are compared on the same prompts (max relative difference): the path changes speed,
never Δ. With ``--extract-samples N``, ``extract()`` itself (what ``make extract`` runs: groups of at most 8 samples,
their leave-one-out variants batched) is timed per batch size too, interleaved, on N samples with leave-one-out.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from deltalens.context import load
from deltalens.extract import run as ex
from deltalens.lm import forward as fw
from deltalens.lm import loading as ld


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="data/models/code-lm")
    ap.add_argument("--dataset", default="data/processed/context_local")
    ap.add_argument("--samples", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--scans", default="sequential,mambapy")
    ap.add_argument("--batch-tokens", default="1024,auto", help="comma-separated: padded tokens per forward or auto")
    ap.add_argument("--extract-samples", type=int, default=0,
                    help="also time extract() (leave-one-out on) on this many samples per batch size")
    ap.add_argument("--out", default="reports/bench/cpu_scan.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    lm, tok = ex.load_lm(args.model)
    ds = load(args.dataset)
    cfg = ex.ExtractConfig(max_tokens=1024, truncation="drop_chunks")
    ids = list(ds.samples["sample_id"])[:args.samples]
    encs = [ex.encode(tok, ds.sample(s), cfg.layout) for s in ids]
    tokens = sum(e.n_tokens for e in encs)
    scans = args.scans.split(",")
    budgets = [b if b == "auto" else int(b) for b in args.batch_tokens.split(",")]
    secs: dict = {(s, str(b)): [] for s in scans for b in budgets}
    stats = {}
    resolved = {}
    for s in scans:  # warm-up, and the statistics each path gives
        ld.set_scan(lm, s)
        stats[s] = fw.forward_all(lm, encs[:4], token_nll=True)
    for _ in range(args.repeats):
        for s in scans:
            choice = ld.set_scan(lm, s)
            for b in budgets:
                bt = fw.auto_batch_tokens(lm, choice) if b == "auto" else b
                resolved[(s, str(b))] = bt
                t = time.perf_counter()
                fw.forward_all(lm, encs, batch_tokens=bt, token_nll=True)
                secs[(s, str(b))].append(time.perf_counter() - t)
    rows = []
    for (s, b), v in secs.items():
        med = statistics.median(v)
        base = statistics.median(secs[("sequential", b)]) if ("sequential", b) in secs else float("nan")
        rows.append({"scan": s, "batch_tokens": b, "resolved_batch_tokens": resolved[(s, b)], "seconds": med,
                     "tokens_per_second": tokens / med, "speedup_vs_sequential": base / med})
    diff = float("nan")
    if len(scans) > 1:
        a, b = stats[scans[0]], stats[scans[1]]
        rel = [np.max(np.abs(x[k] - y[k]) / (np.abs(x[k]) + 1e-12)) for ra, rb in zip(a, b)
               for x, y in zip(ra.stats, rb.stats) for k in x]
        diff = float(max(rel))
    extract_rows = []
    if args.extract_samples:
        ld.set_scan(lm, "auto")
        ext: dict = {str(b): [] for b in budgets}
        for _ in range(args.repeats):
            for b in budgets:
                with tempfile.TemporaryDirectory() as d:
                    cfg_x = ex.ExtractConfig(out_dir=d, max_samples=args.extract_samples, leave_one_out=True,
                                             max_tokens=1024, truncation="drop_chunks", batch_tokens=b)
                    t = time.perf_counter()
                    summary = ex.extract(cfg_x, ds=ds, lm=lm, tokenizer=tok, progress=False)
                    ext[str(b)].append((time.perf_counter() - t, summary.tokens))
        for b, v in ext.items():
            med = statistics.median(x[0] for x in v)
            extract_rows.append({"batch_tokens": b, "seconds": med, "tokens_per_second": v[0][1] / med})
    result = {"model": args.model, "facts": ld.model_facts(lm), "threads": args.threads,
              "machine": platform.processor() or platform.machine(), "samples": len(encs), "tokens": tokens,
              "mean_tokens_per_prompt": tokens / len(encs), "repeats": args.repeats, "rows": rows,
              "max_relative_stat_difference": diff,
              "extract": extract_rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    for r in rows:
        print(f"{r['scan']:>10} batch {r['batch_tokens']:>5} ({r['resolved_batch_tokens']:>6}): "
              f"{r['tokens_per_second']:8.0f} tokens/s  x{r['speedup_vs_sequential']:.2f} vs sequential")
    for r in extract_rows:
        print(f"extract() batch {r['batch_tokens']:>5}: {r['seconds']:7.1f} s  {r['tokens_per_second']:8.0f} tokens/s")
    print(f"max relative difference of the statistics between {scans}: {diff:.2e}")
    return result


if __name__ == "__main__":
    main()
