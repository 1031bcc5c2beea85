"""Command line: ``python -m deltalens.context {build,verify,stats,from-jsonl,from-lca} ...``."""

from __future__ import annotations

import argparse
import json
import sys

from ..core.params import parse_overrides


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deltalens.context", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build the dataset from source projects")
    b.add_argument("-p", "--params", default="params/dataset/default.yaml")
    b.add_argument("--out", help="output directory (default: the params' 'out')")
    b.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a parameter (YAML value)")
    b.add_argument("--no-progress", action="store_true")
    b.add_argument("--timing", help="write {'seconds': ...} of this build to this JSON file")
    v = sub.add_parser("verify", help="re-verify the ground truth of a built dataset against the sources")
    v.add_argument("path", nargs="?", default="data/processed/context")
    s = sub.add_parser("stats", help="print the dataset's summary tables")
    s.add_argument("path", nargs="?", default="data/processed/context")
    j = sub.add_parser("from-jsonl", help="validate user JSONL and write it in the dataset format")
    j.add_argument("jsonl")
    j.add_argument("--out", required=True)
    lca = sub.add_parser("from-lca", help="convert Long Code Arena project-level completion (needs `datasets`)")
    lca.add_argument("--config", default="small_context")
    lca.add_argument("--parquet", help="read this local parquet file instead of the Hugging Face hub")
    lca.add_argument("--out", required=True)
    lca.add_argument("--limit", type=int, default=None, help="at most this many datapoints")
    lca.add_argument("--n-chunks", type=int, default=12)
    args = ap.parse_args(argv)

    from .schema import SchemaError

    try:
        if args.cmd == "build":
            from .build import build
            from .build_params import load_params

            p = load_params(args.params, parse_overrides(args.set, "key=value"))
            ds, secs = build(p, out=args.out, progress=not args.no_progress)
            c = ds.manifest["counts"]
            print(f"built {c['samples']} samples over {c['projects']} projects, chunks per category "
                  f"{c['chunks_per_category']}, in {secs:.1f} s -> {args.out or p.out}")
            if args.timing:
                from ..core.paths import resolve
                from ..core.runinfo import write_json

                write_json(resolve(args.timing), {"seconds": round(secs, 3), "counts": c}, sort_keys=True)
        elif args.cmd == "verify":
            from .schema import load
            from .verify import verify

            print(json.dumps(verify(load(args.path)), sort_keys=True))
        elif args.cmd == "stats":
            from .schema import load
            from .stats import summary

            for name, df in summary(load(args.path)).items():
                print(f"== {name}\n{df.to_string()}\n")
        elif args.cmd == "from-jsonl":
            from .jsonl import load_jsonl
            from .schema import save

            ds = load_jsonl(args.jsonl)
            save(ds, args.out)
            print(f"{len(ds)} samples -> {args.out}")
        elif args.cmd == "from-lca":
            from .long_code_arena import from_lca_records, read_lca
            from .schema import save

            ds = from_lca_records(read_lca(config=args.config, parquet=args.parquet, limit=args.limit),
                                  n_chunks=args.n_chunks)
            save(ds, args.out)
            print(f"{len(ds)} samples -> {args.out}")
    except (ValueError, FileNotFoundError, ImportError, SchemaError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
