import os
import tempfile

import pytest
import torch

# Tests never write into the user's ~/.cache/spikeguard (data arrays, compiled LIF kernels):
# the whole session uses a temporary cache, unless SPIKEGUARD_CACHE points elsewhere already.
if not os.environ.get("SPIKEGUARD_CACHE"):
    import atexit
    import shutil

    os.environ["SPIKEGUARD_CACHE"] = tempfile.mkdtemp(prefix="spikeguard-test-cache-")
    atexit.register(shutil.rmtree, os.environ["SPIKEGUARD_CACHE"], True)

# Two cores in CI: one intra-op thread per test process keeps runs predictable.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
