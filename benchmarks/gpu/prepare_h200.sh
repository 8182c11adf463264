#!/usr/bin/env bash
# Prepare what the H200 run carries (run HERE, in the repo root of the checkout the device tool
# sends, before the device `run`; see docs/performance.md, "Before a device run"):
#   shared_copy/cifar10-parquet/  the CIFAR-10 parquet pair (57 MB; ../shared does not travel)
#   .whl/                         SpikingJelly 2.0.0, snnTorch 1.0.0 and loguru 0.7.3 (SpikingJelly
#                                 needs it; the rest of their requirements are on the machine), as
#                                 pure-Python wheels for Python 3.12: benchmark-only, never imported
#                                 by spikeguard
# Both folders are git-ignored. Working tree + carry must stay under 64 MiB (about 60 MB here).
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
DATA=${SPIKEGUARD_SHARED:-../shared}/data/cifar10-parquet
mkdir -p shared_copy/cifar10-parquet .whl
cp "$DATA"/train.parquet "$DATA"/test.parquet "$DATA"/README.md shared_copy/cifar10-parquet/
PIP=${PIP:-python3 -m pip}
$PIP download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl spikingjelly==2.0.0 snntorch==1.0.0 loguru==0.7.3
du -sh shared_copy .whl
echo "carry: [\"shared_copy\", \".whl\"]"
