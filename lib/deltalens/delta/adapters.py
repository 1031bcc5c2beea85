"""Where Δ lives in each supported mixer family: one :class:`MixerAdapter` per family, read by the hooks of
:mod:`deltalens.delta.capture`.

Which tensor Δ is, per family
-----------------------------
Each supported mixer class has a :class:`MixerAdapter`: which submodule call to hook, how Δ is recomputed (float32)
from that call's output, and Δ's granularity. Line numbers cite the pinned transformers 5.24 sources
(``transformers/models/<family>/modeling_<family>.py``).

Mamba-1 style, ``granularity='channel'``, Δ (B, L, d_inner); hook on ``x_proj``
(``mambapy``: ``mambapy.mamba.MambaBlock``; ``mamba``: ``MambaMixer``; ``falcon_mamba``: ``FalconMambaMixer``;
``jamba``: ``JambaMambaMixer``)::

    x_dbl  = x_proj(u)                          # u: (B, L, d_inner), the conv+SiLU branch (zeroed at padding)
    dt     = dt_norm(x_dbl[..., :dt_rank])      # FalconMamba: weightless RMS norm; Jamba: its weighted dt_layernorm;
                                                 # mambapy with inner_layernorms: its RMSNorm; plain Mamba: none
    Δ      = softplus(dt @ dt_proj.weight.T + dt_proj.bias)      # (B, L, d_inner)

``x_proj`` is the one piece called as a module on every eval-mode path; ``dt_proj`` is applied as
``dt_proj.weight @ ...`` and never fires a hook.

Zamba v1 (``zamba``: ``ZambaMambaMixer``), ``granularity='channel'``, Δ (B, L, d_inner = n_heads * head_dim); hook on
``in_proj``: Mamba-1 maths run per head with per-head ``x_proj_weight`` / ``dt_proj_weight`` *parameters* (no module
calls), so the short convolution is recomputed from ``in_proj``'s output (and the cache's conv state when decoding)::

    x      = in_proj(h)[..., 0::2]              # x and gate interleave per channel: view(B, d_inner, 2, L)
    u      = mask * act(causal_conv1d(x))       # (B, L, H, head_dim)
    dt     = u @ x_proj_weight[h, :dt_rank].T   # per head h
    Δ      = softplus(dt @ dt_proj_weight[h].T + dt_proj_bias[h])    # (B, L, H * head_dim)

Mamba-2 style, ``granularity='head'``, Δ (B, L, n_heads); hook on ``in_proj`` (``mamba2``: ``Mamba2Mixer``;
``zamba2``: ``Zamba2MambaMixer``; ``falcon_h1``: ``FalconH1Mixer``; ``nemotron_h``: ``NemotronHMamba2Mixer``;
``granitemoehybrid``: ``GraniteMoeHybridMambaLayer``; ``bamba``: ``BambaMixer``)::

    dt     = in_proj(h)[..., -n_heads:]         # in_proj's output is [gate | x B C | dt]
    dt     = dt * mup_vector[..., -n_heads:]    # FalconH1 only: µP multiplier ssm_multipliers[4] on the dt slice
                                                 # (its ssm_in_multiplier scales in_proj's input: already in the output)
    Δ      = softplus(dt + dt_bias)             # (B, L, n_heads)
    Δ      = clamp(Δ, *mixer.time_step_limit)   # chunked (prefill / full-sequence) path only

``mixer.time_step_limit`` is what the model uses: ``config.time_step_limit`` for mamba2, falcon_h1, granitemoehybrid,
bamba, but ``(config.time_step_min, inf)`` for zamba2 and nemotron_h (their config's time_step_limit is ignored).
time_step_floor / time_step_max only initialise ``dt_bias``. The single-token recurrent path (a cache with a
recurrent state, one token: ``mamba2_selective_state_update``) applies no clamp, and neither does Δ captured there.
``in_proj`` is called as a module before any branch in 5.24 (torch path, ``mamba_ssm`` kernels, and the fused
training kernel alike), so every path is captured. A pre-hook on the mixer records its ``cache`` and
``attention_mask`` (the recurrent-path test, Zamba's conv state and padding mask); a post-hook refuses, with an error,
a forward in which the hooked submodule was not called as a module (e.g. a fused Mamba-1 training kernel).

Padding: exactly as far as the model masks. At the pad positions of the 2D mask transformers passes to the mixer
(None for unpadded batches and single-token steps) it zeroes the mixer's input (before ``in_proj``) and the conv
output (``x_proj``'s input in Mamba-1), so Δ there is softplus(dt bias) (Mamba-2: softplus(dt_bias + in_proj's bias),
clamped), not a function of the token; exclude pad positions or use batch size 1. Models called without an
attention mask, and mambapy (which has none), mask nothing.

SSM inputs (``ssm_inputs=True``; Mamba-1 families mambapy, mamba, falcon_mamba, jamba only)::

    dt, B, C = split(x_dbl, [dt_rank, N, N])    # x_dbl = x_proj(u): the hook sees u (its input) and x_dbl (its output)
    B, C     = B_norm(B), C_norm(C)             # FalconMamba: weightless RMS norms b_layernorm / c_layernorm (4.x:
                                                 # rms_forward with rms_eps); Jamba: weighted b_/c_layernorm; mambapy
                                                 # with inner_layernorms: B_layernorm / C_layernorm; plain Mamba: none
    A        = -exp(A_log)                      # (d_inner, N);  D: (d_inner,)
    h_t      = exp(Δ_t A) * h_{t-1} + (Δ_t u_t) B_t ;   y_t = C_t · h_t + D u_t   (then y * silu(z), not captured)

Mamba-2 style and Zamba mixers are refused with ``ssm_inputs=True`` (a ValueError naming the family): their scans
run per head / per group (Zamba: per-head x_proj parameters), which :class:`SSMInputs` does not describe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F


# ---- the call a mixer's forward received ----------------------------------------------------------------------------
@dataclass(frozen=True)
class MixerCall:
    """Arguments of one mixer forward, recorded by a pre-hook: transformers' ``forward(hidden_states, cache,
    attention_mask, **kwargs)``. Read in the hook, before the mixer updates its cache."""

    seq_len: int
    cache: Any = None
    attention_mask: torch.Tensor | None = None

    @staticmethod
    def from_args(args: tuple, kwargs: dict) -> "MixerCall":
        hidden = args[0] if args else kwargs.get("hidden_states")
        cache = args[1] if len(args) > 1 else kwargs.get("cache", kwargs.get("cache_params"))
        mask = args[2] if len(args) > 2 else kwargs.get("attention_mask")
        seq_len = hidden.shape[1] if isinstance(hidden, torch.Tensor) and hidden.dim() == 3 else 1
        return MixerCall(seq_len, cache, mask)


def _recurrent_step(mixer: nn.Module, call: MixerCall | None) -> bool:
    """True when a transformers mixer takes its single-token recurrent path: ``recurrent_state is not None and
    seq_len == 1`` (e.g. modeling_mamba2.py L550)."""
    if call is None or call.cache is None or call.seq_len != 1:
        return False
    return call.cache.get_recurrent_state(mixer.layer_idx, state_idx=0) is not None


# ---- Δ per family ---------------------------------------------------------------------------------------------------
def _dt_norm(mixer: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    norm = getattr(mixer, "dt_layernorm", None)
    if isinstance(norm, nn.Module):  # mambapy inner_layernorms, transformers >= 5 FalconMamba, Jamba
        return lambda dt: norm(dt).float()
    eps = getattr(mixer, "rms_eps", None)
    if eps is not None:  # transformers 4.x FalconMamba: rms_forward(time_step, variance_epsilon=rms_eps)
        return lambda dt: dt * torch.rsqrt(dt.pow(2).mean(-1, keepdim=True) + eps)
    return lambda dt: dt


def delta_from_x_proj(mixer: nn.Module, x_dbl: torch.Tensor) -> torch.Tensor:
    """Δ (float32, (..., d_inner)) of a Mamba-1 style mixer from the output of ``mixer.x_proj``."""
    dt_rank = mixer.dt_proj.in_features
    dt = _dt_norm(mixer)(x_dbl[..., :dt_rank]).float()
    return F.softplus(F.linear(dt, mixer.dt_proj.weight.float(), mixer.dt_proj.bias.float()))


def _mamba1_delta(mixer: nn.Module, x_dbl: torch.Tensor, call: MixerCall | None) -> torch.Tensor:
    """x_proj output (B, L, dt_rank + 2N) -> Δ (B, L, d_inner); e.g. modeling_jamba.py L563-581, L366-368."""
    return delta_from_x_proj(mixer, x_dbl)


def _zamba_delta(mixer: nn.Module, proj: torch.Tensor, call: MixerCall | None) -> torch.Tensor:
    """ZambaMambaMixer.forward, modeling_zamba.py L496-553 and mamba_selective_scan L323-326."""
    batch, seq_len, _ = proj.shape
    x = proj[..., 0::2].float().transpose(1, 2)            # (B, d_inner, L): view(B, d_inner, 2, L).chunk(2, dim=2)
    left = None
    if call is not None and call.cache is not None:        # decoding / continuing: the conv state is the left context
        left = call.cache.get_conv_state(mixer.layer_idx, state_idx=0)
    if left is not None:
        x = torch.cat([left.float(), x], dim=-1)           # (B, d_inner, K + L)
    conv = mixer.conv1d
    k = conv.weight.shape[-1]
    bias = conv.bias.float() if conv.bias is not None else None
    u = F.conv1d(x, conv.weight.float(), bias, padding=k - 1, groups=x.shape[1])[..., : x.shape[-1]]
    u = mixer.act(u[..., -seq_len:]).transpose(1, 2)       # (B, L, d_inner)
    if call is not None and call.attention_mask is not None:
        u = u * call.attention_mask[:, :, None].float()    # apply_mask_to_padding_states
    u = u.reshape(batch, seq_len, mixer.n_mamba_heads, -1)  # (B, L, H, head_dim)
    dt = torch.einsum("blhd,hrd->blhr", u, mixer.x_proj_weight[:, : mixer.time_step_rank].float())  # (B, L, H, R)
    dt = torch.einsum("blhr,hdr->blhd", dt, mixer.dt_proj_weight.float())                            # (B, L, H, hd)
    return F.softplus(dt + mixer.dt_proj_bias.float()).reshape(batch, seq_len, -1)                   # (B, L, d_inner)


def _mamba2_delta(mixer: nn.Module, proj: torch.Tensor, call: MixerCall | None, dt_scale=None) -> torch.Tensor:
    """in_proj output (B, L, 2 d_inner + 2 G N + H) -> Δ (B, L, H); e.g. modeling_mamba2.py L479, L508-510, then
    mamba2_chunk_scan L276-280 (chunked path) or mamba2_selective_state_update L213-216 (recurrent step, no clamp)."""
    n_heads = mixer.dt_bias.shape[-1]
    dt = proj[..., -n_heads:].float()                      # (B, L, H): [gate | xBC | dt] = in_proj(h)
    if dt_scale is not None:
        dt = dt * dt_scale[..., -n_heads:].float()
    delta = F.softplus(dt + mixer.dt_bias.float())         # (B, L, H)
    limit = mixer.time_step_limit
    if limit is not None and not _recurrent_step(mixer, call):
        delta = torch.clamp(delta, min=limit[0], max=limit[1])
    return delta


def _falcon_h1_delta(mixer: nn.Module, proj: torch.Tensor, call: MixerCall | None) -> torch.Tensor:
    """As Mamba-2, after ``projected_states * self.mup_vector`` (modeling_falcon_h1.py L690)."""
    return _mamba2_delta(mixer, proj, call, dt_scale=mixer.mup_vector)


# ---- SSM inputs (Mamba-1 families) ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class SSMInputs:
    """The inputs of one Mamba-1 selective scan, float32, as the model's scan uses them::

        h_t = exp(Δ_t A) ⊙ h_{t-1} + (Δ_t u_t) B_t ;   y_t = C_t · h_t + D ⊙ u_t      (before the gate y * silu(z))

    ``recurrent_step``: the call was one recurrent step (a transformers decode step with a cached state, or any
    mambapy ``step``): the state carried in from earlier calls is not part of these inputs, so they describe this
    call's positions only.
    """

    delta: torch.Tensor  # (B, L, d_inner)   Δ = softplus(dt_proj(dt_norm(dt)))
    A: torch.Tensor      # (d_inner, d_state) -exp(A_log)
    B: torch.Tensor      # (B, L, d_state)   B_norm(x_dbl[..., dt_rank : dt_rank + N])
    C: torch.Tensor      # (B, L, d_state)   C_norm(x_dbl[..., dt_rank + N :])
    u: torch.Tensor      # (B, L, d_inner)   x_proj's input: the conv+SiLU branch (zeroed at pads where the model masks)
    D: torch.Tensor      # (d_inner,)        skip weight
    granularity: str = "channel"
    recurrent_step: bool = False


def _bc_norm(mixer: nn.Module, which: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The norm the model applies to B (``which='b'``) or C before its scan."""
    for name in (f"{which}_layernorm", f"{which.upper()}_layernorm"):  # transformers b_layernorm; mambapy B_layernorm
        norm = getattr(mixer, name, None)
        if isinstance(norm, nn.Module):
            return norm
    eps = getattr(mixer, "rms_eps", None)
    if eps is not None and not isinstance(getattr(mixer, "dt_layernorm", None), nn.Module):
        # transformers 4.x FalconMamba: rms_forward(B / C, variance_epsilon=rms_eps), float32 inside
        return lambda x: (x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)
    return lambda x: x


