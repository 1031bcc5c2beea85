"""Δ capture overhead: forward with hooks vs without, interleaved in one run, reported as a ratio (target <= 1.05).

    python bench/bench_capture.py --out reports/bench/capture_overhead.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from deltalens.delta.capture import capture_delta
from deltalens.delta.scores import token_stats
from deltalens.synthetic.models import ModelConfig, build_model


def time_forward(model, tokens, mode: str) -> float:
    start = time.perf_counter()
    with torch.no_grad():
        if mode == "plain":
            model(tokens)
        else:
            with capture_delta(model, reduce=token_stats if mode == "hooks+reduce" else None):
                model(tokens)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="reports/bench/capture_overhead.json")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for d_model, seq_len, batch in [(32, 64, 256), (64, 64, 256), (64, 256, 64)]:
        model = build_model(ModelConfig(vocab_size=16, d_model=d_model, n_layers=2, d_state=16), seed=0).eval()
        tokens = torch.randint(0, 16, (batch, seq_len), generator=torch.Generator().manual_seed(0))
        modes = ["plain", "hooks", "hooks+reduce"]
        for m in modes:  # warm-up
            time_forward(model, tokens, m)
        times = {m: [] for m in modes}
        for _ in range(args.repeats):  # interleaved, so drift on a noisy machine hits every mode alike
            for m in modes:
                times[m].append(time_forward(model, tokens, m))
        med = {m: statistics.median(v) for m, v in times.items()}
        rows.append({
            "d_model": d_model, "seq_len": seq_len, "batch": batch,
            "plain_ms": round(1e3 * med["plain"], 2),
            "hooks_ms": round(1e3 * med["hooks"], 2),
            "hooks_reduce_ms": round(1e3 * med["hooks+reduce"], 2),
            "ratio_hooks": round(med["hooks"] / med["plain"], 3),
            "ratio_hooks_reduce": round(med["hooks+reduce"] / med["plain"], 3),
        })
        print(rows[-1], flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "target_ratio": 1.05, "repeats": args.repeats, "threads": args.threads, "statistic": "median",
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "processor": platform.machine()},
        "results": rows,
    }, indent=2))
    print(f"written {out}")


if __name__ == "__main__":
    main()
