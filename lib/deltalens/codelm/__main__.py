"""Command line: ``python -m deltalens.codelm {train,bundle,corpus} -p params/codelm/default.yaml ...``, and
``python -m deltalens.codelm verify models/<name> [--stamp PATH]`` (a committed checkpoint's hashes)."""

from __future__ import annotations

import argparse
import json
import sys

from ..core.params import parse_overrides


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deltalens.codelm", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="build corpus + tokenizer, train, save a transformers model directory")
    t.add_argument("-p", "--params", default="params/codelm/default.yaml")
    t.add_argument("--out", help="output directory (default: the params' 'out')")
    t.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                   help="override a parameter (YAML value), e.g. --set train.max_steps=20")
    t.add_argument("--force", action="store_true", help="train even if an identical model exists")
    t.add_argument("--no-progress", action="store_true")
    t.add_argument("--bundle", help="read the corpus and training prompts from this data bundle (made by 'bundle')")
    b = sub.add_parser("bundle", help="write the corpus and training prompts of PARAMS as files, for a run elsewhere")
    b.add_argument("-p", "--params", default="params/codelm/default.yaml")
    b.add_argument("--out", required=True, help="the bundle folder")
    b.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE")
    c = sub.add_parser("corpus", help="print the corpus counts (no training)")
    c.add_argument("-p", "--params", default="params/codelm/default.yaml")
    c.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE")
    v = sub.add_parser("verify", help="check a committed checkpoint folder against its SHA256SUMS")
    v.add_argument("folder")
    v.add_argument("--stamp", help="write this file (the check's result, JSON) once the check passes")
    args = ap.parse_args(argv)

    if args.cmd == "verify":
        from pathlib import Path

        from .committed import CheckpointError, verify_checkpoint

        try:
            info = verify_checkpoint(args.folder)
        except CheckpointError as e:
            print(f"checkpoint error: {e}", file=sys.stderr)
            return 2
        print(f"{args.folder}: {len(info['files'])} files, {info['bytes']:,} bytes, every sha256 matches")
        if args.stamp:
            Path(args.stamp).parent.mkdir(parents=True, exist_ok=True)
            Path(args.stamp).write_text(json.dumps(info, indent=1) + "\n")
        return 0

    from ..core.params import ParameterError
    from .params import load_params

    try:
        p = load_params(args.params, parse_overrides(args.set, "section.key=value"))
        if args.cmd == "train":
            from .train import train_code_lm

            outcome = train_code_lm(p, out=args.out, progress=not args.no_progress, force=args.force,
                                    bundle=args.bundle)
            print(outcome.describe())
        elif args.cmd == "bundle":
            from .bundle import write_bundle

            print(f"data bundle -> {write_bundle(p, args.out)}")
        else:
            from .corpus import build_corpus

            corpus = build_corpus(p.corpus)
            print(json.dumps({k: corpus.manifest[k] for k in ("python", "excluded_distributions", "counts")},
                             indent=1))
    except ParameterError as e:
        print(f"parameter error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
