"""Label which context chunks are relevant, with generative LLMs and reference scorers, and keep every answer.

Modules: :mod:`.base` (prompt, completion, errors, the labels table), :mod:`.templates` (versioned prompts),
:mod:`.parse` (answers -> labels), :mod:`.store` (append-only answer store), :mod:`.run` (resumable runner),
:mod:`.openai_api`, :mod:`.hf_local`, :mod:`.manual`, :mod:`.reference` (one per labeler kind), :mod:`.quality`
(metrics against the ground truth), :mod:`.pipeline` (what notebook 02 calls). CLI: ``python -m deltalens.labeling``.

May import: ``core``, ``context``.
"""

from .base import LABEL_COLUMNS, Completion, LabelerFatalError, LabelerUnavailable, LabelPrompt, TransientLabelerError
from .parse import ParsedAnswer, parse_answer
from .store import AnswerStore
from .templates import DEFAULT_TEMPLATE, TEMPLATES, build_prompt, build_prompts

__all__ = ["LABEL_COLUMNS", "Completion", "LabelerFatalError", "LabelerUnavailable", "LabelPrompt",
           "TransientLabelerError", "ParsedAnswer", "parse_answer", "AnswerStore", "DEFAULT_TEMPLATE", "TEMPLATES",
           "build_prompt", "build_prompts"]
