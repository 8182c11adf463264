#!/usr/bin/env bash
# BPTT, TGO, AT and TGO+AT on the CPU preset (reduced VGG-11, 10,000-image CIFAR-10 subset, T=4,
# 5 epochs), each attacked with FGSM, RFGSM and PGD-10 (step 0.01) at eps 2, 4 and 8 /255, and
# the tables of the paper's two comparisons (TGO vs BPTT, TGO+AT vs AT) with deltas in points.
#
#   bash examples/cifar_subset_strategies.sh            # from the repository root, ../shared beside it
#   OUT=runs/x N=500 EOT=4 bash examples/cifar_subset_strategies.sh
#
# Every step is skipped when its output exists (an interrupted training run is resumed), so the
# script can be re-run after a stop. Noisy-LIF models are attacked with EoT-$EOT gradients and
# judged over $PASSES forward passes; LIF models are deterministic (EoT and passes are 1).
# Outputs: $OUT/<model>/ (run folders), $OUT/<model>/eval-<eps>/robustness.json, and
# $OUT/table-{bptt,at}/sweep_table.md + sweep.png (accuracy vs eps), $OUT/analysis/ (membrane, gradients,
# landscape, flip, Jacobian figures of the BPTT/TGO pair) and $OUT/report.html.
set -euo pipefail

OUT=${OUT:-runs/cifar-subset}
N=${N:-1000}          # class-balanced test images per evaluation
EOT=${EOT:-8}
PASSES=${PASSES:-8}
MODELS=(bptt tgo at at-tgo)

for m in "${MODELS[@]}"; do
  run="$OUT/$m"
  if [[ ! -f "$run/results.json" ]]; then
    resume=()
    [[ -f "$run/config.json" ]] && resume=(--resume)
    spikeguard train --config "configs/cpu/cifar10-vgg_small-$m.toml" --out "$run" "${resume[@]}"
  fi
  for e in 2 4 8; do
    [[ -f "$run/eval-$e/robustness.json" ]] && continue
    spikeguard evaluate --checkpoint "$run" --attacks fgsm,rfgsm,pgd10 --eps "$e" --n-samples "$N" \
      --eot "$EOT" --passes "$PASSES" --out "$run/eval-$e" --no-progress
  done
done

spikeguard analyze sweep "$OUT"/bptt/eval-{2,4,8} "$OUT"/tgo/eval-{2,4,8} --reference bptt --out "$OUT/table-bptt" --overwrite \
  --title "CIFAR-10 subset, vgg_small T=4: TGO vs BPTT"
spikeguard analyze sweep "$OUT"/at/eval-{2,4,8} "$OUT"/at-tgo/eval-{2,4,8} --reference at --out "$OUT/table-at" --overwrite \
  --title "CIFAR-10 subset, vgg_small T=4: TGO+AT vs AT"

# the paper's analyses of the BPTT/TGO pair (about 15 min on 2 cores) and one HTML page with everything
[[ -f "$OUT/analysis/membrane.json" ]] || spikeguard analyze all -k vanilla="$OUT/bptt" -k tgo="$OUT/tgo" \
  --out "$OUT/analysis" --steps 13 --format png,svg
spikeguard report "$OUT"/{bptt,tgo,at,at-tgo} "$OUT/analysis" --out "$OUT/report.html" --overwrite
