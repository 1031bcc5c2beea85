"""The project's one mambapy language model, :class:`MambaLM`, and the synthetic experiments' config for it.

    tokens -> Embedding -> mambapy.mamba.Mamba (n_layers ResidualBlocks) -> RMSNorm -> Linear head -> logits

Two configs build it: :class:`ModelConfig` here (the tiny models of part 1, untied head) and
``deltalens.codelm.model.CodeLMConfig`` (the local code LM: tied head, its own norm epsilon and init scale; exported
to transformers' ``MambaForCausalLM`` by ``deltalens.codelm.model.to_transformers``). Both build the layers in the same
order and draw the same random numbers, so a seed gives the weights it gave before the two classes were merged.

``mambapy.lm.LM`` is deliberately not used: importing it pulls ``mamba2.py`` (needs CUDA-only ``mamba_ssm``), and its
``__init__`` re-initialises every Linear (bias 0, std 0.02), which wipes Mamba's Δ initialisation (dt_proj.bias set so
that softplus(bias) lies in [dt_min, dt_max]); with Δ = softplus(0) = 0.69 everywhere the synthetic tasks do not train.
Here only the embedding and the head are initialised by us; every Mamba block keeps mambapy's own initialisation.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
from mambapy.mamba import Mamba, MambaConfig, RMSNorm
from safetensors.torch import load_file, save_file

from ..core.params import ParameterError, check_int


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    d_model: int = 64
    n_layers: int = 2
    d_state: int = 16
    expand_factor: int = 2
    d_conv: int = 4
    pscan: bool = True  # mambapy's parallel scan (True) or its sequential loop

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "n_layers", "d_state", "expand_factor", "d_conv"):
            check_int(name, getattr(self, name), minimum=1, where="model")
        if not isinstance(self.pscan, bool):
            raise ParameterError(f"model: parameter pscan={self.pscan!r}; allowed: true or false")

    def mamba_config(self) -> MambaConfig:
        return MambaConfig(
            d_model=self.d_model,
            n_layers=self.n_layers,
            d_state=self.d_state,
            expand_factor=self.expand_factor,
            d_conv=self.d_conv,
            pscan=self.pscan,
        )


class MambaLM(nn.Module):
    """Embedding -> ``mambapy.mamba.Mamba`` -> RMSNorm -> head; the head tied to the embedding when
    ``tie_embeddings``. ``config``: the project config it was built from (saved with it by :func:`save_model`)."""

    def __init__(self, mamba: MambaConfig, vocab_size: int, *, tie_embeddings: bool = False, init_std: float = 0.02,
                 config=None):
        super().__init__()
        check_int("vocab_size", vocab_size, minimum=1, where="model")
        self.config = config
        self.vocab_size = vocab_size
        self.embedding = nn.Embedding(vocab_size, mamba.d_model)
        self.mamba = Mamba(mamba)
        self.norm_f = RMSNorm(mamba.d_model, mamba.rms_norm_eps)
        self.lm_head = nn.Linear(mamba.d_model, vocab_size, bias=False)
        nn.init.normal_(self.embedding.weight, std=init_std)
        if tie_embeddings:
            self.lm_head.weight = self.embedding.weight
        else:
            nn.init.normal_(self.lm_head.weight, std=init_std)

    @property
    def mixers(self) -> list[nn.Module]:
        """The Mamba blocks (``mambapy.mamba.MambaBlock``), one per layer: where Δ lives."""
        return [layer.mixer for layer in self.mamba.layers]

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        # (B, L) -> (B, L, d_model) -> (B, L, vocab_size)
        return self.lm_head(self.norm_f(self.mamba(self.embedding(tokens))))

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())  # a tied weight counts once


def tiny_lm(config: ModelConfig) -> MambaLM:
    """The synthetic experiments' model: untied head, mambapy's defaults for everything ``config`` leaves out."""
    return MambaLM(config.mamba_config(), config.vocab_size, config=config)


def build_model(config: ModelConfig, seed: int) -> MambaLM:
    """Seed, then build: the same seed gives the same initial weights."""
    torch.manual_seed(seed)
    return tiny_lm(config)


def save_model(model: MambaLM, directory: str | Path, extra: dict | None = None) -> Path:
    """``model.safetensors`` + ``config.json`` (model config and any ``extra`` metadata) in ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, directory / "model.safetensors")
    (directory / "config.json").write_text(json.dumps({"model": asdict(model.config), **(extra or {})}, indent=2))
    return directory


def load_model(directory: str | Path) -> MambaLM:
    """A model saved by :func:`save_model` from a :class:`ModelConfig` (the synthetic experiments' checkpoints)."""
    directory = Path(directory)
    meta = json.loads((directory / "config.json").read_text())
    model = tiny_lm(ModelConfig(**meta["model"]))
    model.load_state_dict(load_file(directory / "model.safetensors"))
    return model.eval()
