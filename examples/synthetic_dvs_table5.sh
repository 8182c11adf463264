#!/usr/bin/env bash
# The direction of the paper's Table 5 (DVS-CIFAR10: AT vs TGO+AT under frame attacks and an event
# attack) on the synthetic DVS set, on a CPU: small_conv on 32x32 two-polarity frames, T = 8,
# 10 epochs each; frame attacks at the paper's settings (FGSM, RFGSM, PGD7/10/30/50, eps 8/255,
# step 0.01) and the event-flip attack (and its random-flip baseline) at several budgets k.
#
#   bash examples/synthetic_dvs_table5.sh                    # from the repository root
#   OUT=runs/x N=300 EOT=8 PASSES=8 bash examples/synthetic_dvs_table5.sh
#
# Steps whose output exists are skipped. Noisy-LIF (TGO+AT) is attacked with EoT-$EOT gradients and
# judged over $PASSES passes; LIF (AT) is deterministic. Outputs: $OUT/{at,tgo-at}/ (runs),
# $OUT/{at,tgo-at}/eval/robustness.json and $OUT/table5.md (the summary table).
set -euo pipefail

OUT=${OUT:-runs/synthetic-dvs}
N=${N:-150}           # class-balanced test recordings per evaluation
EOT=${EOT:-4}
PASSES=${PASSES:-4}
KS=${KS:-1,2,5,10,20,50,100}
EPOCHS=${EPOCHS:-}    # empty: the presets' 10 epochs

for m in at at-tgo; do
  run="$OUT/$m"
  if [[ ! -f "$run/results.json" ]]; then
    resume=()
    [[ -f "$run/config.json" ]] && resume=(--resume)
    [[ -n "$EPOCHS" ]] && resume+=(--set "optim.epochs=$EPOCHS")
    spikeguard train --config "configs/cpu/synthetic-dvs-small_conv-$m.toml" --out "$run" --set 'eval.attacks=[]' \
      --no-progress "${resume[@]}"
  fi
  [[ -f "$run/eval/robustness.json" ]] && continue
  spikeguard evaluate --checkpoint "$run" --attacks fgsm,rfgsm,pgd7,pgd10,pgd30,pgd50 --event-ks "$KS" \
    --n-samples "$N" --eot "$EOT" --passes "$PASSES" --out "$run/eval" --no-progress --no-per-sample
done

python - "$OUT" <<'PY'
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
rows, ev = [], []
for m, label in (("at", "AT"), ("at-tgo", "TGO+AT")):
    d = json.loads((out / m / "eval" / "robustness.json").read_text())
    t, e = d["table"], d["events"]
    rows.append(f"| {label} | " + " | ".join(f"{100 * t[c]:.1f}" for c in
                ("clean", "FGSM", "RFGSM", "PGD7", "PGD10", "PGD30", "PGD50")) + " |")
    f, r, rc = e["event_flip"], e["random_flip"], e["rounding"]
    ev.append(f"| {label} | " + " | ".join(f"{100 * s:.1f} / {100 * q:.1f}" for s, q in
              zip(f["success_rate"], r["success_rate"])) +
              f" | {100 * rc['success_continuous']:.1f} -> {100 * rc['success_rounded']:.1f} |")
    ks = f["ks"]
lines = ["| model | clean | FGSM | RFGSM | PGD7 | PGD10 | PGD30 | PGD50 |", "|---|---|---|---|---|---|---|---|", *rows, "",
         "Event attack success rate % over originally correct samples, event-flip / random-flip, at k flipped "
         "event cells; last column: PGD-10 success on frames -> after rounding back to events:", "",
         "| model | " + " | ".join(f"k={k}" for k in ks) + " | PGD10 rounded |",
         "|---|" + "---|" * (len(ks) + 1), *ev]
(out / "table5.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
