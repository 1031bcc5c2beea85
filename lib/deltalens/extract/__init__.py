"""Part 3: Δ of a pretrained Mamba per context chunk, over a code-context dataset — resumable and shardable
(notebook 03, ``make extract``, the Kaggle bundle).

Modules: :mod:`.run` (the run loop, one sample's example view, the CLI), :mod:`.config` (parameters, shards, sample
selection; a config from a params file, a notebook or a run folder), :mod:`.chunk_stats` (per-chunk statistics of
one prompt), :mod:`.folder` (resume checks, merge of the shards, the first look), :mod:`.kaggle` (the
self-contained Kaggle notebook). The model itself is loaded and run by :mod:`deltalens.lm`; file and column names
are :mod:`deltalens.core.chunk_columns`.

What notebook 03 (and a user) calls is importable from here::

    from deltalens import extract as ex
    cfg = ex.config_from_params(yaml.safe_load(open("params/extract/code-lm-hybrid-attnfirst_context_first.yaml")))
    summary = ex.extract(cfg)                    # python -m deltalens.extract run -p params/extract/code-lm-hybrid-attnfirst_context_first.yaml
    ex.merge(cfg.out_dir)                        # python -m deltalens.extract merge DIR

May import: ``core``, ``delta``, ``context``, ``lm``.
"""

from ..lm.loading import DTYPES, SCANS, ModelLoadError, load_lm, model_facts, set_scan
from .config import ExtractConfig, config_from_notebook, config_from_params, config_from_run, process_shard
from .folder import FirstLook, first_look, merge, save_extraction_summary
from .run import ExtractionError, RunSummary, example_view, extract, main

__all__ = ["DTYPES", "SCANS", "ModelLoadError", "load_lm", "model_facts", "set_scan", "ExtractConfig",
           "config_from_notebook", "config_from_params", "config_from_run", "process_shard", "FirstLook",
           "first_look", "merge", "save_extraction_summary", "ExtractionError", "RunSummary", "example_view",
           "extract", "main"]
