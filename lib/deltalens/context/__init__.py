"""The code-context dataset: completion points in real Python projects with context chunks of known relevance.

    from deltalens.context import load_params, build, load
    ds, seconds = build(load_params("params/dataset/default.yaml"))
    ds = load("data/processed/context")          # validated on load
    ds.sample(0)                                  # one sample with its chunks

Modules: ``sources`` (projects on disk), ``ast_index`` (ast: imports -> definitions -> uses per line), ``chunks``
(cutting and picking context chunks), ``samples`` (completion points and their chunks), ``build_params`` (the build's
parameters), ``build`` (the run over all projects: splits, manifest), ``subsets`` (a fixed subset of sample ids), ``schema`` (columns, prompt assembly, validation, atomic save, load),
``jsonl`` (user data), ``long_code_arena`` (JetBrains' LCA adapter), ``verify`` (ground-truth re-verification),
``stats`` (tables, conclusions and the recorded statistics of notebook 00). Command line:
``python -m deltalens.context --help``.

May import: ``core``.
"""

from .build import build, build_dataset, manifest_params_match
from .build_params import BuildParams, ParamsError, load_params
from .jsonl import JSONLError, load_jsonl, write_jsonl
from .schema import CATEGORIES, ContextDataset, SchemaError, assemble_prompt, load, save, validate
from .sources import SourceError

__all__ = [
    "BuildParams", "ParamsError", "build", "build_dataset", "load_params", "manifest_params_match",
    "JSONLError", "load_jsonl", "write_jsonl",
    "CATEGORIES", "ContextDataset", "SchemaError", "assemble_prompt", "load", "save", "validate",
    "SourceError",
]
