# Sourced by the device scripts (run_h200.sh, study_h200.sh): repo root, $OUT, $PY, the clock.
#   SPIKEGUARD_DRY_RUN=1  the same steps on a CPU with tiny sizes (benchmarks/gpu/dry_run.sh)
#   PYTHON                the interpreter (default python3)
#   OUT                   what comes back (the device tool sets it; default a temporary folder)
#   LIMIT                 seconds the whole script may take (each script sets its default)
cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 2
DRY=${SPIKEGUARD_DRY_RUN:-0}
[ "$DRY" = "0" ] && DRY=""
PY=${PYTHON:-python3}
OUT=${OUT:-$(mktemp -d /tmp/sg-out.XXXX)}
mkdir -p "$OUT"
T_START=$(date +%s)
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"

elapsed() { echo $(( $(date +%s) - T_START )); }
left() { echo $(( LIMIT - $(elapsed) )); }

# env.txt: date, commit, GPU, versions (best effort: every line may fail on a CPU)
write_env() {
    {
        date -u; git rev-parse HEAD 2>/dev/null || echo "commit: no git metadata in this copy"
        [ -n "$DRY" ] && echo "DRY RUN (SPIKEGUARD_DRY_RUN=1): tiny sizes on $(uname -m), nothing here is a measurement"
        nvidia-smi 2>&1 | head -20
        $PY -c "import sys, torch; print(sys.version); print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA device')"
        $PY -c "import triton; print('triton', triton.__version__)" 2>&1 | tail -1
        $PY -c "import pyarrow, PIL; print('pyarrow', pyarrow.__version__, '(the parquet data needs it)')" 2>&1 | tail -1
        $PY -c "import spikingjelly, snntorch; print('spikingjelly and snntorch import')" 2>&1 | tail -1
    } > "$OUT/env.txt" 2>&1
}
