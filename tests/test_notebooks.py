"""Notebook hygiene (no outputs, a parameters cell) and notebook 01 executed with tiny parameters."""

import json

import nbformat
import pytest
import yaml

from deltalens.core.paths import project_root
from deltalens.tools.smoke import SMOKE, run_notebook

ROOT = project_root()
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks_and_each_has_smoke_parameters():
    assert {p.name for p in NOTEBOOKS} >= {"00_context_dataset.ipynb", "01_synthetic.ipynb"}
    assert {p.name for p in NOTEBOOKS} <= set(SMOKE)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_without_outputs_and_with_parameters_cell(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    with_output = [i for i, c in enumerate(code) if c.get("outputs") or c.get("execution_count") is not None]
    assert not with_output, f"{path.name}: code cells {with_output} carry outputs; strip them before committing"
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: needs exactly one cell tagged 'parameters'"


@pytest.mark.notebook
def test_synthetic_notebook_tiny(tmp_path):
    params = yaml.safe_load((ROOT / "params/smoke/synthetic.yaml").read_text())
    params.update(checkpoint_root=str(tmp_path / "models"), figures_root=str(tmp_path / "figures"))
    out = run_notebook("notebooks/01_synthetic.ipynb", tmp_path / "01.ipynb", params)
    fig_dir = tmp_path / "figures" / params["experiment"]
    metrics = json.loads((fig_dir / "metrics.json").read_text())

    # what was run is what was asked: one model per seed, the same analysis for each
    assert metrics["params"]["task"]["task"] == "query_copying"
    assert metrics["params"]["train"]["max_steps"] == 30
    assert [s["seed"] for s in metrics["seeds"]] == params["seeds"] == metrics["params"]["seeds"]
    for s in metrics["seeds"]:
        assert s["training"]["steps"] == 30 and s["training"]["reached_target"] is False
        assert [a["length_multiplier"] for a in s["accuracy"]] == [1, 2]
        # every layer x score x population has an AUC in [0, 1]
        aucs = s["delta_auc"]
        assert len(aucs) == 2 * 4 * 2 and all(0 <= a["auc"] <= 1 for a in aucs)
        probes = {(p["population"], p["features"].split(" (")[0]): p for p in s["probes"]}
        assert ("context", "CatBoost on Δ") in probes and ("data", "CatBoost control: token + 3 previous") in probes
        assert all(0 <= p["auc"] <= 1 for p in s["probes"])
    # different seeds train different models (their checkpoints and Δ differ)
    s0, s1 = metrics["seeds"]
    assert s0["training"]["checkpoint"] != s1["training"]["checkpoint"]
    assert [a["auc"] for a in s0["delta_auc"]] != [a["auc"] for a in s1["delta_auc"]]
    across = metrics["across_seeds"]
    assert across["n_seeds"] == 2 and across["reached_target"] == 0
    assert across["steps"] == {"mean": 30.0, "min": 30.0, "max": 30.0}
    best_aucs = [s["best_delta_auc"]["context"]["auc"] for s in metrics["seeds"]]
    assert across["populations"]["context"]["best_auc"]["min"] == min(best_aucs)
    # figures for each layer, ROC curves, and conclusions written from these numbers
    for name in ["training_curve", "delta_map_layer0", "delta_map_layer1", "token_diagram_layer1", "roc_context", "roc_data"]:
        assert (fig_dir / f"{name}.png").stat().st_size > 1000, name
    nb = nbformat.read(out, as_version=4)
    md = [o["data"]["text/markdown"] for c in nb.cells if c.cell_type == "code" for o in c.outputs if "text/markdown" in o.get("data", {})]
    assert md and "Training did not reach the target loss" in md[-1] and "in 2 of 2 seeds" in md[-1]
    mean_best = sum(best_aucs) / 2
    assert f"test ROC-AUC {mean_best:.3f} ({min(best_aucs):.3f}–{max(best_aucs):.3f})" in md[-1]

    # a second run with the same parameters reuses the checkpoints instead of training again
    run_notebook("notebooks/01_synthetic.ipynb", tmp_path / "01b.ipynb", params)
    again = json.loads((fig_dir / "metrics.json").read_text())
    assert all(s["training"]["reused_checkpoint"] is True for s in again["seeds"])
    assert [s["delta_auc"] for s in again["seeds"]] == [s["delta_auc"] for s in metrics["seeds"]]


@pytest.mark.notebook
def test_bad_parameter_fails_before_training(tmp_path):
    import papermill as pm

    params = yaml.safe_load((ROOT / "params/smoke/synthetic.yaml").read_text())
    params.update(task="copying", checkpoint_root=str(tmp_path / "models"), figures_root=str(tmp_path / "figures"))
    with pytest.raises(pm.PapermillExecutionError) as err:
        run_notebook("notebooks/01_synthetic.ipynb", tmp_path / "bad.ipynb", params)
    assert "task='copying' is unknown; allowed: ['induction_heads', 'query_copying', 'selective_copying']" in str(err.value)
    assert not (tmp_path / "models").exists()
