"""notebooks/03_extract_delta.ipynb through papermill with a tiny random FalconMamba, and the Kaggle bundle
executed in an empty folder — without the repository on the path (the package comes inlined in the notebook)."""

import json
import os

import pandas as pd
import pytest

from deltalens.context import build, load, load_params
from deltalens.core.paths import project_root
from deltalens.tools.smoke import run_notebook

from tiny_lm import save_tiny_lm


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("x")
    build(load_params(project_root() / "params/dataset/smoke.yaml", {"out": str(root / "ctx"), "samples_per_project": 2}),
          progress=False)
    ds = load(root / "ctx")
    save_tiny_lm(root / "lm", list(ds.chunks["text"][:150]))
    return root, ds


def _params(root):
    return {"model": str(root / "lm"), "dataset_dir": str(root / "ctx"), "out_dir": str(root / "delta"),
            "figures_dir": str(root / "fig"), "max_tokens": 4096, "leave_one_out": True, "progress": False,
            "device": "cpu", "device_map": None, "dtype": "float32", "allow_download": False}


@pytest.mark.notebook
def test_extract_notebook_tiny(tiny):
    root, ds = tiny
    run_notebook("notebooks/03_extract_delta.ipynb", root / "03.ipynb", _params(root))
    stats = json.loads((root / "fig/extraction.json").read_text())
    samples = pd.read_parquet(root / "delta/samples.parquet")
    chunk = pd.read_parquet(root / "delta/chunk_delta.parquet")
    chunk_lm = pd.read_parquet(root / "delta/chunk_lm.parquet")
    loo = chunk_lm.dropna(subset=["loss_gain"])
    assert stats["samples"] == len(samples) == len(ds)
    assert stats["mean_target_loss"] == pytest.approx(samples["target_loss"].mean())
    assert stats["truncated"] == int(samples["truncated"].sum())
    kept = chunk.dropna(subset=["mean"])
    assert len(chunk) == len(ds.chunks) * stats["facts"]["n_layers"]
    assert len(loo) == len(kept) // stats["facts"]["n_layers"]
    assert (root / "fig/example_delta_tokens.png").stat().st_size > 0
    assert stats["deltalens_file"].startswith(str(project_root()))


@pytest.mark.notebook
def test_kaggle_bundle_runs_in_an_empty_folder(tiny, tmp_path):
    import papermill as pm

    from deltalens.extract.kaggle import build as build_kaggle

    root, ds = tiny
    paths = build_kaggle(tmp_path / "build", username="tester", dataset_dir=root / "ctx")
    meta = json.loads((paths["kernel"] / "kernel-metadata.json").read_text())
    assert meta["id"] == "tester/deltalens-falcon-mamba-delta" and meta["code_file"] == paths["notebook"].name
    assert meta["title"].replace(" ", "-") == meta["id"].split("/")[1]  # Kaggle: the title must slugify to the id
    assert meta["enable_gpu"] and meta["dataset_sources"] == ["tester/deltalens-context"]
    assert sorted(os.listdir(paths["dataset"])) == ["chunks.parquet", "dataset-metadata.json", "manifest.json",
                                                     "samples.parquet"]
    import nbformat

    nb = nbformat.read(paths["notebook"], 4)
    defaults = nb.cells[[i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])][0]].source
    assert "model = 'tiiuae/falcon-mamba-7b'" in defaults and "device_map = 'auto'" in defaults

    empty = tmp_path / "empty"
    empty.mkdir()
    params = {**_params(tmp_path), "model": str(root / "lm"), "dataset_dir": str(paths["dataset"]),
              "max_samples": 3}
    pm.execute_notebook(str(paths["notebook"]), str(tmp_path / "kaggle.ipynb"), kernel_name="deltalens",
                        parameters=params, cwd=str(empty), progress_bar=False)
    stats = json.loads((tmp_path / "fig/extraction.json").read_text())
    assert stats["samples"] == 3
    assert "deltalens-inlined-" in stats["deltalens_file"]  # the inlined copy, not the installed checkout
    assert not stats["deltalens_file"].startswith(str(project_root()))


def test_codestral_kaggle_bundle_names_its_model_and_kernel(tiny, tmp_path):
    """The second Kaggle parameter file (issue 14): its own kernel id, Codestral Mamba as the model, the chunked
    Mamba-2 path left to scan: auto."""
    import nbformat

    from deltalens.extract.kaggle import build as build_kaggle

    root, _ = tiny
    paths = build_kaggle(tmp_path / "build", params=project_root() / "params/kaggle/mamba-codestral-7b.yaml",
                         username="tester", dataset_dir=root / "ctx")
    meta = json.loads((paths["kernel"] / "kernel-metadata.json").read_text())
    assert meta["id"] == "tester/deltalens-codestral-mamba-delta"
    assert meta["title"].replace(" ", "-") == meta["id"].split("/")[1]
    nb = nbformat.read(paths["notebook"], 4)
    defaults = nb.cells[[i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])][0]].source
    assert "model = 'mistralai/Mamba-Codestral-7B-v0.1'" in defaults and "scan = 'auto'" in defaults
