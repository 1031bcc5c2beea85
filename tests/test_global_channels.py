"""LongMamba's global channels: the decay measure, the masks and the per-token statistic, against brute force."""

import math

import numpy as np
import pytest
import torch

from deltalens.core.chunk_columns import global_column
from deltalens.delta.capture import capture_delta, find_mixers
from deltalens.lm import global_channels as gc
from deltalens.synthetic.models import ModelConfig, build_model


@pytest.fixture(scope="module")
def tiny():
    return build_model(ModelConfig(vocab_size=12, d_model=16, n_layers=2, d_state=4), seed=3).eval()


def test_log_decay_is_the_log_of_the_slowest_states_cumulative_decay(tiny):
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, 12, (1, n), generator=g) for n in (7, 13, 20)]
    got = gc.log_decay(tiny, prompts)
    # brute force: full Δ, then the product of exp(Δ_t A[d, n]) over t for every state n; the slowest state per channel
    want = []
    for layer, (_, mixer) in enumerate(find_mixers(tiny)):
        A = -torch.exp(mixer.A_log.detach().double())  # (D, N)
        per_prompt = []
        for ids in prompts:
            with capture_delta(tiny) as rec:
                tiny(ids)
            delta = rec.stacked()[layer, 0].double()  # (L, D)
            decay = torch.ones_like(A)
            for t in range(delta.shape[0]):
                decay = decay * torch.exp(delta[t, :, None] * A)
            per_prompt.append(torch.log(decay.max(dim=1).values))
        want.append(torch.stack(per_prompt).mean(0))
    np.testing.assert_allclose(got, torch.stack(want).numpy(), rtol=1e-6, atol=1e-9)
    assert (got <= 0).all() and got.shape == (2, 32)


def test_masks_keep_the_slowest_share_per_layer():
    decay = np.array([[-5.0, -0.1, -3.0, -0.2, -9.0, -0.3, -0.3, -7.0, -1.0, -2.0],
                      [-1.0, -2.0, -3.0, -4.0, -5.0, -6.0, -7.0, -8.0, -9.0, -10.0]])
    m = gc.global_masks(decay, shares=(0.1, 0.25, 0.5))
    assert m[0.1].sum(1).tolist() == [1, 1] and np.flatnonzero(m[0.1][0]).tolist() == [1]
    assert np.flatnonzero(m[0.25][0]).tolist() == [1, 3, 5]          # ceil(2.5) = 3; the tie at -0.3 goes to index 5
    assert np.flatnonzero(m[0.5][1]).tolist() == [0, 1, 2, 3, 4]
    for share, mask in m.items():                                      # brute force: every kept channel decays slower
        for row, keep in zip(decay, mask):
            assert row[keep].min() >= row[~keep].max()
            assert keep.sum() == math.ceil(share * len(row))
    with pytest.raises(ValueError, match="share 0"):
        gc.global_masks(decay, shares=(0,))
    with pytest.raises(ValueError, match="expected"):
        gc.global_masks(decay[0])


def test_token_statistic_is_the_mean_over_the_global_channels():
    delta = torch.rand(2, 5, 8)
    masks = {0.25: torch.tensor([0, 1, 0, 0, 0, 0, 1, 0], dtype=torch.bool), 0.5: torch.ones(8, dtype=torch.bool)}
    out = gc.global_token_stats(delta, masks)
    assert set(out) == {"global_25", "global_50"}
    torch.testing.assert_close(out["global_25"], (delta[..., 1] + delta[..., 6]) / 2)
    torch.testing.assert_close(out["global_50"], delta.mean(-1))
    assert global_column(0.05) == "global_5" and global_column(0.1) == "global_10"


def test_slowest_rate_per_channel_and_per_head():
    class M1(torch.nn.Module):
        A_log = torch.log(torch.tensor([[1.0, 2.0], [0.5, 4.0]]))

    class M2(torch.nn.Module):
        A_log = torch.log(torch.tensor([3.0, 0.25]))

    torch.testing.assert_close(gc.slowest_rate(M1()), torch.tensor([-1.0, -0.5]))
    torch.testing.assert_close(gc.slowest_rate(M2()), torch.tensor([-3.0, -0.25]))
    with pytest.raises(ValueError, match="has no A_log"):
        gc.slowest_rate(torch.nn.Linear(2, 2))


