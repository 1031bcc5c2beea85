"""The ground floor: what every part of the study shares, and nothing that belongs to one part.

Modules: :mod:`.params` (parameter checks and their one error type), :mod:`.paths` (the project's paths),
:mod:`.runinfo` (atomic writes, valid JSON, package versions), :mod:`.source_text` (the one decoding rule of Python
source files), :mod:`.bootstrap` (the one bootstrap: cluster resamples as weights), :mod:`.metrics` (ROC-AUC,
bootstrap intervals, CatBoost probes), :mod:`.plots` and :mod:`.render`
(figures; Δ on readable text), :mod:`.similarity` (BM25, TF-IDF and embedding relevance of a chunk to a query),
:mod:`.chunk_columns` (the chunk-table contract: every file and column name that extraction writes and the
analysis reads).

May import: nothing else of the package (every ``May import:`` line is checked by ``tests/test_layout.py``).
"""
