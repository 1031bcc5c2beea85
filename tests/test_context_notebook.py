"""notebooks/00_context_dataset.ipynb through papermill with a tiny build."""

import json

import pytest
import yaml

from deltalens.core.paths import project_root


@pytest.mark.notebook
def test_context_notebook_runs_tiny(tmp_path):
    import nbformat
    import papermill as pm

    root = project_root()
    doc = yaml.safe_load((root / "params/dataset/smoke.yaml").read_text())
    dataset = {**doc["dataset"], "out": str(tmp_path / "ctx"), "samples_per_project": 3}
    report = {**doc["report"], "figures_dir": str(tmp_path / "fig")}
    out = tmp_path / "executed.ipynb"
    pm.execute_notebook(str(root / "notebooks/00_context_dataset.ipynb"), str(out), kernel_name="deltalens",
                        parameters={"dataset": dataset, "report": report}, cwd=str(root), progress_bar=False)
    stats = json.loads((tmp_path / "fig" / "stats.json").read_text())
    manifest = json.loads((tmp_path / "ctx" / "manifest.json").read_text())
    assert stats["samples"] == manifest["counts"]["samples"] > 0
    assert stats["projects"] == 4 and set(stats["samples_per_split"]) == {"dev", "test"}
    assert stats["chunks_per_category"]["relevant"] > 0 and len(stats["rendered"]) == report["n_render"]
    assert (tmp_path / "fig" / "dataset_overview.png").stat().st_size > 0
    text = "\n".join(o.get("text", "") for c in nbformat.read(out, 4).cells if c.cell_type == "code"
                     for o in c.get("outputs", []) if o.get("output_type") == "stream")
    assert "RELEVANT defines" in text and ">>> target:" in text
