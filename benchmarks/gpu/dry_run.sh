#!/usr/bin/env bash
# Check the whole GPU path on a CPU before a device run (a few minutes on 2 cores):
#   bash benchmarks/gpu/dry_run.sh            # PYTHON=/path/to/python to pick the interpreter
# 1. run_h200.sh with SPIKEGUARD_DRY_RUN=1: the Triton kernel tests in the interpreter
#    (TRITON_INTERPRET=1), the compile tests (SPIKEGUARD_TEST_COMPILE=1), the fused/surrogate tests,
#    and bench_gpu.py --tiny; then what would come back is checked against the limits;
# 2. study_h200.sh with SPIKEGUARD_DRY_RUN=1: the real GPU study file, its three phases (paper pair,
#    all protocols, tables) with tiny runs on random CIFAR-shaped parquet data, calibration included,
#    weights packed; the limits checked;
#    then again with a 125 s limit, so a phase is cut (or not started) and the tables phase writes from
#    what is there;
# 3. both GPU study files load and show bf16, GPU-resident data and the calibrated TGO row.
# Exit status 0 only if every step passed. Each step's output is in a temporary folder (printed).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
export SPIKEGUARD_DRY_RUN=1 TRITON_INTERPRET=1 SPIKEGUARD_TEST_COMPILE=1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} PYTHON=${PYTHON:-python3}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
TMP=$(mktemp -d /tmp/sg-dry.XXXX)
T0=$(date +%s)
FAIL=()
step() { echo "[dry-run $(( $(date +%s) - T0 )) s] $*"; }
need() {  # need DESCRIPTION COMMAND...: record a failure when the command fails
    local what=$1
    shift
    if "$@" > "$TMP/check.txt" 2>&1; then echo "  ok: $what"; else echo "  FAILED: $what"; sed 's/^/    /' "$TMP/check.txt" | tail -8; FAIL+=("$what"); fi
}

step "1/3 run_h200.sh (interpreter kernel tests, tiny benchmark) -> $TMP/run"
OUT="$TMP/run" LIMIT=${DRY_RUN_LIMIT:-420} TESTS_BUDGET=300 PER_FILE=300 bash benchmarks/gpu/run_h200.sh > "$TMP/run.log" 2>&1
need "run_h200.sh: every test file passed" grep -q "all files passed" "$TMP/run/tests_summary.md"
grep -A12 "^| file" "$TMP/run/tests_summary.md" | sed 's/^/    /'
need "run_h200.sh: benchmark wrote complete results" $PYTHON -c \
    "import json, sys; d = json.load(open('$TMP/run/gpu_tiny.json')); sys.exit(0 if d['complete'] and d['training'] else 1)"
need "run_h200.sh: OUT within 8 files of <= 16 MiB" $PYTHON benchmarks/gpu/pack_out.py "$TMP/run" --check

step "2/3 study_h200.sh (phases paper -> all -> tables, tiny) -> $TMP/study"
OUT="$TMP/study" STUDY_DIR="$TMP/study-dir" LIMIT=${DRY_STUDY_LIMIT:-360} bash benchmarks/gpu/study_h200.sh > "$TMP/study.log" 2>&1
need "study: paper phase completed" grep -q "phase paper: exit 0" "$TMP/study/study.log"
need "study: all phase completed" grep -q "phase all: exit 0" "$TMP/study/study.log"
need "study: both protocols in study.md" grep -q "(S)" "$TMP/study/study.md"
need "study: calibrated lambda used" grep -q "calibration of lambda_max for tgo" "$TMP/study/study.log"
need "study: weights of both runs came back" test -f "$TMP/study/weights-vanilla.safetensors" -a -f "$TMP/study/weights-tgo.safetensors"
need "study: bundle holds study.json and the runs" sh -c "tar -tzf '$TMP/study/bundle.tar.gz' | grep -q 'study/study.json' && tar -tzf '$TMP/study/bundle.tar.gz' | grep -q 'runs/tgo/results.json'"
need "study: OUT within 8 files of <= 16 MiB" $PYTHON benchmarks/gpu/pack_out.py "$TMP/study" --check

step "2b/3 study_h200.sh cut short (LIMIT 125 s): a phase is stopped or not started, the tables phase still writes -> $TMP/cut"
OUT="$TMP/cut" STUDY_DIR="$TMP/cut-dir" LIMIT=125 bash benchmarks/gpu/study_h200.sh > "$TMP/cut.log" 2>&1
grep "^phase" "$TMP/cut/study.log" | sed 's/^/    /'
need "cut study: a phase was stopped by the clock" grep -Eq "phase (paper|all): (exit 124|not started)" "$TMP/cut/study.log"
need "cut study: the tables phase wrote study.md, unfinished work listed" \
    sh -c "grep -q 'phase tables: exit 0' '$TMP/cut/study.log' && grep -q 'Not finished' '$TMP/cut/study.md'"
need "cut study: OUT within 8 files of <= 16 MiB" $PYTHON benchmarks/gpu/pack_out.py "$TMP/cut" --check

step "3/3 the GPU study files"
for s in cifar10-wrn16-table1-gpu-short cifar10-wrn16-table1-gpu-short-at; do
    SPIKEGUARD_DRY_RUN=0 need "$s loads" $PYTHON benchmarks/gpu/study_phase.py "configs/studies/$s.toml" --out "$TMP/x" --check --device cuda
    grep "^  " "$TMP/check.txt" | sed 's/^/    /'
done

step "done in $(( $(date +%s) - T0 )) s; outputs in $TMP"
if [ "${#FAIL[@]}" -gt 0 ]; then
    echo "DRY RUN FAILED: ${FAIL[*]}"
    exit 1
fi
echo "DRY RUN PASSED"
