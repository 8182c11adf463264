import os
import tempfile

import pytest
import torch

# Without a GPU, Triton kernels (tests/test_triton_scan.py, only where Triton is installed)
# run in Triton's interpreter; the switch must be set before anything imports Triton.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
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
