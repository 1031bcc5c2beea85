"""python -m deltalens.labeling {endpoints,export} -p params/labeling/default.yaml

* ``endpoints``: write which labelers are configured in this environment (names, models, answers-file hashes —
  never keys) to ``--out``, rewriting it only when that changes; ``make labeling`` depends on it, so setting
  ``DEEPSEEK_API_KEY`` re-runs the labeling notebook and an unchanged environment does not.
* ``export``: write the prompts of the manual labelers (or ``--out DIR``) for pasting into a chat window.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

import yaml

from ..core.params import ParameterError
from ..core.paths import resolve
from ..core.runinfo import atomic_write


def _params(path: str) -> dict:
    p = resolve(path)
    if not p.is_file():
        raise SystemExit(f"parameter file {p} not found")
    return yaml.safe_load(p.read_text())


def endpoint_state(specs: list[dict], environ=os.environ) -> list[dict]:
    """What decides whether each labeler runs here, without loading anything and without any key's value."""
    out = []
    for s in specs:
        row = {"name": s["name"], "kind": s["kind"]}
        if s["kind"] == "openai":
            env = s.get("env", "DELTALENS_LLM")
            row.update(base_url=s.get("base_url") or environ.get(f"{env}_BASE_URL"),
                       model=s.get("model") or environ.get(f"{env}_MODEL"), key_set=bool(environ.get(f"{env}_API_KEY")))
        elif s["kind"] == "transformers":
            row["model"] = s.get("model") or environ.get(s.get("model_env", "DELTALENS_HF_MODEL"))
        elif s["kind"] == "manual" and s.get("answers"):
            f = resolve(s["answers"])
            row["answers_sha256"] = hashlib.sha256(f.read_bytes()).hexdigest() if f.is_file() else None
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deltalens.labeling", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("endpoints", help="record which labelers are configured (rewritten only on change)")
    e.add_argument("-p", "--params", default="params/labeling/default.yaml")
    e.add_argument("--out", required=True)
    x = sub.add_parser("export", help="export labeling prompts for the manual workflow")
    x.add_argument("-p", "--params", default="params/labeling/default.yaml")
    x.add_argument("--out", help="directory (default: <manual_dir>/<labeler> for each manual labeler)")
    args = ap.parse_args(argv)
    params = _params(args.params)
    from .pipeline import check_specs

    try:
        specs = check_specs(params.get("labelers"))
    except ParameterError as err:
        print(f"{args.params}: {err}", file=sys.stderr)
        return 2
    if args.cmd == "endpoints":
        text = json.dumps(endpoint_state(specs), indent=1, sort_keys=True)
        out = resolve(args.out)
        if not out.is_file() or out.read_text() != text:
            atomic_write(out, lambda tmp: tmp.write_text(text))
            print(f"labeler configuration changed -> {out}")
        return 0
    from ..context import load
    from .manual import export_prompts
    from .pipeline import select_samples
    from .templates import build_prompts

    try:
        ds = load(params["dataset_dir"])
        ids = select_samples(ds, params.get("label_split"), params.get("max_samples"), params.get("seed", 0))
        prompts = build_prompts(ds, ids, params.get("template", "json@1"))
    except (ParameterError, FileNotFoundError) as err:
        print(f"{args.params}: {err}", file=sys.stderr)
        return 2
    targets = [Path(args.out)] if args.out else [resolve(params["manual_dir"]) / s["name"] for s in specs if s["kind"] == "manual"]
    for d in targets:
        export_prompts(prompts, d)
        print(f"{len(prompts)} prompts -> {d} (fill {d / 'answers_template.txt'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
