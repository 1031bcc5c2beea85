"""The dataset build's parameters (the ``dataset:`` section of a params file), checked before any work.

Below :mod:`.build`, :mod:`.chunks` and :mod:`.samples`, which all read them (no import circle).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

from ..core.params import ParameterError
from ..core.paths import resolve
from .schema import DEFAULT_HEADER


class ParamsError(ParameterError):
    """A dataset build parameter is wrong (a :class:`deltalens.core.params.ParameterError`)."""


@dataclass
class BuildParams:
    out: str = "data/processed/context"
    seed: int = 0
    installed: list = field(default_factory=list)  # distribution names
    project_dirs: list = field(default_factory=list)  # one directory = one project
    repos_dirs: list = field(default_factory=list)  # every subdirectory = one project
    granularity: str = "definition"  # 'definition' | 'file'
    n_chunks: int = 12
    max_relevant: int = 3
    max_related: int = 3
    n_injected: int = 3
    chunk_chars: int = 1500
    min_chunk_chars: int = 80
    prefix_chars: int = 2000
    suffix_chars: int = 1000
    samples_per_project: int = 40
    max_samples_per_file: int = 3
    min_target_chars: int = 8
    max_target_chars: int = 160
    max_file_bytes: int = 300_000
    test_fraction: float = 0.5
    min_samples: int = 0
    min_projects: int = 2
    header: str = DEFAULT_HEADER

    def manifest_params(self) -> dict:
        """The parameters that determine the content (everything but the output directory)."""
        d = asdict(self)
        d.pop("out")
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "BuildParams":
        d = dict(d or {})
        if "sources" in d:
            src = d.pop("sources")
            if src is not None:  # explicit top-level keys (e.g. --set installed=[...]) win over the sources section
                d = {**_flatten_sources(src), **d}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ParamsError(f"unknown dataset parameter(s) {unknown}; known: {sorted(known)}")
        p = cls(**d)
        p.check()
        return p

    def check(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.type in ("int",) and (not isinstance(v, int) or isinstance(v, bool)):
                raise ParamsError(f"dataset parameter {f.name!r}: expected an integer, got {v!r}")
            if f.type == "list" and not (isinstance(v, list) and all(isinstance(x, str) for x in v)):
                raise ParamsError(f"dataset parameter {f.name!r}: expected a list of strings, got {v!r}")
        if not isinstance(self.header, str) or "{path}" not in self.header:
            raise ParamsError(f"dataset parameter 'header': a string containing {{path}}, got {self.header!r}")
        if isinstance(self.test_fraction, bool) or not isinstance(self.test_fraction, (int, float)):
            raise ParamsError(f"dataset parameter 'test_fraction': expected a number, got {self.test_fraction!r}")
        bounds = {"n_chunks": 2, "max_relevant": 1, "max_related": 0, "n_injected": 0, "chunk_chars": 40,
                  "min_chunk_chars": 1, "prefix_chars": 1, "suffix_chars": 0, "samples_per_project": 1,
                  "max_samples_per_file": 1, "min_target_chars": 1, "max_target_chars": 1, "max_file_bytes": 1,
                  "min_samples": 0, "min_projects": 1}
        for name, low in bounds.items():
            if getattr(self, name) < low:
                raise ParamsError(f"dataset parameter {name!r}={getattr(self, name)} is too small; allowed: >= {low}")
        if self.max_relevant + self.max_related + self.n_injected > self.n_chunks:
            raise ParamsError(f"dataset parameters: max_relevant + max_related + n_injected = "
                              f"{self.max_relevant + self.max_related + self.n_injected} > n_chunks={self.n_chunks}")
        if self.min_chunk_chars > self.chunk_chars:
            raise ParamsError(f"dataset parameters: min_chunk_chars={self.min_chunk_chars} > chunk_chars={self.chunk_chars}")
        if self.min_target_chars > self.max_target_chars:
            raise ParamsError(f"dataset parameters: min_target_chars={self.min_target_chars} > "
                              f"max_target_chars={self.max_target_chars}")
        if self.granularity not in ("definition", "file"):
            raise ParamsError(f"dataset parameter 'granularity': 'definition' or 'file', got {self.granularity!r}")
        if self.n_chunks < self.max_relevant + 1 or self.max_relevant < 1:
            raise ParamsError("dataset parameters: need max_relevant >= 1 and n_chunks > max_relevant")
        if not 0.0 < float(self.test_fraction) < 1.0:
            raise ParamsError(f"dataset parameter 'test_fraction' must be in (0, 1), got {self.test_fraction!r}")
        if self.chunk_chars < 40 or self.prefix_chars < 1:
            raise ParamsError("dataset parameters: chunk_chars >= 40 and prefix_chars >= 1 required")
        if not (self.installed or self.project_dirs or self.repos_dirs):
            raise ParamsError("dataset parameters: no sources (installed / project_dirs / repos_dirs are all empty)")


def _flatten_sources(src) -> dict:
    if not isinstance(src, dict):
        raise ParamsError(f"dataset parameter 'sources' must be a mapping, got {type(src).__name__}")
    unknown = sorted(set(src) - {"installed", "project_dirs", "repos_dirs"})
    if unknown:
        raise ParamsError(f"unknown key(s) {unknown} under 'sources' (installed, project_dirs, repos_dirs)")
    return {k: list(v or []) for k, v in src.items()}


def load_params(path: str | Path, overrides: dict | None = None) -> BuildParams:
    """Read the ``dataset:`` section of a params YAML (relative paths: against the repository root)."""
    path = resolve(path)
    if not path.is_file():
        raise ParamsError(f"params file {str(path)!r} does not exist")
    doc = yaml.safe_load(path.read_text()) or {}
    if not isinstance(doc, dict) or not isinstance(doc.get("dataset"), dict):
        raise ParamsError(f"{path}: expected a mapping with a 'dataset:' section")
    d = dict(doc["dataset"])
    d.update(overrides or {})
    return BuildParams.from_dict(d)
