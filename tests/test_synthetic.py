"""The analysis functions on a tiny model: populations, controls, summary and parameter validation."""

import pytest
import torch

from deltalens.core.params import ParameterError
from deltalens.core.paths import project_root
from deltalens.synthetic import experiment as synthetic
from deltalens.synthetic import report as synthetic_report
from deltalens.synthetic.summary import build_summary, compact

ROOT_PARAMS = project_root() / "params"


def _tiny(task, task_params):
    return synthetic.make_experiment(
        "t", task, task_params, model={"d_model": 8, "n_layers": 2, "d_state": 2},
        train={"max_steps": 2, "eval_every": 1, "eval_batch_size": 4, "warmup_steps": 1},
        analysis={"n_train_sequences": 32, "n_test_sequences": 32, "catboost_iterations": 10, "bootstrap": 5},
    )


def test_controls_mean_what_they_should(tmp_path):
    """Selective Copying: token identity separates data from noise perfectly (AUC 1) -- the control Δ must beat."""
    exp = _tiny("selective_copying", {"seq_len": 12, "vocab_size": 5, "n_data": 3})
    from deltalens.synthetic.models import build_model

    model = build_model(exp.model, seed=0)
    tr, te = synthetic.sample_sets(exp)
    d_tr, d_te = synthetic.delta_on(model, tr), synthetic.delta_on(model, te)
    assert d_te.delta.shape == (2, 32, exp.task.total_len, 16)
    probes, probas = synthetic.probe_table(d_tr, d_te, exp)
    ctx = probes[probes.population == "context"].set_index("features")
    assert ctx.loc["control: token identity rate", "auc"] == 1.0
    assert ctx.loc["CatBoost control: token + 3 previous", "auc"] > 0.99
    # among data tokens everything is important: AUC undefined, reported as NaN, not as a number
    aucs = synthetic.auc_table(d_te, exp)
    assert aucs[aucs.population == "data"].auc.isna().all()
    assert aucs[aucs.population == "context"].auc.between(0, 1).all()
    assert set(probas["context"]) >= {"control: P(important | token)"}


def test_query_copying_identity_control_is_blind():
    """Query Copying: among data tokens, identity alone is at chance (the query decides)."""
    from deltalens.synthetic.models import build_model

    exp = synthetic.make_experiment(
        "t", "query_copying", {"seq_len": 20, "n_classes": 2, "tokens_per_class": 2, "n_keep": 2, "n_distractors": 2},
        model={"d_model": 8, "d_state": 2},
        analysis={"n_train_sequences": 400, "n_test_sequences": 400, "catboost_iterations": 10, "bootstrap": 0},
    )
    model = build_model(exp.model, seed=0)
    tr, te = synthetic.sample_sets(exp)
    probes, _ = synthetic.probe_table(synthetic.delta_on(model, tr), synthetic.delta_on(model, te), exp)
    data = probes[probes.population == "data"].set_index("features")
    assert abs(data.loc["control: token identity rate", "auc"] - 0.5) < 0.08
    # the control that sees what the task is a function of: the query and the token decide importance exactly
    assert data.loc["CatBoost control: query + token", "auc"] > 0.99
    # the same probe on the mixer's other internals, next to Δ (an untrained model: only that they run)
    assert {"CatBoost on the residual stream (mixer input) (16 dims)", "CatBoost on B and C (8 dims)"} <= set(data.index)


