"""Δ captured by hooks equals the Δ each transformers family computes itself, for Mamba-1, Zamba and Mamba-2 mixers.

The reference comes from the model's own code: for the duration of the forward, the modeling module's functions that
receive dt (``mamba2_chunk_scan`` / ``mamba2_selective_state_update``, ``mamba_selective_scan`` /
``mamba_selective_state_update``) are wrapped so that, inside them only, ``torch.nn.functional.softplus`` and
``torch.clamp`` record their outputs; the last one recorded per call is the Δ that call discretises with.
Tiny random-weight float32 models on CPU (the torch paths; ``mamba_ssm`` and ``causal_conv1d`` are not installed here).
"""

import importlib
from contextlib import contextmanager

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

transformers = pytest.importorskip("transformers")

from deltalens.delta.capture import capture_delta, delta_width, describe_layers, find_mixers  # noqa: E402

COMMON = dict(vocab_size=64, hidden_size=32, pad_token_id=0, bos_token_id=1, eos_token_id=2)
MAMBA2_FAMILIES = ("mamba2", "zamba2", "falcon_h1", "nemotron_h", "granitemoehybrid", "bamba")
FAMILIES = ("jamba", "zamba") + MAMBA2_FAMILIES

# family -> (mixer layer numbers, per-layer kinds of describe_layers)
LAYOUT = {
    "mamba2": ([0, 1], ["ssm", "ssm"]),
    "zamba2": ([0, 1, 2], ["ssm", "ssm+attention", "ssm"]),
    "zamba": ([0, 1, 2, 3], ["ssm", "ssm+attention", "ssm", "ssm+attention"]),
    "falcon_h1": ([0, 1], ["ssm+attention", "ssm+attention"]),
    "nemotron_h": ([0, 3], ["ssm", "attention", "mlp", "ssm"]),
    "granitemoehybrid": ([0, 2], ["ssm", "attention", "ssm"]),
    "bamba": ([0, 2], ["ssm", "attention", "ssm"]),
    "jamba": ([0, 2, 3], ["ssm", "attention", "ssm", "ssm"]),
}


