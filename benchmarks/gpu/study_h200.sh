#!/usr/bin/env bash
# Issue 16's GPU run in one device command (Table 1 in one short window): run HERE first
#   bash benchmarks/gpu/prepare_h200.sh          # shared_copy/cifar10-parquet (+ benchmark wheels)
# then, with the device tool, from the repo root:
#   run(command="bash benchmarks/gpu/study_h200.sh", carry=["shared_copy"], timeout_s=540)
# For the AT pair in a second window: STUDY=cifar10-wrn16-table1-gpu-short-at bash benchmarks/gpu/study_h200.sh
#
# It trains and evaluates configs/studies/$STUDY.toml with --budget (epochs chosen from a measured
# probe epoch), stops the study at $LIMIT seconds whatever stage it is in, and writes the comparison
# from what finished (`spikeguard study --tables-only`: unfinished work is listed, not filled in).
# What comes back ($OUT, 8 files at most, 16 MiB each):
#   env.txt  study.log  study.md  study.json  report.html  accuracy.png  near_threshold.png
#   runs.tar.gz   every run's config.json, log.jsonl, results.json and evaluation JSON (no weights)
# Record every number in docs/results/ with hardware, date, command and commit.
set -uo pipefail
OUT=${OUT:-/tmp/sg-out}
STUDY=${STUDY:-cifar10-wrn16-table1-gpu-short}
BUDGET=${BUDGET:-7m}      # governs training (the study keeps [budget].eval_reserve of it for evaluation)
LIMIT=${LIMIT:-450}       # hard stop of the study, seconds; leaves time for the tables and the copy
DEVICE=${DEVICE:-cuda}     # DEVICE=cpu STUDY=cpu-digits-smoke LIMIT=20 tries the script on a CPU
DIR=runs/$STUDY
mkdir -p "$OUT" "$DIR"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
SG="python3 -m spikeguard"
{
    date -u; git rev-parse HEAD 2>/dev/null; nvidia-smi
    python3 -c "import sys, torch; print(sys.version); print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
} > "$OUT/env.txt" 2>&1
[ -f shared_copy/cifar10-parquet/train.parquet ] || echo "shared_copy/cifar10-parquet is missing: run benchmarks/gpu/prepare_h200.sh and carry shared_copy" | tee -a "$OUT/env.txt"
echo "command: spikeguard study configs/studies/$STUDY.toml --out $DIR --budget $BUDGET --device $DEVICE (stopped at ${LIMIT} s)" > "$OUT/study.log"
timeout --signal=TERM --kill-after=20 "$LIMIT" $SG study "configs/studies/$STUDY.toml" --out "$DIR" --budget "$BUDGET" \
    --device "$DEVICE" --no-progress >> "$OUT/study.log" 2>&1
rc=$?
echo "study exit $rc" >> "$OUT/study.log"
if [ "$rc" -ne 0 ]; then  # stopped or failed: the comparison from what finished
    timeout 60 $SG study "configs/studies/$STUDY.toml" --out "$DIR" --tables-only >> "$OUT/study.log" 2>&1
    echo "tables-only exit $?" >> "$OUT/study.log"
fi
for f in study.md study.json report.html figures/accuracy.png figures/near_threshold.png; do
    [ -f "$DIR/$f" ] && cp "$DIR/$f" "$OUT/"
done
(cd "$DIR" && find . \( -name '*.json' -o -name 'log.jsonl' -o -name '*.md' \) -not -path './.probe/*' -print0 \
    | tar --null -czf "$OUT/runs.tar.gz" --files-from=-)
ls -la "$OUT"
tail -40 "$OUT/study.log"
