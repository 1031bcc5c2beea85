"""The main analysis (notebook 04): every relevance score of every context chunk side by side, against every
ground truth, with bootstrap intervals; whatever is chosen (layer, statistic, sign) is chosen on dev, reported on test.

This module is the analysis' one import (``from deltalens import analysis as an``); the work lives in three modules
by job, and their public names are re-exported here:

* :mod:`deltalens.analysis.table` — the chunk table (one row per sample x chunk with every score and ground truth;
  column names: :mod:`deltalens.core.chunk_columns`), its column selectors, the ground truths, within-prompt variants;
* :mod:`deltalens.analysis.scores` — metrics on a split with intervals, choices on dev, CatBoost, the score tables,
  the filter's scores, paired comparisons;
* :mod:`deltalens.analysis.report` — markdown tables, conclusions written from the numbers, the results folder.

Intervals everywhere are a projects-then-samples bootstrap (:mod:`deltalens.analysis.ranking`).

May import: ``core``, ``delta``, ``context``, ``lm``, ``extract``, ``filter``.
"""

from __future__ import annotations

from .report import (  # noqa: F401
                              RESULTS_FILES,
                              AnalysisResults,
                              conclusions,
                              judge_markdown,
                              metric_name,
                              ranking_markdown,
                              records,
                              results_document,
                              results_markdown,
                              save_json,
                              write_results,
)
from .scores import (  # noqa: F401
                              DECIMAMBA_L2_LABEL,
                              DECIMATION_LABEL,
                              DELTA_BEST_LABEL,
                              DELTA_WITHIN_LABEL,
                              HATTN_LABELS,
                              LEARNED_NOTE,
                              ORACLE,
                              SELFINFO_LABEL,
                              Choice,
                              auc_by_layer,
                              best_pair,
                              choose_on_dev,
                              comparisons,
                              evaluate,
                              filter_scores,
                              hattn_label,
                              learned_scores,
                              per_category,
                              ranking_scores,
                              score_table,
                              standard_choices,
)
from .table import (  # noqa: F401
                              BASELINES,
                              add_within_prompt,
                              chunk_table,
                              delta_columns,
                              ground_truths,
                              loo_runs,
                              path_distance,
                              runs_of,
                              split_meta,
                              within_prompt_columns,
)
