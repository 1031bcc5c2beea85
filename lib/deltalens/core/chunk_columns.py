"""The chunk-table contract: every name that extraction writes and the analysis reads, in one place.

Three layers of names, from the run folder up:

1. **The files of an extraction run folder** (``out_dir`` of :mod:`deltalens.extract`): :data:`RUN_JSON`,
   :data:`CHUNK_DELTA`, :data:`CHUNK_LM`, :data:`SAMPLES`, :data:`MERGED_JSON`, the shard folders with their
   :data:`SESSIONS` log and ``parts/<k>.parquet|json|tokens.safetensors`` (:func:`shard_dir`, :func:`part_file`).
2. **The per-chunk columns extraction produces**: ``chunk_delta.parquet`` has one row per (sample, chunk, layer) with
   the Δ statistics :data:`DELTA_STATS`, DeciMamba's kept shares ``decimate_<pct>`` (:func:`decimation_column`) and,
   where computed, the hidden-attention masses :data:`HIDDEN_ATTENTION`; ``chunk_lm.parquet`` one row per (sample,
   chunk) with :data:`CHUNK_LM_COLUMNS`.
3. **The chunk table's score columns** (:func:`deltalens.analysis.chunk_table`), built and parsed only by
   :class:`ScoreColumn`:

   ======================================== =================================================================
   ``delta:<run>:L<layer>:<stat>``          a Δ statistic of extraction run ``<run>`` (stat in DELTA_STATS)
   ``decim:<run>:L<layer>:<pct>``           DeciMamba's decimation: share of the chunk's tokens in the top pct %
   ``hattn:<run>:L<layer>:prefix_end|target`` hidden attention from the prefix end / from the target line
   ``global:<run>:L<layer>:<pct>``          LongMamba's rule: mean Δ over the pct % slowest-decaying channels
   ``selfinfo:<run>``                       the chunk's self-information under the run's LM
   ``loss_gain:<run>``                      leave-one-out: target-line loss without the chunk minus with it
   ``n_tokens:<run>``                       the chunk's tokens in the run's prompt (0: truncated away)
   ``helps:<run>``                          ground truth 2: ``loss_gain > helps_threshold`` (NaN without LOO)
   ``llm:<labeler>``                        a generative labeler's 0/1 labels (score and ground truth 3)
   ``inprompt_rank:<column>``               ``<column>`` as a percentile rank among its prompt's chunks
   ``inprompt_z:<column>``                  ``<column>`` as a z-score among its prompt's chunks
   ======================================== =================================================================

   ``<run>`` is the extraction run's name as the analysis parameters give it (it may hold ``/``, e.g.
   ``code-lm/context_first``, and even ``:`` — layered names are parsed from the right); ``<layer>`` is the model's
   own layer number. Every other column of the chunk table (``split``, ``relevant``, ``bm25``, ``length``, ...) is a
   plain name that :meth:`ScoreColumn.try_parse` answers with None.

Orders, where they matter: :data:`DELTA_STATS` is the column order of ``chunk_delta.parquet`` and, within one layer,
of the chunk table's Δ columns; the chunk table sorts its per-layer columns by :data:`LAYERED_FAMILIES` (family), then
layer, then statistic. The synthetic part orders the same four names its own way
(:data:`deltalens.core.delta_stats.DELTA_SCORES`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .delta_stats import DELTA_STATS

# ---- 1. the run folder ----------------------------------------------------------------------------------------------
RUN_JSON = "run.json"                  # parameters, model facts, dataset fingerprint, sample ids, first runtime
CHUNK_DELTA = "chunk_delta.parquet"    # chunk x layer statistics (merged)
CHUNK_LM = "chunk_lm.parquet"          # per chunk: tokens, self-information, leave-one-out (merged)
SAMPLES = "samples.parquet"            # per sample: target loss, exact match, truncation (merged)
MERGED_JSON = "merged.json"            # what the merge found
SESSIONS = "sessions.jsonl"            # in each shard folder: every (re)start's runtime
PARTS = "parts"                        # in each shard folder: one finished sample per <k>.json (+ .parquet)
FINISHED_GLOB = f"shard-*-of-*/{PARTS}/*.json"
SESSIONS_GLOB = f"shard-*-of-*/{SESSIONS}"
SHARD_COUNT = re.compile(r"shard-\d+-of-(\d+)")


def shard_dir(out: Path, i: int, n: int) -> Path:
    """The folder of shard ``i`` of ``n`` inside a run folder."""
    return Path(out) / f"shard-{i}-of-{n}"


def part_file(parts: Path, k: int, suffix: str) -> Path:
    """``parts/<k>.<suffix>`` of the sample at position ``k`` (suffix ``parquet``, ``json`` or
    ``tokens.safetensors``)."""
    return Path(parts) / f"{k:06d}.{suffix}"


# ---- 2. the per-chunk columns of extraction ------------------------------------------------------------------------
# The per-token Δ statistics' names live in core/delta_stats.py (shared with their maths in delta/scores.py, which
# part 1 also uses: an edit of this module does not rerun part 1): DELTA_STATS is the column order of
# chunk_delta.parquet and of the Δ columns of one layer in the chunk table.

HIDDEN_ATTENTION = ("ha_prefix_end", "ha_target")
"""chunk_delta.parquet columns of the hidden attention (``lm_runtime.HIDDEN_ATTENTION_STATS``): the mass the last
prefix positions / the target line give the chunk's tokens."""
DECIMATION_SHARES = (0.1, 0.25, 0.5)
"""DeciMamba's rule: a layer keeps the top share of the prompt's tokens by the L2 norm of Δ."""
DECIMATION_PREFIX = "decimate_"
CHUNK_DELTA_KEYS = ("sample_id", "chunk_index", "layer", "n_tokens")
CHUNK_LM_COLUMNS = ("sample_id", "chunk_index", "n_tokens", "self_information", "loss_without", "loss_gain")


