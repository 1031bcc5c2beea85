"""The hidden-attention baseline through extraction and the analysis: per-chunk masses equal a direct computation
from the captured scan inputs, batching does not change them, Mamba-2 models are refused before any forward."""

import numpy as np
import pandas as pd
import pytest
import torch

from deltalens import analysis as an
from deltalens.core.params import ParameterError
from deltalens.delta.capture import capture_delta
from deltalens.delta.hidden_attention import hidden_attention_rows
from deltalens.extract import run as ex
from deltalens.lm.forward import forward_all, hidden_attention_queries

from tiny_lm import save_tiny_lm


@pytest.fixture(scope="module", params=["mamba", "falcon_mamba"])
def lm_dir(request, ds, tmp_path_factory):
    return save_tiny_lm(tmp_path_factory.mktemp(request.param), list(ds.chunks["text"][:150]), request.param)


def test_queries_are_the_prefix_end_and_the_target_predicting_positions():
    class E:
        target_tokens = (10, 14)

    q = hidden_attention_queries([E()], 3)
    assert q == {"prefix_end": [[7, 8, 9]], "target": [[9, 10, 11, 12]]}


def test_chunk_masses_equal_a_direct_computation_and_batching_changes_nothing(lm_dir, ds, tmp_path):
    cfg = ex.ExtractConfig(model=str(lm_dir), out_dir=str(tmp_path / "d"), max_tokens=100_000, max_samples=3,
                           hidden_attention=4)
    ex.extract(cfg, ds=ds, progress=False)
    ex.merge(cfg.out_dir)
    cd = pd.read_parquet(tmp_path / "d/chunk_delta.parquet")
    assert {"ha_prefix_end", "ha_target"} <= set(cd.columns)
    lm, tok = ex.load_lm(str(lm_dir))
    sid = cd["sample_id"].iloc[0]
    enc = ex.encode(tok, ds.sample(sid), cfg.layout)
    t0, t1 = enc.target_tokens
    with torch.no_grad(), capture_delta(lm, ssm_inputs=True) as rec:
        lm(enc.input_ids)
    for layer, inp in enumerate(rec.last()):
        pre = hidden_attention_rows(inp, [list(range(t0 - 4, t0))])[0]
        tgt = hidden_attention_rows(inp, [list(range(t0 - 1, t1 - 1))])[0]
        rows = cd[(cd["sample_id"] == sid) & (cd["layer"] == layer)]
        for _, r in rows.iterrows():
            a, b = enc.chunk_tokens[r["chunk_index"]]
            np.testing.assert_allclose(r["ha_prefix_end"], pre[a:b].sum().item(), rtol=1e-4)
            np.testing.assert_allclose(r["ha_target"], tgt[a:b].sum().item(), rtol=1e-4)
    # one right-padded batch of several prompts == each prompt alone
    encs = [ex.encode(tok, ds.sample(s), cfg.layout) for s in cd["sample_id"].unique()]
    together = forward_all(lm, encs, batch_tokens=100_000, hidden_attention=4)
    alone = [forward_all(lm, [e], batch_tokens=100_000, hidden_attention=4)[0] for e in encs]
    for x, y in zip(together, alone):
        for lx, ly in zip(x.stats, y.stats):
            np.testing.assert_allclose(lx["ha_prefix_end"], ly["ha_prefix_end"], rtol=1e-4, atol=1e-7)
            np.testing.assert_allclose(lx["ha_target"], ly["ha_target"], rtol=1e-4, atol=1e-7)
    # the analysis turns them into hattn columns and dev-chosen scores
    t = an.chunk_table(ds, {"r": str(tmp_path / "d")})
    assert [c for c in t.columns if c.startswith("hattn:r:")] == [f"hattn:r:L{i}:{w}" for i in (0, 1)
                                                                  for w in ("prefix_end", "target")]
    assert not [c for c in an.delta_columns(t) if "ha_" in c or "prefix_end" in c]


def test_hidden_attention_is_refused_for_mamba2_before_any_forward(ds, tmp_path):
    d = save_tiny_lm(tmp_path / "m2", list(ds.chunks["text"][:150]), "mamba2")
    cfg = ex.ExtractConfig(model=str(d), out_dir=str(tmp_path / "d"), max_samples=2, hidden_attention=4)
    with pytest.raises(ParameterError, match="hidden_attention=4.*mamba2"):
        ex.extract(cfg, ds=ds, progress=False)
    assert not (tmp_path / "d" / "shard-0-of-1" / "parts").exists() or not any(
        (tmp_path / "d" / "shard-0-of-1" / "parts").iterdir())
