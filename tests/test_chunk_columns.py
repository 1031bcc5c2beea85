"""The chunk-table contract (deltalens.core.chunk_columns): one builder and one parser of the score column names, the
names extraction writes, and the modules that used to define them on their own agreeing with it."""

import numpy as np
import pandas as pd
import pytest

from deltalens.core import chunk_columns as cc
from deltalens.core.chunk_columns import ColumnNameError, ScoreColumn


@pytest.mark.parametrize("col, name", [
    (ScoreColumn("delta", "code-lm/context_first", 3, "mean_log"), "delta:code-lm/context_first:L3:mean_log"),
    (ScoreColumn("decim", "r", 0, "25"), "decim:r:L0:25"),
    (ScoreColumn("hattn", "code-lm-plain/context_first", 12, "prefix_end"),
     "hattn:code-lm-plain/context_first:L12:prefix_end"),
    (ScoreColumn("hattn", "r", 1, "target"), "hattn:r:L1:target"),
    (ScoreColumn("selfinfo", "code-lm/query_first"), "selfinfo:code-lm/query_first"),
    (ScoreColumn("loss_gain", "a/b"), "loss_gain:a/b"),
    (ScoreColumn("n_tokens", "a/b"), "n_tokens:a/b"),
    (ScoreColumn("helps", "code-lm/context_first"), "helps:code-lm/context_first"),
    (ScoreColumn("llm", "qwen2.5-coder:7b"), "llm:qwen2.5-coder:7b"),          # a labeler name may hold ':'
    (ScoreColumn("delta", "odd:run", 2, "l2"), "delta:odd:run:L2:l2"),         # layered names parse from the right
    (ScoreColumn("delta", "code-lm/context_first", 5, "max", "rank"),
     "inprompt_rank:delta:code-lm/context_first:L5:max"),
    (ScoreColumn("delta", "r", 0, "mean", "z"), "inprompt_z:delta:r:L0:mean"),
])
def test_name_and_parse_round_trip(col, name):
    assert col.name == str(col) == name
    assert ScoreColumn.parse(name) == col
    assert ScoreColumn.parse(col.name).name == name
    assert cc.family_of(name) == col.family


def test_within_prompt_variants_and_their_base():
    base = ScoreColumn("delta", "code-lm/context_first", 4, "l2")
    z = base.normalised("z")
    assert z.name == "inprompt_z:" + base.name and z.base() == base and z.run == "code-lm/context_first"
    with pytest.raises(ColumnNameError, match="already normalised"):
        z.normalised("rank")


@pytest.mark.parametrize("name, message", [
    ("delta:r:0:mean", "L<layer>"),
    ("delta:r:L0", "L<layer>"),
    ("delta:r:Lx:mean", "L<layer>"),
    ("delta:r:L0:median", "stat 'median'"),
    ("hattn:r:L0:query", "stat 'query'"),
    ("decim:r:L0:ten", "stat 'ten'"),
    ("delta::L0:mean", "empty run"),
    ("helps:", "empty run"),
    ("bogus:r", "unknown column family 'bogus'"),
    ("relevant", "not a score column"),
    ("inprompt_mean:delta:r:L0:mean", "not inprompt_rank or inprompt_z"),
    ("inprompt_z:inprompt_z:delta:r:L0:mean", "twice"),
])
def test_malformed_names_are_refused_with_the_name(name, message):
    with pytest.raises(ColumnNameError, match=message) as e:
        ScoreColumn.parse(name)
    assert isinstance(e.value, ValueError)
    assert ScoreColumn.try_parse(name) is None
    if ":" in name and not name.startswith("bogus"):
        assert repr(name) in str(e.value)  # the message names the column


def test_the_builder_checks_its_parts():
    with pytest.raises(ColumnNameError, match="layer"):
        ScoreColumn("delta", "r", None, "mean")
    with pytest.raises(ColumnNameError, match="layer"):
        ScoreColumn("delta", "r", -1, "mean")
    with pytest.raises(ColumnNameError, match="no layer or stat"):
        ScoreColumn("selfinfo", "r", 0)
    with pytest.raises(ColumnNameError, match="within"):
        ScoreColumn("delta", "r", 0, "mean", "pct")


