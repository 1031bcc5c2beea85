"""Capture the step size Δ of selective-SSM (Mamba) mixers with forward hooks on unmodified models.

Every hook the project installs goes through :func:`capture_delta`; which tensor Δ is in each family, and how it
is recomputed from the hooked call, lives in :mod:`deltalens.delta.adapters`.

Usage::

    with capture_delta(model) as delta:      # all mixers, full Δ kept
        model(tokens)
    delta.stacked()                          # (n_mixers, B, L, width) from the last forward
    delta.granularity, delta.layer_ids       # per mixer: 'channel' | 'head', the model's own layer numbers

    with capture_delta(model, reduce=token_stats) as delta:   # reduce inside the hook (big models)
        model(tokens)

    describe_layers(model)                   # hybrids: which layers are SSM, attention, both, or MLP/MoE only

    with capture_delta(model, reduce=f, ssm_inputs=True) as rec:   # Mamba-1 families: f gets SSMInputs(Δ, A, B, C,
        model(tokens)                                              # u, D), the scan's own inputs (hidden attention)

Mamba-1 transformers models must be in ``eval()`` mode when the CUDA kernels are installed: their training path
fuses x_proj into one kernel (refused with a RuntimeError during the forward).
"""

from __future__ import annotations

import dataclasses
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn as nn

from .adapters import MixerAdapter, MixerCall, SSMInputs, adapter_for, ssm_input_families, supported_families


def _looks_like_mixer(module: nn.Module) -> bool:
    """A selective-SSM lookalike: an ``A_log`` tensor next to a step-size or projection piece."""
    return isinstance(getattr(module, "A_log", None), torch.Tensor) and any(
        hasattr(module, a) for a in ("dt_bias", "dt_proj", "dt_proj_weight", "x_proj", "in_proj")
    )


def find_mixers(model: nn.Module, required: bool = True) -> list[tuple[str, nn.Module]]:
    """Every selective-SSM mixer in ``model``, in forward order, each of a supported family (:data:`deltalens.delta.adapters.ADAPTERS`).

    A module that looks like a mixer (``A_log`` and ``dt_bias`` / ``dt_proj`` / ``in_proj`` ...) but whose class is no
    supported family is refused rather than skipped, and so is a model with no mixer at all unless ``required`` is
    False (an attention-only LM: no Δ, an empty list).
    """
    found = []
    for name, m in model.named_modules():
        adapter = adapter_for(m)
        if adapter is None:
            if _looks_like_mixer(m):
                raise ValueError(
                    f"{type(model).__name__}: {name or 'the model'} ({type(m).__module__}.{type(m).__qualname__}) "
                    "looks like a selective-SSM mixer but its family is not supported; "
                    f"supported: {supported_families()}"
                )
            continue
        missing = [a for a in adapter.requires if not hasattr(m, a)]
        if missing:
            raise ValueError(
                f"{type(model).__name__}: {name} ({type(m).__qualname__}, family {adapter.family}) lacks {missing}: "
                "not the layout this capture was written for"
            )
        found.append((name, m))
    if not found and required:
        raise ValueError(
            f"{type(model).__name__} has no Mamba mixer of a supported family; supported: {supported_families()}"
        )
    return found


def delta_width(mixer: nn.Module) -> int:
    """Δ's last dimension for ``mixer``: d_inner for channel-granularity families, n_heads for head granularity."""
    adapter = adapter_for(mixer)
    if adapter is None:
        raise ValueError(f"{type(mixer).__qualname__} is no supported mixer; supported: {supported_families()}")
    return int(adapter.width(mixer))


_LAYER_NUMBER = re.compile(r"\.(\d+)(?=\.|$)")


def mixer_layer_ids(model: nn.Module) -> list[int]:
    """The model's own layer number of each mixer of :func:`find_mixers` (hybrids: attention layers are skipped in
    the list but counted in the numbers); a mixer whose number cannot be read gets its index among the mixers."""
    return [k if i is None else i for k, i in enumerate(_layer_id(n, m) for n, m in find_mixers(model))]


