"""One summary table from every synthetic experiment's metrics.json: a row per experiment and seed (CSV), and the
across-seed table a reader compares first (Markdown: mean and min–max over seeds).

    python -m deltalens.synthetic.summary --metrics reports/figures/synthetic/*/metrics.json --out reports/synthetic/summary.csv
"""

from __future__ import annotations

import argparse
import glob
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def _probe_short(feat: str) -> str:
    return (
        "ctrl identity" if feat.startswith("control:") else
        "CB ctrl query+token" if feat.startswith("CatBoost control: query") else
        "CB ctrl" if feat.startswith("CatBoost control") else
        "CB Δ+ctrl" if feat.startswith("CatBoost on Δ +") else
        "CB residual" if feat.startswith("CatBoost on the residual") else
        "CB B,C" if feat.startswith("CatBoost on B and C") else "CB Δ"
    )


def summary_row(m: dict[str, Any], s: dict[str, Any]) -> dict[str, Any]:
    """The row of one seed ``s`` (an entry of ``m["seeds"]``) of experiment ``m``."""
    tr, task = s["training"], m["params"]["task"]
    row: dict[str, Any] = {
        "experiment": m["experiment"],
        "seed": s["seed"],
        "task": task["task"],
        "setting": ", ".join(f"{k}={v}" for k, v in task.items() if k != "task"),
        "params": m["n_parameters"],
        "reached 1e-4": tr["reached_target"],
        "steps": tr["steps"],
        "train s": tr["seconds"],
        "final loss": tr["final_eval_loss"],
    }
    for a in s["accuracy"]:
        row[f"acc@{a['length_multiplier']}x"] = a["accuracy"]
    aucs = pd.DataFrame(s["delta_auc"])
    probes = pd.DataFrame(s["probes"]).set_index(["population", "features"])
    for pop in ("context", "data"):
        for _, r in aucs[aucs.population == pop].iterrows():
            row[f"{pop} Δ{r['score']} L{int(r['layer'])}"] = r["auc"]
        best = s.get("best_delta_auc", {}).get(pop)
        row[f"{pop}: most informative Δ score"] = f"Δ{best['score']} L{best['layer']}" if best else "n/a"
        row[f"{pop}: most informative Δ AUC"] = best["auc"] if best else np.nan
        for (p, feat), r in probes.iterrows():
            if p != pop:
                continue
            short = _probe_short(feat)
            row[f"{pop} {short} AUC"] = r["auc"]
            if short != "ctrl identity":
                row[f"{pop} {short} acc"] = r["accuracy"]
    return row


def _spread(v: pd.Series, digits: int = 3) -> str:
    v = pd.to_numeric(v, errors="coerce").dropna()
    if v.empty:
        return ""
    if len(v) == 1 or v.min() == v.max():
        return f"{v.iloc[0]:.{digits}f}"
    return f"{v.mean():.{digits}f} ({v.min():.{digits}f}–{v.max():.{digits}f})"


def _choices(v: pd.Series, n: int) -> str:
    counts = v.value_counts()
    if len(counts) == 1 and counts.index[0] == "n/a":
        return "n/a"
    return ", ".join(f"{k}" + (f" ({c}/{n})" if n > 1 else "") for k, c in counts.items())


def compact(df: pd.DataFrame) -> pd.DataFrame:
    """Per experiment, over its seeds: how many reached the target, steps, accuracy, the single Δ score chosen on the
    dev sequences (and how many seeds chose it) with its test AUC (an inverted score shows as AUC < 0.5), and the
    probes, including those on the mixer's other internals and the query + token control: 'mean (min–max)'."""
    rows = []
    for name, g in df.groupby("experiment", sort=True):
        n = len(g)
        r: dict[str, Any] = {
            "experiment": name,
            "seeds": n,
            "reached 1e-4": f"{int(g['reached 1e-4'].sum())}/{n}",
            "steps": _spread(g["steps"], 0),
            "train s": _spread(g["train s"], 0),
            "final loss (max)": f"{g['final loss'].max():.1e}",
        }
        for col in sorted((c for c in df.columns if c.startswith("acc@")), key=lambda c: int(c[4:-1])):
            r[col] = _spread(g[col])
        for pop in ("context", "data"):
            r[f"{pop}: most informative Δ score"] = _choices(g[f"{pop}: most informative Δ score"], n)
            r[f"{pop}: its AUC"] = _spread(g[f"{pop}: most informative Δ AUC"])
            for short in ("ctrl identity AUC", "CB ctrl AUC", "CB ctrl query+token AUC", "CB Δ AUC", "CB Δ+ctrl AUC",
                          "CB residual AUC", "CB B,C AUC"):
                col = f"{pop} {short}"
                if col in df:
                    r[f"{pop}: {short}"] = _spread(g[col])
        rows.append(r)
    return pd.DataFrame(rows)


def build_summary(paths: list[str | Path]) -> pd.DataFrame:
    if not paths:
        raise FileNotFoundError("no metrics.json found: run the synthetic notebooks first (make synthetic)")
    rows = []
    for p in sorted(paths):
        m = json.loads(Path(p).read_text())
        if "seeds" not in m:
            raise ValueError(f"{p}: metrics.json without per-seed records (written before seeds existed); rerun its "
                             "notebook (make synthetic)")
        rows += [summary_row(m, s) for s in m["seeds"]]
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--metrics", required=True, nargs="+", help="metrics.json files (or globs)")
    ap.add_argument("--out", required=True, help="CSV path (one row per experiment and seed); a .md table is written beside it")
    args = ap.parse_args(argv)
    paths = [p for pattern in args.metrics for p in (glob.glob(pattern) or [pattern])]
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise SystemExit(f"metrics file(s) not found: {', '.join(missing)}; run their notebooks first (make synthetic)")
    df = build_summary(paths)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    table = compact(df)
    out.with_suffix(".md").write_text(table.to_markdown(index=False) + "\n")
    print(table.T.to_string())


if __name__ == "__main__":
    main()
