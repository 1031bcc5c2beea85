"""A fixed pseudo-random subset of sample ids: the same on every machine, whatever the order, the seed or the split.

Used wherever a run takes only some samples (extraction's ``max_samples`` and leave-one-out subset, the calibration
prompts of global channels, the analysis' filtering curves), so that they pick the same ones.
"""

from __future__ import annotations

import hashlib


def hash_subset(ids: list[str], k: int | None) -> set[str]:
    """The ``k`` ids with the smallest sha256: a fixed pseudo-random subset, spread over projects and splits, that
    does not depend on the order, the seed or the machine."""
    if k is None:
        return set(ids)
    return set(sorted(ids, key=lambda s: hashlib.sha256(s.encode()).hexdigest())[:k])