def decimation_column(share: float) -> str:
    """chunk_delta.parquet's column of a decimation share: 0.25 -> ``decimate_25``."""
    return f"{DECIMATION_PREFIX}{round(100 * share)}"


GLOBAL_PREFIX = "global_"
GLOBAL_CHANNELS = "global_channels.safetensors"
"""In a run folder: LongMamba's global channels (:mod:`deltalens.lm.global_channels`): per layer the log decay of every
channel on the dev calibration prompts and one mask per share; written once, reused when the run resumes."""


def global_column(share: float) -> str:
    """chunk_delta.parquet's column of LongMamba's global channels at a share: 0.1 -> ``global_10``."""
    return f"{GLOBAL_PREFIX}{round(100 * share)}"


def global_sources(columns) -> list[str]:
    """The ``global_<pct>`` columns among chunk_delta.parquet's ``columns``, in their order."""
    return [c for c in columns if c.startswith(GLOBAL_PREFIX) and c[len(GLOBAL_PREFIX):].isdigit()]


def decimation_sources(columns) -> list[str]:
    """The ``decimate_<pct>`` columns among chunk_delta.parquet's ``columns``, in their order."""
    return [c for c in columns if c.startswith(DECIMATION_PREFIX) and c[len(DECIMATION_PREFIX):].isdigit()]


# ---- 3. the chunk table's score columns ----------------------------------------------------------------------------
DELTA, DECIM, HATTN, GLOBAL = "delta", "decim", "hattn", "global"
LAYERED_FAMILIES = (DELTA, DECIM, HATTN, GLOBAL)  # <family>:<run>:L<layer>:<stat>; also the chunk table's order
SELFINFO, LOSS_GAIN, N_TOKENS, HELPS = "selfinfo", "loss_gain", "n_tokens", "helps"
RUN_FAMILIES = (SELFINFO, LOSS_GAIN, N_TOKENS, HELPS)   # <family>:<run>
LLM = "llm"                                              # llm:<labeler>
WITHIN_PROMPT = ("rank", "z")                            # inprompt_<kind>:<column>
HATTN_WHERE = tuple(h[len("ha_"):] for h in HIDDEN_ATTENTION)   # prefix_end, target
CHUNK_LM_FAMILIES = {"self_information": SELFINFO, "loss_gain": LOSS_GAIN, "n_tokens": N_TOKENS}
_FORMS = ("delta|decim|hattn|global:<run>:L<layer>:<stat>, selfinfo|loss_gain|n_tokens|helps:<run>, llm:<labeler>, "
          "inprompt_rank|inprompt_z:<column>")


class ColumnNameError(ValueError):
    """A chunk-table column name that does not follow the contract (the message names it and the allowed forms)."""


def _check_stat(family: str, stat) -> None:
    percent = lambda s: isinstance(s, str) and s.isdigit()  # noqa: E731
    ok = {DELTA: lambda s: s in DELTA_STATS, HATTN: lambda s: s in HATTN_WHERE, DECIM: percent, GLOBAL: percent}[family]
    if not isinstance(stat, str) or not ok(stat):
        allowed = {DELTA: "one of " + ", ".join(DELTA_STATS), HATTN: "one of " + ", ".join(HATTN_WHERE),
                   DECIM: "a kept percentage such as 25",
                   GLOBAL: "a share of global channels in percent such as 10"}[family]
        raise ColumnNameError(f"{family} column: stat {stat!r} is not allowed; expected {allowed}")


