"""The self-contained Kaggle bundle of the extraction notebook (``make kaggle``).

Kaggle uploads only the notebook (``code_file`` of ``kernel-metadata.json``) and runs it with its default
parameters, so the bundle's notebook carries everything it needs:

* the ``deltalens`` package, inlined at build time as a base64 zip that a bootstrap cell unpacks and puts first on
  ``sys.path`` (no repository, no pip install of the project);
* default parameters for the 7B GPU run (``params/kaggle/*.yaml``: model, dtype, device_map, Kaggle paths).

``build/kaggle/kernel/`` holds ``kernel-metadata.json`` + the notebook (``kaggle kernels push -p``);
``build/kaggle/dataset/`` holds the context dataset + ``dataset-metadata.json`` (``kaggle datasets create -p``).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import zipfile
from pathlib import Path

import nbformat
import yaml

from ..core.params import ParameterError
from ..core.paths import project_root, resolve

NOTEBOOK = "notebooks/03_extract_delta.ipynb"

BOOTSTRAP = '''# deltalens {version}, inlined by `make kaggle` ({n_files} files, sha256 {digest:.12}): unpacked and put first on sys.path
import base64, importlib.metadata as _md, io, os, subprocess, sys, tempfile, zipfile
_PIP = {pip}
def _needs(req):
    name, _, minimum = req.partition(">=")
    try:
        have = _md.version(name)
    except _md.PackageNotFoundError:
        return True
    as_tuple = lambda v: tuple(int(x) for x in v.split(".")[:3] if x.isdigit())
    return bool(minimum) and as_tuple(have) < as_tuple(minimum)
_missing = [r for r in _PIP if _needs(r)]
if _missing:
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", *_missing])
_ZIP = "{payload}"
_dir = os.path.join(tempfile.gettempdir(), "deltalens-inlined-{digest:.12}")
if not os.path.isdir(os.path.join(_dir, "deltalens")):
    zipfile.ZipFile(io.BytesIO(base64.b64decode(_ZIP))).extractall(_dir)
sys.path.insert(0, _dir)
for _m in [m for m in sys.modules if m == "deltalens" or m.startswith("deltalens.")]:
    del sys.modules[_m]
'''


def package_zip(root: Path | None = None) -> tuple[bytes, int, str]:
    """(zip bytes of lib/deltalens without caches, number of files, sha256 of the sources), deterministic."""
    root = root or project_root()
    src = root / "lib"
    files = sorted(p for p in (src / "deltalens").rglob("*.py") if "__pycache__" not in p.parts)
    buf, h = io.BytesIO(), hashlib.sha256()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for p in files:
            rel = p.relative_to(src).as_posix()
            data = p.read_bytes()
            h.update(rel.encode() + b"\0" + data)
            info = zipfile.ZipInfo(rel, date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, data)
    return buf.getvalue(), len(files), h.hexdigest()


def _format(value: str, username: str) -> str:
    return value.replace("{username}", username)


def _parameters_source(original: str, params: dict) -> str:
    """The notebook's own parameters cell, then the Kaggle defaults overriding some of them (a parameter the
    Kaggle file does not name keeps the notebook's default)."""
    lines = [original.rstrip(), "", "# Kaggle defaults (written by `make kaggle` from its params file)"]
    lines += [f"{k} = {v!r}" for k, v in params.items()]
    return "\n".join(lines)


def build(out_dir: str | Path = "build/kaggle", params: str | Path = "params/kaggle/falcon-mamba-7b.yaml",
          username: str | None = None, dataset_dir: str | Path | None = "data/processed/context") -> dict[str, Path]:
    """Write the kernel folder (and the dataset folder when ``dataset_dir`` exists); returns their paths."""
    from importlib.metadata import version

    root = project_root()
    spec = yaml.safe_load(resolve(params).read_text())
    kernel, nb_params = spec.get("kernel", {}), spec.get("notebook", {})
    username = username or os.environ.get("KAGGLE_USERNAME") or "your-kaggle-username"
    nb = nbformat.read(root / NOTEBOOK, as_version=4)
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    if len(tagged) != 1:
        raise ParameterError(f"{NOTEBOOK}: needs exactly one cell tagged 'parameters'")
    known = set(_notebook_parameter_names(nb.cells[tagged[0]].source))
    unknown = sorted(set(nb_params) - known)
    if unknown:
        raise ParameterError(f"{params}: notebook parameter(s) {unknown} are not in {NOTEBOOK}'s parameters cell")
    nb.cells[tagged[0]].source = _parameters_source(nb.cells[tagged[0]].source, nb_params)
    payload, n_files, digest = package_zip(root)
    try:
        pkg_version = version("deltalens")
    except Exception:  # noqa: BLE001 - not installed as a distribution
        pkg_version = "source"
    boot = BOOTSTRAP.format(version=pkg_version, n_files=n_files, digest=digest, pip=repr(list(kernel.get("pip_install", []))),
                            payload=base64.b64encode(payload).decode())
    nb.cells.insert(tagged[0] + 1, nbformat.v4.new_code_cell(boot, metadata={"tags": ["deltalens-bootstrap"]}))
    for i, c in enumerate(nb.cells):  # deterministic ids: the same sources build the same file
        c.id = f"cell-{i:02d}"
    out = resolve(out_dir)
    kdir = out / "kernel"
    if kdir.exists():
        shutil.rmtree(kdir)
    kdir.mkdir(parents=True)
    code_file = "extract_delta.ipynb"
    nbformat.write(nb, kdir / code_file)
    kid = _format(kernel.get("id", "{username}/deltalens-falcon-mamba-delta"), username)
    dataset_id = _format(kernel.get("dataset_id", "{username}/deltalens-context"), username)
    meta = {"id": kid, "title": kernel.get("title", kid.split("/")[1].replace("-", " ")), "code_file": code_file,
            "language": "python", "kernel_type": "notebook", "is_private": bool(kernel.get("is_private", True)),
            "enable_gpu": bool(kernel.get("enable_gpu", True)), "enable_internet": bool(kernel.get("enable_internet", True)),
            "dataset_sources": [dataset_id], "competition_sources": [], "kernel_sources": [], "model_sources": []}
    (kdir / "kernel-metadata.json").write_text(json.dumps(meta, indent=1))
    paths = {"kernel": kdir, "notebook": kdir / code_file}
    if dataset_dir is not None and resolve(dataset_dir).is_dir():
        ddir = out / "dataset"
        if ddir.exists():
            shutil.rmtree(ddir)
        ddir.mkdir(parents=True)
        for name in ("samples.parquet", "chunks.parquet", "manifest.json"):
            shutil.copy2(resolve(dataset_dir) / name, ddir / name)
        (ddir / "dataset-metadata.json").write_text(json.dumps(
            {"id": dataset_id, "title": kernel.get("dataset_title", "deltalens context"),
             "licenses": [{"name": "other"}]}, indent=1))
        paths["dataset"] = ddir
    return paths


def _notebook_parameter_names(source: str) -> list[str]:
    import ast

    return [t.id for node in ast.parse(source).body if isinstance(node, ast.Assign) for t in node.targets
            if isinstance(t, ast.Name)]


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m deltalens.extract.kaggle", description="build the Kaggle bundle")
    ap.add_argument("-p", "--params", default="params/kaggle/falcon-mamba-7b.yaml")
    ap.add_argument("--out", default="build/kaggle")
    ap.add_argument("--username")
    ap.add_argument("--dataset-dir", default="data/processed/context")
    args = ap.parse_args(argv)
    paths = build(args.out, args.params, args.username, args.dataset_dir)
    for k, v in paths.items():
        print(f"{k:9s} {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
