"""Context-filter speed and cost, every scorer side by side in one run: prompts/s and chunks/s of filtering, the
scoring LM's forwards per prompt, and the cost model — filter time + completion time on the kept prompt vs completion
time on the full prompt, with a *second* LM completing (``--target-model``), so the README can say when filtering
pays.

    python bench/bench_filter.py --out reports/bench/filter_speed.json          # the local code LMs, 24 test prompts
    python bench/bench_filter.py --model data/models/code-lm-smoke --target-model data/models/code-lm-smoke \\
        --prompts 4 --repeats 1 --out reports/bench/filter_speed_tiny.json      # the smoke model: seconds

Scorers run interleaved (round robin over ``--repeats``), so drift of the machine's speed hits each alike; every
number is a median over the repeats, and ratios are to BM25's filter time in the same run. A completion is one
forward over the prompt and the target line (:func:`deltalens.lm.forward.forward_all`, no capture): the prompt
processing a real completion starts with, not decoding.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch

from deltalens.context import load
from deltalens.core.paths import resolve
from deltalens.core.runinfo import package_versions, write_json
from deltalens.filter import ContextFilter
from deltalens.filter.prompts import prompt_from_sample
from deltalens.lm.forward import forward_all
from deltalens.lm.loading import load_lm, model_facts
from deltalens.lm.prompts import LayoutPolicy, encode

SCORERS = [("bm25", {}), ("tfidf", {}), ("random", {}), ("embedding", {}), ("delta", {"statistic": "mean"}),
           ("decimation", {"statistic": "25"}), ("hidden_attention", {}), ("self_information", {}),
           ("leave_one_out", {})]


def prompts_of(ds, n: int, split: str) -> list:
    ids = list(ds.samples.loc[ds.samples["split"] == split, "sample_id"])[:n]
    return [prompt_from_sample(ds.sample(sid)) for sid in ids]


class ForwardCounter:
    """Rows the scoring LM's backbone sees (a forward pre-hook, removed on close)."""

    def __init__(self, lm):
        self.rows = 0
        self.handle = lm.base_model.register_forward_pre_hook(self._count, with_kwargs=True)

    def _count(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        self.rows += int(ids.shape[0])

    def close(self):
        self.handle.remove()


def completion_seconds(lm, tok, prompts, kept: list[list[int]] | None, policy: LayoutPolicy) -> tuple[float, float]:
    """(seconds, mean target loss) of the target LM over the prompts (kept chunks only, or all)."""
    encs = []
    for k, p in enumerate(prompts):
        drop = [] if kept is None else [i for i in range(len(p.chunks)) if i not in kept[k]]
        encs.append(encode(tok, p.sample(), policy, drop=drop))
    t0 = time.perf_counter()
    res = forward_all(lm, encs, capture=False)
    return time.perf_counter() - t0, statistics.fmean(r.target_loss for r in res)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="data/models/code-lm-hybrid-attnfirst-plain",
                    help="the scoring LM (LM scorers; default: the default model's ablation, a different small model)")
    ap.add_argument("--target-model", default="models/code-lm-hybrid-attnfirst",
                    help="the LM that completes (default: the default local model, which reads its context)")
    ap.add_argument("--dataset", default="data/processed/context_local")
    ap.add_argument("--split", default="test")
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--rate", type=float, default=0.5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="reports/bench/filter_speed.json")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    ds = load(a.dataset)
    prompts = prompts_of(ds, a.prompts, a.split)
    n_chunks = sum(len(p.chunks) for p in prompts)
    scoring = load_lm(str(resolve(a.model)))
    target = scoring if resolve(a.target_model) == resolve(a.model) else load_lm(str(resolve(a.target_model)))
    layer = model_facts(scoring[0])["layer_ids"][-1]
    policy = LayoutPolicy("context_first", 800, 100_000, "drop_chunks")
    filters = {}
    for name, opts in SCORERS:
        try:
            if name in ("bm25", "tfidf", "random", "embedding"):
                filters[name] = ContextFilter(name, tokenizer=target[1], **opts)
            else:
                extra = {"layer": layer} if name in ("delta", "decimation", "hidden_attention") else {}
                filters[name] = ContextFilter(name, scoring, tokenizer=target[1], max_tokens=100_000, **opts, **extra)
        except Exception as e:  # e.g. no embedding model installed, hidden attention on a Mamba-2 model
            print(f"{name}: skipped ({type(e).__name__}: {e})")
    seconds: dict[str, list[float]] = {n: [] for n in filters}
    rows_per_prompt, kept = {}, {}
    for rep in range(a.repeats):
        for name, f in filters.items():
            counter = ForwardCounter(scoring[0])
            t0 = time.perf_counter()
            results = f.filter_many(prompts, rate=a.rate, batch_size=8)
            seconds[name].append(time.perf_counter() - t0)
            counter.close()
            rows_per_prompt[name] = counter.rows / len(prompts)
            kept[name] = [r.kept for r in results]
            print(f"repeat {rep}: {name}: {seconds[name][-1]:.2f} s")
    full_s, full_loss = completion_seconds(*target, prompts, None, policy)
    out_rows = []
    base = statistics.median(seconds["bm25"])
    for name in filters:
        s = statistics.median(seconds[name])
        kept_s, kept_loss = completion_seconds(*target, prompts, kept[name], policy)
        out_rows.append({"scorer": name, "filter_seconds": s, "prompts_per_second": len(prompts) / s,
                         "chunks_per_second": n_chunks / s, "time_vs_bm25": s / base,
                         "scoring_forwards_per_prompt": rows_per_prompt[name],
                         "completion_seconds_kept": kept_s, "completion_seconds_full": full_s,
                         "filter_plus_kept_vs_full": (s + kept_s) / full_s, "pays": s + kept_s < full_s,
                         "target_loss_kept": kept_loss, "target_loss_full": full_loss})
        print(f"{name:18s} {len(prompts) / s:8.2f} prompts/s {n_chunks / s:9.1f} chunks/s  "
              f"{rows_per_prompt[name]:5.1f} forwards/prompt  (filter + kept) / full = {(s + kept_s) / full_s:.2f}")
    result = {"scorers": out_rows, "prompts": len(prompts), "chunks": n_chunks, "rate": a.rate,
              "repeats": a.repeats, "threads": a.threads, "model": a.model, "target_model": a.target_model,
              "layer": layer, "dataset": a.dataset, "split": a.split, "machine": platform.processor() or
              platform.machine(), "device": "cpu", "versions": package_versions(("torch", "transformers"))}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    write_json(a.out, result)
    print(f"-> {a.out}")
    return result


if __name__ == "__main__":
    main()
