"""Committed checkpoints (``models/<name>/``): a trained model folder with a ``SHA256SUMS`` list, checked before use.

``make all`` reads the default code LM from such a folder instead of retraining it (issue 22: its two training stages
take ~41 min of two CPU cores, more than the run's budget). :func:`verify_checkpoint` checks that the folder holds
exactly the files its list names, each with its listed hash, before anything loads it; ``python -m deltalens.codelm
verify models/<name> --stamp PATH`` writes a stamp file for make once the check passes.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..context.schema import sha256_file

SUMS = "SHA256SUMS"
REQUIRED = ("config.json", "model.safetensors", "tokenizer.json", "training.json")


class CheckpointError(ValueError):
    """A committed checkpoint folder that is incomplete or altered (the message names the file)."""


def read_sums(folder: str | Path) -> dict[str, str]:
    """``file name -> sha256`` from ``folder/SHA256SUMS`` (``sha256sum`` format: digest, spaces, name)."""
    folder = Path(folder)
    path = folder / SUMS
    if not path.is_file():
        raise CheckpointError(f"{folder}: no {SUMS} (a committed checkpoint lists every file's sha256 there)")
    out = {}
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or len(parts[0]) != 64:
            raise CheckpointError(f"{path}:{i}: expected '<64 hex digits>  <file name>', got {line!r}")
        out[parts[1].lstrip("*").strip()] = parts[0].lower()
    return out


def verify_checkpoint(folder: str | Path) -> dict:
    """Check a committed checkpoint; return ``{"folder", "files": {name: sha256}, "bytes", "key", "trained_length"}``
    (``key``: the training record's parameter key).

    Raises :class:`CheckpointError` naming the first problem: a missing folder or list, a required file not listed,
    a listed file missing, a file present but not listed, a hash that differs."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no such checkpoint folder")
    listed = read_sums(folder)
    missing_required = [f for f in REQUIRED if f not in listed]
    if missing_required:
        raise CheckpointError(f"{folder}/{SUMS} does not list {', '.join(missing_required)}")
    present = sorted(p.name for p in folder.iterdir() if p.name != SUMS)
    unlisted = sorted(set(present) - set(listed))
    if unlisted:
        raise CheckpointError(f"{folder}: {', '.join(unlisted)} not listed in {SUMS} (an unchecked file would load)")
    for name, digest in sorted(listed.items()):
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"{folder}/{name}: listed in {SUMS} but missing")
        actual = sha256_file(path)
        if actual != digest:
            raise CheckpointError(f"{folder}/{name}: sha256 {actual} differs from {SUMS}'s {digest} "
                                  "(the file was changed; retrain with its recipe or restore it from git)")
    training = json.loads((folder / "training.json").read_text())
    return {"folder": str(folder), "files": listed, "bytes": sum((folder / f).stat().st_size for f in listed),
            "key": training.get("key"), "trained_length": training.get("trained_length")}
