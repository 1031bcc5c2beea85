"""Hidden attention of Mamba-1 mixers: the SSM inputs captured with ``capture_delta(..., ssm_inputs=True)`` are the
ones the model's own scan receives, the unrolled attention α reproduces the scan's own output, and the reduced masses
equal a brute-force α on tiny models.

References come from the models' own code: for the duration of a forward, the scan function each mixer calls
(mambapy ``MambaBlock.selective_scan`` / ``selective_scan_seq``; transformers' module-level ``mamba_selective_scan``)
is wrapped to record its arguments and its output before the gate (transformers: the same function called again
with ``z=None``); those scans run their own recurrences (mambapy's pscan or its loop, transformers' sequential loop).
Tiny random-weight float32 models on CPU.
"""

import importlib
from contextlib import contextmanager

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from deltalens.delta.adapters import SSMInputs
from deltalens.delta.capture import capture_delta, find_mixers
from deltalens.delta.hidden_attention import (
    EXP_FLOOR,
    hidden_attention_alpha,
    hidden_attention_masses,
    hidden_attention_reducer,
    hidden_attention_rows,
)

VOCAB = 64


# ---- tiny models ----------------------------------------------------------------------------------------------------
def _spread(model: nn.Module) -> nn.Module:
    """Random norm weights and a wide Δ range (softplus(bias) from ~0.01 to ~3): strong decays, norms that matter."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for _, m in find_mixers(model):
            m.dt_proj.bias.copy_(torch.linspace(-4.0, 3.0, m.dt_proj.bias.numel())[torch.randperm(
                m.dt_proj.bias.numel(), generator=g)])
            m.D.copy_(torch.randn(m.D.shape, generator=g))
            for name in ("B_layernorm", "C_layernorm", "dt_layernorm", "b_layernorm", "c_layernorm"):
                norm = getattr(m, name, None)
                if isinstance(getattr(norm, "weight", None), nn.Parameter):
                    norm.weight.copy_(1 + 0.5 * torch.randn(norm.weight.shape, generator=g))
    return model.eval()


def build(kind: str) -> nn.Module:
    torch.manual_seed(0)
    if kind.startswith("mambapy"):
        from mambapy.mamba import Mamba, MambaConfig

        return _spread(Mamba(MambaConfig(d_model=16, n_layers=2, d_state=4, inner_layernorms="norms" in kind,
                                         pscan="seq" not in kind)))
    import transformers as T

    common = dict(vocab_size=VOCAB, hidden_size=32, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    if kind == "mamba":
        cfg = T.MambaConfig(state_size=4, num_hidden_layers=2, expand=2, conv_kernel=4, time_step_rank=8, **common)
        return _spread(T.MambaForCausalLM(cfg))
    if kind == "falcon_mamba":
        cfg = T.FalconMambaConfig(state_size=4, num_hidden_layers=2, expand=2, conv_kernel=4, time_step_rank=8,
                                  mixer_rms_eps=1e-6, **common)
        return _spread(T.FalconMambaForCausalLM(cfg))
    if kind == "jamba":
        cfg = T.JambaConfig(num_hidden_layers=4, attn_layer_period=4, attn_layer_offset=1, expert_layer_period=2,
                            expert_layer_offset=1, num_experts=2, num_experts_per_tok=1, intermediate_size=64,
                            num_attention_heads=4, num_key_value_heads=2, mamba_d_state=8, mamba_dt_rank=4, **common)
        return _spread(T.JambaForCausalLM(cfg))
    if kind == "mamba2":
        cfg = T.Mamba2Config(num_heads=4, head_dim=16, state_size=8, num_hidden_layers=2, expand=2, n_groups=2,
                             chunk_size=8, **common)
        return T.Mamba2ForCausalLM(cfg).eval()
    if kind == "zamba":
        cfg = T.ZambaConfig(num_hidden_layers=4, layers_block_type=["mamba", "hybrid", "mamba", "hybrid"],
                            attention_hidden_size=64, intermediate_size=64, num_attention_heads=4,
                            num_key_value_heads=4, n_mamba_heads=2, mamba_d_state=8, mamba_dt_rank=4, **common)
        return T.ZambaForCausalLM(cfg).eval()
    raise KeyError(kind)


def run(model: nn.Module, kind: str, tokens: torch.Tensor, mask: torch.Tensor | None = None):
    if kind.startswith("mambapy"):  # a bare mambapy.Mamba takes embeddings: one fixed random table
        table = torch.randn(VOCAB, 16, generator=torch.Generator().manual_seed(3))
        return model(table[tokens])
    return model(tokens, attention_mask=mask, use_cache=False)


@contextmanager
def scan_reference(model: nn.Module, kind: str):
    """Per scan call, in forward order: the arguments the model's own scan receives, as (B, L, ·) float32, and its
    output before the gate, y (B, L, d_inner)."""
    calls: list[dict] = []
    if kind.startswith("mambapy"):
        from mambapy.mamba import MambaBlock

        names, owner = ("selective_scan", "selective_scan_seq"), MambaBlock

        def make(fn):
            def wrapped(self, x, delta, A, B, C, D):
                y = fn(self, x, delta, A, B, C, D)
                calls.append(dict(u=x, delta=delta, A=A, B=B, C=C, D=D, y=y))
                return y

            return wrapped
    else:
        owner = importlib.import_module(f"transformers.models.{kind}.modeling_{kind}")
        names = ("mamba_selective_scan",)

        def make(fn):
            def wrapped(hidden_states, dt, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, **kw):
                out = fn(hidden_states, dt, A, B, C, D=D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus,
                         **kw)
                kw.pop("return_last_state", None)
                y = fn(hidden_states, dt, A, B, C, D=D, z=None, delta_bias=delta_bias, delta_softplus=delta_softplus,
                       **kw)  # the model's own scan, ungated
                assert delta_softplus and delta_bias is not None
                delta = F.softplus(dt + delta_bias[:, None])                 # as the function does: (B, d, L)
                calls.append(dict(u=hidden_states.transpose(1, 2), delta=delta.transpose(1, 2), A=A,
                                  B=B.transpose(1, 2), C=C.transpose(1, 2), D=D, y=y.transpose(1, 2)))
                return out

            return wrapped
    originals = {n: getattr(owner, n) for n in names}
    for n, fn in originals.items():
        setattr(owner, n, make(fn))
    try:
        yield calls
    finally:
        for n, fn in originals.items():
            setattr(owner, n, fn)


MAMBA1 = ("mambapy", "mambapy_seq", "mambapy_norms", "mambapy_norms_seq", "mamba", "falcon_mamba", "jamba")
TOKENS = torch.randint(3, VOCAB, (2, 13), generator=torch.Generator().manual_seed(5))


def unrolled(inp: SSMInputs, b: int, **options) -> torch.Tensor:
    """Σ_j α_c(t, j) u_j[c] + D[c] u_t[c] for every t of row b: (L, d_inner)."""
    L = inp.delta.shape[1]
    alpha = hidden_attention_alpha(inp, b, list(range(L)), **options)       # (L, L, d_inner)
    return torch.einsum("tjc,jc->tc", alpha, inp.u[b]) + inp.D * inp.u[b]


# ---- the inputs are the scan's own, and α reproduces its output -----------------------------------------------------
@pytest.mark.parametrize("kind", MAMBA1)
def test_ssm_inputs_are_the_scans_own_and_alpha_reproduces_its_output(kind):
    model = build(kind)
    with torch.no_grad(), scan_reference(model, kind) as ref, capture_delta(model, ssm_inputs=True) as rec:
        run(model, kind, TOKENS)
    assert len(ref) == len(rec.names) >= 2 and rec.n_calls == 1
    worst_in, worst_y = 0.0, 0.0
    for inp, want in zip(rec.last(), ref):
        assert isinstance(inp, SSMInputs) and inp.granularity == "channel" and not inp.recurrent_step
        for name in ("delta", "A", "B", "C", "u", "D"):
            got = getattr(inp, name)
            assert got.dtype == torch.float32 and got.shape == want[name].shape, name
            torch.testing.assert_close(got, want[name].float(), atol=1e-6, rtol=1e-5, msg=name)
            worst_in = max(worst_in, (got - want[name]).abs().max().item())
        assert inp.delta.max() > 1.0 and inp.A.min() < -3  # decays over a few tokens: the test has teeth
        y = want["y"].float()                                               # (B, L, d_inner)
        for b in range(y.shape[0]):
            for options in ({}, dict(max_span=3, max_queries=2, chunk=5)):  # one block / many blocks and chunks
                got = unrolled(inp, b, **options)
                rel = ((got - y[b]).abs().max() / y[b].abs().max()).item()
                assert rel <= 1e-4, (b, options, rel)
                worst_y = max(worst_y, rel)
    print(f"{kind}: max |inputs - scan's args| = {worst_in:.1e}; max |Σ α u + D u - y| / max |y| = {worst_y:.1e}")


# ---- the masses equal a brute-force α -------------------------------------------------------------------------------
def brute_alpha(inp: SSMInputs, b: int) -> torch.Tensor:
    """α_c(t, j) for all t, j of row b, float64, (L, L, d_inner): the decay as a product of per-step exp(Δ_k A)."""
    delta, A, B, C = inp.delta[b].double(), inp.A.double(), inp.B[b].double(), inp.C[b].double()
    L, d = delta.shape
    step = torch.exp(delta[:, :, None] * A)                                 # (L, d, N)  exp(Δ_k A)
    alpha = torch.zeros(L, L, d, dtype=torch.float64)
    for t in range(L):
        decay = torch.ones_like(step[0])                                     # Π_{k=j+1..t} exp(Δ_k A)
        for j in range(t, -1, -1):
            alpha[t, j] = ((decay * delta[j, :, None] * B[j]) * C[t]).sum(-1)
            decay = decay * step[j]
    return alpha


def brute_masses(inp: SSMInputs, rows: list[list[int]]) -> dict[str, torch.Tensor]:
    out = {"alpha": torch.zeros(inp.delta.shape[:2], dtype=torch.float64)}
    out["alpha_u"] = out["alpha"].clone()
    for b, row in enumerate(rows):
        alpha = brute_alpha(inp, b)
        for t in row:
            out["alpha"][b] += alpha[t].abs().mean(-1)
            out["alpha_u"][b] += (alpha[t] * inp.u[b].double()).abs().mean(-1)
    return out


@pytest.mark.parametrize("options", [{}, dict(max_span=2, max_queries=2, chunk=7)])
def test_masses_equal_brute_force_alpha(options):
    model = build("mambapy_norms")
    with torch.no_grad(), capture_delta(model, ssm_inputs=True) as rec:
        run(model, "mambapy_norms", TOKENS)
    sets = {"prefix_end": [[3, 4, 5], [7, 8]], "target": [[5, 6, 7, 11], [1, 9, 9, 12]],  # rows differ; 9 twice
            "none": [[], [0]]}
    worst = 0.0
    for inp in rec.last():
        got = hidden_attention_masses(inp, sets, ("alpha", "alpha_u"), **options)
        assert set(got) == {f"{s}:{k}" for s in sets for k in ("alpha", "alpha_u")}
        for s, rows in sets.items():
            want = brute_masses(inp, rows)
            for k in ("alpha", "alpha_u"):
                m = got[f"{s}:{k}"]
                assert m.shape == (2, 13) and m.dtype == torch.float32 and torch.isfinite(m).all()
                torch.testing.assert_close(m.double(), want[k], atol=1e-5 * want[k].abs().max().item() + 1e-12,
                                           rtol=1e-5)
                worst = max(worst, ((m.double() - want[k]).abs().max() / want[k].abs().max().clamp_min(1e-30)).item())
                for b, row in enumerate(rows):  # nothing after the row's last query, something before it
                    end = max(row, default=-1) + 1
                    assert (m[b, end:] == 0).all() and (m[b, :end] > 0).all()
                torch.testing.assert_close(m, hidden_attention_rows(inp, rows, k, **options))
    print(f"brute force {options}: max |mass - brute| / max |brute| = {worst:.1e}")


def test_long_sequence_decays_stay_exact():
    """L = 1,500 with Δ ~ softplus(3 N(0, 1)) and A down to -16: |S_t| reaches 3e4 (a float32 cumulative sum gives
    4e-5 relative errors here, float64 1e-7); α for the last queries against a float64 product of exp(Δ_k A)."""
    g = torch.Generator().manual_seed(11)
    L, d, N = 1500, 6, 16
    inp = SSMInputs(delta=F.softplus(3 * torch.randn(1, L, d, generator=g)), A=-torch.arange(1.0, N + 1).repeat(d, 1),
                    B=torch.randn(1, L, N, generator=g), C=torch.randn(1, L, N, generator=g),
                    u=torch.randn(1, L, d, generator=g), D=torch.ones(d))
    queries = [L - 40, L - 2, L - 1]
    got = hidden_attention_alpha(inp, 0, queries, max_span=8)               # (3, L, d)
    delta, A, B, C = (x.double() for x in (inp.delta[0], inp.A, inp.B[0], inp.C[0]))
    assert (delta.sum(0)[:, None] * A).abs().max() > 3e4
    worst = 0.0
    for i, t in enumerate(queries):
        decay, want = torch.ones(d, N, dtype=torch.float64), torch.zeros(L, d, dtype=torch.float64)
        for j in range(t, max(t - 60, -1), -1):                             # further back: below 1e-20 here
            want[j] = ((decay * delta[j, :, None] * B[j]) * C[t]).sum(-1)
            decay = decay * torch.exp(delta[j, :, None] * A)
        assert decay.max() < 1e-20
        scale = want.abs().max().item()
        err = (got[i].double() - want).abs().max().item() / scale
        assert err <= 1e-5, (t, err)
        assert (got[i, t + 1:] == 0).all() and torch.isfinite(got[i]).all()
        worst = max(worst, err)
    # far tail: decays below exp(EXP_FLOOR) are raised to it, so each term is at most exp(EXP_FLOOR) |C_t[n] Δ_j B_j[n]|
    floor = torch.exp(torch.tensor(EXP_FLOOR, dtype=torch.float64))
    floor = floor * C.abs().sum(-1).max() * delta.max() * B.abs().max()
    assert got.abs()[:, : L - 200].max() <= floor
    print(f"L = {L}: max |α - float64 product| / max |α| = {worst:.1e}")


# ---- batches: per-row queries, right padding ------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["mamba", "mambapy"])
def test_right_padded_rows_equal_single_unpadded_rows(kind):
    model = build(kind)
    tokens = torch.randint(3, VOCAB, (2, 12), generator=torch.Generator().manual_seed(9))
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[0, 8:] = 0                                                          # row 0: 8 real tokens, then padding
    sets = {"prefix_end": [[4, 5, 6], [3, 10, 11]], "target": [[6, 7], [0, 5]]}
    reducer = hidden_attention_reducer(sets, kinds=("alpha", "alpha_u"))
    with torch.no_grad(), capture_delta(model, reduce=reducer, ssm_inputs=True) as batched:
        run(model, kind, tokens, mask)
    singles = []
    for b, n in ((0, 8), (1, 12)):
        one = hidden_attention_reducer({s: [rows[b]] for s, rows in sets.items()}, kinds=("alpha", "alpha_u"))
        with torch.no_grad(), capture_delta(model, reduce=one, ssm_inputs=True) as rec:
            run(model, kind, tokens[b: b + 1, :n], torch.ones(1, n, dtype=torch.long))
        singles.append(rec.last())
    worst = 0.0
    for layer, got in enumerate(batched.last()):
        assert set(got) == {"prefix_end:alpha", "prefix_end:alpha_u", "target:alpha", "target:alpha_u"}
        for key, m in got.items():
            assert m.shape == (2, 12)
            for b, n in ((0, 8), (1, 12)):
                want = singles[b][layer][key][0]
                assert want.max() > 0
                torch.testing.assert_close(m[b, :n], want, atol=1e-6, rtol=1e-5)
                worst = max(worst, (m[b, :n] - want).abs().max().item())
                assert (m[b, n:] == 0).all()
    print(f"{kind}: max |padded batch - single row| = {worst:.1e}")


# ---- refusals and the unchanged default -----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["mamba2", "zamba"])
def test_ssm_inputs_refused_for_head_and_per_head_families(kind):
    model = build(kind)
    with pytest.raises(ValueError, match=rf"ssm_inputs=True\): family {kind} \(.*\) is not supported.*supported: "
                                         r"mambapy, mamba, falcon_mamba, jamba"):
        with capture_delta(model, ssm_inputs=True):
            pass
    with torch.no_grad(), capture_delta(model) as rec:  # the default is untouched
        model(TOKENS)
    assert all(isinstance(d, torch.Tensor) and d.shape[:2] == (2, 13) for d in rec.last())


def test_default_capture_unchanged_and_delta_is_the_inputs_delta():
    model = build("falcon_mamba")
    with torch.no_grad(), capture_delta(model) as plain:
        run(model, "falcon_mamba", TOKENS)
    with torch.no_grad(), capture_delta(model, ssm_inputs=True, layers=[1], to_cpu=False) as full:
        run(model, "falcon_mamba", TOKENS)
    assert isinstance(plain.last()[0], torch.Tensor)
    torch.testing.assert_close(full.last()[0].delta, plain.last()[1], atol=0, rtol=0)
    assert all(not m.x_proj._forward_hooks for _, m in find_mixers(model))


def test_recurrent_steps_are_marked_and_refused():
    model = build("mamba")
    with torch.no_grad():
        out = model(TOKENS, use_cache=True)
        with capture_delta(model, ssm_inputs=True) as rec:
            model(out.logits[:, -1:].argmax(-1), cache=out.cache, use_cache=True)
    inp = rec.last()[0]
    assert inp.recurrent_step and inp.delta.shape[:2] == (2, 1)
    with pytest.raises(ValueError, match="recurrent step"):
        hidden_attention_rows(inp, [[0], [0]])
    from deltalens.synthetic.models import ModelConfig, build_model  # mambapy's step mode

    lm = build_model(ModelConfig(vocab_size=10, d_model=16, n_layers=1, d_state=4), seed=0).eval()
    with torch.no_grad(), capture_delta(lm, ssm_inputs=True) as step:
        lm.mamba.step(lm.embedding(torch.tensor([1, 2])), [(None, torch.zeros(2, 32, 3))])
    assert step.last()[0].recurrent_step and step.last()[0].u.shape == (2, 1, 32)


def test_argument_errors():
    model = build("mambapy")
    with torch.no_grad(), capture_delta(model, ssm_inputs=True) as rec:
        run(model, "mambapy", TOKENS)
    inp = rec.last()[0]
    with pytest.raises(ValueError, match="batch size 2"):
        hidden_attention_rows(inp, [[1]])
    with pytest.raises(ValueError, match=r"\[13\] not positions in 0..12"):
        hidden_attention_rows(inp, [[1], [13]])
    with pytest.raises(ValueError, match="unknown"):
        hidden_attention_reducer({"q": [[1], [2]]}, kinds=("attention",))
    with pytest.raises(TypeError, match="ssm_inputs=True"):
        hidden_attention_reducer({"q": [[1], [2]]})(inp.delta)
    with pytest.raises(ValueError, match="granularity 'head'"):
        hidden_attention_rows(SSMInputs(*(getattr(inp, f) for f in ("delta", "A", "B", "C", "u", "D")), "head"),
                              [[1], [2]])
