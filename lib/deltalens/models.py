"""The tiny language model of the synthetic experiments, built on the unmodified ``mambapy.mamba.Mamba``.

    tokens -> Embedding -> mambapy.mamba.Mamba (n_layers ResidualBlocks) -> RMSNorm -> Linear head -> logits

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

from .params import ParameterError, check_int


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


class TinyMambaLM(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.d_model)
        self.mamba = Mamba(config.mamba_config())
        self.norm_f = RMSNorm(config.d_model)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        nn.init.normal_(self.embedding.weight, std=0.02)
        nn.init.normal_(self.lm_head.weight, std=0.02)

    @property
    def mixers(self) -> list[nn.Module]:
        """The Mamba blocks (``mambapy.mamba.MambaBlock``), one per layer: where Δ lives."""
        return [layer.mixer for layer in self.mamba.layers]

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.norm_f(self.mamba(self.embedding(tokens))))

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def build_model(config: ModelConfig, seed: int) -> TinyMambaLM:
    """Seed, then build: the same seed gives the same initial weights."""
    torch.manual_seed(seed)
    return TinyMambaLM(config)


def save_model(model: TinyMambaLM, directory: str | Path, extra: dict | None = None) -> Path:
    """``model.safetensors`` + ``config.json`` (model config and any ``extra`` metadata) in ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, directory / "model.safetensors")
    (directory / "config.json").write_text(json.dumps({"model": asdict(model.config), **(extra or {})}, indent=2))
    return directory


def load_model(directory: str | Path) -> TinyMambaLM:
    directory = Path(directory)
    meta = json.loads((directory / "config.json").read_text())
    model = TinyMambaLM(ModelConfig(**meta["model"]))
    model.load_state_dict(load_file(directory / "model.safetensors"))
    return model.eval()
