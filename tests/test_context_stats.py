"""Notebook 00's report functions (deltalens.context.stats) and its figure (deltalens.core.plots.dataset_overview)."""

import json

import matplotlib

matplotlib.use("Agg")

from deltalens.context import stats  # noqa: E402
from deltalens.context.schema import ContextDataset  # noqa: E402
from deltalens.core import plots  # noqa: E402
from deltalens.core.paths import project_root  # noqa: E402


def test_tables_and_picked_samples_agree_with_the_dataset(ds):
    sources = stats.sources_table(ds)
    assert sources["samples"].sum() == len(ds) and set(sources["split"]) == {"dev", "test"}
    assert list(stats.skipped_files(ds).columns) == ["project", "path", "reason"]
    pos = stats.chunk_positions(ds)
    assert "relevant" in pos.index and ((pos["mean"] >= 0) & (pos["mean"] <= 1)).all()
    picked = stats.pick_samples(ds, 3)
    assert len(picked) == 3 and set(ds.samples.set_index("sample_id").loc[picked, "split"]) == {"dev", "test"}


def test_report_params_layer_defaults_file_and_overrides():
    r = stats.report_params("params/dataset/smoke.yaml", {"n_render": 5})
    assert r == {**stats.REPORT_DEFAULTS, "figures_dir": "reports/smoke/figures/context", "render_chars": 300,
                 "n_render": 5}


def test_conclusions_are_generated_from_the_numbers(ds):
    text = stats.conclusions(ds)
    rel = (ds.chunks["category"] == "relevant").mean()
    assert f"**{len(ds)} samples** from {ds.samples['project'].nunique()} projects" in text
    assert f"Relevant chunks are {rel:.0%} of all chunks" in text
    # a dataset whose relevant chunks all come first gives its position away, and the text says so
    chunks = ds.chunks.copy()
    chunks.loc[chunks["category"] == "relevant", "chunk_index"] = 0
    chunks.loc[chunks["category"] != "relevant", "chunk_index"] = chunks["chunk_index"].clip(lower=1)
    skewed = stats.conclusions(ContextDataset(ds.samples, chunks, ds.manifest))
    assert "a position cue of" in skewed and "no position cue" not in skewed


def test_write_stats_records_sorted_strict_json(ds, tmp_path):
    got = stats.write_stats(ds, ["a", "b"], tmp_path / "fig")
    text = (tmp_path / "fig" / "stats.json").read_text()
    assert text == json.dumps(got, indent=1, sort_keys=True) + "\n"  # the format notebook 00 always wrote
    assert got["samples"] == len(ds) and got["rendered"] == ["a", "b"]
    assert (project_root() / got["figure"]).resolve() == (tmp_path / "fig" / "dataset_overview.png").resolve()


def test_overview_figure_has_its_three_panels(ds, tmp_path):
    fig = plots.dataset_overview(stats.summary(ds), ds.chunks)
    assert [ax.get_title() for ax in fig.axes] == ["samples per project", "chunks per sample, by category",
                                                   "chunk length (chars)"]
    assert plots.save(fig, tmp_path / "o.png").stat().st_size > 0
