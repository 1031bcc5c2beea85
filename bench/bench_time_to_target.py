"""Time to the 1e-4 target for every synthetic experiment in params/synthetic/, against the 5-minute budget.

By default each experiment is trained afresh (no checkpoint reuse), one after another, nothing else running:

    python bench/bench_time_to_target.py --out reports/bench/time_to_target.csv

``--from-metrics`` instead tabulates the training times recorded by the last ``make synthetic``
(reports/figures/synthetic/*/metrics.json), for when that run is the measurement.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
import yaml

from deltalens.paths import project_root

BUDGET_S = 300.0  # per experiment (issue 2)
TOTAL_BUDGET_S = 1200.0  # all of `make synthetic`


def measure(params_file: Path) -> dict:
    from deltalens import synthetic
    from deltalens.train import train

    p = yaml.safe_load(params_file.read_text())
    exp = synthetic.make_experiment(params_file.stem, p["task"], p.get("task_params"), p.get("model"), p.get("train"), p.get("analysis"))
    r = train(exp.task, exp.model, exp.train, checkpoint_root=None, progress=False)
    return {"experiment": exp.name, "reached_target": r.reached_target, "steps": r.steps, "seconds": round(r.seconds, 1), "final_eval_loss": r.final_eval_loss}


def from_metrics(path: Path) -> dict:
    m = json.loads(path.read_text())
    t = m["training"]
    return {"experiment": m["experiment"], "reached_target": t["reached_target"], "steps": t["steps"], "seconds": t["seconds"], "final_eval_loss": t["final_eval_loss"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="reports/bench/time_to_target.csv")
    ap.add_argument("--from-metrics", action="store_true")
    args = ap.parse_args()
    root = project_root()
    if args.from_metrics:
        rows = [from_metrics(p) for p in sorted((root / "reports/figures/synthetic").glob("*/metrics.json"))]
    else:
        rows = []
        for f in sorted((root / "params/synthetic").glob("*.yaml")):
            rows.append(measure(f))
            print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    df["budget_s"] = BUDGET_S
    df["ratio_to_budget"] = (df.seconds / BUDGET_S).round(3)
    out = root / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    print(df.to_string(index=False))
    print(f"total training {df.seconds.sum():.0f} s = {df.seconds.sum() / TOTAL_BUDGET_S:.2f} of the {TOTAL_BUDGET_S:.0f} s budget for make synthetic")


if __name__ == "__main__":
    main()