def _layer_id(name: str, mixer: nn.Module) -> int | None:
    """The model's own number of the layer holding ``mixer``: its ``layer_idx`` (transformers), else the index in
    the layer list of its module name (``mamba.layers.3.mixer`` -> 3)."""
    idx = getattr(mixer, "layer_idx", None)
    if isinstance(idx, int):
        return idx
    numbers = _LAYER_NUMBER.findall("." + name)
    return int(numbers[-1]) if numbers else None


def describe_layers(model: nn.Module) -> list[dict]:
    """One dict per layer of the list holding the model's mixers (e.g. ``model.model.layers``):
    ``{layer, kind, family, mixer, attention}``.

    ``kind``: 'ssm', 'attention', 'ssm+attention' (Zamba / Zamba2 hybrid layers: a shared attention block before the
    Mamba mixer; FalconH1: both in parallel), or for layers with neither 'moe' / 'mlp' / 'other'. ``family`` is the
    SSM mixer's family (None without one); ``mixer`` / ``attention`` name the modules (None without one).
    """
    mixers = find_mixers(model)
    first = mixers[0][0]
    m = re.match(r"(.+?)\.(\d+)\.", first + ".")
    container = m.group(1) if m else ""
    layers = model.get_submodule(container) if container else None
    if not isinstance(layers, (nn.ModuleList, nn.Sequential)):
        return [{"layer": _layer_id(n, mx), "kind": "ssm", "family": adapter_for(mx).family, "mixer": n,
                 "attention": None} for n, mx in mixers]
    out = []
    for i, layer in enumerate(layers):
        prefix = f"{container}.{i}."
        ssm = [(n, mx) for n, mx in mixers if n.startswith(prefix)]
        sub = list(layer.named_modules(prefix=prefix.rstrip("."), remove_duplicate=False))
        attn = [n for n, s in sub if type(s).__name__.endswith("Attention")]
        if ssm and attn:
            kind = "ssm+attention"
        elif ssm:
            kind = "ssm"
        elif attn:
            kind = "attention"
        elif any(re.search(r"moe|experts", type(s).__name__, re.I) for _, s in sub):
            kind = "moe"
        elif any(type(s).__name__.upper().endswith("MLP") for _, s in sub):
            kind = "mlp"
        else:
            kind = "other"
        out.append({"layer": i, "kind": kind, "family": adapter_for(ssm[0][1]).family if ssm else None,
                    "mixer": ssm[0][0] if ssm else None, "attention": attn[0] if attn else None})
    return out


