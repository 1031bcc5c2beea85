"""One summary table from every synthetic experiment's metrics.json (CSV + Markdown).

    python -m deltalens.summary --metrics 'reports/figures/synthetic/*/metrics.json' --out reports/synthetic/summary.csv
"""

from __future__ import annotations

import argparse
import glob
import json
from pathlib import Path
from typing import Any

import pandas as pd


def summary_row(m: dict[str, Any]) -> dict[str, Any]:
    tr, task = m["training"], m["params"]["task"]
    row: dict[str, Any] = {
        "experiment": m["experiment"],
        "task": task["task"],
        "setting": ", ".join(f"{k}={v}" for k, v in task.items() if k != "task"),
        "params": m["n_parameters"],
        "reached 1e-4": tr["reached_target"],
        "steps": tr["steps"],
        "train s": tr["seconds"],
        "final loss": tr["final_eval_loss"],
    }
    for a in m["accuracy"]:
        row[f"acc@{a['length_multiplier']}x"] = a["accuracy"]
    aucs = pd.DataFrame(m["delta_auc"])
    probes = pd.DataFrame(m["probes"]).set_index(["population", "features"])
    for pop in ("context", "data"):
        sub = aucs[aucs.population == pop]
        for _, r in sub.iterrows():
            row[f"{pop} Δ{r['score']} L{int(r['layer'])}"] = r["auc"]
        best = m.get("best_delta_auc", {}).get(pop)
        row[f"{pop}: most informative Δ score"] = f"Δ{best['score']} L{best['layer']} {best['auc']:.3f}" if best else "n/a"
        for (p, feat), r in probes.iterrows():
            if p != pop:
                continue
            short = (
                "ctrl identity" if feat.startswith("control:") else
                "CB ctrl query+token" if feat.startswith("CatBoost control: query") else
                "CB ctrl" if feat.startswith("CatBoost control") else
                "CB Δ+ctrl" if feat.startswith("CatBoost on Δ +") else
                "CB residual" if feat.startswith("CatBoost on the residual") else
                "CB B,C" if feat.startswith("CatBoost on B and C") else "CB Δ"
            )
            row[f"{pop} {short} AUC"] = r["auc"]
            if short != "ctrl identity":
                row[f"{pop} {short} acc"] = r["accuracy"]
    return row


def compact(df: pd.DataFrame) -> pd.DataFrame:
    """The columns a reader compares first: training outcome, accuracy, the most informative single Δ score of each
    population (chosen on the dev sequences, reported on test: an inverted score shows as AUC < 0.5) and the probes,
    including those on the mixer's other internals (residual stream, B and C) and the query + token control."""
    out = pd.DataFrame({
        "experiment": df["experiment"],
        "reached 1e-4": df["reached 1e-4"],
        "steps": df["steps"],
        "train s": df["train s"].round(0).astype(int),
        "final loss": df["final loss"].map(lambda v: f"{v:.1e}"),
    })
    for col in sorted((c for c in df.columns if c.startswith("acc@")), key=lambda c: int(c[4:-1])):
        out[col] = df[col].round(3)
    for pop in ("context", "data"):
        out[f"{pop}: most informative Δ score"] = df[f"{pop}: most informative Δ score"]
        for short in ("ctrl identity AUC", "CB ctrl AUC", "CB ctrl query+token AUC", "CB Δ AUC", "CB Δ+ctrl AUC",
                      "CB residual AUC", "CB B,C AUC"):
            col = f"{pop} {short}"
            if col in df:
                out[f"{pop}: {short}"] = df[col].round(3)
    return out


def build_summary(paths: list[str | Path]) -> pd.DataFrame:
    if not paths:
        raise FileNotFoundError("no metrics.json found: run the synthetic notebooks first (make synthetic)")
    rows = [summary_row(json.loads(Path(p).read_text())) for p in sorted(paths)]
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--metrics", required=True, help="glob of metrics.json files")
    ap.add_argument("--out", required=True, help="CSV path; a .md table is written beside it")
    args = ap.parse_args(argv)
    df = build_summary(glob.glob(args.metrics))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    table = compact(df)
    out.with_suffix(".md").write_text(table.to_markdown(index=False) + "\n")
    print(table.T.to_string())


if __name__ == "__main__":
    main()
