import os

import pytest
import torch

os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)