def _mamba1_ssm_inputs(mixer: nn.Module, u: torch.Tensor, x_dbl: torch.Tensor, call: MixerCall | None,
                       step: bool) -> SSMInputs:
    """x_proj's input u (B, L, d_inner) and output x_dbl (B, L, dt_rank + 2N) -> the scan's inputs, float32."""
    dt_rank, n = mixer.dt_proj.in_features, mixer.A_log.shape[-1]
    if x_dbl.shape[-1] != dt_rank + 2 * n:
        raise ValueError(f"x_proj gives {x_dbl.shape[-1]} features, expected dt_rank + 2 d_state = {dt_rank + 2 * n}")
    return SSMInputs(
        delta=delta_from_x_proj(mixer, x_dbl),
        A=-torch.exp(mixer.A_log.float()),
        B=_bc_norm(mixer, "b")(x_dbl[..., dt_rank: dt_rank + n]).float(),
        C=_bc_norm(mixer, "c")(x_dbl[..., dt_rank + n:]).float(),
        u=u.float(),
        D=mixer.D.float(),
        granularity="channel",
        recurrent_step=step or _recurrent_step(mixer, call),
    )


# ---- adapters -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MixerAdapter:
    """How to capture Δ in one mixer family.

    ``classes``: qualified class names (``module.QualName``) recognised anywhere in a module's MRO;
    ``hook``: the submodule whose forward output Δ is recomputed from; ``delta(mixer, output, call)``: Δ float32
    (B, L, width) from that output (and the mixer's :class:`MixerCall`); ``width(mixer)``: Δ's last dimension;
    ``requires``: attributes the recompute reads (checked when the mixer is found); ``source``: what it mirrors;
    ``ssm_inputs(mixer, hooked_input, output, call, step)``: the scan's :class:`SSMInputs` (None: not supported).
    """

    family: str
    classes: tuple[str, ...]
    granularity: str  # 'channel' (d_inner) | 'head' (n_heads)
    hook: str
    delta: Callable[[nn.Module, torch.Tensor, MixerCall | None], torch.Tensor]
    width: Callable[[nn.Module], int]
    requires: tuple[str, ...] = ()
    source: str = ""
    ssm_inputs: Callable[..., SSMInputs] | None = None


