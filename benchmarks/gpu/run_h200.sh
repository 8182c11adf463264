#!/usr/bin/env bash
# The one command of the GPU run (issue 15), executed by the device tool in the repo root:
#   bash benchmarks/gpu/run_h200.sh
# with carry ["shared_copy", ".whl"] (made by benchmarks/gpu/prepare_h200.sh) and timeout_s 450.
# It writes into $OUT (what comes back; at most 8 files):
#   env.txt        nvidia-smi, python/torch/triton versions
#   tests.log      the kernel/precision/data tests, now compiled for the GPU (no interpreter)
#   bench.log      the benchmark's progress log
#   gpu_h200.json  every measured figure (benchmarks/bench_gpu.py)
#   gpu_h200.md    the tables and the targets met or not
# Budget: tests <= 100 s, benchmark <= 300 s (its own --budget-s skips optional parts after 230 s).
set -uo pipefail
OUT=${OUT:-/tmp/sg-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
{
    date -u; nvidia-smi; python3 -c "import sys, torch, triton; print(sys.version); print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__, torch.cuda.get_device_name(0))"
    python3 -c "import spikingjelly, snntorch; print('spikingjelly and snntorch import')" 2>&1 | tail -1
} > "$OUT/env.txt" 2>&1
timeout 100 python3 -m pytest -q -x -p no:cacheprovider tests/test_triton_scan.py tests/test_perf.py \
    tests/test_gpu_data.py tests/test_fused.py tests/test_surrogate_extension.py > "$OUT/tests.log" 2>&1
echo "tests exit $?" >> "$OUT/tests.log"
DATA=shared_copy/cifar10-parquet
[ -f "$DATA/train.parquet" ] || DATA=""
timeout 300 python3 benchmarks/bench_gpu.py ${DATA:+--data "$DATA"} --out "$OUT" --budget-s 230 2>&1 | tee "$OUT/bench.log" | tail -60