@dataclass(frozen=True)
class ScoreColumn:
    """One score column of the chunk table: ``family`` (delta, decim, hattn, global, selfinfo, loss_gain, n_tokens, helps,
    llm), ``run`` (the extraction run; for llm the labeler), ``layer`` and ``stat`` (layered families only),
    ``within`` (``rank`` / ``z``: the column normalised inside each prompt). :attr:`name` builds the column name,
    :meth:`parse` reads one back; both check the parts."""
    family: str
    run: str
    layer: int | None = None
    stat: str | None = None
    within: str | None = None

    def __post_init__(self):
        if self.family not in (*LAYERED_FAMILIES, *RUN_FAMILIES, LLM):
            raise ColumnNameError(f"unknown column family {self.family!r}; the forms are {_FORMS}")
        if not isinstance(self.run, str) or not self.run:
            raise ColumnNameError(f"{self.family} column: empty run name")
        if self.family in LAYERED_FAMILIES:
            if not isinstance(self.layer, int) or isinstance(self.layer, bool) or self.layer < 0:
                raise ColumnNameError(f"{self.family} column of run {self.run!r}: layer {self.layer!r} is not a "
                                      "layer number >= 0")
            _check_stat(self.family, self.stat)
        elif self.layer is not None or self.stat is not None:
            raise ColumnNameError(f"{self.family} column of run {self.run!r}: no layer or stat (got layer "
                                  f"{self.layer!r}, stat {self.stat!r})")
        if self.within is not None and self.within not in WITHIN_PROMPT:
            raise ColumnNameError(f"within={self.within!r}; expected one of {WITHIN_PROMPT} or None")

    @property
    def name(self) -> str:
        if self.family in LAYERED_FAMILIES:
            base = f"{self.family}:{self.run}:L{self.layer}:{self.stat}"
        else:
            base = f"{self.family}:{self.run}"
        return base if self.within is None else f"inprompt_{self.within}:{base}"

    def __str__(self) -> str:
        return self.name

    def base(self) -> "ScoreColumn":
        """The column without its within-prompt normalisation."""
        return ScoreColumn(self.family, self.run, self.layer, self.stat)

    def normalised(self, within: str) -> "ScoreColumn":
        """This column normalised inside each prompt (``rank`` or ``z``)."""
        if self.within is not None:
            raise ColumnNameError(f"{self.name} is already normalised inside the prompt")
        return ScoreColumn(self.family, self.run, self.layer, self.stat, within)

    @classmethod
    def parse(cls, name: str) -> "ScoreColumn":
        """The parts of a score column name; :class:`ColumnNameError` for anything else."""
        if not isinstance(name, str):
            raise ColumnNameError(f"column name {name!r} is not a string")
        within = None
        rest = name
        if name.startswith("inprompt_"):
            head, sep, rest = name.partition(":")
            within = head[len("inprompt_"):]
            if not sep or within not in WITHIN_PROMPT:
                raise ColumnNameError(f"column {name!r}: {head!r} is not inprompt_rank or inprompt_z")
            if rest.startswith("inprompt_"):
                raise ColumnNameError(f"column {name!r}: normalised inside the prompt twice")
        family, sep, body = rest.partition(":")
        if not sep:
            raise ColumnNameError(f"column {name!r} is not a score column; the forms are {_FORMS}")
        try:
            if family in LAYERED_FAMILIES:
                parts = body.rsplit(":", 2)
                if len(parts) != 3 or not re.fullmatch(r"L\d+", parts[1]):
                    raise ColumnNameError(f"expected {family}:<run>:L<layer>:<stat>")
                return cls(family, parts[0], int(parts[1][1:]), parts[2], within)
            return cls(family, body, within=within)
        except ColumnNameError as e:
            raise ColumnNameError(f"column {name!r}: {e}") from None

    @classmethod
    def try_parse(cls, name) -> "ScoreColumn | None":
        """:meth:`parse`, or None for a column that is not a score column (``split``, ``bm25``, a malformed name)."""
        try:
            return cls.parse(name)
        except ColumnNameError:
            return None


def family_of(name: str) -> str | None:
    """The family of a score column (``llm``, ``delta`` ...; for a within-prompt column its base's), None for a plain
    column."""
    col = ScoreColumn.try_parse(name)
    return None if col is None else col.family


def select(columns, family: str, run: str | None = None, stat: str | None = None,
           within: str | None | tuple = None) -> list[str]:
    """The names among ``columns`` (in their order) of ``family``, optionally of one ``run`` and ``stat``.
    ``within``: None (default) for the plain columns, ``rank`` / ``z`` for one normalisation, a tuple for several."""
    kinds = within if isinstance(within, tuple) else (within,)
    out = []
    for c in columns:
        col = ScoreColumn.try_parse(c)
        if (col is not None and col.family == family and col.within in kinds and (run is None or col.run == run)
                and (stat is None or col.stat == stat)):
            out.append(c)
    return out


def chunk_delta_column(source: str) -> tuple[str, str] | None:
    """A chunk_delta.parquet column -> (chunk-table family, stat): ``mean`` -> (delta, mean), ``ha_target`` ->
    (hattn, target), ``decimate_25`` -> (decim, 25); None for the keys and anything else."""
    if source in DELTA_STATS:
        return DELTA, source
    if source in HIDDEN_ATTENTION:
        return HATTN, source[len("ha_"):]
    if source.startswith(DECIMATION_PREFIX) and source[len(DECIMATION_PREFIX):].isdigit():
        return DECIM, source[len(DECIMATION_PREFIX):]
    if source.startswith(GLOBAL_PREFIX) and source[len(GLOBAL_PREFIX):].isdigit():
        return GLOBAL, source[len(GLOBAL_PREFIX):]
    return None
