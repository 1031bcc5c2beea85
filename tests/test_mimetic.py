"""Mimetic-style initialisation (deltalens.codelm.mimetic): Mamba-2 mixers get C = B after the convolution, Mamba-1
mixers C = B out of x_proj, both a slow decay; ``model.init: mimetic`` applies it when the trainer builds a model from
scratch, and leaves every older recipe's reuse key alone."""

from __future__ import annotations

import math

import pytest
import torch
import transformers
from deltalens.codelm.mimetic import mamba1_split, mimetic_init_
from deltalens.codelm.params import CodeLMParams, load_params
from deltalens.core.params import ParameterError

SMOKE = "params/codelm/smoke.yaml"


def _mamba2():
    torch.manual_seed(0)
    cfg = transformers.Mamba2Config(vocab_size=64, hidden_size=32, num_hidden_layers=2, state_size=16, num_heads=2,
                                    head_dim=32, n_groups=1, chunk_size=16)
    return transformers.Mamba2ForCausalLM(cfg).eval()


def test_c_equals_b_after_the_convolution_and_the_decay_slows():
    model = _mamba2()
    before = [m.A_log.clone() for m in model.modules() if hasattr(m, "A_log")]
    assert mimetic_init_(model, a_scale=0.01) == 2
    for m, a0 in zip([m for m in model.modules() if hasattr(m, "A_log")], before):
        inner, g = m.intermediate_size, m.n_groups * m.ssm_state_size
        h = torch.randn(1, 10, 32)
        xbc = m.in_proj(h)[..., inner:inner + m.conv_dim].transpose(1, 2)
        conv = m.conv1d(xbc)[..., :10].transpose(1, 2)
        b, c = conv[..., inner:inner + g], conv[..., inner + g:inner + 2 * g]
        torch.testing.assert_close(b, c)
        torch.testing.assert_close(-torch.exp(m.A_log), 0.01 * -torch.exp(a0))
        assert not torch.equal(conv[..., :inner], conv[..., inner:2 * inner])   # x is untouched
    ids = torch.randint(0, 64, (1, 12))
    with torch.no_grad():
        assert torch.isfinite(model(ids).logits).all()


def test_the_hybrid_s_mamba_layers_change_and_a_model_without_one_is_an_error():
    torch.manual_seed(0)
    cfg = transformers.BambaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=3, intermediate_size=64,
                                   attn_layer_indices=[0], num_attention_heads=2, num_key_value_heads=2,
                                   mamba_n_heads=2, mamba_d_head=32, mamba_n_groups=1, mamba_d_state=16,
                                   mamba_chunk_size=16)
    assert mimetic_init_(transformers.BambaForCausalLM(cfg)) == 2
    llama = transformers.LlamaForCausalLM(transformers.LlamaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1,
                                                                    intermediate_size=64, num_attention_heads=2))
    with pytest.raises(ValueError, match="no Mamba-1 or Mamba-2 mixer"):
        mimetic_init_(llama)
    with pytest.raises(ValueError, match="a_scale"):
        mimetic_init_(_mamba2(), a_scale=math.inf)


def _mamba1_models():
    from deltalens.codelm.model import CodeLMConfig, build_lm

    torch.manual_seed(0)
    hf = transformers.MambaForCausalLM(transformers.MambaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                                                                state_size=8))
    return {"mambapy": build_lm(CodeLMConfig(d_model=32, n_layers=2, d_state=8), 64, 0), "transformers": hf.eval()}


@pytest.mark.parametrize("kind", ["mambapy", "transformers"])
def test_mamba1_c_equals_b_out_of_x_proj_and_the_decay_slows(kind):
    model = _mamba1_models()[kind]
    mixers = [m for m in model.modules() if mamba1_split(m) is not None]
    assert len(mixers) == 2 and all(mamba1_split(m) == (2, 8) for m in mixers)   # dt_rank ceil(32 / 16), d_state
    before = [(m.A_log.clone(), m.x_proj.weight.clone()) for m in mixers]
    assert mimetic_init_(model, a_scale=0.05) == 2
    for m, (a0, w0) in zip(mixers, before):
        r, n = mamba1_split(m)
        u = torch.randn(3, 5, m.x_proj.in_features)
        dbc = m.x_proj(u)
        torch.testing.assert_close(dbc[..., r:r + n], dbc[..., r + n:])        # C = B for every input
        torch.testing.assert_close(torch.exp(m.A_log), 0.05 * torch.exp(a0))  # A = -exp(A_log) scaled
        torch.testing.assert_close(m.x_proj.weight[:r + n], w0[:r + n])       # Δ's and B's rows untouched
    ids = torch.randint(0, 64, (1, 12))
    with torch.no_grad():
        out = model(ids)
        assert torch.isfinite(out if torch.is_tensor(out) else out.logits).all()


def test_model_init_mimetic_is_checked_and_keeps_older_keys():
    assert "init" not in load_params(SMOKE).content_params()["model"]          # default: the key it always had
    p = load_params(SMOKE, {"model.init": "mimetic"})
    assert p.content_params()["model"]["init"] == "mimetic" and p.content_params()["model"]["mimetic_a_scale"] == 0.01
    assert p.key("sha") != load_params(SMOKE).key("sha")
    assert load_params(SMOKE, {"model.init": "mimetic", "model.mimetic_a_scale": 0.1}).key("sha") != p.key("sha")
    for override, match in [({"model.init": "copy"}, r"init='copy' is not allowed; allowed: default, mimetic"),
                            ({"model.init": "mimetic", "model.mimetic_a_scale": 2.0}, r"mimetic_a_scale=2.0"),
                            ({"model.arch": "attention", "model.init": "mimetic"}, r"arch: attention has none")]:
        with pytest.raises(ParameterError, match=match):
            load_params(SMOKE, override)