_T = "transformers.models"
_MAMBA1_REQUIRES = ("x_proj", "dt_proj", "A_log")
_MAMBA2_REQUIRES = ("in_proj", "dt_bias", "A_log", "time_step_limit", "layer_idx")

def _mamba1_adapter(family: str, cls: str, source: str) -> MixerAdapter:
    """A Mamba-1 style family: hook on ``x_proj``, Δ per channel (d_inner), scan inputs available."""
    return MixerAdapter(family, (cls,), "channel", "x_proj", _mamba1_delta, lambda m: m.dt_proj.out_features,
                        _MAMBA1_REQUIRES, source, ssm_inputs=_mamba1_ssm_inputs)


ADAPTERS: tuple[MixerAdapter, ...] = (
    _mamba1_adapter("mambapy", "mambapy.mamba.MambaBlock",
                    "mambapy/mamba.py MambaBlock.ssm / ssm_step: deltaBC = x_proj(x); delta = softplus(dt_proj(dt))"),
    _mamba1_adapter("mamba", f"{_T}.mamba.modeling_mamba.MambaMixer",
                    "modeling_mamba.py L433-441 (x_proj, dt_proj.weight @), mamba_selective_scan L204-207"),
    _mamba1_adapter("falcon_mamba", f"{_T}.falcon_mamba.modeling_falcon_mamba.FalconMambaMixer",
                    "modeling_falcon_mamba.py L461-478 (x_proj, weightless dt_layernorm, dt_proj.weight @)"),
    _mamba1_adapter("jamba", f"{_T}.jamba.modeling_jamba.JambaMambaMixer",
                    "modeling_jamba.py L563-581 (x_proj, dt_layernorm with weight, dt_proj.weight @), L366-368"),
    MixerAdapter("zamba", (f"{_T}.zamba.modeling_zamba.ZambaMambaMixer",), "channel", "in_proj", _zamba_delta,
                 lambda m: m.dt_proj_bias.numel(),
                 ("in_proj", "conv1d", "act", "x_proj_weight", "dt_proj_weight", "dt_proj_bias", "n_mamba_heads",
                  "time_step_rank", "layer_idx"),
                 "modeling_zamba.py L496-553 (in_proj, interleaved split, conv, per-head x_proj / dt_proj), L323-326"),
    MixerAdapter("mamba2", (f"{_T}.mamba2.modeling_mamba2.Mamba2Mixer",), "head", "in_proj", _mamba2_delta,
                 lambda m: m.dt_bias.numel(), _MAMBA2_REQUIRES,
                 "modeling_mamba2.py L479, L508-510 (dt slice), mamba2_chunk_scan L276-280, state update L213-216"),
    MixerAdapter("zamba2", (f"{_T}.zamba2.modeling_zamba2.Zamba2MambaMixer",), "head", "in_proj", _mamba2_delta,
                 lambda m: m.dt_bias.numel(), _MAMBA2_REQUIRES,
                 "modeling_zamba2.py L670 (limit = (time_step_min, inf)), L741, L770-772, mamba2_chunk_scan L548-552"),
    MixerAdapter("falcon_h1", (f"{_T}.falcon_h1.modeling_falcon_h1.FalconH1Mixer",), "head", "in_proj",
                 _falcon_h1_delta, lambda m: m.dt_bias.numel(), _MAMBA2_REQUIRES + ("mup_vector",),
                 "modeling_falcon_h1.py L688-690 (ssm_in_multiplier, in_proj, * mup_vector), L719-721, L491-495"),
    MixerAdapter("nemotron_h", (f"{_T}.nemotron_h.modeling_nemotron_h.NemotronHMamba2Mixer",), "head", "in_proj",
                 _mamba2_delta, lambda m: m.dt_bias.numel(), _MAMBA2_REQUIRES,
                 "modeling_nemotron_h.py L415 (limit = (time_step_min, inf)), L486, L515-517, L292-296"),
    MixerAdapter("granitemoehybrid", (f"{_T}.granitemoehybrid.modeling_granitemoehybrid.GraniteMoeHybridMambaLayer",),
                 "head", "in_proj", _mamba2_delta, lambda m: m.dt_bias.numel(), _MAMBA2_REQUIRES,
                 "modeling_granitemoehybrid.py L596, L625-627, mamba2_chunk_scan L407-411"),
    MixerAdapter("bamba", (f"{_T}.bamba.modeling_bamba.BambaMixer",), "head", "in_proj", _mamba2_delta,
                 lambda m: m.dt_bias.numel(), _MAMBA2_REQUIRES,
                 "modeling_bamba.py L675, L704-706, mamba2_chunk_scan L486-490"),
)


def supported_families() -> str:
    return ", ".join(f"{a.family} ({a.classes[0].rsplit('.', 1)[-1]})" for a in ADAPTERS)


def ssm_input_families() -> tuple[str, ...]:
    """The families whose adapter hands out the scan's own inputs (``capture_delta(..., ssm_inputs=True)``)."""
    return tuple(a.family for a in ADAPTERS if a.ssm_inputs is not None)


def adapter_for(module: nn.Module) -> MixerAdapter | None:
    """The adapter of ``module``'s class (or of a class it derives from), None if it is no supported mixer."""
    names = {f"{c.__module__}.{c.__qualname__}" for c in type(module).__mro__}
    return next((a for a in ADAPTERS if names.intersection(a.classes)), None)