def test_delta_set_holds_the_mixers_inputs_and_b_c():
    from deltalens.synthetic.models import build_model

    exp = _tiny("selective_copying", {"seq_len": 12, "vocab_size": 5, "n_data": 3})
    model = build_model(exp.model, seed=0)
    tr, _ = synthetic.sample_sets(exp)
    d = synthetic.delta_on(model, tr, chunk=10)  # several chunks
    L = exp.task.total_len
    assert d.residual.shape == (2, 32, L, 8) and d.bc.shape == (2, 32, L, 4)
    # the first mixer's input is the normed embedding (mambapy: layer 0 = norm(embedding))
    with torch.no_grad():
        emb = model.embedding(tr.inputs)
        first = model.mamba.layers[0].norm(emb)
    torch.testing.assert_close(d.residual[0], first, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"task": "copy"}, "task='copy' is unknown"),
        ({"task_params": {"seq_len": "64"}}, "seq_len='64' has type str"),
        ({"model": {"d_modle": 8}}, "parameter model has unknown key(s) ['d_modle']"),
        ({"model": {"d_model": 0}}, "model: parameter d_model=0 is too small"),
        ({"train": {"lr": "fast"}}, "train: parameter lr='fast' has type str"),
        ({"analysis": {"length_multipliers": 4}}, "length_multipliers=4"),
        ({"task_params": {"seq_len": 2, "n_data": 4}}, "n_data=4 data tokens for seq_len=2"),
        ({"experiment": ""}, "parameter experiment=''"),
        ({"task_params": [64]}, "parameter task_params=[64] has type list; allowed: a mapping"),
        ({"seeds": []}, "parameter seeds=[]; allowed: a non-empty list"),
        ({"seeds": 3}, "parameter seeds=3; allowed: a non-empty list"),
        ({"seeds": [0, 0]}, "parameter seeds=[0, 0] repeats a seed"),
        ({"seeds": [0, -1]}, "seeds[]=-1 is too small"),
        ({"seeds": [0, 1], "train": {"seed": 2}}, "seeds=[0, 1] and train.seed=2 are both given"),
    ],
)
def test_make_experiment_rejects_bad_parameters(kwargs, needle):
    base = dict(experiment="x", task="selective_copying", task_params={"seq_len": 8})
    with pytest.raises(ParameterError) as err:
        synthetic.make_experiment(**(base | kwargs))
    assert needle in str(err.value)


def _seed(seed, steps, reached, best_auc, cb_delta, ctrl, score="mean_log"):
    return {
        "seed": seed,
        "training": {"reached_target": reached, "target_loss": 1e-4, "steps": steps, "seconds": 1.0,
                     "final_eval_loss": 5e-5 if reached else 2e-4},
        "accuracy": [{"length_multiplier": 1, "accuracy": 1.0}, {"length_multiplier": 4, "accuracy": 0.5}],
        "delta_auc": [{"population": "context", "layer": 0, "score": "l2", "auc": 0.7},
                      {"population": "context", "layer": 0, "score": "mean_log", "auc": best_auc}],
        "best_delta_auc": {"context": {"layer": 0, "score": score, "auc": best_auc, "dev_auc": 0.21, "direction": -1,
                                       "ci_low": best_auc - .05, "ci_high": best_auc + .05}},
        "probes": [{"population": "context", "features": "CatBoost on Δ (32 channels)", "kind": "delta", "auc": cb_delta,
                    "accuracy": 0.9},
                   {"population": "context", "features": "CatBoost control: token + 3 previous", "kind": "control",
                    "auc": ctrl, "accuracy": 0.8},
                   {"population": "context", "features": "CatBoost on Δ + control", "kind": "delta_plus_control",
                    "auc": 0.95, "accuracy": 0.9}],
    }


def test_summary_from_metrics(tmp_path):
    import json

    with pytest.raises(FileNotFoundError, match="run the synthetic notebooks first"):
        build_summary([])
    m = {"experiment": "e", "n_parameters": 10, "params": {"task": {"task": "induction_heads", "seq_len": 8, "vocab_size": 4}},
         "seeds": [_seed(0, 5, True, 0.2, 0.8, 0.6), _seed(1, 9, False, 0.3, 0.9, 0.6, score="l2")]}
    (tmp_path / "metrics.json").write_text(json.dumps(m))
    df = build_summary([tmp_path / "metrics.json"])
    assert list(df["seed"]) == [0, 1]
    row = df.iloc[0]
    assert row["acc@4x"] == 0.5 and row["context Δl2 L0"] == 0.7 and row["context CB Δ AUC"] == 0.8
    assert row["setting"] == "seq_len=8, vocab_size=4"
    # the compact table takes the most informative score from metrics.json (here an inverted mean-log score)
    assert row["context: most informative Δ score"] == "Δmean_log L0" and row["context: most informative Δ AUC"] == 0.2
    assert row["data: most informative Δ score"] == "n/a"
    # across seeds: counts of the chosen scores, mean (min–max) of the numbers
    c = compact(df).iloc[0]
    assert c["seeds"] == 2 and c["reached 1e-4"] == "1/2" and c["steps"] == "7 (5–9)"
    assert c["context: most informative Δ score"] == "Δmean_log L0 (1/2), Δl2 L0 (1/2)"
    assert c["context: its AUC"] == "0.250 (0.200–0.300)" and c["context: CB Δ AUC"] == "0.850 (0.800–0.900)"
    assert c["acc@1x"] == "1.000" and c["data: most informative Δ score"] == "n/a"
    # a metrics.json from before seeds existed is refused with a clear message, not misread
    (tmp_path / "old.json").write_text(json.dumps({"experiment": "e", "training": {}}))
    with pytest.raises(ValueError, match="without per-seed records"):
        build_summary([tmp_path / "old.json"])


