import os

import pytest
import torch

# Two cores in CI: one intra-op thread per test process keeps runs predictable.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
