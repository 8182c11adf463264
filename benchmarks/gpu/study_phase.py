#!/usr/bin/env python
"""One phase of the GPU study, so that a window cut short still yields a complete pair.

    python benchmarks/gpu/study_phase.py STUDY.toml --out DIR --phase paper --budget 4m --device cuda
    python benchmarks/gpu/study_phase.py STUDY.toml --out DIR --phase all   --budget 4m --device cuda
    python benchmarks/gpu/study_phase.py STUDY.toml --out DIR --phase tables

Phases (``benchmarks/gpu/study_h200.sh`` runs them in this order, in one study folder):

* ``paper``: the study with its first protocol only (the paper's): calibration, training of every
  run and the paper-protocol evaluation, so the vanilla + TGO pair is complete first;
* ``all``: the whole study; what ``paper`` finished (plan, calibration, trained runs, evaluated
  groups) is reused, so this adds the other protocols (the strong one);
* ``tables``: ``--tables-only``: the comparison from what the folder holds (unfinished work listed).

``--dry-run`` (or ``SPIKEGUARD_DRY_RUN=1``) checks the same path on a CPU in a minute or two: tiny
runs (small_conv, 128 images, 1 epoch), a few evaluation images, a two-point calibration grid, and
random CIFAR-shaped parquet data made in a temporary folder (``--make-data DIR``).
``--check`` only loads the study and prints each run's settings (no work).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

from spikeguard.jobs.study import StudySpec, load_study, run_study, summarize_study  # noqa: E402

PHASES = ("paper", "all", "tables")

#: run overrides of a dry run: a tiny network on a tiny set, one epoch, float32 and CPU-friendly
DRY_SET = ['model.name="small_conv"', "model.kw={channels = [4, 8, 8]}", "model.T=2", "optim.epochs=1",
           "data.subset=128", "data.test_subset=64", "optim.batch_size=32", "eval.batch_size=32",
           "checkpoint_every=1", "threads=0"]
DRY_IMAGES = 8


def phase_spec(spec: StudySpec, phase: str) -> StudySpec:
    """``spec`` for ``phase``: ``paper`` keeps only the first protocol, the others all of them."""
    if phase != "paper":
        return spec
    out = copy.copy(spec)
    out.protocols = spec.protocols[:1]
    out.evaluation = dict(spec.evaluation, protocols=[p.name for p in out.protocols])
    return out


def shrink_for_dry_run(spec: StudySpec) -> StudySpec:
    """A copy of ``spec`` that evaluates ``DRY_IMAGES`` images and calibrates on a two-point grid."""
    out = copy.copy(spec)
    out.evaluation = dict(spec.evaluation, n_samples=DRY_IMAGES, batch_size=DRY_IMAGES)
    out.protocols = [dataclasses.replace(p, n_samples=min(p.n_samples, DRY_IMAGES) if p.n_samples else 0)
                     for p in spec.protocols]
    cal = dict(spec.calibration)
    cal.update(lambdas=list(cal.get("lambdas", [1.0, 10.0]))[:2], bisect=0, seeds=[0],
               short=["optim.epochs=1"], share_samples=16)
    out.calibration = cal
    out.budget = dict(spec.budget, probe_images=32)
    return out


def make_data(root: Path, n_train: int = 256, n_test: int = 64) -> Path:
    """Random CIFAR-10-shaped images in the parquet layout the ``cifar10-parquet`` reader takes."""
    import io

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        blobs = []
        for i in range(n):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, format="PNG")
            blobs.append({"bytes": buf.getvalue(), "path": f"{i}.png"})
        table = pa.table({"img": pa.array(blobs, type=pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                          "label": pa.array(np.arange(n) % 10, pa.int64())})
        feats = {"img": {"_type": "Image"}, "label": {"names": names, "_type": "ClassLabel"}}
        pq.write_table(table.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": feats}})}),
                       root / f"{split}.parquet")
    return root


def describe(spec: StudySpec) -> str:
    """One line per run: what the check and the log show before any work."""
    lines = [f"study {spec.name}: protocols {', '.join(p.name for p in spec.protocols)}; "
             f"{spec.evaluation['n_samples']} images; reference {spec.evaluation.get('reference')}"]
    for r in spec.runs:
        c = r.config
        lines.append(f"  {r.name}: {c.model.name} T={c.model.T}, {c.neuron.kind}, TGO "
                     f"{'on' if c.tgo.enabled else 'off'}{' (calibrated)' if r.calibrate else ''}, "
                     f"amp {c.perf.amp}, gpu_data {c.perf.gpu_data}, channels_last {c.perf.channels_last}, "
                     f"device {c.device}, data {c.data.name} at {c.data.root}")
    return "\n".join(lines)


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("study", help="study TOML")
    ap.add_argument("--out", required=True)
    ap.add_argument("--phase", choices=PHASES, default="all")
    ap.add_argument("--budget", default=None, help="the study's --budget (training epochs from a probe epoch)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--dry-run", action="store_true", default=os.environ.get("SPIKEGUARD_DRY_RUN", "") not in ("", "0"))
    ap.add_argument("--make-data", default=None, metavar="DIR",
                    help="write random CIFAR-shaped parquet data to DIR and use it (dry runs)")
    ap.add_argument("--check", action="store_true", help="load the study, print its runs, do nothing else")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    overrides = list(args.overrides)
    if args.dry_run:
        overrides = DRY_SET + overrides
    if args.make_data:
        root = Path(args.make_data)
        if not (root / "train.parquet").is_file():
            make_data(root)
        overrides.append(f'data.root="{root}"')
    if args.device:
        overrides.append(f'device="{args.device}"')
    spec = load_study(args.study, overrides)
    if args.dry_run:
        spec = shrink_for_dry_run(spec)
    spec = phase_spec(spec, args.phase)
    spec.command = f"spikeguard study {args.study} --out {args.out}" + (f" --budget {args.budget}" if args.budget else "")

    def log(line: str) -> None:
        print(line, flush=True)

    log(f"[phase {args.phase}{' dry-run' if args.dry_run else ''}] " + describe(spec))
    if args.check:
        return 0
    if args.phase == "tables":
        summarize_study(spec, args.out, log=log)
    else:
        run_study(spec, args.out, budget=args.budget, progress=False, log=log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
