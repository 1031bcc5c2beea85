"""The hybrid code LM and its attention-only sanity twin, both transformers' own classes (no model code here).

``model.arch: hybrid`` — ``BambaForCausalLM``: ``n_layers`` decoder layers, each a mixer then an MLP
(``intermediate_size``), the mixer Mamba-2 (``BambaMixer``: Δ per head, captured by ``capture.py``'s bamba adapter)
except at ``attn_layers``, where it is causal self-attention with rotary positions (``n_attention_heads``). The SSM
layers take the Mamba-2 parameters of :class:`~deltalens.codelm.model.CodeLMConfig` (``d_state``, ``expand``,
``head_dim``, ``n_groups``, ``d_conv``, ``chunk_size``), so a hybrid and a pure Mamba-2 of the same width differ
only in the layers that attend — the design of Jamba / Zamba / Bamba / Nemotron-H, whose SSM layers' Δ this project
already captures.

``model.arch: attention`` — ``LlamaForCausalLM`` with the same width, depth, heads and MLP: no SSM at all. It is the
instrument check of the copy diagnostics and of the curriculum: an attention model trained on the same batches must
learn to copy; if it does not, the data are wrong, not the SSM.

Mapping: ``d_model`` -> ``hidden_size``, ``n_layers`` -> ``num_hidden_layers``, ``n_attention_heads`` ->
``num_attention_heads`` (= key/value heads), ``rms_norm_eps``, ``init_std`` -> ``initializer_range``,
``tie_embeddings`` -> ``tie_word_embeddings``; Bamba: ``d_state`` -> ``mamba_d_state``, ``head_dim`` ->
``mamba_d_head``, heads -> ``mamba_n_heads``, ``n_groups``, ``d_conv``, ``expand``, ``chunk_size``. Everything else
is transformers' default (no biases in the projections, Δ initialised in [0.001, 0.1], no Δ limit).
"""

from __future__ import annotations

import torch

from ..core.params import check_int
from .hf_lm import TransformersLM, load_same_architecture
from .model import CodeLMConfig

MAX_POSITIONS = 8192  # rotary positions: far beyond the trained length (the extraction warns past trained_length)


def _shared(config: CodeLMConfig, vocab_size: int, token_ids: dict) -> dict:
    """The keyword arguments both configs take alike: width, depth, attention heads (= key/value heads), MLP,
    norm epsilon, initialisation, tied head, rotary positions, token ids."""
    check_int("vocab_size", vocab_size, minimum=1, where="model")
    return dict(vocab_size=vocab_size, hidden_size=config.d_model, num_hidden_layers=config.n_layers,
                intermediate_size=config.intermediate_size, num_attention_heads=config.n_attention_heads,
                num_key_value_heads=config.n_attention_heads, rms_norm_eps=config.rms_norm_eps,
                initializer_range=config.init_std, tie_word_embeddings=config.tie_embeddings,
                max_position_embeddings=MAX_POSITIONS, **{k: v for k, v in token_ids.items() if v is not None})


def hybrid_config(config: CodeLMConfig, vocab_size: int, **token_ids: int | None):
    """The ``transformers.BambaConfig`` of ``config`` (``arch: hybrid``); ``token_ids``: pad/bos/eos ids."""
    from transformers import BambaConfig

    if config.arch != "hybrid":
        raise ValueError(f"hybrid_config() needs model.arch: hybrid, not {config.arch}")
    return BambaConfig(
        attn_layer_indices=list(config.attn_layers), mamba_n_heads=config.n_heads, mamba_d_head=config.head_dim,
        mamba_n_groups=config.n_groups, mamba_d_state=config.d_state, mamba_d_conv=config.d_conv,
        mamba_expand=config.expand, mamba_chunk_size=config.chunk_size, **_shared(config, vocab_size, token_ids))


def attention_config(config: CodeLMConfig, vocab_size: int, **token_ids: int | None):
    """The ``transformers.LlamaConfig`` of ``config`` (``arch: attention``)."""
    from transformers import LlamaConfig

    if config.arch != "attention":
        raise ValueError(f"attention_config() needs model.arch: attention, not {config.arch}")
    return LlamaConfig(**_shared(config, vocab_size, token_ids))


ARCHITECTURES = {"hybrid": ("BambaForCausalLM", hybrid_config), "attention": ("LlamaForCausalLM", attention_config)}


def build_transformers_lm(config: CodeLMConfig, vocab_size: int, seed: int, **token_ids: int | None) -> TransformersLM:
    """Seed, then build the ``arch: hybrid`` / ``attention`` model with transformers' initialisation (float32)."""
    import transformers

    cls_name, make_config = ARCHITECTURES[config.arch]
    torch.manual_seed(seed)
    hf = getattr(transformers, cls_name)(make_config(config, vocab_size, **token_ids)).float()
    if config.tie_embeddings and hf.lm_head.weight is not hf.get_input_embeddings().weight:
        raise RuntimeError(f"transformers did not tie lm_head to the embeddings of {cls_name}")
    return TransformersLM(hf)


def load_transformers_lm_weights(lm: TransformersLM, saved) -> TransformersLM:
    """Continue a saved hybrid / attention code LM of the same architecture and shape."""
    cls_name = type(lm.hf).__name__
    arch = next(a for a, (name, _) in ARCHITECTURES.items() if name == cls_name)
    return load_same_architecture(lm, saved, cls_name, f"model.arch: {arch}")
