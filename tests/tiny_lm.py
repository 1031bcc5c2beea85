"""A tiny random-weight transformers Mamba / FalconMamba / Mamba-2 / Bamba (hybrid) causal LM with a byte-level BPE tokenizer trained here,
saved like a pretrained model (the code paths of extraction and loading, not the quality)."""

from __future__ import annotations

from pathlib import Path

import torch


def train_tiny_tokenizer(texts: list[str], vocab_size: int = 400):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<eos>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>")


def save_tiny_lm(directory: str | Path, texts: list[str], arch: str = "falcon_mamba", *, hidden_size: int = 32,
                 layers: int = 2, seed: int = 0, rms_eps: float = 1e-3) -> Path:
    from transformers import FalconMambaConfig, FalconMambaForCausalLM, MambaConfig, MambaForCausalLM

    d = Path(directory)
    tok = train_tiny_tokenizer(texts)
    torch.manual_seed(seed)
    if arch == "mamba2":
        from transformers import Mamba2Config, Mamba2ForCausalLM

        lm = Mamba2ForCausalLM(Mamba2Config(vocab_size=len(tok), hidden_size=hidden_size, num_hidden_layers=layers,
                                            state_size=8, num_heads=4, head_dim=hidden_size // 2, n_groups=1,
                                            expand=2, chunk_size=16, time_step_limit=(0.0, 1.0)))
    elif arch == "bamba":  # a hybrid: SSM, attention, SSM
        from transformers import BambaConfig, BambaForCausalLM

        lm = BambaForCausalLM(BambaConfig(vocab_size=len(tok), hidden_size=hidden_size, num_hidden_layers=3,
                                          attn_layer_indices=[1], intermediate_size=2 * hidden_size,
                                          num_attention_heads=4, num_key_value_heads=2, mamba_n_heads=4,
                                          mamba_d_state=8, mamba_chunk_size=16, pad_token_id=0))
    elif arch == "falcon_mamba":
        lm = FalconMambaForCausalLM(FalconMambaConfig(vocab_size=len(tok), hidden_size=hidden_size,
                                                      num_hidden_layers=layers, state_size=4, mixer_rms_eps=rms_eps))
    else:
        lm = MambaForCausalLM(MambaConfig(vocab_size=len(tok), hidden_size=hidden_size, num_hidden_layers=layers,
                                          state_size=4))
    lm.save_pretrained(d)
    tok.save_pretrained(d)
    return d