def build(family: str) -> nn.Module:
    """A tiny random float32 causal LM of ``family`` in eval mode; Mamba-2 dt_bias spread so the clamps bite."""
    T = transformers
    torch.manual_seed(0)
    if family == "mamba2":
        model = T.Mamba2ForCausalLM(T.Mamba2Config(
            num_heads=4, head_dim=16, state_size=8, num_hidden_layers=2, expand=2, n_groups=2, chunk_size=8,
            time_step_limit=(0.0, 0.5), **COMMON))
    elif family == "zamba2":
        model = T.Zamba2ForCausalLM(T.Zamba2Config(
            num_hidden_layers=3, layers_block_type=["linear_attention", "hybrid", "linear_attention"], mamba_d_state=8,
            n_mamba_heads=4, mamba_ngroups=1, chunk_size=8, num_attention_heads=4, num_key_value_heads=4,
            adapter_rank=8, intermediate_size=64, time_step_min=0.3, **COMMON))
    elif family == "zamba":  # two hybrid layers: with one, transformers' shared-block tie pattern finds nothing to tie
        model = T.ZambaForCausalLM(T.ZambaConfig(
            num_hidden_layers=4, layers_block_type=["linear_attention", "hybrid", "linear_attention", "hybrid"],
            attention_hidden_size=64, intermediate_size=64, num_attention_heads=4, num_key_value_heads=4,
            n_mamba_heads=2, mamba_d_state=8, mamba_dt_rank=4, **COMMON))
    elif family == "falcon_h1":  # µP multipliers != 1, dt's (ssm_multipliers[4]) included
        model = T.FalconH1ForCausalLM(T.FalconH1Config(
            num_hidden_layers=2, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2, mamba_d_ssm=64,
            mamba_n_heads=4, mamba_d_state=8, mamba_chunk_size=8, mamba_n_groups=1,
            ssm_multipliers=[1.0, 0.5, 2.0, 1.5, 3.0], ssm_in_multiplier=0.7, time_step_limit=(0.1, 1.0), **COMMON))
    elif family == "nemotron_h":
        model = T.NemotronHForCausalLM(T.NemotronHConfig(
            layers_block_type=["linear_attention", "full_attention", "mlp", "linear_attention"], num_attention_heads=4,
            num_key_value_heads=2, head_dim=8, intermediate_size=64, mamba_num_heads=4, mamba_head_dim=16,
            ssm_state_size=8, n_groups=2, chunk_size=8, time_step_min=0.3, **COMMON))
    elif family == "granitemoehybrid":
        model = T.GraniteMoeHybridForCausalLM(T.GraniteMoeHybridConfig(
            num_hidden_layers=3, layer_types=["linear_attention", "full_attention", "linear_attention"],
            intermediate_size=64, num_attention_heads=4, num_key_value_heads=2, num_local_experts=2,
            num_experts_per_tok=1, shared_intermediate_size=32, mamba_n_heads=4, mamba_d_state=8, mamba_chunk_size=8,
            time_step_limit=(0.1, 1.0), **COMMON))
    elif family == "bamba":
        model = T.BambaForCausalLM(T.BambaConfig(
            num_hidden_layers=3, attn_layer_indices=[1], intermediate_size=64, num_attention_heads=4,
            num_key_value_heads=2, mamba_n_heads=4, mamba_d_state=8, mamba_chunk_size=8, time_step_limit=(0.1, 1.0),
            **COMMON))
    elif family == "jamba":
        model = T.JambaForCausalLM(T.JambaConfig(
            num_hidden_layers=4, attn_layer_period=4, attn_layer_offset=1, expert_layer_period=2,
            expert_layer_offset=1, num_experts=2, num_experts_per_tok=1, intermediate_size=64, num_attention_heads=4,
            num_key_value_heads=2, mamba_d_state=8, mamba_dt_rank=4, **COMMON))
    else:
        raise KeyError(family)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, m in find_mixers(model):
            if m.conv1d.bias is not None:  # init is zero: a random bias makes the conv output at pad positions nonzero
                m.conv1d.bias.copy_(0.5 * torch.randn(m.conv1d.bias.shape, generator=g))
            if hasattr(m, "dt_bias"):  # softplus(dt_bias) from 0.05 to 2.1: below, inside and above the limits
                m.dt_bias.copy_(torch.linspace(-3.0, 2.0, m.dt_bias.numel()))
    return model.eval()


@contextmanager
def model_delta(family: str):
    """Record, per call of the modeling module's dt-receiving functions, the Δ the model itself computes."""
    mod = importlib.import_module(f"transformers.models.{family}.modeling_{family}")
    names = ("mamba_selective_scan", "mamba_selective_state_update") if family in ("jamba", "zamba") else (
        "mamba2_chunk_scan", "mamba2_selective_state_update")
    calls: list[tuple[str, torch.Tensor]] = []
    originals = {n: getattr(mod, n) for n in names}
    real_softplus, real_clamp = F.softplus, torch.clamp

    def wrap(name, fn):
        def wrapped(*args, **kwargs):
            seen = []
            F.softplus = lambda *a, **k: seen.append(real_softplus(*a, **k)) or seen[-1]
            torch.clamp = lambda *a, **k: seen.append(real_clamp(*a, **k)) or seen[-1]
            try:
                out = fn(*args, **kwargs)
            finally:
                F.softplus, torch.clamp = real_softplus, real_clamp
            calls.append((name, seen[-1].detach().clone()))
            return out

        return wrapped

    for n, fn in originals.items():
        setattr(mod, n, wrap(n, fn))
    try:
        yield calls
    finally:
        for n, fn in originals.items():
            setattr(mod, n, fn)