def test_capture_takes_one_reducer_per_layer(tiny):
    ids = torch.randint(0, 12, (1, 9), generator=torch.Generator().manual_seed(1))
    with capture_delta(tiny) as full:
        tiny(ids)
    with capture_delta(tiny, reduce=[lambda d: d[..., :3], lambda d: d.sum(-1)]) as rec:
        tiny(ids)
    first, second = rec.last()
    torch.testing.assert_close(first, full.stacked()[0][..., :3])
    torch.testing.assert_close(second, full.stacked()[1].sum(-1))
    with pytest.raises(ValueError, match="expected 2 callables, one per hooked mixer"):
        with capture_delta(tiny, reduce=[lambda d: d]):
            pass


@pytest.mark.parametrize("arch", ["mamba", "mamba2"])
def test_extraction_writes_global_channel_scores_equal_to_a_direct_computation(arch, ds, tmp_path):
    """Through the real extraction: masks measured on dev prompts only and saved once, per-chunk scores equal the mean
    over the chunk's tokens of Δ over the global channels (from full Δ), hidden attention alongside changes nothing,
    and the analysis turns them into global:<run> columns and a dev-chosen LongMamba score."""
    import pandas as pd
    from safetensors.numpy import load_file

    from deltalens import analysis as an
    from deltalens.core.params import ParameterError
    from deltalens.extract import run as ex

    from tiny_lm import save_tiny_lm

    lm_dir = save_tiny_lm(tmp_path / arch, list(ds.chunks["text"][:150]), arch)
    shares = [0.25, 0.5]
    cfg = ex.ExtractConfig(model=str(lm_dir), out_dir=str(tmp_path / "d"), max_tokens=100_000, max_samples=6,
                           global_channels=shares, global_calibration=3,
                           hidden_attention=4 if arch == "mamba" else 0)
    ex.extract(cfg, ds=ds, progress=False)
    ex.merge(cfg.out_dir)
    saved = load_file(str(tmp_path / "d" / "global_channels.safetensors"))
    lm, tok = ex.load_lm(str(lm_dir))
    # the calibration: dev prompts only, and the saved decay is log_decay on exactly those
    ids = gc.calibration_ids(ds, 3)
    assert len(ids) == 3 and set(ds.samples.set_index("sample_id").loc[ids, "split"]) == {"dev"}
    decay = gc.log_decay(lm, [ex.encode(tok, ds.sample(s), cfg.layout).input_ids for s in ids])
    np.testing.assert_allclose(saved["log_decay"], decay, rtol=1e-5)
    masks = gc.global_masks(decay, shares)
    cd = pd.read_parquet(tmp_path / "d/chunk_delta.parquet")
    assert {"global_25", "global_50"} <= set(cd.columns)
    for sid in cd["sample_id"].unique()[:3]:
        enc = ex.encode(tok, ds.sample(sid), cfg.layout)
        with torch.no_grad(), capture_delta(lm) as rec:
            lm(enc.input_ids)
        for layer, delta in enumerate(rec.last()):
            rows = cd[(cd["sample_id"] == sid) & (cd["layer"] == layer)]
            for _, r in rows.iterrows():
                if r["n_tokens"] == 0:
                    assert np.isnan(r["global_25"])
                    continue
                a, b = enc.chunk_tokens[r["chunk_index"]]
                for q in shares:
                    want = delta[0, a:b][:, torch.as_tensor(masks[q][layer])].mean().item()
                    np.testing.assert_allclose(r[global_column(q)], want, rtol=1e-4)
    # the analysis: one column per layer and share, a LongMamba score chosen on dev among them
    t = an.chunk_table(ds, {"r": str(tmp_path / "d")})
    cols = [c for c in t.columns if c.startswith("global:r:")]
    assert cols == [f"global:r:L{i}:{p}" for i in (0, 1) for p in ("25", "50")]
    assert not [c for c in an.delta_columns(t) if c in cols]
    # a wrong parameter is refused before any work
    with pytest.raises(ParameterError, match="global_channels"):
        ex.ExtractConfig(global_channels=[0.0, 0.1]).check()


def test_global_column_names_round_trip():
    from deltalens.core.chunk_columns import (
        ColumnNameError,
        ScoreColumn,
        chunk_delta_column,
        global_column,
        global_sources,
    )

    assert global_column(0.05) == "global_5"
    assert chunk_delta_column("global_25") == ("global", "25")
    c = ScoreColumn.parse("global:code-lm/context_first:L3:10")
    assert (c.family, c.run, c.layer, c.stat) == ("global", "code-lm/context_first", 3, "10")
    assert ScoreColumn("global", "r", 0, "5").name == "global:r:L0:5"
    with pytest.raises(ColumnNameError, match="share of global channels"):
        ScoreColumn.parse("global:r:L0:mean")
    assert global_sources(["mean", "global_5", "global_x", "decimate_10"]) == ["global_5"]
