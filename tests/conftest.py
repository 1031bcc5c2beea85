import os

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)


@pytest.fixture(scope="session")
def ds(tmp_path_factory):
    """The smoke-profile context dataset with 3 samples per project, built once per test session (read-only: tests
    must not modify it). A test module that needs another dataset defines its own ``ds`` fixture."""
    from deltalens.context import build, load, load_params
    from deltalens.core.paths import project_root

    out = tmp_path_factory.mktemp("ctx")
    build(load_params(project_root() / "params/dataset/smoke.yaml", {"out": str(out), "samples_per_project": 3}),
          progress=False)
    return load(out)
