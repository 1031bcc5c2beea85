"""Parameters of the local code LM (``params/codelm/*.yaml``, section ``codelm:``), validated before any work."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from ..core.params import ParameterError, check_int, check_keys
from ..core.paths import resolve
from .context_data import ContextDataConfig
from .corpus import CorpusConfig
from .curriculum import CurriculumConfig
from .model import CodeLMConfig
from .tokenizer import TokenizerConfig
from .train_config import CodeLMTrainConfig

SECTIONS = {"corpus": CorpusConfig, "tokenizer": TokenizerConfig, "model": CodeLMConfig, "train": CodeLMTrainConfig,
            "context": ContextDataConfig, "curriculum": CurriculumConfig}


@dataclass(frozen=True)
class CodeLMParams:
    out: str = "data/models/code-lm"
    seed: int = 0
    init_from: str | None = None   # continue training a model this project trained (its weights and tokenizer)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: CodeLMConfig = field(default_factory=CodeLMConfig)
    train: CodeLMTrainConfig = field(default_factory=CodeLMTrainConfig)
    context: ContextDataConfig = field(default_factory=ContextDataConfig)  # share 0: a plain code LM
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)  # all shares 0: no copying curriculum

    def __post_init__(self) -> None:
        if not isinstance(self.out, str) or not self.out:
            raise ParameterError(f"codelm: parameter out={self.out!r}; allowed: a directory path")
        check_int("seed", self.seed, minimum=0, where="codelm")
        if self.init_from is not None and (not isinstance(self.init_from, str) or not self.init_from):
            raise ParameterError(f"codelm: parameter init_from={self.init_from!r}; allowed: null or a model directory")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CodeLMParams":
        check_keys("codelm", d, [f.name for f in fields(cls)])
        kw: dict[str, Any] = {k: v for k, v in d.items() if k not in SECTIONS}
        for name, section in SECTIONS.items():
            sub = d.get(name) or {}
            check_keys(name, sub, [f.name for f in fields(section)], where="codelm")
            try:
                kw[name] = section(**sub)
            except TypeError as e:  # e.g. a wrong argument type the dataclass itself rejects
                raise ParameterError(f"codelm.{name}: {e}") from None
        return cls(**kw)

    def content_params(self) -> dict:
        """Every parameter that determines the trained model (all but the output directory). A plain model (context
        share 0) has the key it had before the context section existed, and a Mamba-1 model the key it had before
        ``model.arch`` existed, so their checkpoints stay reusable."""
        d = asdict(self)
        d.pop("out")
        d["model"] = self.model.content()  # Mamba-1: without arch and the Mamba-2 parameters (the old key)
        if not self.context.enabled:
            d.pop("context")
        if self.train.device == "cpu":  # the key of a CPU-trained model is the one it had before the option
            d["train"].pop("device")
        if self.curriculum.enabled:  # a model without a curriculum keeps the key it had before the section existed
            d["curriculum"] = self.curriculum.content()
        else:
            d.pop("curriculum")
        if self.init_from is None:
            d.pop("init_from")
        return d

    def key(self, corpus_sha256: str) -> str:
        """Hash of the parameters and the corpus content: equal keys mean an identical training run."""
        blob = json.dumps({"params": self.content_params(), "corpus": corpus_sha256}, sort_keys=True, default=list)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _set_dotted(d: dict, dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for p in parents:
        d = d.setdefault(p, {})
        if not isinstance(d, dict):
            raise ParameterError(f"codelm: override {dotted}={value!r}: {p!r} is not a section")
    d[last] = value


def load_params(path: str | Path, overrides: dict[str, Any] | None = None) -> CodeLMParams:
    """Read the ``codelm:`` section of a params YAML; ``overrides`` use dotted keys (``train.max_steps``)."""
    path = resolve(path)
    if not path.is_file():
        raise ParameterError(f"codelm: params file {str(path)!r} does not exist")
    doc = yaml.safe_load(path.read_text()) or {}
    if not isinstance(doc, dict) or not isinstance(doc.get("codelm"), dict):
        raise ParameterError(f"{path}: expected a mapping with a 'codelm:' section")
    d = json.loads(json.dumps(doc["codelm"]))  # a deep copy
    try:
        for k, v in (overrides or {}).items():
            _set_dotted(d, k, v)
        return CodeLMParams.from_dict(d)
    except ParameterError as e:  # name the file: several params files share section and key names
        raise ParameterError(f"{path}: {e}") from None
