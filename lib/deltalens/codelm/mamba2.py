"""The Mamba-2 twin of the code LM: transformers' own ``Mamba2ForCausalLM`` (no model code of this project), trained
with its PyTorch chunked scan (SSD) on the CPU by the same trainer, data and recipe as the Mamba-1 code LM.

``model: {arch: mamba2, ...}`` in ``params/codelm/*.yaml``. The Mamba-1 model is trained in mambapy and converted;
this one is trained and saved as is, so the saved model is the trained model (conversion difference 0). Δ is one
value per head and token (``capture.py``'s Mamba-2 adapter), against one per channel for Mamba-1.

Mapping of :class:`~deltalens.codelm.model.CodeLMConfig` to ``transformers.Mamba2Config``: ``d_model`` ->
``hidden_size``, ``n_layers`` -> ``num_hidden_layers``, ``d_state`` -> ``state_size``, ``d_conv`` -> ``conv_kernel``,
``expand``, ``head_dim``, ``n_groups`` (B and C shared by the heads of a group), ``chunk_size`` (the chunk length of
the scan: speed and memory only), ``rms_norm_eps`` -> ``layer_norm_epsilon``, ``init_std`` -> ``initializer_range``
(embedding and Linear layers; the mixers' A, D, dt bias, conv and out_proj keep transformers' own initialisation),
``tie_embeddings`` -> ``tie_word_embeddings``. Everything else is transformers' default (no biases in the
projections, a conv bias, float32 residuals, Δ initialised in [0.001, 0.1], no Δ limit).
"""

from __future__ import annotations

import torch

from ..core.params import check_int
from .hf_lm import TransformersLM, load_same_architecture
from .model import CodeLMConfig


def mamba2_config(config: CodeLMConfig, vocab_size: int, **token_ids: int | None):
    """The ``transformers.Mamba2Config`` of ``config`` (``arch: mamba2``); ``token_ids``: pad/bos/eos ids."""
    from transformers import Mamba2Config

    if config.arch != "mamba2":
        raise ValueError(f"mamba2_config() needs model.arch: mamba2, not {config.arch}")
    check_int("vocab_size", vocab_size, minimum=1, where="model")
    return Mamba2Config(
        vocab_size=vocab_size,
        hidden_size=config.d_model,
        num_hidden_layers=config.n_layers,
        state_size=config.d_state,
        expand=config.expand,
        conv_kernel=config.d_conv,
        head_dim=config.head_dim,
        num_heads=config.n_heads,
        n_groups=config.n_groups,
        chunk_size=config.chunk_size,
        layer_norm_epsilon=config.rms_norm_eps,
        initializer_range=config.init_std,
        tie_word_embeddings=config.tie_embeddings,
        **{k: v for k, v in token_ids.items() if v is not None},
    )


def build_mamba2_lm(config: CodeLMConfig, vocab_size: int, seed: int, **token_ids: int | None) -> TransformersLM:
    """Seed, then build with transformers' initialisation: the same seed gives the same initial weights."""
    from transformers import Mamba2ForCausalLM

    torch.manual_seed(seed)
    hf = Mamba2ForCausalLM(mamba2_config(config, vocab_size, **token_ids)).float()
    if config.tie_embeddings and hf.lm_head.weight is not hf.backbone.embeddings.weight:
        raise RuntimeError("transformers did not tie lm_head to the embeddings")
    return TransformersLM(hf)


def load_mamba2_weights(lm: TransformersLM, saved) -> TransformersLM:
    """Copy a saved ``Mamba2ForCausalLM``'s weights into ``lm`` (to continue training it): every parameter must have
    its counterpart of the same shape, so ``init_from`` must name a Mamba-2 code LM with the same model parameters."""
    return load_same_architecture(lm, saved, "Mamba2ForCausalLM", "model.arch: mamba2")
