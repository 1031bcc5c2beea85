"""The instrument: Δ (and the SSM's other inputs) read out of an unmodified model by forward hooks.

Modules: :mod:`.capture` (the :func:`capture_delta` context manager, mixer discovery, layer ids),
:mod:`.adapters` (one adapter per model family: where Δ is computed and how to recompute it from the hooked call),
:mod:`.scores` (per-token Δ statistics and the control features Δ has to beat), :mod:`.hidden_attention`
(the implicit attention of a selective SSM, from the captured inputs).

    from deltalens.delta import capture_delta
    with capture_delta(model) as records:
        model(input_ids)

May import: ``core``.
"""

from .capture import DeltaRecord, capture_delta, find_mixers

__all__ = ["DeltaRecord", "capture_delta", "find_mixers"]
