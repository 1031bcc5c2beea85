"""The training corpus of the local code LM: real Python source on disk that is NOT in the evaluation dataset.

Sources, read in sorted path order:

* the standard library of the running interpreter (``sysconfig.get_paths()["stdlib"]``), without its test suites,
  ``idlelib``, ``site-packages`` and the other directories listed in ``exclude_dirs`` (any path component matches);
* optionally the ``.py`` files of installed distributions listed in ``distributions``.

Leak guard: every distribution named under ``sources.installed`` of the dataset params (and ``exclude_distributions``)
is excluded. Naming one of them in ``distributions`` is a :class:`ParameterError`; any corpus file that belongs to one
of them (``importlib.metadata`` file lists, compared by resolved path) or has the same bytes as one of their files
(vendored copies, e.g. ``pip/_vendor/requests``) is dropped and listed as skipped.

Bytes become text by :func:`deltalens.core.source_text.decode_source`, the dataset's rule (UTF-8 only, a leading BOM
dropped, newlines ``\\n``). Files that are not UTF-8, too large, empty or unreadable are skipped and counted, never
dropped silently. A stable hash of the relative path splits files into train / held-out; the character budget keeps
files in the order of another stable hash (a deterministic shuffle, so the budget samples the whole library instead
of its first letters).
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import os
import re
import sys
import sysconfig
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from ..core.params import ParameterError, check_float, check_int
from ..core.paths import resolve
from ..core.source_text import decode_source

MIN_COPY_BYTES = 64  # shorter files (empty __init__.py, ...) are not treated as copies of an excluded file
DEFAULT_EXCLUDE_DIRS = ("test", "tests", "idlelib", "turtledemo", "site-packages", "dist-packages", "__pycache__",
                        "_vendor", "vendored", "_vendored")


def normalise_name(name: str) -> str:
    """PEP 503 distribution name: lower case, runs of ``-_.`` become ``-`` (``Jinja2`` == ``jinja2``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def stable_unit(key: str, salt: str = "") -> float:
    """A number in [0, 1) fixed by ``key`` (sha256): the same on every machine and Python version."""
    digest = hashlib.sha256(f"{salt}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True)
class CorpusConfig:
    stdlib: bool = True
    distributions: tuple[str, ...] = ()  # extra installed distributions (never one of the excluded)
    exclude_dataset_params: str | None = "params/dataset/default.yaml"  # its sources.installed are excluded
    exclude_distributions: tuple[str, ...] = ()  # excluded in addition
    exclude_dirs: tuple[str, ...] = DEFAULT_EXCLUDE_DIRS
    max_file_bytes: int = 300_000
    max_chars: int = 20_000_000  # character budget of the whole corpus (train + held-out)
    held_out_fraction: float = 0.02

    def __post_init__(self) -> None:
        where = "corpus"
        if not isinstance(self.stdlib, bool):
            raise ParameterError(f"{where}: parameter stdlib={self.stdlib!r}; allowed: true or false")
        for name in ("distributions", "exclude_distributions", "exclude_dirs"):
            value = getattr(self, name)
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
                raise ParameterError(f"{where}: parameter {name}={value!r}; allowed: a list of names")
            object.__setattr__(self, name, tuple(value))
        if self.exclude_dataset_params is not None and not isinstance(self.exclude_dataset_params, str):
            raise ParameterError(
                f"{where}: parameter exclude_dataset_params={self.exclude_dataset_params!r}; allowed: a path or null")
        check_int("max_file_bytes", self.max_file_bytes, minimum=1, where=where)
        check_int("max_chars", self.max_chars, minimum=1, where=where)
        check_float("held_out_fraction", self.held_out_fraction, minimum=0, exclusive=True, where=where)
        if self.held_out_fraction >= 0.5:
            raise ParameterError(f"{where}: parameter held_out_fraction={self.held_out_fraction} is out of range; "
                                 "allowed: 0 < held_out_fraction < 0.5")
        if not self.stdlib and not self.distributions:
            raise ParameterError(f"{where}: parameter stdlib=false and distributions=[]: the corpus has no source")


@dataclass(frozen=True)
class CorpusFile:
    path: str  # 'stdlib/json/decoder.py' or '<distribution>/<path in site-packages>'
    text: str  # newlines normalised to '\n'
    sha256: str  # of the raw bytes on disk
    split: str  # 'train' | 'held_out'


@dataclass
class Corpus:
    files: list[CorpusFile]
    manifest: dict = field(default_factory=dict)

    def texts(self, split: str) -> list[str]:
        return [f.text for f in self.files if f.split == split]

    @property
    def key(self) -> str:
        """sha256 of what determines the corpus content: every (path, sha256, split), in order."""
        return self.manifest["content_sha256"]


# ---- excluded distributions ------------------------------------------------------------------------------------------
def dataset_distributions(dataset_params: str | Path) -> list[str]:
    """The ``dataset.sources.installed`` list of a dataset params YAML."""
    path = resolve(dataset_params)
    if not path.is_file():
        raise ParameterError(f"corpus: parameter exclude_dataset_params={str(dataset_params)!r}: no such file")
    doc = yaml.safe_load(path.read_text()) or {}
    installed = ((doc.get("dataset") or {}).get("sources") or {}).get("installed") or []
    if not isinstance(installed, list):
        raise ParameterError(f"corpus: {path}: dataset.sources.installed is not a list")
    return [str(x) for x in installed]


def _distribution(name: str) -> md.Distribution | None:
    try:
        return md.distribution(name)
    except md.PackageNotFoundError:
        return None


def _dist_py_files(dist: md.Distribution) -> list[tuple[str, Path]]:
    """(path relative to site-packages, absolute path) of the distribution's existing ``.py`` files, sorted."""
    out = []
    for f in dist.files or []:
        rel = str(f).replace(os.sep, "/")
        if rel.endswith(".py") and not rel.startswith(".."):
            p = Path(dist.locate_file(f))
            if p.is_file():
                out.append((rel, p))
    return sorted(out)


@dataclass
class ExclusionSet:
    names: list[str]  # normalised distribution names
    found: list[str]  # those installed here
    paths: dict[Path, str]  # resolved file path -> distribution
    digests: dict[str, str]  # sha256 of file bytes -> distribution

    @classmethod
    def build(cls, names: list[str]) -> "ExclusionSet":
        norm = sorted({normalise_name(n) for n in names})
        paths: dict[Path, str] = {}
        digests: dict[str, str] = {}
        found = []
        for name in norm:
            dist = _distribution(name)
            if dist is None:
                continue
            found.append(name)
            for _, p in _dist_py_files(dist):
                paths[p.resolve()] = name
                try:
                    digests.setdefault(hashlib.sha256(p.read_bytes()).hexdigest(), name)
                except OSError:
                    pass
        return cls(norm, found, paths, digests)

    def reason(self, path: Path, digest: str, nbytes: int) -> str | None:
        if (owner := self.paths.get(path.resolve())) is not None:
            return f"belongs to excluded distribution {owner}"
        if nbytes >= MIN_COPY_BYTES and (owner := self.digests.get(digest)) is not None:
            return f"same bytes as a file of excluded distribution {owner}"
        return None


# ---- listing and reading ---------------------------------------------------------------------------------------------
def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"]).resolve()


def _stdlib_files(exclude_dirs: set[str]) -> list[tuple[str, Path]]:
    root = stdlib_root()
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in exclude_dirs)
        for name in sorted(filenames):
            if name.endswith(".py"):
                p = Path(dirpath) / name
                out.append(("stdlib/" + p.relative_to(root).as_posix(), p))
    return sorted(out)


def _distribution_files(name: str, exclude_dirs: set[str]) -> list[tuple[str, Path]]:
    dist = _distribution(name)
    if dist is None:
        raise ParameterError(f"corpus: parameter distributions: {name!r} is not installed in this environment")
    prefix = normalise_name(dist.metadata["Name"] or name)
    return [(f"{prefix}/{rel}", p) for rel, p in _dist_py_files(dist)
            if not set(rel.split("/")[:-1]) & exclude_dirs and ".dist-info/" not in rel]


def excluded_names(cfg: CorpusConfig) -> list[str]:
    names = list(cfg.exclude_distributions)
    if cfg.exclude_dataset_params is not None:
        names += dataset_distributions(cfg.exclude_dataset_params)
    return sorted({normalise_name(n) for n in names})


def build_corpus(cfg: CorpusConfig) -> Corpus:
    """Read the corpus (deterministic for a given interpreter and environment) and its manifest."""
    excluded = excluded_names(cfg)
    clash = sorted({normalise_name(d) for d in cfg.distributions} & set(excluded))
    if clash:
        raise ParameterError(f"corpus: parameter distributions lists {clash}, which the evaluation dataset uses "
                             f"(excluded: {excluded}); remove them")
    exclusion = ExclusionSet.build(excluded)
    exclude_dirs = set(cfg.exclude_dirs)

    entries: list[tuple[str, Path]] = _stdlib_files(exclude_dirs) if cfg.stdlib else []
    for name in sorted(set(cfg.distributions), key=normalise_name):
        entries += _distribution_files(name, exclude_dirs)
    entries = sorted(dict(entries).items())  # one entry per corpus path

    skipped: list[dict] = []
    readable: list[tuple[str, str, str]] = []  # (path, text, sha256)
    for rel, p in entries:
        try:
            raw = p.read_bytes()
        except OSError as e:
            skipped.append({"path": rel, "reason": f"unreadable ({e.strerror})"})
            continue
        digest = hashlib.sha256(raw).hexdigest()
        text, reason = decode_source(raw, cfg.max_file_bytes)
        if text is not None and not text.strip():
            text, reason = None, "empty"
        reason = exclusion.reason(p, digest, len(raw)) or reason
        if reason is not None:
            skipped.append({"path": rel, "reason": reason})
            continue
        readable.append((rel, text, digest))

    # the budget keeps files in a stable shuffled order; the kept files stay in sorted path order
    kept_paths: set[str] = set()
    total = 0
    for rel, text, _ in sorted(readable, key=lambda r: (stable_unit(r[0], "budget"), r[0])):
        if total + len(text) > cfg.max_chars:
            skipped.append({"path": rel, "reason": f"over the character budget (max_chars {cfg.max_chars})"})
            continue
        kept_paths.add(rel)
        total += len(text)

    kept = [r for r in readable if r[0] in kept_paths]
    splits = ["held_out" if stable_unit(rel, "split") < cfg.held_out_fraction else "train" for rel, _, _ in kept]
    if kept and "held_out" not in splits:  # a tiny corpus: the file with the smallest split hash is held out
        splits[min(range(len(kept)), key=lambda i: stable_unit(kept[i][0], "split"))] = "held_out"
    if kept and "train" not in splits:
        raise ParameterError(f"corpus: only {len(kept)} file(s) fit max_chars={cfg.max_chars}: nothing left to "
                             "train on; raise max_chars")
    if not kept:
        raise ParameterError(f"corpus: no usable file (max_chars={cfg.max_chars}, {len(skipped)} skipped)")
    files = [CorpusFile(rel, text, digest, split) for (rel, text, digest), split in zip(kept, splits)]
    return Corpus(files, _manifest(cfg, files, sorted(skipped, key=lambda s: s["path"]), exclusion))


def _manifest(cfg: CorpusConfig, files: list[CorpusFile], skipped: list[dict], exclusion: ExclusionSet) -> dict:
    content = hashlib.sha256()
    for f in files:
        content.update(f"{f.path}\0{f.sha256}\0{f.split}\n".encode())
    by_split = {s: [f for f in files if f.split == s] for s in ("train", "held_out")}
    return {
        "params": asdict(cfg),
        "python": {"version": sys.version.split()[0], "implementation": sys.implementation.name,
                   "stdlib": str(stdlib_root()) if cfg.stdlib else None},
        "excluded_distributions": exclusion.names,
        "excluded_distributions_installed": exclusion.found,
        "content_sha256": content.hexdigest(),
        "counts": {
            "files": len(files),
            "chars": sum(len(f.text) for f in files),
            **{f"{s}_files": len(v) for s, v in by_split.items()},
            **{f"{s}_chars": sum(len(f.text) for f in v) for s, v in by_split.items()},
            "skipped": len(skipped),
            "skipped_by_reason": dict(sorted(Counter(_reason_kind(s["reason"]) for s in skipped).items())),
        },
        "files": [{"path": f.path, "sha256": f.sha256, "chars": len(f.text), "split": f.split} for f in files],
        "skipped": skipped,
    }


def _reason_kind(reason: str) -> str:
    return reason.split(" (")[0]
