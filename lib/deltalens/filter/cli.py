"""``python -m deltalens.filter``: filter every prompt of a JSONL file (schema: :mod:`.prompts`) into an append-only
JSONL file of results (:class:`~.context_filter.FilterResult`, one line per prompt).

    python -m deltalens.filter --in prompts.jsonl --out kept.jsonl --scorer bm25 --rate 0.5
    python -m deltalens.filter --in prompts.jsonl --out kept.jsonl --scorer delta --model models/code-lm-hybrid-attnfirst \\
        --layer 3 --statistic mean --sign -1 --budget-tokens 512
    python -m deltalens.filter --in prompts.jsonl --out kept.jsonl --from-analysis reports/analysis/metrics.json \\
        --rate 0.25

Every input line is checked before any model loads (the error names the file, line and field). A rerun resumes:
prompts whose id is already in ``--out`` are skipped, and ``<out>.settings.json`` (the scorer's settings, the budget,
the order) must match the rerun's, so one file never mixes two filters. Results are appended and flushed per batch;
an interrupted last line (a kill mid-write) is cut off on resume, with a message. Batches are counted in the input
file (a resumed run recomputes a partly written batch whole), so output without ``--timing`` is a pure function of
the input and the settings: the same input, interrupted or not, gives a byte-identical file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..core.params import ParameterError
from ..lm.loading import DTYPES, SCANS, ModelLoadError
from ..lm.prompts import ORDERS as LAYOUT_ORDERS
from .context_filter import ORDERS, ContextFilter
from .prompts import read_prompts
from .scorers import LM_SCORERS, SCORERS, check_prompts


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m deltalens.filter", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--in", dest="inp", required=True, help="prompts, one JSON object per line (id, query, chunks)")
    p.add_argument("--out", required=True, help="results, one JSON object per line (appended; resumes)")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--scorer", choices=SCORERS)
    how.add_argument("--from-analysis", metavar="METRICS_JSON", help="the score notebook 04 chose on dev")
    p.add_argument("--choice", default="delta_best", help="with --from-analysis: a kind or a score name")
    p.add_argument("--run", help="with --from-analysis: the extraction run (default: its filter_run)")
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--rate", type=float, help="keep at most this share of the chunks' tokens")
    budget.add_argument("--budget-tokens", type=int, help="keep at most this many tokens of chunks")
    p.add_argument("--order", choices=ORDERS, default="original", help="order of the kept chunks in the results")
    p.add_argument("--model", help="LM scorers: a local model folder (or hub id in the local cache)")
    p.add_argument("--tokenizer", help="count the budget in this tokenizer (default: the scoring LM's)")
    p.add_argument("--layer", type=int, help="delta / decimation / hidden_attention: the model's layer number")
    p.add_argument("--statistic", help="delta: mean|mean_log|l2|max; decimation: 10|25|50; hidden_attention: prefix_end")
    p.add_argument("--sign", type=float, help="multiplies every score (-1: low scores are kept first)")
    p.add_argument("--layout", choices=LAYOUT_ORDERS, help="LM scorers: the prompt order the LM reads")
    p.add_argument("--query-chars", type=int)
    p.add_argument("--max-tokens", type=int, help="LM scorers: longer prompts drop their leading chunks (unscored)")
    p.add_argument("--prefix-tokens", type=int, help="hidden_attention: query positions that attend")
    p.add_argument("--query-lines", type=int, help="bm25 / tfidf / embedding: the query's last lines")
    p.add_argument("--seed", type=int, help="random: the seed")
    p.add_argument("--dtype", choices=DTYPES, help="LM scorers (as extraction)")
    p.add_argument("--device", help="LM scorers: cpu | cuda | cuda:N | auto (as extraction)")
    p.add_argument("--scan", choices=SCANS, help="LM scorers: the scan path (as extraction)")
    p.add_argument("--batch-tokens", type=_batch_tokens, help="LM scorers: padded tokens per forward, or auto")
    p.add_argument("--batch-size", type=int, default=8,
                   help="prompts per batch, counted in the input file (results are appended per batch; a resumed run "
                        "recomputes a partly written batch whole, so its output is byte-identical)")
    p.add_argument("--timing", action="store_true", help="record seconds per prompt (the output is then no longer "
                                                         "byte-identical across runs)")
    p.add_argument("--no-progress", action="store_true")
    return p


def _batch_tokens(v: str):
    if v == "auto":
        return v
    try:
        return int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of tokens or 'auto', got {v!r}") from None


def _options(a) -> dict:
    names = {"layer": "layer", "statistic": "statistic", "sign": "sign", "layout": "order", "query_chars": "query_chars",
             "max_tokens": "max_tokens", "prefix_tokens": "prefix_tokens", "query_lines": "query_lines",
             "seed": "seed", "dtype": "dtype", "device": "device", "scan": "scan"}
    opts = {dest: getattr(a, arg) for arg, dest in names.items() if getattr(a, arg) is not None}
    if a.batch_tokens is not None:
        opts["batch_tokens"] = a.batch_tokens
    return opts


def finished_ids(out: Path) -> set[str]:
    """Ids already in ``out``; an incomplete last line (an interrupted write) is cut off."""
    if not out.is_file():
        return set()
    data = out.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        print(f"{out}: the last line was incomplete (an interrupted write); cut off {len(data) - cut} bytes",
              file=sys.stderr)
        with out.open("r+b") as f:
            f.truncate(cut)
        data = data[:cut]
    ids = set()
    for n, line in enumerate(data.decode("utf-8").splitlines(), 1):
        try:
            ids.add(json.loads(line)["id"])
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ParameterError(f"{out}: line {n} is not a result of this tool; pass another --out") from None
    return ids


def run(a) -> int:
    inp, out = Path(a.inp), Path(a.out)
    if inp.resolve() == out.resolve():
        raise ParameterError("--in and --out are the same file")
    prompts = read_prompts(inp)                       # every line checked before any model loads
    opts = _options(a)
    scorer = a.scorer
    if scorer is not None:
        check_prompts(scorer, prompts)
        if scorer in LM_SCORERS and not a.model:
            raise ParameterError(f"scorer {scorer!r} needs --model (a local model folder)")
    done = finished_ids(out)
    todo = [p for p in prompts if p.id not in done]
    if a.from_analysis:
        f = ContextFilter.from_analysis(a.from_analysis, a.choice, a.run, a.model, tokenizer=a.tokenizer, **opts)
    else:
        f = ContextFilter(scorer, a.model, tokenizer=a.tokenizer, **opts)
    check_prompts(f.scorer.name, todo)
    budget = {"rate": a.rate} if a.rate is not None else {"budget_tokens": a.budget_tokens}
    f.check_budget(a.budget_tokens, a.rate)
    record = {"settings": f.settings(), "budget": budget, "order": a.order}
    side = out.with_name(out.name + ".settings.json")
    if side.is_file():
        before = json.loads(side.read_text())
        if before != record:
            keys = sorted(k for k in set(before) | set(record) if before.get(k) != record.get(k))
            raise ParameterError(f"{out} was written with other settings ({', '.join(keys)} differ; see {side}): pass "
                                 "another --out, or the same settings to resume")
    elif done:
        raise ParameterError(f"{out} holds results but no {side.name}: not written by this tool; pass another --out")
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        side.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    print(f"{len(prompts)} prompts in {inp}; {len(prompts) - len(todo)} already in {out}; {len(todo)} to filter "
          f"({f.scorer.name}, {f.counter.unit})", file=sys.stderr)
    from tqdm.auto import tqdm

    # Batches are a fixed partition of the INPUT (lines 1..b, b+1..2b, ...), not of what is left: a prompt's scores
    # can differ in the last float bits with the other prompts of its forward (padding, kernel blocking), so a
    # resumed run recomputes a partly finished batch whole and writes only its missing prompts — exactly what an
    # uninterrupted run computes, hence byte-identical output.
    with out.open("a", encoding="utf-8") as fh, tqdm(total=len(todo), desc="filter", unit="prompt",
                                                       disable=a.no_progress) as bar:
        for k in range(0, len(prompts), a.batch_size):
            batch = prompts[k:k + a.batch_size]
            pending = [p.id not in done for p in batch]
            if not any(pending):
                continue
            results = f.filter_many(batch, batch_size=len(batch), order=a.order, **budget)
            fh.write("".join(json.dumps(r.to_dict(timing=a.timing), ensure_ascii=False) + "\n"
                             for r, new in zip(results, pending) if new))
            fh.flush()
            bar.update(sum(pending))
    return 0


def main(argv=None) -> int:
    a = parser().parse_args(argv)
    try:
        return run(a)
    except (ParameterError, ModelLoadError) as e:  # bad input: one clear line, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