def per_mixer(calls, family: str, mixers) -> list[torch.Tensor]:
    """The recorded calls as Δ (B, L, width) per mixer, in forward order."""
    out, calls = [], list(calls)
    for _, m in mixers:
        if family == "zamba":  # one scan per Mamba head, each (B, head_dim, L) or (B, head_dim) when stepping
            parts = [calls.pop(0)[1] for _ in range(m.n_mamba_heads)]
            d = torch.cat(parts, dim=1)
            out.append(d.transpose(1, 2) if d.dim() == 3 else d[:, None])
            continue
        name, d = calls.pop(0)
        if name == "mamba2_chunk_scan":          # (B, L, H), after the clamp
            out.append(d)
        elif name == "mamba2_selective_state_update":  # (B, H, head_dim): dt expanded over head_dim
            assert (d == d[..., :1]).all()
            out.append(d[:, None, :, 0])
        elif name == "mamba_selective_scan":     # (B, d_inner, L)
            out.append(d.transpose(1, 2))
        else:                                     # mamba_selective_state_update: (B, d_inner)
            out.append(d[:, None])
    assert not calls, f"{len(calls)} dt calls left over"
    return out


TOKENS = torch.randint(3, 64, (2, 11), generator=torch.Generator().manual_seed(5))
MASK = torch.ones(2, 11, dtype=torch.long)
MASK[1, :3] = 0  # left padding in row 1, right padding in row 0: the mixers get this 2D mask and zero those
MASK[0, -2:] = 0  # positions as they do (Mamba-2: in_proj's input; Mamba-1 / Zamba: also the conv output)


@pytest.mark.parametrize("family", FAMILIES)
def test_delta_equals_the_models_own(family):
    model = build(family)
    mixers = find_mixers(model)
    ids, kinds = LAYOUT[family]
    with torch.no_grad(), model_delta(family) as calls, capture_delta(model) as rec:
        model(TOKENS, attention_mask=MASK, use_cache=False)
    ref = per_mixer(calls, family, mixers)
    head = family in MAMBA2_FAMILIES
    assert rec.granularity == ["head" if head else "channel"] * len(mixers)
    assert rec.family == [family] * len(mixers) and rec.layer_ids == ids and rec.n_calls == 1
    diff = 0.0
    for k, (name, m) in enumerate(mixers):
        got = rec.per_layer[k][0]
        width = m.dt_bias.numel() if head else m.intermediate_size
        assert got.dtype == torch.float32 and got.shape == (2, 11, width) == ref[k].shape, name
        assert delta_width(m) == width
        torch.testing.assert_close(got, ref[k], atol=1e-5, rtol=0)
        diff = max(diff, (got - ref[k]).abs().max().item())
        assert got.std() > 0
    print(f"{family}: max |Δ_capture - Δ_model| = {diff:.2e}")
    if head:  # the limits were active: some Δ sits exactly on a bound
        lo, hi = mixers[0][1].time_step_limit
        assert any(((d == lo) | (d == hi)).any() for d in ref)
    layers = describe_layers(model)
    assert [d["kind"] for d in layers] == kinds
    assert [d["layer"] for d in layers if d["family"] == family] == ids
    assert [d["layer"] for d in layers if d["attention"]] == [i for i, k in enumerate(kinds) if "attention" in k]
    assert [d["mixer"] for d in layers if d["mixer"]] == [name for name, _ in mixers]


@pytest.mark.parametrize("family", FAMILIES)
def test_decode_step_delta_equals_the_models_own(family):
    """Prefill with a cache, then one token: the recurrent path (no dt_limit clamp; Zamba: the cached conv state)."""
    model = build(family)
    mixers = find_mixers(model)
    with torch.no_grad():
        out = model(TOKENS, use_cache=True)
        nxt = out.logits[:, -1:].argmax(-1)
        with model_delta(family) as calls, capture_delta(model) as rec:
            model(nxt, cache=out.cache, use_cache=True)
    ref = per_mixer(calls, family, mixers)
    assert {n for n, _ in calls} == {"mamba2_selective_state_update" if family in MAMBA2_FAMILIES
                                     else "mamba_selective_state_update"}
    for k in range(len(mixers)):
        assert rec.per_layer[k][0].shape[:2] == (2, 1)
        torch.testing.assert_close(rec.per_layer[k][0], ref[k], atol=1e-5, rtol=0)
    if family in ("zamba2", "nemotron_h"):  # the step path does not clamp to (time_step_min, inf)
        assert min(d.min().item() for d in ref) < mixers[0][1].time_step_limit[0]


# bf16 against float32: hidden states drift through the layers in bf16 (measured here: |ΔΔ| <= 2.6e-3, Δ up to 2.4);
# the bound is loose on purpose, |got - want| <= 1e-2 + 1e-2 * |want|
BF16_ATOL, BF16_RTOL = 1e-2, 1e-2


