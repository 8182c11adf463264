#!/usr/bin/env bash
# The GPU study in one device command (the second window in docs/performance.md, "Before a device
# run"). Prepare here first: bash benchmarks/gpu/prepare_h200.sh (shared_copy/cifar10-parquet), then
#   run(command="bash benchmarks/gpu/study_h200.sh", carry=["shared_copy"], timeout_s=430)
# AT pair in another window: STUDY=cifar10-wrn16-table1-gpu-short-at (CALIBRATION_FROM=<a
# calibration.json> reuses a lambda_max instead of calibrating, if that window is short).
#
# Phases in one folder (benchmarks/gpu/study_phase.py), each under the time left of LIMIT s:
#   paper   calibration, training of every run, the paper protocol: a complete vanilla + TGO pair first
#   all     the strong protocol added (everything finished above is reused)
#   tables  --tables-only: the comparison from what finished (unfinished work listed, not filled in)
# BUDGET is the study's --budget (training epochs from a measured probe epoch; the calibration, ~1 min
# estimated, comes on top of it). What comes back ($OUT, packed by pack_out.py to <= 8 files):
#   study.md  study.log  env.txt  weights-<run>.safetensors (the trained models, where they fit)
#   bundle.tar.gz: study.json, report.html, figures, calibration.json/.md, every run's config.json,
#                  log.jsonl, results.json and evaluation JSON
# Record every number in docs/results/ with hardware, date, command and commit.
set -uo pipefail
source "$(dirname "$0")/common.sh"
STUDY=${STUDY:-cifar10-wrn16-table1-gpu-short}
LIMIT=${LIMIT:-400}
BUDGET=${BUDGET:-3m}
DEVICE=${DEVICE:-cuda}
TABLES_S=45    # kept for the tables phase
PACK_S=25      # kept for copying and packing
EXTRA=()
if [ -n "$DRY" ]; then
    DEVICE=cpu BUDGET=${DRY_BUDGET:-15s}
    DATA_TMP=$(mktemp -d /tmp/sg-dry-data.XXXX)
    EXTRA=(--dry-run --make-data "$DATA_TMP/cifar10-parquet")
fi
DIR=${STUDY_DIR:-runs/$STUDY}
LOG="$OUT/study.log"
mkdir -p "$DIR"
write_env
[ -n "$DRY" ] || [ -f shared_copy/cifar10-parquet/train.parquet ] \
    || echo "shared_copy/cifar10-parquet is missing: run benchmarks/gpu/prepare_h200.sh and carry shared_copy" | tee -a "$OUT/env.txt"
if [ -n "${CALIBRATION_FROM:-}" ] && [ ! -f "$DIR/calibration/calibration.json" ]; then
    mkdir -p "$DIR/calibration" && cp "$CALIBRATION_FROM" "$DIR/calibration/calibration.json" \
        && echo "calibration: lambda_max taken from $CALIBRATION_FROM (not calibrated in this study)" >> "$LOG"
fi

phase() {  # phase NAME [study args...]: run one phase in the time left, minus what later steps need
    local name=$1 t
    shift
    t=$(( $(left) - TABLES_S - PACK_S ))
    if [ "$t" -lt 20 ]; then
        echo "phase $name: not started, $(left) s left" >> "$LOG"
        return 1
    fi
    echo "phase $name: $PY benchmarks/gpu/study_phase.py configs/studies/$STUDY.toml --out $DIR --phase $name $* (limit $t s)" >> "$LOG"
    timeout --signal=TERM --kill-after=10 "$t" $PY benchmarks/gpu/study_phase.py "configs/studies/$STUDY.toml" \
        --out "$DIR" --phase "$name" "${EXTRA[@]}" "$@" >> "$LOG" 2>&1
    local rc=$?
    echo "phase $name: exit $rc at $(elapsed) s" >> "$LOG"
    return $rc
}

if phase paper --budget "$BUDGET" --device "$DEVICE" && phase all --budget "$BUDGET" --device "$DEVICE"; then
    echo "phase tables: not needed, phase all wrote the complete tables" >> "$LOG"
elif [ $(( $(left) - PACK_S )) -gt 10 ]; then
    LIMIT_TABLES=$(( $(left) - PACK_S ))
    timeout "$LIMIT_TABLES" $PY benchmarks/gpu/study_phase.py "configs/studies/$STUDY.toml" --out "$DIR" --phase tables \
        "${EXTRA[@]}" --device "$DEVICE" >> "$LOG" 2>&1
    echo "phase tables: exit $? at $(elapsed) s" >> "$LOG"
fi

# what comes back: the tables loose, the rest bundled, the final weights of each run where they fit
cp "$DIR/study.md" "$OUT/" 2>/dev/null
(cd "$DIR" && find . -path ./.probe -prune -o -path '*/epoch*' -prune -o -type f \
    \( -name '*.json' -o -name 'log.jsonl' -o -name '*.md' -o -name '*.html' -o -name '*.png' \) -print \
    | grep -v '^./calibration/.*-s[0-9]*/' | while read -r f; do mkdir -p "$OUT/study/$(dirname "$f")"; cp "$f" "$OUT/study/$f"; done)
KEEP=(study.md study.log env.txt)
for w in "$DIR"/runs/*/model.safetensors; do
    [ -f "$w" ] || continue
    run=$(basename "$(dirname "$w")")
    cp "$w" "$OUT/weights-$run.safetensors" && KEEP+=("weights-$run.safetensors")
done
$PY benchmarks/gpu/pack_out.py "$OUT" --keep "${KEEP[@]}" | tee -a "$LOG"
[ -n "$DRY" ] && rm -rf "$DATA_TMP"
echo "study_h200: done in $(elapsed) s"
tail -25 "$LOG"
