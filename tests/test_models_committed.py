"""The committed checkpoints under models/ are intact and are what their recipes trained (hash-checked)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from deltalens.codelm.params import load_params

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = {"code-lm-hybrid-attnfirst": "params/codelm/hybrid-attnfirst.yaml"}


@pytest.mark.parametrize("name", sorted(COMMITTED))
def test_every_file_matches_its_sha256(name):
    folder = ROOT / "models" / name
    lines = (folder / "SHA256SUMS").read_text().split("\n")
    listed = dict(reversed(line.split(maxsplit=1)) for line in lines if line.strip())
    assert {"model.safetensors", "tokenizer.json", "training.json", "config.json"} <= set(listed)
    assert sorted(p.name for p in folder.iterdir() if p.name != "SHA256SUMS") == sorted(listed)
    for file, digest in listed.items():
        assert hashlib.sha256((folder / file).read_bytes()).hexdigest() == digest, f"{name}/{file} changed"
    assert sum((folder / f).stat().st_size for f in listed) < 25 * 2**20  # the size limit


@pytest.mark.parametrize("name", sorted(COMMITTED))
def test_the_checkpoint_is_its_recipe_s_model_and_loads(name):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = ROOT / "models" / name
    record = json.loads((folder / "training.json").read_text())
    recipe = load_params(ROOT / COMMITTED[name])
    assert record["params"] == json.loads(json.dumps(recipe.content_params(), default=list))
    assert record["train"]["stopped_by"] == "max_steps" and record["train"]["steps"] == recipe.train.max_steps
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    assert sum(p.numel() for p in model.parameters()) == record["model"]["n_parameters"]
    ids = torch.tensor([tok("def f(x):\n    return x\n")["input_ids"]])
    with torch.no_grad():
        assert torch.isfinite(model(ids).logits).all()
