"""Mimetic-style initialisation of Mamba-2 mixers (deltalens.codelm.mimetic): C = B after the convolution, slow decay."""

from __future__ import annotations

import math

import pytest
import torch
import transformers
from deltalens.codelm.mimetic import mimetic_init_


def _mamba2():
    torch.manual_seed(0)
    cfg = transformers.Mamba2Config(vocab_size=64, hidden_size=32, num_hidden_layers=2, state_size=16, num_heads=2,
                                    head_dim=32, n_groups=1, chunk_size=16)
    return transformers.Mamba2ForCausalLM(cfg).eval()


def test_c_equals_b_after_the_convolution_and_the_decay_slows():
    model = _mamba2()
    before = [m.A_log.clone() for m in model.modules() if hasattr(m, "A_log")]
    assert mimetic_init_(model, a_scale=0.01) == 2
    for m, a0 in zip([m for m in model.modules() if hasattr(m, "A_log")], before):
        inner, g = m.intermediate_size, m.n_groups * m.ssm_state_size
        h = torch.randn(1, 10, 32)
        xbc = m.in_proj(h)[..., inner:inner + m.conv_dim].transpose(1, 2)
        conv = m.conv1d(xbc)[..., :10].transpose(1, 2)
        b, c = conv[..., inner:inner + g], conv[..., inner + g:inner + 2 * g]
        torch.testing.assert_close(b, c)
        torch.testing.assert_close(-torch.exp(m.A_log), 0.01 * -torch.exp(a0))
        assert not torch.equal(conv[..., :inner], conv[..., inner:2 * inner])   # x is untouched
    ids = torch.randint(0, 64, (1, 12))
    with torch.no_grad():
        assert torch.isfinite(model(ids).logits).all()


def test_the_hybrid_s_mamba_layers_change_and_a_model_without_one_is_an_error():
    torch.manual_seed(0)
    cfg = transformers.BambaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=3, intermediate_size=64,
                                   attn_layer_indices=[0], num_attention_heads=2, num_key_value_heads=2,
                                   mamba_n_heads=2, mamba_d_head=32, mamba_n_groups=1, mamba_d_state=16,
                                   mamba_chunk_size=16)
    assert mimetic_init_(transformers.BambaForCausalLM(cfg)) == 2
    llama = transformers.LlamaForCausalLM(transformers.LlamaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1,
                                                                    intermediate_size=64, num_attention_heads=2))
    with pytest.raises(ValueError, match="no Mamba-2 mixer"):
        mimetic_init_(llama)
    with pytest.raises(ValueError, match="a_scale"):
        mimetic_init_(_mamba2(), a_scale=math.inf)
