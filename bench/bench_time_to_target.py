"""Time to the 1e-4 target for every synthetic experiment and seed in params/synthetic/ (``--extended``: also
params/synthetic-extended/), against the 5-minute budget per run.

By default each experiment and seed is trained afresh (no checkpoint reuse), one after another, nothing else running:

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

from deltalens.core.paths import project_root

BUDGET_S = 300.0  # per experiment (issue 2)
TOTAL_BUDGET_S = 1200.0  # all of `make synthetic`


def measure(params_file: Path) -> list[dict]:
    from deltalens.synthetic import experiment as synthetic
    from deltalens.synthetic.train import train

    p = yaml.safe_load(params_file.read_text())
    exp = synthetic.make_experiment(params_file.stem, p["task"], p.get("task_params"), p.get("model"), p.get("train"),
                                    p.get("analysis"), seeds=p.get("seeds"))
    rows = []
    for seed in exp.seeds:
        r = train(exp.task, exp.model, exp.train_for(seed), checkpoint_root=None, progress=False)
        rows.append({"experiment": exp.name, "seed": seed, "reached_target": r.reached_target, "steps": r.steps,
                     "seconds": round(r.seconds, 1), "final_eval_loss": r.final_eval_loss})
        print(rows[-1], flush=True)
    return rows


def from_metrics(path: Path) -> list[dict]:
    m = json.loads(path.read_text())
    return [{"experiment": m["experiment"], "seed": s["seed"], "reached_target": s["training"]["reached_target"],
             "steps": s["training"]["steps"], "seconds": s["training"]["seconds"],
             "final_eval_loss": s["training"]["final_eval_loss"]} for s in m["seeds"]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="reports/bench/time_to_target.csv")
    ap.add_argument("--from-metrics", action="store_true")
    ap.add_argument("--extended", action="store_true", help="also the settings in params/synthetic-extended/")
    args = ap.parse_args()
    root = project_root()
    files = sorted((root / "params/synthetic").glob("*.yaml"))
    if args.extended:
        files += sorted((root / "params/synthetic-extended").glob("*.yaml"))
    rows = []
    for f in files:
        if args.from_metrics:
            m = root / "reports/figures/synthetic" / f.stem / "metrics.json"
            rows += from_metrics(m) if m.is_file() else []
        else:
            rows += measure(f)
    df = pd.DataFrame(rows)
    df["budget_s"] = BUDGET_S
    df["ratio_to_budget"] = (df.seconds / BUDGET_S).round(3)
    out = root / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    print(df.to_string(index=False))
    print(f"total training {df.seconds.sum():.0f} s = {df.seconds.sum() / TOTAL_BUDGET_S:.2f} of the {TOTAL_BUDGET_S:.0f} s "
          "budget for make synthetic")


if __name__ == "__main__":
    main()