@pytest.mark.parametrize("arch", ["mamba1", "mamba2"])
def test_the_trainer_builds_a_mimetic_model_from_scratch_only(arch, tmp_path):
    from deltalens.codelm.train import build_model

    over = {"model.arch": arch, **({"model.head_dim": 16, "model.chunk_size": 16} if arch == "mamba2" else {})}
    plain = build_model(load_params(SMOKE, over), 64, None, {})
    mim = build_model(load_params(SMOKE, {**over, "model.init": "mimetic"}), 64, None, {})
    a_plain = [m.A_log for m in plain.modules() if hasattr(m, "A_log")]
    a_mim = [m.A_log for m in mim.modules() if hasattr(m, "A_log")]
    assert a_plain and all(torch.allclose(a - b, torch.full_like(a, math.log(0.01))) for a, b in zip(a_mim, a_plain))
    if arch == "mamba2":    # continuing a saved model (init_from) loads its weights, with no mimetic change on top
        saved = tmp_path / "saved"
        plain.to_transformers().save_pretrained(saved)
        cont = build_model(load_params(SMOKE, {**over, "model.init": "mimetic"}), 64, saved, {})
        for a, b in zip([m.A_log for m in cont.modules() if hasattr(m, "A_log")], a_plain):
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize("family, min_state", [("mamba2", 128), ("mamba1", 64)])
def test_the_shipped_mimetic_recipes_are_the_attention_first_hybrid_s_but_the_model(family, min_state):
    warm = load_params(f"params/codelm/{family}-mimetic-warm.yaml")
    stage2 = load_params(f"params/codelm/{family}-mimetic.yaml")
    plain = load_params(f"params/codelm/{family}-mimetic-plain.yaml")
    assert warm.model == stage2.model == plain.model and warm.model.arch == family and warm.model.init == "mimetic"
    assert warm.model.d_state >= min_state and stage2.init_from == warm.out and warm.init_from is None is plain.init_from
    for ours, theirs in ((warm, "params/codelm/hybrid-attnfirst-warm.yaml"), (stage2, "params/codelm/hybrid-attnfirst.yaml"),
                         (plain, "params/codelm/hybrid-attnfirst-plain.yaml")):
        a, b = ours.content_params(), load_params(theirs).content_params()
        for c in (a, b):
            c.pop("model"), c.pop("init_from", None), c["train"].pop("threads")
        # the time guard only: Mamba-1's mambapy scan is hours on a CPU, so its guard is wider (never the stop there)
        assert a["train"].pop("max_minutes") >= b["train"].pop("max_minutes")
        if ours is warm:   # stage 1 runs at the mimetic proxy's learning rate, for 1,200 steps
            assert (a["train"].pop("lr"), a["train"].pop("max_steps")) == (3.0e-3, 1200)
            b["train"].pop("lr"), b["train"].pop("max_steps")
        assert a == b
    if family == "mamba1":  # the same width and depth as the pure Mamba-2: the two pure SSMs differ in the mixer
        m2 = load_params("params/codelm/mamba2-mimetic.yaml").model
        assert (warm.model.d_model, warm.model.n_layers, warm.model.expand) == (m2.d_model, m2.n_layers, m2.expand)


def test_the_recipe_step_bench_times_every_family_s_recipe_with_its_own_model(tmp_path):
    """bench/bench_recipe_steps.py --tiny: one row per recipe, in the order given, each built by the trainer's
    build_model (the family and init of its params file), its steps timed and finite, hours = s/step x max_steps."""
    import json
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "bench"))
    import bench_recipe_steps as bench

    files = ["params/codelm/mamba1-mimetic-warm.yaml", "params/codelm/mamba2-mimetic.yaml",
             "params/codelm/hybrid-attnfirst.yaml"]
    out = tmp_path / "steps.json"
    res = bench.main(["--tiny", "--threads", "1", "--steps", "2", "--params", *files, "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(res))
    rows = res["recipes"]
    assert [r["params_file"] for r in rows] == files and [r["arch"] for r in rows] == ["mamba1", "mamba2", "hybrid"]
    assert [r["init"] for r in rows] == ["mimetic", "mimetic", "default"]
    assert rows[0]["ratio_to_first"] is None and all(r["ratio_to_first"] > 0 for r in rows[1:])
    for r, f in zip(rows, files):
        assert len(r["seconds_per_step_all"]) == 2 and r["seconds_per_step"] > 0
        assert (r["batch_size"], r["seq_len"], r["d_model"]) == (2, 32, 16)          # --tiny's shapes
        assert r["max_steps"] == load_params(f).train.max_steps                       # the recipe's own run length
        assert r["hours_for_max_steps"] == pytest.approx(r["seconds_per_step"] * r["max_steps"] / 3600)
    assert rows[0]["d_state"] == load_params(files[0]).model.d_state == 64         # the recipe's state, kept
    assert all(r["recorded_training_json"] is None for r in rows)                 # a tiny model is not the recipe's
    with pytest.raises(SystemExit):
        bench.main(["--tiny", "--params", "params/codelm/no-such-recipe.yaml", "--out", str(out)])