@pytest.mark.parametrize("family", FAMILIES)
def test_bf16_models_give_finite_float32_delta(family):
    model = build(family)
    with torch.no_grad(), capture_delta(model) as ref:
        model(TOKENS)
    model = model.to(torch.bfloat16)
    with torch.no_grad(), capture_delta(model) as rec:
        model(TOKENS)
    for got, want in zip(rec.last(), ref.last()):
        assert got.dtype == torch.float32 and torch.isfinite(got).all()
        torch.testing.assert_close(got, want, atol=BF16_ATOL, rtol=BF16_RTOL)


def test_layers_selection_reduce_and_to_cpu_on_a_hybrid():
    from deltalens.delta.scores import token_stats

    model = build("bamba")
    with torch.no_grad(), capture_delta(model) as full:
        model(TOKENS)
    with torch.no_grad(), capture_delta(model, layers=[1], to_cpu=False) as one:
        model(TOKENS)
    assert one.names == ["model.layers.2.mamba"] and one.layer_ids == [2] and one.granularity == ["head"]
    torch.testing.assert_close(one.stacked()[0], full.stacked()[1])
    with torch.no_grad(), capture_delta(model, reduce=token_stats, layers=[0]) as red:
        model(TOKENS)
    assert red.last()[0]["mean"].shape == (2, 11)
    torch.testing.assert_close(red.last()[0]["max"], full.last()[0].amax(-1))
    with pytest.raises(ValueError, match=r"layers=\[2\]: \[2\] out of range; the model has 2 mixers"):
        with capture_delta(model, layers=[2]):
            pass
    mixers = [m for _, m in find_mixers(model)]
    assert all(not m.in_proj._forward_hooks and not m._forward_pre_hooks and not m._forward_hooks for m in mixers)


def test_a_model_without_a_supported_mixer_is_refused():
    T = transformers
    llama = T.LlamaForCausalLM(T.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                             num_attention_heads=4, num_key_value_heads=4))
    with pytest.raises(ValueError, match="LlamaForCausalLM has no Mamba mixer") as e:
        find_mixers(llama)
    for family in ("mambapy", "mamba", "falcon_mamba", "jamba", "zamba") + MAMBA2_FAMILIES:
        assert f"{family} (" in str(e.value)


def test_an_unknown_mixer_lookalike_is_refused_not_captured():
    class Mamba2Lookalike(nn.Module):  # in_proj, dt_bias and A_log, but no known family
        def __init__(self):
            super().__init__()
            self.in_proj = nn.Linear(8, 20)
            self.dt_bias = nn.Parameter(torch.zeros(4))
            self.A_log = nn.Parameter(torch.zeros(4))

        def forward(self, x):
            return self.in_proj(x)

    with pytest.raises(ValueError, match=r"layers\.0 \(.*Mamba2Lookalike\) looks like a selective-SSM mixer but its "
                                         r"family is not supported; supported: mambapy"):
        with capture_delta(nn.Sequential(nn.ModuleDict({"layers": nn.ModuleList([Mamba2Lookalike()])}))):
            pass
    model = build("mamba2")  # a lookalike next to supported mixers refuses the whole model
    model.backbone.layers[1].extra = Mamba2Lookalike()
    with pytest.raises(ValueError, match="looks like a selective-SSM mixer"):
        find_mixers(model)


def test_a_forward_that_skips_the_hooked_projection_is_refused():
    """A fused kernel that reads in_proj.weight instead of calling in_proj: refused during the forward."""
    model = build("bamba")
    mixer = find_mixers(model)[0][1]
    original = type(mixer).forward

    def fused(self, hidden_states, *args, **kwargs):
        return F.linear(hidden_states, torch.zeros(hidden_states.shape[-1], hidden_states.shape[-1]))

    type(mixer).forward = fused
    try:
        with pytest.raises(RuntimeError, match=r"model\.layers\.0\.mamba \(bamba\) ran without calling in_proj"):
            with torch.no_grad(), capture_delta(model):
                model(TOKENS)
    finally:
        type(mixer).forward = original
