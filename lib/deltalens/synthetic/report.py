"""Part 1's numbers and words: the runs of every seed -> ``metrics.json`` -> conclusions that hold across seeds.

    runs (one :class:`synthetic.SeedRun` per training seed)
      -> seed_record(run): training outcome, accuracy, Δ AUCs (dev and test), the dev-chosen best score, probes
      -> collect_metrics(exp, runs): {"experiment", "params", "seeds": [seed_record, ...], "across_seeds": ...}
      -> conclusions(metrics): one line per finding, each saying in how many seeds it holds

A finding is stated as a finding only when it holds for every seed; otherwise the line says that the seeds disagree.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..core.runinfo import write_json
from .experiment import POPULATIONS, Experiment, SeedRun

MARGIN = 0.01  # an AUC difference below this is a tie


def choose_best_on_dev(dev_aucs: pd.DataFrame, aucs: pd.DataFrame) -> dict[str, dict]:
    """Per population, the single Δ score (layer, statistic, direction) farthest from 0.5 on the *dev* sequences (the
    probes' training sequences), reported with its AUC on the test sequences: the test AUC never takes part in the
    choice. ``direction`` -1: important tokens get smaller Δ on dev (the reported AUC is the raw one, below 0.5 when
    the direction holds on test)."""
    best = {}
    for pop in POPULATIONS:
        dev = dev_aucs[(dev_aucs.population == pop) & dev_aucs.auc.notna()]
        if not len(dev):
            continue
        top = dev.loc[(dev.auc - 0.5).abs().idxmax()]
        t = aucs[(aucs.population == pop) & (aucs.layer == top.layer) & (aucs.score == top.score)].iloc[0]
        best[pop] = {"layer": int(top.layer), "score": top.score, "auc": float(t.auc), "ci_low": float(t.ci_low),
                     "ci_high": float(t.ci_high), "dev_auc": float(top.auc), "direction": 1 if top.auc >= 0.5 else -1,
                     "chosen_on": "dev sequences", "candidates": int(len(dev))}
    return best


def seed_record(exp: Experiment, run: SeedRun) -> dict[str, Any]:
    """The JSON-ready measurements of one seed's model."""
    r = run.result
    return {
        "seed": run.seed,
        "training": {
            "reached_target": r.reached_target,
            "target_loss": exp.train.target_loss,
            "steps": r.steps,
            "seconds": round(r.seconds, 2),
            "final_eval_loss": r.final_eval_loss,
            "reused_checkpoint": r.reused,
            "checkpoint": str(r.checkpoint) if r.checkpoint is not None else None,
        },
        "accuracy": run.accuracy.to_dict(orient="records"),
        "delta_auc": run.aucs.to_dict(orient="records"),
        "delta_auc_dev": run.dev_aucs[["population", "layer", "score", "auc"]].to_dict(orient="records"),
        "best_delta_auc": choose_best_on_dev(run.dev_aucs, run.aucs),
        "probes": run.probes.to_dict(orient="records"),
    }


def collect_metrics(exp: Experiment, runs: list[SeedRun]) -> dict[str, Any]:
    """One JSON-ready record of the experiment: parameters, one record per seed, and the across-seed summary."""
    from importlib.metadata import version

    if not runs:
        raise ValueError(f"experiment {exp.name!r}: no seed was run")
    seeds = [seed_record(exp, r) for r in runs]
    metrics = {
        "experiment": exp.name,
        "params": exp.params(),
        "n_parameters": runs[0].result.model.n_parameters(),
        "seeds": seeds,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "mambapy": version("mambapy"),
            "catboost": version("catboost"),
            "deltalens": __import__("deltalens").__version__,
        },
    }
    metrics["across_seeds"] = across_seeds(metrics)
    return metrics


def save_metrics(metrics: dict[str, Any], directory: Path) -> Path:
    """``metrics.json`` and ``params.json`` in ``directory`` (strict JSON: NaN is written as null), atomically."""
    write_json(directory / "params.json", metrics["params"], indent=2)
    return write_json(directory / "metrics.json", metrics, indent=2)


# ---------------------------------------------------------------------------------------------------------------


