"""Markdown table of the sweep's JSON lines (docs/context_training_sweep/*.jsonl): per recipe, the last evaluation
and the largest context gain seen at any evaluation (with its step).

    python bench/context_training_sweep/summarise.py docs/context_training_sweep/*.jsonl
"""
import json
import sys
from pathlib import Path


def rows(path: Path) -> tuple[dict, list[dict]]:
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return lines[0]["args"], lines[1:]


def main(paths: list[str]) -> None:
    print("| recipe | init | shares ctx / repeat | lr | loss on | steps (tokens) | copy gap 1st−2nd copy | "
          "context gain, eval test, context first | query first | held-out training projects | best gain seen (step) "
          "| exact match with / without |")
    print("|" + "---|" * 11)
    for p in paths:
        args, evals = rows(Path(p))
        last = evals[-1]
        best = max(evals, key=lambda r: r["evalcf"]["gain"])
        cf = last["evalcf"]
        size = "" if args["d_model"] == 256 else f" (d_model {args['d_model']}, {args['n_layers']} layers)"
        print(f"| {args['name']} | {args['init']}{size} "
              f"| {args['share_ctx']} / {args['share_rep']} | {args['lr']:g} | {args['loss']} "
              f"| {last['step']:,} ({last['tokens'] / 1e6:.1f} M) "
              f"| {last['copy']['first_half'] - last['copy']['second_half']:+.3f} "
              f"| {cf['gain']:+.3f} ± {1.96 * cf['se']:.3f} | {last['evalqf']['gain']:+.3f} | {last['heldctx']['gain']:+.3f} "
              f"| {best['evalcf']['gain']:+.3f} ({best['step']:,}) | {cf['em_with']:.0%} / {cf['em_without']:.0%} |")


if __name__ == "__main__":
    main(sys.argv[1:])
