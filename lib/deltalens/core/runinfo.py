"""Run bookkeeping shared by every part: atomic writes, JSON that stays valid, package versions.

* :func:`atomic_write` — write to a sibling temporary file, then rename over the target: a reader (or a resumed run)
  sees the old file or the new one, never half of one;
* :func:`jsonable` / :func:`write_json` — NaN and infinities become ``null`` (strict JSON, readable by any parser),
  numpy scalars become Python numbers, tuples lists, dict keys strings;
* :func:`package_versions` — the versions a result was computed with (``None`` for a package that is not installed).
"""

from __future__ import annotations

import json
import math
import os
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Callable

import numpy as np


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """``write(tmp)`` fills a temporary sibling of ``path``; then it replaces ``path`` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def jsonable(x: Any) -> Any:
    """``x`` with NaN / ±inf -> None, numpy scalars and arrays -> Python numbers and lists, keys -> str."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, Path):
        return str(x)
    return x


def write_json(path: str | Path, obj: Any, indent: int | None = 1, sort_keys: bool = False) -> Path:
    """Strict JSON (no NaN tokens), written atomically; objects json cannot encode are written as ``str``.
    ``sort_keys``: keys of every mapping in sorted order (a file whose bytes depend on the content only)."""
    text = json.dumps(jsonable(obj), indent=indent, allow_nan=False, default=str, sort_keys=sort_keys)
    return atomic_write(path, lambda p: p.write_text(text + "\n"))


def package_versions(packages: tuple[str, ...], python: bool = False) -> dict[str, str | None]:
    """{package: version or None}; with ``python`` also the interpreter's version (key ``python``)."""
    out: dict[str, str | None] = {"python": sys.version.split()[0]} if python else {}
    for p in packages:
        try:
            out[p] = version(p.replace("_", "-"))
        except PackageNotFoundError:
            out[p] = None
    return out
