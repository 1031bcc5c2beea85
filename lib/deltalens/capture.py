"""Capture Mamba's step size Δ with forward hooks on unmodified models.

Which tensor Δ is
-----------------
In every selective-SSM mixer (``mambapy.mamba.MambaBlock``, transformers' ``MambaMixer`` and ``FalconMambaMixer``)::

    x_dbl  = x_proj(u)                          # u: (B, L, d_inner), the conv+SiLU branch
    dt     = x_dbl[..., :dt_rank]                # (B, L, dt_rank)
    dt     = dt_norm(dt)                         # FalconMamba: weightless RMS norm (eps = mixer.rms_eps);
                                                 # mambapy with inner_layernorms: its RMSNorm; plain Mamba: none
    Δ      = softplus(dt @ dt_proj.weight.T + dt_proj.bias)      # (B, L, d_inner)

``x_proj`` is the one piece called as a module on every code path (mambapy's parallel and sequential scans and its
step mode, transformers' PyTorch fallback and CUDA kernels in eval mode); ``dt_proj`` is often applied as
``dt_proj.weight @ ...`` and never fires a hook. So the hook sits on ``x_proj`` and recomputes Δ from its output,
in float32. Tests check it equals an independent computation from the weights and mambapy's own step path.

Usage::

    with capture_delta(model) as delta:      # all mixers, full Δ kept
        model(tokens)
    delta.stacked()                          # (n_layers, B, L, d_inner) from the last forward

    with capture_delta(model, reduce=token_stats) as delta:   # reduce inside the hook (big models)
        model(tokens)

The model must be in ``eval()`` mode for transformers models: their training path fuses x_proj into one kernel.
Padded batch rows get Δ = softplus(bias) at pad positions; exclude them or use batch size 1.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F


def find_mixers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every selective-SSM mixer in ``model``, in forward order: modules with ``x_proj``, ``dt_proj`` and ``A_log``."""
    found = [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(getattr(m, "x_proj", None), nn.Linear)
        and isinstance(getattr(m, "dt_proj", None), nn.Linear)
        and isinstance(getattr(m, "A_log", None), torch.Tensor)
    ]
    if not found:
        raise ValueError(
            f"{type(model).__name__} has no Mamba mixer (a module with x_proj, dt_proj and A_log); "
            "supported: mambapy.mamba.MambaBlock, transformers MambaMixer / FalconMambaMixer"
        )
    return found


def _dt_norm(mixer: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    norm = getattr(mixer, "dt_layernorm", None)
    if isinstance(norm, nn.Module):  # mambapy inner_layernorms, transformers >= 5 FalconMamba
        return lambda dt: norm(dt).float()
    eps = getattr(mixer, "rms_eps", None)
    if eps is not None:  # transformers 4.x FalconMamba: rms_forward(time_step, variance_epsilon=rms_eps)
        return lambda dt: dt * torch.rsqrt(dt.pow(2).mean(-1, keepdim=True) + eps)
    return lambda dt: dt


def delta_from_x_proj(mixer: nn.Module, x_dbl: torch.Tensor) -> torch.Tensor:
    """Δ (float32, (..., d_inner)) from the output of ``mixer.x_proj``."""
    dt_rank = mixer.dt_proj.in_features
    dt = _dt_norm(mixer)(x_dbl[..., :dt_rank]).float()
    return F.softplus(F.linear(dt, mixer.dt_proj.weight.float(), mixer.dt_proj.bias.float()))


@dataclass
class DeltaRecord:
    """What one ``capture_delta`` block saw: ``per_layer[i]`` holds one entry per forward call of mixer ``i``."""

    names: list[str]
    per_layer: list[list[Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.per_layer:
            self.per_layer = [[] for _ in self.names]

    @property
    def n_calls(self) -> int:
        return min((len(c) for c in self.per_layer), default=0)

    def last(self) -> list[Any]:
        """The entry of the last forward call, per layer."""
        if self.n_calls == 0:
            raise RuntimeError(
                "no Δ was captured: no forward ran inside the capture block, or the model took a fused path that "
                "skips x_proj (transformers models must be in eval() mode)"
            )
        return [calls[-1] for calls in self.per_layer]

    def stacked(self) -> torch.Tensor:
        """Last forward's Δ as one tensor (n_layers, ...) -- for full Δ or tensor-valued reductions."""
        return torch.stack(self.last())

    def clear(self) -> None:
        for calls in self.per_layer:
            calls.clear()


@contextmanager
def capture_delta(
    model: nn.Module,
    reduce: Callable[[torch.Tensor], Any] | None = None,
    layers: list[int] | None = None,
    to_cpu: bool = True,
) -> Iterator[DeltaRecord]:
    """Hook every Mamba mixer of ``model`` (or the ``layers`` indices) and record Δ of each forward call.

    ``reduce`` maps Δ (B, L, d_inner) float32 to whatever is kept (default: Δ itself); a step-mode call (mambapy
    ``step``) gives Δ of shape (B, 1, d_inner). Results are detached and, with ``to_cpu``, moved to the CPU.
    """
    mixers = find_mixers(model)
    if layers is not None:
        bad = [i for i in layers if not isinstance(i, int) or not 0 <= i < len(mixers)]
        if bad:
            raise ValueError(f"layers={layers}: {bad} out of range; the model has {len(mixers)} mixers (0..{len(mixers) - 1})")
        mixers = [mixers[i] for i in layers]
    record = DeltaRecord(names=[name for name, _ in mixers])

    def make_hook(i: int, mixer: nn.Module):
        def hook(_module, _inputs, output):
            # float32 whatever the model runs in: autocast (half-precision parallel scan) would recompute in bf16
            with torch.no_grad(), torch.autocast(output.device.type, enabled=False):
                out = output if output.dim() == 3 else output.unsqueeze(1)
                delta = delta_from_x_proj(mixer, out)
                kept = reduce(delta) if reduce is not None else delta
                if to_cpu:
                    kept = _to_cpu(kept)
            record.per_layer[i].append(kept)

        return hook

    handles = [m.x_proj.register_forward_hook(make_hook(i, m)) for i, (_, m) in enumerate(mixers)]
    try:
        yield record
    finally:
        for h in handles:
            h.remove()


def _to_cpu(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    if isinstance(x, dict):
        return {k: _to_cpu(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_to_cpu(v) for v in x)
    return x
