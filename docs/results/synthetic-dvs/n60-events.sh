set -e
. .venv/bin/activate  # from the repository root
R=runs/synthetic-dvs
date -u
for m in at at-tgo; do
  /usr/bin/time -f "WALL $m %e s" spikeguard evaluate --checkpoint $R/$m --attacks fgsm --event-ks 1,2,5,10,20,50 \
    --n-samples 60 --eot 2 --passes 2 --out ../dvs-extra/$m --no-progress --no-per-sample --overwrite
done
date -u