def _probe_auc(probes: pd.DataFrame, kinds: tuple[str, ...]) -> float:
    """The best test AUC among the probes of ``kinds`` (:data:`deltalens.synthetic.experiment.PROBE_KINDS`)."""
    v = probes[probes["kind"].isin(kinds)]["auc"].to_numpy(dtype=float)
    return float(np.nanmax(v)) if len(v) and not np.isnan(v).all() else float("nan")


def seed_findings(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per population, the comparisons the conclusions are made of, for one seed.

    ``strength``: the better of the dev-chosen single score (read in its dev direction) and CatBoost on all Δ channels;
    ``control``: the best control (token identity / short window); ``others``: the best probe on the mixer's other
    internals (residual stream, B and C) or on the query + token; verdicts with a tie margin of ``MARGIN``."""
    probes = pd.DataFrame(record["probes"])
    if "kind" not in probes.columns:
        raise ValueError("metrics.json: its probes have no 'kind' (written before probe kinds existed); rerun the "
                         "experiment's notebook to rewrite it")
    out = {}
    for pop, best in record["best_delta_auc"].items():
        sub = probes[probes.population == pop].set_index("features")
        control = _probe_auc(sub, ("control",))
        delta_probe = _probe_auc(sub, ("delta",))
        single = best["auc"] if best.get("direction", 1) > 0 else 1 - best["auc"]
        strength = float(np.nanmax([single, delta_probe]))
        others = _probe_auc(sub, ("internal", "query_control"))
        out[pop] = {
            "best": f"{best['score']} L{best['layer']}",
            "best_auc": best["auc"],
            "direction_flips": (best["dev_auc"] - 0.5) * (best["auc"] - 0.5) < 0,
            "delta_probe": delta_probe,
            "control": control,
            "delta_plus_control": _probe_auc(sub, ("delta_plus_control",)),
            "others": others,
            "vs_control": _verdict(strength, control),
            "vs_others": None if np.isnan(others) else _verdict(delta_probe, others),
        }
    return out


def _verdict(a: float, b: float) -> str:
    return "beats" if a > b + MARGIN else "loses" if a < b - MARGIN else "ties"


def _range(values: list[float]) -> dict[str, float]:
    v = np.asarray(values, dtype=float)
    if np.isnan(v).all():
        return {"mean": float("nan"), "min": float("nan"), "max": float("nan")}
    return {"mean": float(np.nanmean(v)), "min": float(np.nanmin(v)), "max": float(np.nanmax(v))}


def across_seeds(metrics: dict[str, Any]) -> dict[str, Any]:
    """Mean and range over seeds of every headline number, and how many seeds share each verdict."""
    seeds = metrics["seeds"]
    tr = [s["training"] for s in seeds]
    acc = {}
    for s in seeds:
        for a in s["accuracy"]:
            acc.setdefault(str(a["length_multiplier"]), []).append(a["accuracy"])
    out: dict[str, Any] = {
        "n_seeds": len(seeds),
        "seeds": [s["seed"] for s in seeds],
        "reached_target": sum(bool(t["reached_target"]) for t in tr),
        "steps": _range([t["steps"] for t in tr]),
        "seconds": _range([t["seconds"] for t in tr]),
        "final_eval_loss": _range([t["final_eval_loss"] for t in tr]),
        "accuracy": {m: _range(v) for m, v in acc.items()},
        "populations": {},
    }
    findings = [seed_findings(s) for s in seeds]
    for pop in POPULATIONS:
        per = [f[pop] for f in findings if pop in f]
        if not per:
            continue
        counts = lambda key: {v: sum(p[key] == v for p in per) for v in dict.fromkeys(p[key] for p in per) if v is not None}
        out["populations"][pop] = {
            "best_choices": counts("best"),
            "best_auc": _range([p["best_auc"] for p in per]),
            "direction_flips": sum(p["direction_flips"] for p in per),
            "delta_probe": _range([p["delta_probe"] for p in per]),
            "control": _range([p["control"] for p in per]),
            "delta_plus_control": _range([p["delta_plus_control"] for p in per]),
            "others": _range([p["others"] for p in per]),
            "vs_control": counts("vs_control"),
            "vs_others": counts("vs_others"),
        }
    return out


def _fmt(r: dict[str, float], digits: int = 3) -> str:
    if np.isnan(r["mean"]):
        return "n/a"
    if r["min"] == r["max"]:
        return f"{r['mean']:.{digits}f}"
    return f"{r['mean']:.{digits}f} ({r['min']:.{digits}f}–{r['max']:.{digits}f})"


_VS_CONTROL = {"beats": "Δ beats the controls", "loses": "Δ does **not** beat the controls", "ties": "Δ ties the controls",
               "never": "Δ does **not** beat the controls in any seed"}
_VS_OTHERS = {"beats": "Δ's channels carry more than the other internals / the two visible tokens",
              "loses": "Δ is **not** special: the same probe on other internals or on the query and token does better",
              "ties": "Δ is **not** special: the same probe on other internals or on the query and token does as well",
              "never": "Δ is **not** special in any seed: the same probe on other internals or on the query and token "
                       "does as well or better"}


def _held(counts: dict[str, int], n: int, words: dict[str, str]) -> str:
    """The verdict that holds for every seed: one verdict shared by all; 'never beats' when the seeds only split
    between a tie and a loss (that much holds for all of them); otherwise no conclusion."""
    if len(counts) == 1:
        v = next(iter(counts))
        return f"{words[v]} (in {'all ' if n > 1 else ''}{n} seed{'s' if n > 1 else ''})"
    parts = ", ".join(f"{k} in {c} of {n}" for k, c in counts.items())
    if "beats" not in counts:
        return f"{words['never']} ({parts})"
    return f"**no conclusion: the seeds disagree** ({parts})"


def conclusions(metrics: dict[str, Any]) -> str:
    """Markdown findings written from the numbers (nothing typed in advance); values are 'mean (min–max) over seeds'."""
    a = metrics["across_seeds"]
    n, target = a["n_seeds"], metrics["seeds"][0]["training"]["target_loss"]
    lines = [f"- Seeds: {', '.join(map(str, a['seeds']))}; numbers are the mean (min–max) over the {n} seed"
             f"{'s' if n > 1 else ''}." if n > 1 else f"- One seed ({a['seeds'][0]}): no statement about seed-to-seed spread."]
    if a["reached_target"] == n:
        lines.append(f"- Training reached answer loss < {target:.0e} in {'every seed' if n > 1 else 'the seed'}: "
                     f"{_fmt(a['steps'], 0)} steps, held-out loss {a['final_eval_loss']['max']:.1e} at worst.")
    else:
        failed = [f"seed {s['seed']} ({s['training']['final_eval_loss']:.1e} after {s['training']['steps']} steps)"
                  for s in metrics["seeds"] if not s["training"]["reached_target"]]
        lines.append(f"- **Training did not reach the target loss** {target:.0e} in {n - a['reached_target']} of {n} "
                     f"seed{'s' if n > 1 else ''}: {', '.join(failed)}; the Δ analysis of those is of an imperfect model.")
    acc = ", ".join(f"{_fmt(v)} at {m}x length" for m, v in a["accuracy"].items())
    lines.append(f"- Held-out answer accuracy: {acc}.")
    for pop, p in a["populations"].items():
        choices = ", ".join(f"layer {k.split(' L')[1]} `{k.split(' L')[0]}`" + (f" ({c} of {n})" if n > 1 else "")
                            for k, c in p["best_choices"].items())
        direction = " — inverted: important tokens get *smaller* Δ" if p["best_auc"]["max"] < 0.5 else ""
        flips = (f"; its direction chosen on dev flips on test in {p['direction_flips']} of {n}"
                 if p["direction_flips"] else "")
        special = ("" if not p["vs_others"] else
                   f" Other probes (residual stream, B and C, query + token): {_fmt(p['others'])} — "
                   f"{_held(p['vs_others'], n, _VS_OTHERS)}.")
        lines.append(
            f"- Population `{pop}`: the most informative single Δ score, chosen on the dev sequences: {choices}; "
            f"test ROC-AUC {_fmt(p['best_auc'])}{direction}{flips}. CatBoost on all Δ channels: {_fmt(p['delta_probe'])}; "
            f"best control (token identity / conv window): {_fmt(p['control'])}; Δ + control: "
            f"{_fmt(p['delta_plus_control'])}. {_held(p['vs_control'], n, _VS_CONTROL)}.{special}"
        )
    return "\n".join(lines)
