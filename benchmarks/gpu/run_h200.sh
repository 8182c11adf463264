#!/usr/bin/env bash
# Tests + benchmark on the GPU in one device command (the first of the two windows in
# docs/performance.md, "Before a device run"):
#   run(command="bash benchmarks/gpu/run_h200.sh", carry=["shared_copy", ".whl"], timeout_s=270)
# carry made here by benchmarks/gpu/prepare_h200.sh. Steps, each checking the clock (LIMIT s in all):
#   1. every test file, TEST_JOBS at a time, each under PER_FILE s, none started after TESTS_BUDGET s;
#      failures do not stop anything (benchmarks/gpu/run_tests.py: tests.log, tests_summary.md)
#   2. benchmarks/bench_gpu.py with the time left (its --budget-s skips the sections that would not
#      fit; it rewrites gpu_<tag>.json/.md after every row and section, so a cut run keeps them)
#   3. $OUT packed to what comes back (benchmarks/gpu/pack_out.py: <= 8 files, <= 15 MiB each)
# SPIKEGUARD_DRY_RUN=1: the interpreter kernel tests and a tiny benchmark on a CPU (dry_run.sh).
set -uo pipefail
source "$(dirname "$0")/common.sh"
LIMIT=${LIMIT:-240}
TESTS_BUDGET=${TESTS_BUDGET:-90}
PER_FILE=${PER_FILE:-120}
TEST_JOBS=${TEST_JOBS:-8}
PACK_S=15
TEST_FILES=${TEST_FILES:-}
BENCH_ARGS=${BENCH_ARGS:---steps 10 --warmup 3}
if [ -n "$DRY" ]; then
    TEST_FILES=${TEST_FILES:-tests/test_triton_scan.py tests/test_gpu_path.py tests/test_surrogate_extension.py}
    TEST_JOBS=${DRY_TEST_JOBS:-2}
    BENCH_ARGS="--models vgg11 --sj-backends --no-compile"
fi
if [ -z "$DRY" ] && ls .whl/*.whl >/dev/null 2>&1; then  # benchmark-only packages (SpikingJelly, snnTorch)
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
write_env
echo "[run_h200] tests (budget ${TESTS_BUDGET} s, ${PER_FILE} s per file, ${TEST_JOBS} at a time)"
# shellcheck disable=SC2086
$PY benchmarks/gpu/run_tests.py --out "$OUT" --jobs "$TEST_JOBS" --per-file "$PER_FILE" --budget "$TESTS_BUDGET" \
    $TEST_FILES | head -5
echo "[run_h200] tests done at $(elapsed) s"
DATA=shared_copy/cifar10-parquet
[ -f "$DATA/train.parquet" ] || DATA=""
T_BENCH=$(( $(left) - PACK_S ))
if [ "$T_BENCH" -gt 30 ]; then
    echo "[run_h200] benchmark, ${T_BENCH} s left for it"
    # shellcheck disable=SC2086
    timeout --signal=TERM --kill-after=5 "$T_BENCH" $PY benchmarks/bench_gpu.py ${DATA:+--data "$DATA"} --out "$OUT" \
        --budget-s $(( T_BENCH - 20 )) $BENCH_ARGS > "$OUT/bench.log" 2>&1
    echo "bench exit $? at $(elapsed) s" >> "$OUT/bench.log"
    tail -3 "$OUT/bench.log"
else
    echo "benchmark not run: ${T_BENCH} s left" > "$OUT/bench.log"
fi
# shellcheck disable=SC2046
$PY benchmarks/gpu/pack_out.py "$OUT" --keep tests_summary.md env.txt $(cd "$OUT" && ls gpu_*.md gpu_*.json 2>/dev/null) \
    bench.log tests.log
echo "[run_h200] done in $(elapsed) s"
