"""Which local code LM is the default: the family whose model reads its context best, chosen on the dev split.

Issue 22's bar is measured on the test split, so the model it is measured on must be picked without test: every
candidate (one context-trained model per family: Mamba-1, Mamba-2, the hybrids) is extracted on the dev split, and
the rule below picks one from their dev context gains. ``python -m deltalens.analysis.default_choice`` (``make
choose-default``) writes the record (``docs/context_reading/default_choice.json``: rule, every candidate's dev row,
the choice); notebook 04 shows it and stops when the model it analyses is not the recorded choice. ``--keep RECORD``
adds a family to an existing record (``make choose-default-add ADD=<run>``): the other rows are carried over.

Rule: the highest dev context gain (target-line loss without the chunks minus with them, nats/token) among the
candidates whose project-clustered 95 % CI lies above zero; ties (equal to 3 decimals) go to the higher
identifier-token accuracy gain. No candidate above zero: no choice (the record says so; nothing is silently picked).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from ..core.paths import resolve
from .context_use import context_gain_table

RULE = ("highest dev-split context gain among the candidates whose project-clustered 95 % CI lower bound is above 0; "
        "ties (to 3 decimals) by the identifier-token accuracy gain")
COLUMNS = ("run", "samples", "projects", "context_gain", "gain_lo", "gain_hi", "name_accuracy_with",
           "name_accuracy_without", "name_accuracy_gain", "name_gain_lo", "name_gain_hi", "over_trained_length")


def dev_table(ds, candidates: dict[str, str], n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """One row per candidate (name -> extraction folder with dev samples): its dev context gain and identifier
    accuracy, as :func:`~.context_use.context_gain_table` measures them. A candidate without dev samples is an error
    (it cannot be chosen on dev), named."""
    for name, folder in candidates.items():
        if not (resolve(folder) / "samples.parquet").exists():
            raise ValueError(f"candidate {name!r}: no extraction at {folder} (samples.parquet missing)")
    table = context_gain_table(ds, candidates, split="dev", n_boot=n_boot, seed=seed)
    empty = table.loc[table["samples"] == 0, "run"].tolist()
    if empty:
        raise ValueError(f"candidates without dev samples (extract them with split dev or null): {empty}")
    return table[[c for c in COLUMNS if c in table.columns]]


def run_model(run_dir: str) -> str:
    """The model an extraction folder was made with (its ``run.json``'s config)."""
    path = resolve(run_dir) / "run.json"
    if not path.exists():
        raise ValueError(f"{run_dir}: no run.json (not an extraction folder)")
    return json.loads(path.read_text())["config"]["model"]


def choose(table: pd.DataFrame) -> str | None:
    """The candidate :data:`RULE` picks from :func:`dev_table`'s rows, or None when none has a CI above zero."""
    ok = table[table["gain_lo"] > 0].copy()
    if ok.empty:
        return None
    ok["_gain"] = ok["context_gain"].round(3)
    ok["_name"] = ok["name_accuracy_gain"].fillna(float("-inf"))
    return str(ok.sort_values(["_gain", "_name"], ascending=False).iloc[0]["run"])


def record(table: pd.DataFrame, models: dict[str, str], n_boot: int, seed: int, dataset_dir: str) -> dict:
    """The JSON record: rule, split, dataset, resamples, every candidate's row (with its model), the choice."""
    rows = [{**{k: (None if pd.isna(v) else v.item() if hasattr(v, "item") else v) for k, v in r.items()},
             "model": models.get(r["run"])} for r in table.to_dict("records")]
    return {"rule": RULE, "split": "dev", "dataset_dir": dataset_dir, "n_boot": n_boot, "seed": seed,
            "candidates": rows, "chosen": choose(table)}


def kept_rows(previous: dict, dataset_dir: str, n_boot: int, seed: int, rerun: set[str]) -> tuple[pd.DataFrame, dict]:
    """The candidate rows (and models) of an earlier record that are not among ``rerun``: to add a family to the
    choice without retraining and re-extracting every other one. Only a record of the same rule, split, dataset and
    resamples can be carried over (else a ValueError naming the field), since its rows must be what :func:`dev_table`
    would compute again."""
    for key, want in (("rule", RULE), ("split", "dev"), ("dataset_dir", dataset_dir), ("n_boot", n_boot),
                      ("seed", seed)):
        if previous.get(key) != want:
            raise ValueError(f"--keep: the earlier record's {key} is {previous.get(key)!r}, this run's {want!r}: "
                             "its rows cannot be carried over")
    rows = [r for r in previous["candidates"] if r["run"] not in rerun]
    table = pd.DataFrame([{k: r.get(k) for k in COLUMNS} for r in rows], columns=list(COLUMNS))
    return table, {r["run"]: r.get("model") for r in rows}


def check_model(rec: dict, model: str) -> str:
    """The recorded choice's name when ``model`` is its model (same folder name), else a ValueError that says which
    model the record chose: an analysis of a model that was not chosen on dev must say so, not pass as the default."""
    chosen = rec.get("chosen")
    models = {r["run"]: r.get("model") for r in rec["candidates"]}
    if chosen is None:
        raise ValueError("the dev-split choice record chose no model (no candidate's context gain CI is above 0)")
    if Path(str(models.get(chosen))).name != Path(model).name:
        raise ValueError(f"the analysed model {model!r} is not the dev-split choice {chosen!r} "
                         f"({models.get(chosen)}); pass default_choice=None to analyse another model")
    return chosen


def markdown(rec: dict) -> str:
    """The record as a table and one sentence."""
    out = [(f"**Which local model is the default** (chosen on the dev split; rule: {rec['rule']}; "
            f"{rec['n_boot']} resamples of projects, then samples):"), "",
           "| candidate | model | dev samples (projects) | context gain [95 % CI] | identifier accuracy with / without | difference [95 % CI] |",
           "|---|---|---|---|---|---|"]
    for r in rec["candidates"]:
        acc = ("–" if r.get("name_accuracy_with") is None else
               f"{100 * r['name_accuracy_with']:.1f} % / {100 * r['name_accuracy_without']:.1f} %")
        diff = ("–" if r.get("name_accuracy_gain") is None else
                f"{100 * r['name_accuracy_gain']:+.1f} % [{100 * r['name_gain_lo']:+.1f}, {100 * r['name_gain_hi']:+.1f}]")
        out.append(f"| {r['run']}{' (chosen)' if r['run'] == rec['chosen'] else ''} | `{r['model']}` | "
                   f"{r['samples']} ({r['projects']}) | {r['context_gain']:.3f} [{r['gain_lo']:.3f}, {r['gain_hi']:.3f}] | "
                   f"{acc} | {diff} |")
    out += ["", f"Chosen: **{rec['chosen']}**." if rec["chosen"] else
            "No candidate's dev context gain is above zero: no default chosen."]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deltalens.analysis.default_choice", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", required=True, help="the dataset folder the runs were extracted from")
    ap.add_argument("--candidate", action="append", required=True, metavar="NAME=RUN_DIR",
                    help="a candidate: its name and its extraction folder with dev samples (the model is its run.json's)")
    ap.add_argument("--out", required=True, help="the JSON record to write")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", default=None, metavar="RECORD",
                    help="carry over the rows of this earlier record for the candidates not given again (same "
                         "dataset, rule and resamples): add a family without re-extracting the others")
    args = ap.parse_args(argv)
    runs = {}
    for spec in args.candidate:
        name, sep, run_dir = spec.partition("=")
        if not (sep and name and run_dir):
            print(f"--candidate {spec!r}: expected NAME=RUN_DIR", file=sys.stderr)
            return 2
        runs[name] = run_dir
    from ..context import load

    try:
        models = {name: run_model(d) for name, d in runs.items()}
        table = dev_table(load(args.dataset), runs, n_boot=args.n_boot, seed=args.seed)
        if args.keep is not None:
            kept, kept_models = kept_rows(json.loads(resolve(args.keep).read_text()), args.dataset, args.n_boot,
                                          args.seed, set(runs))
            table = pd.concat([kept, table], ignore_index=True) if len(kept) else table
            models = {**kept_models, **models}
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rec = record(table, models, args.n_boot, args.seed, args.dataset)
    out = resolve(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rec, indent=1) + "\n")
    print(markdown(rec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