def test_conclusions_hold_only_when_every_seed_agrees():
    def metrics(*seeds):  # what collect_metrics hands conclusions: the seed records and their across-seed summary
        m = {"experiment": "e", "params": {}, "seeds": list(seeds)}
        return m | {"across_seeds": synthetic_report.across_seeds(m)}

    agree = metrics(_seed(0, 5, True, 0.2, 0.8, 0.6), _seed(1, 7, True, 0.25, 0.85, 0.6))
    a = agree["across_seeds"]
    assert a["reached_target"] == 2 and a["steps"] == {"mean": 6.0, "min": 5.0, "max": 7.0}
    pop = a["populations"]["context"]
    # strength = max(1 - 0.2 (the inverted single score, read in its dev direction), CatBoost on Δ) vs control 0.6
    assert pop["vs_control"] == {"beats": 2} and pop["best_choices"] == {"mean_log L0": 2}
    text = synthetic_report.conclusions(agree)
    assert "Δ beats the controls (in all 2 seeds)" in text and "every seed" in text
    assert "test ROC-AUC 0.225 (0.200–0.250) — inverted" in text

    # one seed where Δ loses to the control: no conclusion, and the failed training is named
    split = metrics(_seed(0, 5, True, 0.45, 0.62, 0.6), _seed(1, 9, False, 0.5, 0.55, 0.7))
    assert split["across_seeds"]["populations"]["context"]["vs_control"] == {"beats": 1, "loses": 1}
    text = synthetic_report.conclusions(split)
    assert "no conclusion: the seeds disagree" in text and "beats in 1 of 2, loses in 1 of 2" in text
    assert "did not reach the target loss** 1e-04 in 1 of 2 seeds: seed 1 (2.0e-04 after 9 steps)" in text

    # seeds that only split between a tie and a loss agree on one thing: Δ never beats the control
    never = metrics(_seed(0, 5, True, 0.5, 0.605, 0.6), _seed(1, 9, True, 0.5, 0.55, 0.7))
    assert never["across_seeds"]["populations"]["context"]["vs_control"] == {"ties": 1, "loses": 1}
    text = synthetic_report.conclusions(never)
    assert "Δ does **not** beat the controls in any seed (ties in 1 of 2, loses in 1 of 2)" in text
    assert "no conclusion" not in text


def test_best_single_score_is_chosen_on_dev_and_reported_on_test():
    import pandas as pd

    rows = lambda vals: pd.DataFrame([{"population": "context", "layer": l, "score": s, "auc": a, "ci_low": a - .1,
                                       "ci_high": a + .1} for (l, s), a in vals.items()])
    dev = rows({(0, "mean"): 0.55, (1, "max"): 0.20, (1, "mean"): 0.60})
    test = rows({(0, "mean"): 0.95, (1, "max"): 0.45, (1, "mean"): 0.61})   # the test's best never chooses
    best = synthetic_report.choose_best_on_dev(dev, test)["context"]
    assert (best["layer"], best["score"], best["direction"]) == (1, "max", -1)
    assert best["auc"] == 0.45 and best["dev_auc"] == 0.20 and best["candidates"] == 3
    assert "data" not in synthetic_report.choose_best_on_dev(dev, test)


@pytest.mark.parametrize("path", sorted(ROOT_PARAMS.glob("synthetic*/*.yaml")), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_shipped_synthetic_parameter_file_is_valid_and_has_three_seeds(path):
    import yaml

    p = yaml.safe_load(path.read_text())
    exp = synthetic.make_experiment(path.stem, p["task"], p.get("task_params"), p.get("model"), p.get("train"),
                                    p.get("analysis"), seeds=p.get("seeds"))
    assert len(exp.seeds) >= 3, f"{path}: every default setting runs with at least 3 seeds"
    # the step cap leaves room for slow seeds; the clock cap is only a guard
    assert exp.train.max_steps >= 5000 and exp.train.max_seconds >= 1800
    # every seed is its own checkpoint
    from deltalens.synthetic.train import run_key

    assert len({run_key(exp.task, exp.model, exp.train_for(s)) for s in exp.seeds}) == len(exp.seeds)
