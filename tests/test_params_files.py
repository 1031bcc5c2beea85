"""Every committed recipe and extraction parameter file is valid before any training starts.

A recipe that fails to parse — or a stage that continues a model of another shape — would otherwise surface only
after the previous stage's half hour of training. These checks read the files only (no model is built).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest
import yaml

from deltalens.codelm.params import load_params
from deltalens.extract.config import config_from_params

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "params" / "codelm").glob("*.yaml"))
EXTRACTS = sorted((ROOT / "params").glob("extract*/*.yaml"))
MAKEFILES = "\n".join(p.read_text() for p in [ROOT / "Makefile", *sorted((ROOT / "mk").glob("*.mk"))])


@cache
def _load(path: Path):
    return load_params(path)


@cache
def _recipes_by_out() -> dict[str, object]:
    return {_load(p).out: _load(p) for p in RECIPES}


def test_the_parameter_folders_hold_files():
    assert len(RECIPES) >= 10 and len(EXTRACTS) >= 4


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_recipe_parses_and_is_reachable_from_make(path):
    params = _load(path)
    assert params.out.startswith("data/models/") or params.out.startswith("models/")
    assert str(path.relative_to(ROOT)) in MAKEFILES, f"{path.name}: no make target reads it"


@pytest.mark.parametrize("path", [p for p in RECIPES if _load(p).init_from], ids=lambda p: p.name)
def test_a_continued_recipe_starts_from_a_recipe_of_the_same_model(path):
    params = _load(path)
    by_out = _recipes_by_out()
    assert params.init_from in by_out, f"{path.name}: init_from {params.init_from} is no recipe's out"
    parent = by_out[params.init_from]
    assert parent.model == params.model, f"{path.name}: its model differs from {params.init_from}'s"
    assert parent.tokenizer == params.tokenizer and parent.corpus == params.corpus


@pytest.mark.parametrize("path", EXTRACTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_extraction_parameter_file_is_a_valid_config(path):
    doc = yaml.safe_load(path.read_text())
    cfg = config_from_params(doc)
    models = set(_recipes_by_out()) | {str(p.relative_to(ROOT)) for p in (ROOT / "models").glob("*")
                                        if (ROOT / "models").is_dir()}
    if cfg.model.startswith("data/models/"):
        assert cfg.model in models, f"{path.name}: model {cfg.model} is no recipe's out"
    # params/extract/ by the wildcard of mk/extract.mk; params/extract-optional/<run>.yaml by its pattern rule, for
    # the notebook a target names with $(call OPTIONAL_NB,<run>)
    assert path.parent.name == "extract" or f"$(call OPTIONAL_NB,{path.stem})" in MAKEFILES, \
        f"{path.name}: no make target reads it"
