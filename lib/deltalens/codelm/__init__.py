"""The small local code language model: trained offline on CPU, saved in transformers' format.

One extraction path then serves this model and ``tiiuae/falcon-mamba-7b`` alike: both load with
``AutoModelForCausalLM.from_pretrained`` / ``AutoTokenizer.from_pretrained`` and expose their Mamba mixers to
:func:`deltalens.delta.capture.capture_delta`.

Pipeline (``python -m deltalens.codelm train -p params/codelm/default.yaml``, or ``make code-lm``):

* :mod:`.corpus`    -- Python standard library (and optional distributions), never the evaluation dataset's projects;
* :mod:`.tokenizer` -- byte-level BPE (``tokenizers``), saved as ``PreTrainedTokenizerFast`` with offset mappings;
* :mod:`.model`     -- embedding -> ``mambapy`` Mamba -> RMSNorm -> head, and its exact ``MambaForCausalLM`` twin;
* :mod:`.mamba2`    -- ``model.arch: mamba2``: transformers' own ``Mamba2ForCausalLM`` (Δ per head), trained by the
  same recipe (``make code-lm-mamba2``: the Mamba-2 twin, optional);
* :mod:`.hybrid`    -- ``model.arch: hybrid`` (``BambaForCausalLM``: Mamba-2 + attention layers) and ``attention``
  (``LlamaForCausalLM``, the instrument check), both behind :mod:`.hf_lm`'s trainer interface;
* :mod:`.recall`, :mod:`.curriculum` -- the copying curriculum: renamed identifiers, repeated spans, identifier pairs;
* :mod:`.diagnostics` -- copy curve and first-occurrence gradient; :mod:`.bundle` -- the training data as files;
* :mod:`.committed` -- committed checkpoints under ``models/``: every file checked against its ``SHA256SUMS``;
* :mod:`.train_config` -- the training parameters (imported by ``params`` and ``train``: no import cycle);
* :mod:`.train`     -- seeded CPU training with a step and a time budget, held-out loss, atomic save, reuse.

May import: ``core``, ``context``, ``lm``, ``synthetic`` (the mambapy model its Mamba-1 LM is built from).
"""

from .corpus import Corpus, CorpusConfig, build_corpus
from .model import CodeLMConfig, build_lm, to_transformers, transformers_config
from .params import CodeLMParams, load_params
from .tokenizer import TokenizerConfig, train_tokenizer
from .train import CodeLMTrainConfig, TrainOutcome, train_code_lm


def load_code_lm(path: str = "models/code-lm-hybrid-attnfirst"):
    """``(model, tokenizer)`` of a saved code LM directory, offline, model in eval mode (float32)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..core.paths import resolve

    p = resolve(path)
    return AutoModelForCausalLM.from_pretrained(p).eval(), AutoTokenizer.from_pretrained(p)


__all__ = [
    "CodeLMConfig", "CodeLMParams", "Corpus", "CorpusConfig", "TokenizerConfig", "CodeLMTrainConfig",
    "TrainOutcome", "build_corpus", "build_lm", "load_code_lm", "load_params", "to_transformers",
    "train_code_lm", "train_tokenizer", "transformers_config",
]
