"""The code LM's training data as files, so a run on another machine (a lent GPU: another Python, another set of
installed distributions) trains on exactly the data this machine would.

The corpus is "the running interpreter's standard library" and the training prompts come from installed
distributions: both depend on the machine. ``python -m deltalens.codelm bundle -p PARAMS --out DIR`` writes them
once, here:

    DIR/bundle.json            what the bundle was built from: the corpus and context parameters, the corpus key,
                               the versions; a bundle is refused for parameters it was not built from
    DIR/corpus.parquet         every corpus file: path, split, sha256 of the raw bytes, text (UTF-8)
    DIR/corpus_manifest.json   the corpus manifest (counts, skipped files and why), as the trainer writes it
    DIR/contexts/              the training prompts' dataset (:func:`deltalens.context.save`; only with context)

and ``train ... --bundle DIR`` reads them instead of building them. Everything after that — tokenizer, token
streams, prompt layout, draws — is computed by the trainer as usual, so the model's key (parameters + corpus key) is
the same as when training here from scratch.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pandas as pd

from ..core.params import ParameterError

FORMAT = 1


def _sections(params) -> dict:
    c = params.content_params()
    return {"corpus": c["corpus"], "context": c.get("context"), "seed": params.seed}


def write_bundle(params, out: str | Path, progress: bool = False) -> Path:
    """Build the corpus (and the training prompts when ``context.share > 0``) of ``params`` into ``out``."""
    from ..context import save
    from ..core.paths import resolve
    from ..core.runinfo import package_versions
    from .context_data import build_training_contexts
    from .corpus import build_corpus, excluded_names

    out = resolve(out)
    if out.exists() and not (out / "bundle.json").is_file():
        raise ParameterError(f"bundle: --out {out} exists and is not a code-LM data bundle; choose a new folder")
    corpus = build_corpus(params.corpus)
    tmp = out.with_name(f".{out.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    frame = pd.DataFrame([{"path": f.path, "split": f.split, "sha256": f.sha256, "text": f.text} for f in corpus.files])
    frame.to_parquet(tmp / "corpus.parquet", index=False)
    (tmp / "corpus_manifest.json").write_text(json.dumps(corpus.manifest, indent=1) + "\n")
    if params.context.enabled:
        ds = build_training_contexts(params.context, excluded_names(params.corpus), params.seed, progress=progress)
        save(ds, tmp / "contexts")
    meta = {"format": FORMAT, **_sections(params), "corpus_key": corpus.key,
            "versions": package_versions(("pandas", "pyarrow"), python=True)}
    (tmp / "bundle.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def read_bundle(params, path: str | Path):
    """(:class:`~.corpus.Corpus`, training-prompt dataset or None) from a bundle written for ``params``' corpus,
    context and seed; any other bundle is refused with what differs."""
    from ..context import load
    from ..core.paths import resolve
    from .corpus import Corpus, CorpusFile

    path = resolve(path)
    meta_file = path / "bundle.json"
    if not meta_file.is_file():
        raise ParameterError(f"bundle: {path} has no bundle.json; write one with python -m deltalens.codelm bundle")
    meta = json.loads(meta_file.read_text())
    want = json.loads(json.dumps(_sections(params), default=list))
    differ = [k for k in want if meta.get(k) != want[k]]
    if meta.get("format") != FORMAT or differ:
        raise ParameterError(f"bundle: {path} was built for other parameters ({', '.join(differ) or 'format'} "
                             "differ); write it again for these parameters")
    frame = pd.read_parquet(path / "corpus.parquet")
    manifest = json.loads((path / "corpus_manifest.json").read_text())
    files = [CorpusFile(r.path, r.text, r.sha256, r.split) for r in frame.itertuples(index=False)]
    if [(f.path, f.sha256, f.split) for f in files] != [(f["path"], f["sha256"], f["split"]) for f in manifest["files"]]:
        raise ParameterError(f"bundle: {path}/corpus.parquet does not match its corpus_manifest.json")
    content = hashlib.sha256()
    for f in files:  # the corpus key, recomputed from the files (as corpus._manifest computes it)
        content.update(f"{f.path}\0{f.sha256}\0{f.split}\n".encode())
    if not content.hexdigest() == manifest["content_sha256"] == meta["corpus_key"]:
        raise ParameterError(f"bundle: {path}: the corpus files do not give the recorded corpus key")
    corpus = Corpus(files, manifest)
    ctx = load(path / "contexts") if params.context.enabled else None
    return corpus, ctx
