"""A transformers causal LM behind the code-LM trainer's interface, for every family trained as transformers' own
model (``model.arch``: mamba2, hybrid, attention): ``forward(tokens) -> logits`` without a cache, ``n_parameters()``,
and ``to_transformers()`` — the trained model itself, so the saved model is the trained model (no conversion)."""

from __future__ import annotations

import torch
import torch.nn as nn

from ..core.params import ParameterError


class TransformersLM(nn.Module):
    """``hf`` (a ``*ForCausalLM``) is the model that is trained and saved."""

    def __init__(self, hf):
        super().__init__()
        self.hf = hf
        self.config = hf.config

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # (B, L) -> (B, L, vocab)
        return self.hf(input_ids=tokens, use_cache=False).logits

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())  # a tied weight counts once

    def to_transformers(self):
        """The trained model itself (float32, eval mode)."""
        return self.hf.float().eval()


def load_same_architecture(lm: TransformersLM, saved, architecture: str, how: str) -> TransformersLM:
    """Copy a saved model's weights into ``lm`` (to continue training it): ``saved`` must be an ``architecture``
    and hold every parameter of ``lm`` with the same shape (``init_from`` names a model with the same model
    parameters); ``how`` names the setting in the error."""
    arch = type(saved).__name__
    if arch != architecture:
        raise ParameterError(f"codelm: parameter init_from names a {arch}; {how} continues a {architecture} (a code "
                             "LM this project trained with the same model.arch)")
    src = saved.state_dict()
    state = {}
    for k, v in lm.hf.state_dict().items():
        if k not in src or src[k].shape != v.shape:
            raise ParameterError(f"codelm: parameter init_from: the saved model has no {k!r} of shape "
                                 f"{tuple(v.shape)}; init_from must name a model with the same model parameters")
        state[k] = src[k].detach().float().clone()
    lm.hf.load_state_dict(state)
    return lm
