"""The code LM's config (:class:`CodeLMConfig`, building the project's one mambapy LM, ``deltalens.synthetic.models.MambaLM``),
and the exact conversion of such a model to transformers' ``MambaForCausalLM``.

    tokens -> Embedding -> mambapy.mamba.Mamba (n_layers x [RMSNorm -> MambaBlock, + residual]) -> RMSNorm -> lm_head

This is the block structure of transformers' ``MambaForCausalLM`` (``backbone.embeddings``, ``backbone.layers[i]``
with ``norm`` + ``mixer``, ``backbone.norm_f``, ``lm_head``), with plain Mamba mixers (no inner layer norms, which
transformers' Mamba does not have) and one RMS-norm epsilon everywhere, so the conversion is a renaming of
state-dict keys: both models compute the same logits and the same Δ (``tests/test_codelm.py`` checks it).

Why train with mambapy: its parallel scan (``pscan``) is what makes CPU training affordable; transformers' PyTorch
fallback scans token by token. For inference (no autograd, batch size 1) that sequential scan measured slightly
faster than ``pscan`` on this 2-core CPU at 4000 tokens, so the saved config keeps transformers' default
``use_mambapy=False`` (``from_pretrained(path, use_mambapy=True)`` switches to mambapy's scan). Both paths give the
same logits and Δ.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
from mambapy.mamba import MambaConfig

from ..core.params import ParameterError, check_float, check_int
from ..synthetic.models import MambaLM

ARCHS = ("mamba1", "mamba2", "hybrid", "attention")
INITS = ("default", "mimetic")
# Mamba-2 only (arch: mamba2 and the hybrid's Mamba-2 layers); None under mamba1, filled with these defaults
MAMBA2_DEFAULTS = {"head_dim": 64, "n_groups": 1, "chunk_size": 256}
MAMBA1_ONLY = ("dt_rank",)
# attention layers (arch: hybrid, attention); None elsewhere, filled with these defaults there
ATTENTION_DEFAULTS = {"n_attention_heads": 4, "intermediate_size": 512}
SSM_ONLY = ("d_state", "expand", "d_conv")


@dataclass(frozen=True)
class CodeLMConfig:
    arch: str = "mamba1"  # mamba1: trained with mambapy, saved as MambaForCausalLM (this module);
    # mamba2: transformers' own Mamba2ForCausalLM, trained with its PyTorch chunked scan (codelm/mamba2.py);
    # hybrid: transformers' BambaForCausalLM, Mamba-2 layers with attention layers at attn_layers (codelm/hybrid.py);
    # attention: transformers' LlamaForCausalLM, the attention-only sanity model (codelm/hybrid.py)
    d_model: int = 256
    n_layers: int = 4
    d_state: int = 16
    expand: int = 2
    d_conv: int = 4
    dt_rank: int | str = "auto"  # 'auto' = ceil(d_model / 16), as in mambapy and transformers (Mamba-1 only)
    tie_embeddings: bool = True
    rms_norm_eps: float = 1e-5
    init_std: float = 0.02  # embedding (and tied head) initialisation; Mamba blocks keep mambapy's own init
    # (Mamba-2: transformers' initializer_range, i.e. also its Linear layers; mixers keep transformers' own init)
    head_dim: int | None = None    # Mamba-2: channels per head (heads = d_model * expand / head_dim); default 64
    n_groups: int | None = None    # Mamba-2: groups sharing B and C; default 1
    chunk_size: int | None = None  # Mamba-2: chunk length of the SSD scan (speed only, not the function); default 256
    attn_layers: tuple[int, ...] | None = None  # hybrid: indices of the attention layers (the rest are Mamba-2)
    n_attention_heads: int | None = None  # hybrid / attention: heads of each attention layer; default 4
    intermediate_size: int | None = None  # hybrid / attention: the MLP after every mixer / attention; default 512
    init: str = "default"  # mimetic: every SSM mixer starts close to linear attention (C = B, A scaled by
    # mimetic_a_scale; codelm/mimetic.py) — applied when a model is built from scratch (init_from loads weights over it)
    mimetic_a_scale: float = 0.01

    def __post_init__(self) -> None:
        where = "model"
        if self.arch not in ARCHS:
            raise ParameterError(f"{where}: parameter arch={self.arch!r} is not allowed; allowed: {', '.join(ARCHS)}")
        for name in ("d_model", "n_layers", "d_state", "expand", "d_conv"):
            check_int(name, getattr(self, name), minimum=1, where=where)
        if self.dt_rank != "auto":
            check_int("dt_rank", self.dt_rank, minimum=1, where=where)
        if not isinstance(self.tie_embeddings, bool):
            raise ParameterError(f"{where}: parameter tie_embeddings={self.tie_embeddings!r}; allowed: true or false")
        check_float("rms_norm_eps", self.rms_norm_eps, minimum=0, exclusive=True, where=where)
        check_float("init_std", self.init_std, minimum=0, exclusive=True, where=where)
        if self.init not in INITS:
            raise ParameterError(f"{where}: parameter init={self.init!r} is not allowed; allowed: {', '.join(INITS)}")
        if self.init == "mimetic" and self.arch == "attention":
            raise ParameterError(f"{where}: parameter init='mimetic' initialises SSM mixers; arch: attention has none")
        check_float("mimetic_a_scale", self.mimetic_a_scale, minimum=0, exclusive=True, where=where)
        if self.mimetic_a_scale > 1:
            raise ParameterError(f"{where}: parameter mimetic_a_scale={self.mimetic_a_scale} is out of range; "
                                 "allowed: (0, 1]")
        uses_attention = self.arch in ("hybrid", "attention")
        for name in ("attn_layers", *ATTENTION_DEFAULTS):
            if getattr(self, name) is not None and not uses_attention:
                raise ParameterError(f"{where}: parameter {name}={getattr(self, name)!r} is an attention parameter; "
                                     "allowed: only with arch: hybrid or attention (or leave it out)")
        if uses_attention:
            for name, default in ATTENTION_DEFAULTS.items():
                if getattr(self, name) is None:
                    object.__setattr__(self, name, default)
                check_int(name, getattr(self, name), minimum=1, where=where)
            if self.d_model % self.n_attention_heads:
                raise ParameterError(f"{where}: parameter n_attention_heads={self.n_attention_heads} does not divide "
                                     f"d_model={self.d_model}; allowed: a divisor of d_model")
        if self.arch == "hybrid":
            layers = self.attn_layers
            if (not isinstance(layers, (list, tuple)) or not layers
                    or not all(isinstance(i, int) and not isinstance(i, bool) for i in layers)
                    or len(set(layers)) != len(layers) or not all(0 <= i < self.n_layers for i in layers)
                    or len(layers) >= self.n_layers):
                raise ParameterError(f"{where}: parameter attn_layers={layers!r}; allowed: a non-empty list of distinct "
                                     f"layer indices in 0..{self.n_layers - 1}, fewer than n_layers (the rest are Mamba-2)")
            object.__setattr__(self, "attn_layers", tuple(sorted(layers)))
        if self.arch in ("mamba1", "attention"):
            for name in MAMBA2_DEFAULTS:
                if getattr(self, name) is not None:
                    raise ParameterError(f"{where}: parameter {name}={getattr(self, name)!r} is a Mamba-2 parameter; "
                                         "allowed: only with arch: mamba2 or hybrid (or leave it out)")
            if self.arch == "attention" and self.dt_rank != "auto":
                raise ParameterError(f"{where}: parameter dt_rank={self.dt_rank!r} is a Mamba-1 parameter; the "
                                     "attention model has no SSM")
            return
        if self.dt_rank != "auto":
            raise ParameterError(f"{where}: parameter dt_rank={self.dt_rank!r} is a Mamba-1 parameter (Mamba-2 has "
                                 "one Δ per head, no low-rank projection); allowed with arch: mamba2: auto")
        for name, default in MAMBA2_DEFAULTS.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, default)
            check_int(name, getattr(self, name), minimum=1, where=where)
        if (self.d_model * self.expand) % self.head_dim:
            raise ParameterError(f"{where}: parameter head_dim={self.head_dim} does not divide d_model * expand = "
                                 f"{self.d_model * self.expand}; allowed: a divisor of it")
        if self.n_heads % self.n_groups:
            raise ParameterError(f"{where}: parameter n_groups={self.n_groups} does not divide the {self.n_heads} "
                                 "heads; allowed: a divisor of d_model * expand / head_dim")

    @property
    def n_heads(self) -> int | None:
        """Mamba-2 heads (None for Mamba-1)."""
        return None if self.head_dim is None else self.d_model * self.expand // self.head_dim

    def content(self) -> dict:
        """The parameters that determine the model, for the reuse key: a Mamba-1 model has exactly the dictionary it
        had before ``arch`` existed (so its checkpoints stay reusable); a Mamba-2 model has ``arch`` and its own
        parameters, without the Mamba-1-only ``dt_rank``."""
        d = asdict(self)
        if self.init == "default":  # a model without mimetic init keeps the key it had before the option existed
            d.pop("init")
            d.pop("mimetic_a_scale")
        drop = {"mamba1": ("arch", *MAMBA2_DEFAULTS), "mamba2": MAMBA1_ONLY,
                "hybrid": MAMBA1_ONLY, "attention": (*MAMBA1_ONLY, *SSM_ONLY, *MAMBA2_DEFAULTS)}[self.arch]
        if self.arch != "hybrid":
            drop = (*drop, "attn_layers")
        if self.arch not in ("hybrid", "attention"):
            drop = (*drop, *ATTENTION_DEFAULTS)
        for k in drop:
            d.pop(k)
        if d.get("attn_layers") is not None:
            d["attn_layers"] = list(d["attn_layers"])
        return d

    def mamba_config(self) -> MambaConfig:
        if self.arch != "mamba1":
            raise ValueError(f"mamba_config() is the mambapy config of a Mamba-1 model; this one is {self.arch}")
        return MambaConfig(d_model=self.d_model, n_layers=self.n_layers, dt_rank=self.dt_rank, d_state=self.d_state,
                           expand_factor=self.expand, d_conv=self.d_conv, rms_norm_eps=self.rms_norm_eps,
                           inner_layernorms=False, pscan=True)


def build_lm(config: CodeLMConfig, vocab_size: int, seed: int) -> MambaLM:
    """Seed, then build the Mamba-1 code LM (``deltalens.synthetic.models.MambaLM``, head tied to the embedding when
    ``tie_embeddings``): the same seed gives the same initial weights."""
    torch.manual_seed(seed)
    return MambaLM(config.mamba_config(), vocab_size, tie_embeddings=config.tie_embeddings, init_std=config.init_std,
                   config=config)


# ---- conversion ------------------------------------------------------------------------------------------------------
def _hf_key(key: str) -> str:
    if key.startswith("embedding."):
        return "backbone.embeddings." + key[len("embedding."):]
    if key.startswith("mamba.layers."):
        return "backbone.layers." + key[len("mamba.layers."):]
    if key.startswith("norm_f."):
        return "backbone." + key
    if key.startswith("lm_head."):
        return key
    raise KeyError(f"no transformers counterpart for parameter {key!r}")


def transformers_config(lm: nn.Module, use_mambapy: bool = False, **token_ids: int | None):
    """The ``transformers.MambaConfig`` equivalent to ``lm`` (anything shaped embedding -> mambapy Mamba -> norm_f
    -> lm_head: ``deltalens.synthetic.models.MambaLM``, whichever config built it). ``token_ids``: pad/bos/eos ids."""
    from transformers import MambaConfig as HFMambaConfig

    mc: MambaConfig = lm.mamba.config
    if mc.inner_layernorms:
        raise ValueError("mambapy inner_layernorms=True has no transformers Mamba counterpart (FalconMamba's norms are "
                         "weightless); train with inner_layernorms=False")
    if mc.mup or mc.use_cuda:
        raise ValueError("mambapy mup / use_cuda models are not converted (different norms / fused kernels)")
    eps = {float(mc.rms_norm_eps), float(lm.norm_f.eps)} | {float(layer.norm.eps) for layer in lm.mamba.layers}
    if len(eps) != 1:
        raise ValueError(f"RMS-norm epsilons differ ({sorted(eps)}); transformers Mamba has one layer_norm_epsilon")
    tied = lm.lm_head.weight is lm.embedding.weight
    return HFMambaConfig(
        vocab_size=lm.embedding.num_embeddings,
        hidden_size=mc.d_model,
        state_size=mc.d_state,
        num_hidden_layers=mc.n_layers,
        expand=mc.expand_factor,
        conv_kernel=mc.d_conv,
        time_step_rank=mc.dt_rank,
        use_bias=mc.bias,
        use_conv_bias=mc.conv_bias,
        layer_norm_epsilon=eps.pop(),
        residual_in_fp32=True,
        time_step_min=mc.dt_min,
        time_step_max=mc.dt_max,
        time_step_scale=mc.dt_scale,
        time_step_init_scheme=mc.dt_init,
        time_step_floor=mc.dt_init_floor,
        tie_word_embeddings=tied,
        use_mambapy=use_mambapy,
        **{k: v for k, v in token_ids.items() if v is not None},
    )


def to_transformers(lm: nn.Module, use_mambapy: bool = False, **token_ids: int | None):
    """A ``transformers.MambaForCausalLM`` (float32, eval mode) with ``lm``'s weights: same logits, same Δ.

    ``use_mambapy``: transformers' CPU scan (mambapy's parallel scan, or its sequential loop); ``token_ids``:
    ``pad_token_id`` / ``bos_token_id`` / ``eos_token_id`` for the config."""
    from transformers import MambaForCausalLM

    hf = MambaForCausalLM(transformers_config(lm, use_mambapy, **token_ids)).float()
    state = {_hf_key(k): v.detach().float() for k, v in lm.state_dict().items()}
    if hf.config.tie_word_embeddings:
        state["lm_head.weight"] = state["backbone.embeddings.weight"]
    missing, unexpected = hf.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"conversion left parameters unmatched: missing {missing}, unexpected {unexpected}")
    if hf.config.tie_word_embeddings and hf.lm_head.weight.data_ptr() != hf.backbone.embeddings.weight.data_ptr():
        raise RuntimeError("transformers did not tie lm_head to the embeddings")
    return hf.eval()


def load_transformers_weights(lm: nn.Module, hf) -> nn.Module:
    """The inverse of :func:`to_transformers`: copy a ``MambaForCausalLM``'s weights into ``lm`` (same shapes), e.g.
    to continue training a saved code LM. Every parameter must have its counterpart."""
    hf_state = hf.state_dict()
    state = {}
    for k, v in lm.state_dict().items():
        key = _hf_key(k)
        if key not in hf_state or hf_state[key].shape != v.shape:
            raise ValueError(f"parameter {k!r}: the saved model has no {key!r} of shape {tuple(v.shape)}; "
                             "train.init_from must name a model with the same model parameters")
        state[k] = hf_state[key].detach().float().clone()
    lm.load_state_dict(state)
    if lm.lm_head.weight is not lm.embedding.weight and "lm_head.weight" in hf_state:
        lm.lm_head.weight.data.copy_(hf_state["lm_head.weight"])
    return lm
