"""The committed checkpoints under models/ are intact and are what their recipes trained (hash-checked)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from deltalens.codelm.params import load_params

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = {"code-lm-hybrid-attnfirst": "params/codelm/hybrid-attnfirst.yaml"}


@pytest.mark.parametrize("name", sorted(COMMITTED))
def test_every_file_matches_its_sha256(name):
    from deltalens.codelm.committed import read_sums, verify_checkpoint

    folder = ROOT / "models" / name
    listed = read_sums(folder)
    assert {"model.safetensors", "tokenizer.json", "training.json", "config.json"} <= set(listed)
    assert sorted(p.name for p in folder.iterdir() if p.name != "SHA256SUMS") == sorted(listed)
    assert verify_checkpoint(folder)["files"] == listed        # raises, naming the file, if any hash differs
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


@pytest.mark.parametrize("name", sorted(COMMITTED))
def test_verify_checkpoint_passes_on_the_committed_folder_and_the_cli_writes_its_stamp(name, tmp_path):
    from deltalens.codelm.__main__ import main
    from deltalens.codelm.committed import verify_checkpoint

    info = verify_checkpoint(ROOT / "models" / name)
    assert set(info["files"]) >= {"model.safetensors", "training.json"} and info["bytes"] < 25 * 2**20
    stamp = tmp_path / "v" / f"{name}.ok"
    assert main(["verify", str(ROOT / "models" / name), "--stamp", str(stamp)]) == 0
    assert json.loads(stamp.read_text())["files"] == info["files"]


def _copy(name, tmp_path):
    import shutil

    dst = tmp_path / name
    shutil.copytree(ROOT / "models" / name, dst)
    return dst


@pytest.mark.parametrize("change, message", [
    ("flip", "model.safetensors: sha256"),
    ("extra", "stray.bin not listed"),
    ("missing", "config.json: listed in SHA256SUMS but missing"),
    ("no_sums", "no SHA256SUMS"),
    ("bad_line", "SHA256SUMS:1: expected"),
])
def test_verify_checkpoint_names_what_is_wrong(change, message, tmp_path, capsys):
    from deltalens.codelm.__main__ import main
    from deltalens.codelm.committed import CheckpointError, verify_checkpoint

    name = min(COMMITTED)
    folder = _copy(name, tmp_path)
    if change == "flip":
        data = bytearray((folder / "model.safetensors").read_bytes())
        data[-1] ^= 1
        (folder / "model.safetensors").write_bytes(bytes(data))
    elif change == "extra":
        (folder / "stray.bin").write_bytes(b"x")
    elif change == "missing":
        (folder / "config.json").unlink()
    elif change == "no_sums":
        (folder / "SHA256SUMS").unlink()
    else:
        (folder / "SHA256SUMS").write_text("nonsense\n" + (ROOT / "models" / name / "SHA256SUMS").read_text())
    with pytest.raises(CheckpointError, match=message.replace("(", r"\(")):
        verify_checkpoint(folder)
    stamp = tmp_path / "stamp.ok"
    assert main(["verify", str(folder), "--stamp", str(stamp)]) == 2 and not stamp.exists()
    assert "checkpoint error" in capsys.readouterr().err
