"""Δ captured by hooks equals an independent recomputation from the weights, on every supported model."""

import pytest
import torch
import torch.nn.functional as F

from deltalens.delta.capture import capture_delta, find_mixers
from deltalens.synthetic.models import ModelConfig, build_model


def manual_delta_mambapy(model, tokens):
    """Δ per layer, recomputed from the weights with plain torch ops (mambapy MambaBlock maths)."""
    out, x = [], model.embedding(tokens)
    for layer in model.mamba.layers:
        m = layer.mixer
        h = layer.norm(x)
        xz = m.in_proj(h)
        u, _ = xz.chunk(2, dim=-1)
        L = u.shape[1]
        u = F.silu(m.conv1d(u.transpose(1, 2))[:, :, :L].transpose(1, 2))
        dt = (u @ m.x_proj.weight.T)[..., : m.dt_proj.in_features]
        out.append(F.softplus(dt @ m.dt_proj.weight.T + m.dt_proj.bias))
        x = layer(x)
    return torch.stack(out)


@pytest.mark.parametrize("pscan", [True, False])
def test_mambapy_delta_equals_recomputation(pscan):
    model = build_model(ModelConfig(vocab_size=10, d_model=16, n_layers=2, d_state=4, pscan=pscan), seed=0).eval()
    tokens = torch.randint(0, 10, (3, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), capture_delta(model) as rec:
        model(tokens)
        expected = manual_delta_mambapy(model, tokens)
    got = rec.stacked()
    assert got.shape == (2, 3, 12, 32)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
    # Mamba's Δ initialisation is kept: softplus(bias) lies in [dt_min, dt_max]
    bias_delta = F.softplus(model.mixers[0].dt_proj.bias)
    assert bias_delta.min() >= 1e-3 * 0.99 and bias_delta.max() <= 0.1 * 1.01


def test_mambapy_step_mode_matches_parallel():
    """mambapy's step path calls dt_proj as a module: its own Δ (hooked there) equals our capture, token by token."""
    model = build_model(ModelConfig(vocab_size=10, d_model=16, n_layers=2, d_state=4), seed=0).eval()
    tokens = torch.randint(0, 10, (2, 8), generator=torch.Generator().manual_seed(2))
    with torch.no_grad(), capture_delta(model) as parallel:
        model(tokens)
    lib_delta = [[] for _ in model.mixers]
    hooks = [
        m.dt_proj.register_forward_hook(lambda mod, i, o, k=k: lib_delta[k].append(F.softplus(o)))
        for k, m in enumerate(model.mixers)
    ]
    caches = [(None, torch.zeros(2, 32, 3)) for _ in model.mixers]
    with torch.no_grad(), capture_delta(model) as stepped:
        for t in range(8):
            _, caches = model.mamba.step(model.embedding(tokens[:, t]), caches)
    for h in hooks:
        h.remove()
    assert stepped.n_calls == 8
    for k in range(2):
        ours = torch.cat(stepped.per_layer[k], dim=1)
        library = torch.stack(lib_delta[k], dim=1)
        torch.testing.assert_close(ours, library, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(ours, parallel.per_layer[k][0], atol=1e-5, rtol=1e-4)


def _transformers_model(kind):
    if kind == "mamba":
        from transformers import MambaConfig, MambaForCausalLM

        cfg = MambaConfig(vocab_size=50, hidden_size=32, state_size=4, num_hidden_layers=2, expand=2, conv_kernel=4, time_step_rank=8)
        return MambaForCausalLM(cfg).eval()
    from transformers import FalconMambaConfig, FalconMambaForCausalLM

    cfg = FalconMambaConfig(
        vocab_size=50, hidden_size=32, state_size=4, num_hidden_layers=2, expand=2, conv_kernel=4, time_step_rank=8, mixer_rms_eps=1e-6
    )
    return FalconMambaForCausalLM(cfg).eval()


@pytest.mark.parametrize("kind", ["mamba", "falcon_mamba"])
def test_transformers_delta_equals_recomputation(kind):
    torch.manual_seed(0)
    model = _transformers_model(kind)
    mixers = [m for _, m in find_mixers(model)]
    assert len(mixers) == 2
    inputs = {}
    pre = [m.register_forward_pre_hook(lambda mod, args, kwargs, k=k: inputs.__setitem__(k, args[0] if args else kwargs["hidden_states"]), with_kwargs=True) for k, m in enumerate(mixers)]
    tokens = torch.randint(0, 50, (2, 10), generator=torch.Generator().manual_seed(3))
    with torch.no_grad(), capture_delta(model) as rec:
        model(tokens)
    for h in pre:
        h.remove()
    for k, m in enumerate(mixers):
        h = inputs[k]
        u, _ = m.in_proj(h).transpose(1, 2).chunk(2, dim=1)
        u = F.silu(m.conv1d(u)[..., : h.shape[1]]).transpose(1, 2)
        dt = (u @ m.x_proj.weight.T)[..., : m.time_step_rank]
        if kind == "falcon_mamba":  # weightless RMS norm on the time-step input, eps = mixer_rms_eps
            dt = dt * torch.rsqrt(dt.pow(2).mean(-1, keepdim=True) + 1e-6)
        expected = F.softplus(dt @ m.dt_proj.weight.T + m.dt_proj.bias)
        torch.testing.assert_close(rec.per_layer[k][0], expected, atol=1e-6, rtol=1e-5)


def test_reduce_layers_and_errors():
    from deltalens.delta.scores import token_stats

    model = build_model(ModelConfig(vocab_size=10, d_model=16, n_layers=3, d_state=4), seed=0).eval()
    tokens = torch.randint(0, 10, (2, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), capture_delta(model, reduce=token_stats, layers=[2]) as rec:
        model(tokens)
    assert len(rec.per_layer) == 1 and rec.names == ["mamba.layers.2.mixer"]
    assert set(rec.last()[0]) == {"mean", "max", "l2", "mean_log"} and rec.last()[0]["l2"].shape == (2, 6)
    with pytest.raises(ValueError, match=r"layers=\[5\]: \[5\] out of range; the model has 3 mixers"):
        with capture_delta(model, layers=[5]):
            pass
    with pytest.raises(ValueError, match="has no Mamba mixer"):
        with capture_delta(torch.nn.Linear(2, 2)):
            pass
    with capture_delta(model) as empty:
        pass
    with pytest.raises(RuntimeError, match="no Δ was captured"):
        empty.last()
    # hooks are removed on exit
    assert all(not m.x_proj._forward_hooks for m in model.mixers)