def test_select_keeps_table_order_and_plain_columns_apart():
    columns = ["split", "bm25", "delta:a/b:L0:mean", "delta:a/b:L0:l2", "delta:c:L0:l2",
               "inprompt_rank:delta:a/b:L0:mean", "inprompt_z:delta:a/b:L0:mean", "hattn:a/b:L0:target", "llm:x", "helps:a/b"]
    assert cc.select(columns, cc.DELTA) == ["delta:a/b:L0:mean", "delta:a/b:L0:l2", "delta:c:L0:l2"]
    assert cc.select(columns, cc.DELTA, "a/b", stat="l2") == ["delta:a/b:L0:l2"]
    assert cc.select(columns, cc.DELTA, "a/b", within=("rank", "z")) == ["inprompt_rank:delta:a/b:L0:mean",
                                                                         "inprompt_z:delta:a/b:L0:mean"]
    assert cc.select(columns, cc.HATTN, "a/b", stat="target") == ["hattn:a/b:L0:target"]
    assert cc.select(columns, cc.LLM) == ["llm:x"] and cc.select(columns, cc.HELPS, "c") == []
    assert cc.family_of("bm25") is None and cc.family_of("split") is None


def test_chunk_delta_columns_map_to_chunk_table_families():
    assert cc.chunk_delta_column("mean_log") == ("delta", "mean_log")
    assert cc.chunk_delta_column("ha_prefix_end") == ("hattn", "prefix_end")
    assert [cc.decimation_column(q) for q in cc.DECIMATION_SHARES] == ["decimate_10", "decimate_25", "decimate_50"]
    assert cc.chunk_delta_column("decimate_25") == ("decim", "25")
    assert all(cc.chunk_delta_column(k) is None for k in cc.CHUNK_DELTA_KEYS)
    assert cc.decimation_sources(["mean", "decimate_50", "layer", "decimate_10"]) == ["decimate_50", "decimate_10"]


def test_extraction_rows_use_only_contract_columns():
    import torch

    from deltalens.extract.chunk_stats import chunk_lm_rows, chunk_rows
    from deltalens.lm.prompts import Encoded

    L = 30
    rng = np.random.default_rng(0)
    stats = [{s: rng.random(L).astype(np.float32) for s in (*cc.DELTA_STATS, *cc.HIDDEN_ATTENTION)}]
    enc = Encoded(input_ids=torch.zeros(1, L, dtype=torch.long), chunk_tokens=[(0, 10), None, (10, 20)],
                  target_tokens=(26, 30), n_tokens_full=L)
    rows = chunk_rows("s", enc, stats, [7])
    assert list(rows.columns[:4]) == list(cc.CHUNK_DELTA_KEYS)
    assert list(rows.columns[4:8]) == list(cc.DELTA_STATS)  # chunk_delta.parquet's order of the statistics
    assert all(cc.chunk_delta_column(c) is not None for c in rows.columns[4:])
    lm = pd.DataFrame([{"sample_id": "s", **r} for r in chunk_lm_rows(enc, np.ones(L), 2.0, {0: 2.5})])
    assert tuple(lm.columns) == cc.CHUNK_LM_COLUMNS
    assert lm["loss_gain"].tolist()[0] == pytest.approx(0.5) and lm["n_tokens"].tolist() == [10, 0, 10]


def test_the_delta_statistics_computed_are_exactly_the_contract_s_names():
    import torch

    from deltalens.core.delta_stats import DELTA_SCORES
    from deltalens.delta.scores import delta_scores, token_stats

    assert cc.DELTA_STATS == ("mean", "mean_log", "l2", "max")  # chunk_delta.parquet's column order, unchanged
    assert DELTA_SCORES == ("mean", "max", "l2", "mean_log")  # the synthetic part's order, unchanged
    delta = torch.rand(2, 5, 3) + 0.1
    assert set(delta_scores(delta)) == set(token_stats(delta)) == set(cc.DELTA_STATS)


def test_run_folder_names(tmp_path):
    parts = cc.shard_dir(tmp_path, 1, 4) / cc.PARTS
    assert parts == tmp_path / "shard-1-of-4/parts"
    assert cc.part_file(parts, 7, "json").name == "000007.json"
    f = cc.part_file(parts, 7, "json")
    f.parent.mkdir(parents=True)
    f.write_text("{}")
    assert sorted(tmp_path.glob(cc.FINISHED_GLOB)) == [f]
    assert cc.SHARD_COUNT.search(str(f.relative_to(tmp_path))).group(1) == "4"
