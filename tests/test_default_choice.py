"""The dev-split choice of the default local model (deltalens.analysis.default_choice): the rule, its record, and the
check notebook 04 makes before any heavy work."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from deltalens.analysis import default_choice as dc

ROOT = Path(__file__).resolve().parents[1]


def _table(rows):
    base = {"samples": 240, "projects": 6, "name_accuracy_with": 0.5, "name_accuracy_without": 0.4,
            "name_gain_lo": 0.0, "name_gain_hi": 0.2, "over_trained_length": 0}
    return pd.DataFrame([{**base, **r} for r in rows])


def test_the_highest_dev_gain_with_a_ci_above_zero_is_chosen():
    t = _table([{"run": "mamba1", "context_gain": 0.002, "gain_lo": -0.001, "gain_hi": 0.005, "name_accuracy_gain": 0.0},
                {"run": "wide", "context_gain": 0.9, "gain_lo": -0.2, "gain_hi": 2.0, "name_accuracy_gain": 0.3},
                {"run": "hybrid", "context_gain": 0.5, "gain_lo": 0.24, "gain_hi": 0.77, "name_accuracy_gain": 0.09}])
    assert dc.choose(t) == "hybrid"       # "wide" has the higher gain but its CI reaches below zero


def test_ties_go_to_the_higher_identifier_accuracy_gain_and_no_candidate_means_no_choice():
    t = _table([{"run": "a", "context_gain": 0.5001, "gain_lo": 0.2, "gain_hi": 0.8, "name_accuracy_gain": 0.05},
                {"run": "b", "context_gain": 0.4999, "gain_lo": 0.2, "gain_hi": 0.8, "name_accuracy_gain": 0.10}])
    assert dc.choose(t) == "b"
    none = _table([{"run": "a", "context_gain": 0.01, "gain_lo": -0.01, "gain_hi": 0.03, "name_accuracy_gain": 0.0}])
    assert dc.choose(none) is None
    rec = dc.record(none, {"a": "data/models/a"}, n_boot=10, seed=0, dataset_dir="d")
    assert rec["chosen"] is None and "no default chosen" in dc.markdown(rec)
    with pytest.raises(ValueError, match="chose no model"):
        dc.check_model(rec, "data/models/a")


def test_the_record_is_json_and_check_model_refuses_a_model_that_was_not_chosen():
    t = _table([{"run": "m1", "context_gain": 0.002, "gain_lo": -0.001, "gain_hi": 0.005, "name_accuracy_gain": 0.0},
                {"run": "hy", "context_gain": 0.5, "gain_lo": 0.24, "gain_hi": 0.77, "name_accuracy_gain": 0.09}])
    rec = json.loads(json.dumps(dc.record(t, {"m1": "data/models/code-lm", "hy": "models/hy"}, 10, 0, "d")))
    assert rec["chosen"] == "hy" and {r["run"] for r in rec["candidates"]} == {"m1", "hy"}
    assert dc.check_model(rec, "models/hy") == "hy"
    assert dc.check_model(rec, "data/models/hy") == "hy"     # the same model retrained into data/models/
    with pytest.raises(ValueError, match="is not the dev-split choice 'hy'"):
        dc.check_model(rec, "data/models/code-lm")
    md = dc.markdown(rec)
    assert "| hy (chosen) | `models/hy` | 240 (6) | 0.500 [0.240, 0.770] | 50.0 % / 40.0 % | +9.0 % [+0.0, +20.0] |" in md


def test_a_candidate_without_an_extraction_is_named_before_any_work(tmp_path, capsys):
    with pytest.raises(ValueError, match="candidate 'x': no extraction"):
        dc.dev_table(None, {"x": str(tmp_path / "nothing")})
    assert dc.main(["--dataset", str(tmp_path), "--candidate", "x", "--out", str(tmp_path / "o.json")]) == 2
    assert "expected NAME=RUN_DIR" in capsys.readouterr().err
    assert dc.main(["--dataset", str(tmp_path), "--candidate", f"x={tmp_path}", "--out", str(tmp_path / "o.json")]) == 2
    assert "no run.json" in capsys.readouterr().err and not (tmp_path / "o.json").exists()


def test_the_committed_record_chose_the_default_model_of_make_all():
    import yaml

    rec = json.loads((ROOT / "docs/context_reading/default_choice.json").read_text())
    params = yaml.safe_load((ROOT / "params/analysis/default.yaml").read_text())
    assert params["default_choice"] == "docs/context_reading/default_choice.json"
    assert dc.check_model(rec, params["model"]) == rec["chosen"]
    assert rec["split"] == "dev" and rec["rule"] == dc.RULE
    chosen = next(r for r in rec["candidates"] if r["run"] == rec["chosen"])
    assert chosen["gain_lo"] > 0 and all(chosen["context_gain"] >= r["context_gain"] - 5e-4
                                         for r in rec["candidates"] if r["gain_lo"] > 0)
    for name in ("code-lm", "code-lm-mamba2"):      # the pure-SSM families were candidates
        assert name in {r["run"] for r in rec["candidates"]}


def test_an_earlier_record_s_rows_are_carried_over_only_when_they_match():
    """--keep: a new family joins the choice without re-extracting the others; a record of another dataset, rule or
    resample count is refused by name (its rows would not be what this run computes)."""
    t = _table([{"run": "m1", "context_gain": 0.002, "gain_lo": -0.001, "gain_hi": 0.005, "name_accuracy_gain": 0.0},
                {"run": "hy", "context_gain": 0.5, "gain_lo": 0.24, "gain_hi": 0.77, "name_accuracy_gain": 0.09}])
    prev = json.loads(json.dumps(dc.record(t, {"m1": "data/models/m1", "hy": "models/hy"}, 10, 0, "d")))
    kept, models = dc.kept_rows(prev, "d", 10, 0, rerun={"hy"})
    assert kept["run"].tolist() == ["m1"] and models == {"m1": "data/models/m1"}
    new = _table([{"run": "hy", "context_gain": 0.6, "gain_lo": 0.3, "gain_hi": 0.9, "name_accuracy_gain": 0.1},
                  {"run": "m2m", "context_gain": 0.7, "gain_lo": 0.4, "gain_hi": 1.0, "name_accuracy_gain": 0.1}])
    both = pd.concat([kept, new], ignore_index=True)
    rec = dc.record(both, {**models, "hy": "models/hy", "m2m": "data/models/m2m"}, 10, 0, "d")
    assert rec["chosen"] == "m2m" and [r["run"] for r in rec["candidates"]] == ["m1", "hy", "m2m"]
    assert rec["candidates"][0] == {**prev["candidates"][0]}            # carried over unchanged
    for args, field in ((("other", 10, 0), "dataset_dir"), (("d", 20, 0), "n_boot"), (("d", 10, 1), "seed")):
        with pytest.raises(ValueError, match=f"earlier record's {field}"):
            dc.kept_rows(prev, *args, rerun=set())
    with pytest.raises(ValueError, match="earlier record's rule"):
        dc.kept_rows({**prev, "rule": "best test gain"}, "d", 10, 0, rerun=set())