# ---- recording ------------------------------------------------------------------------------------------------------
@dataclass
class DeltaRecord:
    """What one ``capture_delta`` block saw: ``per_layer[i]`` holds one entry per forward call of mixer ``i``.

    Per mixer: ``granularity`` ('channel': Δ (B, L, d_inner); 'head': Δ (B, L, n_heads)), ``family`` (adapter
    family) and ``layer_ids`` (the model's own layer number, e.g. the index in ``model.model.layers`` of a hybrid).
    """

    names: list[str]
    per_layer: list[list[Any]] = field(default_factory=list)
    granularity: list[str] = field(default_factory=list)
    family: list[str] = field(default_factory=list)
    layer_ids: list[int | None] = field(default_factory=list)

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
                "skips the hooked projection (transformers Mamba-1 models must be in eval() mode)"
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
    reduce: Callable[[torch.Tensor], Any] | Sequence[Callable[[torch.Tensor], Any]] | None = None,
    layers: list[int] | None = None,
    to_cpu: bool = True,
    ssm_inputs: bool = False,
) -> Iterator[DeltaRecord]:
    """Hook every SSM mixer of ``model`` (or the ``layers`` indices into :func:`find_mixers`) and record Δ of each
    forward call.

    ``reduce`` maps Δ float32 -- (B, L, d_inner) for channel granularity, (B, L, n_heads) for head granularity -- to
    whatever is kept (default: Δ itself); a step-mode call gives L = 1. A sequence of callables gives each hooked
    mixer its own (in the order of the hooked mixers: a reduction that depends on the layer, e.g. per-layer channel
    masks). Results are detached and, with ``to_cpu``, moved to the CPU.

    ``ssm_inputs=True`` (Mamba-1 families only, else a ValueError naming the family): ``reduce`` receives the scan's
    :class:`SSMInputs` (Δ, A, B, C, u, D, float32) instead of Δ alone, and without ``reduce`` those are kept.
    """
    mixers = find_mixers(model)
    if layers is not None:
        bad = [i for i in layers if not isinstance(i, int) or not 0 <= i < len(mixers)]
        if bad:
            raise ValueError(f"layers={layers}: {bad} out of range; the model has {len(mixers)} mixers (0..{len(mixers) - 1})")
        mixers = [mixers[i] for i in layers]
    adapters = [adapter_for(m) for _, m in mixers]
    if isinstance(reduce, (list, tuple)):
        if len(reduce) != len(mixers) or not all(callable(f) for f in reduce):
            raise ValueError(f"capture_delta: reduce is a sequence of {len(reduce)} items; expected {len(mixers)} "
                             "callables, one per hooked mixer")
        reducers = list(reduce)
    else:
        reducers = [reduce] * len(mixers)
    if ssm_inputs:
        refused = sorted({a.family for a in adapters if a.ssm_inputs is None})
        if refused:
            names = [n for (n, _), a in zip(mixers, adapters) if a.ssm_inputs is None]
            raise ValueError(
                f"capture_delta(ssm_inputs=True): family {', '.join(refused)} ({names[0]}"
                f"{f' and {len(names) - 1} more' if len(names) > 1 else ''}) is not supported: its scan runs per head "
                "or per group (Mamba-2 style, Zamba), which SSMInputs does not describe; supported: "
                + ", ".join(ssm_input_families())
            )
    record = DeltaRecord(
        names=[name for name, _ in mixers],
        granularity=[a.granularity for a in adapters],
        family=[a.family for a in adapters],
        layer_ids=[_layer_id(name, m) for name, m in mixers],
    )
    calls: list[MixerCall | None] = [None] * len(mixers)  # the mixer forward in progress, per mixer
    fired = [False] * len(mixers)

    def make_pre_hook(i: int):
        def pre_hook(_module, args, kwargs):
            calls[i], fired[i] = MixerCall.from_args(args, kwargs), False

        return pre_hook

    def make_post_hook(i: int, name: str, adapter: MixerAdapter):
        def post_hook(_module, _args, _kwargs, _output):
            called, calls[i] = fired[i], None
            if not called:
                raise RuntimeError(
                    f"capture_delta: mixer {name} ({adapter.family}) ran without calling {adapter.hook} as a module "
                    "(a fused kernel path), so its Δ cannot be captured; run the model in eval() mode"
                )

        return post_hook

    def make_hook(i: int, mixer: nn.Module, adapter: MixerAdapter):
        def hook(_module, inputs, output):
            fired[i] = True
            # float32 whatever the model runs in: autocast (half-precision parallel scan) would recompute in bf16
            with torch.no_grad(), torch.autocast(output.device.type, enabled=False):
                step = output.dim() != 3
                out = output.unsqueeze(1) if step else output  # mambapy step: (B, ·) -> (B, 1, ·)
                if ssm_inputs:
                    x = inputs[0].unsqueeze(1) if step else inputs[0]
                    value = adapter.ssm_inputs(mixer, x, out, calls[i], step)
                else:
                    value = adapter.delta(mixer, out, calls[i])
                kept = reducers[i](value) if reducers[i] is not None else value
                if to_cpu:
                    kept = _to_cpu(kept)
            record.per_layer[i].append(kept)

        return hook

    handles = []
    try:
        for i, ((name, m), adapter) in enumerate(zip(mixers, adapters)):
            handles.append(m.register_forward_pre_hook(make_pre_hook(i), with_kwargs=True))
            handles.append(m.register_forward_hook(make_post_hook(i, name, adapter), with_kwargs=True))
            handles.append(m.get_submodule(adapter.hook).register_forward_hook(make_hook(i, m, adapter)))
        yield record
    finally:
        for h in handles:
            h.remove()


def _to_cpu(x: Any) -> Any:
    if isinstance(x, SSMInputs):
        return dataclasses.replace(x, **{f.name: _to_cpu(getattr(x, f.name)) for f in dataclasses.fields(x)
                                         if isinstance(getattr(x, f.name), torch.Tensor)})
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    if isinstance(x, dict):
        return {k: _to_cpu(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_to_cpu(v) for v in x)
    return x
