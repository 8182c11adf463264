"""How strong must TGO's constraint weight be to move the potentials? (digits, 3 seeds)

Trains the demo's small conv SNN (T=4, 20 epochs) on the embedded digits for each seed as
vanilla LIF, LIF + membrane constraint at the paper's lambda_max 0.4 (linear ramp over
training), LIF + constraint at lambda_max 10 (ramp over 5 epochs), and the latter with
Noisy-LIF; then measures the near-threshold share (|U - V_th| < 0.5) and FGSM / PGD-10
accuracy at 16 and 32 /255 (alpha = 2.5 eps / 10; the noisy model with EoT-8, judged over 8
passes). Prints one JSON line per run and a mean table; writes ``--out`` as JSON.

    python examples/lambda_scale_digits.py --out runs/lambda_scale.json     # ~10 min on 2 idle cores
"""

from __future__ import annotations

import argparse
import collections
import json

import torch

from spikeguard.attacks import FGSM, PGD
from spikeguard.data import batches, load_digits_split
from spikeguard.evaluation import adversarial_examples, correct_over_passes, near_threshold_of
from spikeguard.io import atomic_write_json
from spikeguard.models import create_model
from spikeguard.tgo import LambdaSchedule, ThresholdGuard
from spikeguard.training import Trainer, make_sgd
from spikeguard.utils import seed_everything

VARIANTS = {  # name: (constraint, noisy, lambda_max, ramp epochs)
    "vanilla": (False, False, 0.0, None),
    "mc-0.4": (True, False, 0.4, None),
    "mc-10": (True, False, 10.0, 5),
    "mc-10+nlif": (True, True, 10.0, 5),
}
METRICS = ("clean", "near", "fgsm16", "pgd16", "fgsm32", "pgd32")


def run(name: str, seed: int, train, test, epochs: int = 20, T: int = 4) -> dict:
    mc, nlif, lam, ramp = VARIANTS[name]
    gen = seed_everything(seed)
    model = create_model("small_conv", 10, T, neuron="noisy_lif" if nlif else "lif", in_channels=1, image_size=8,
                         mean=train.mean, std=train.std)
    steps = -(-len(train) // 64)
    opt, sched = make_sgd(model, 0.1, epochs=epochs, steps_per_epoch=steps)
    guard = ThresholdGuard(0.5, schedule=LambdaSchedule("linear", lam, ramp_epochs=ramp or epochs)) if mc else None
    trainer = Trainer(model, opt, sched, guard=guard, delta_stat=0.5)
    for epoch in range(epochs):
        trainer.train_epoch(batches(train, 64, shuffle=True, generator=gen), epoch, steps)
    model.eval()
    eot, passes = (8, 8) if nlif else (1, 1)
    torch.manual_seed(seed + 1)
    x, y = test.float_images(), test.labels
    row = dict(name=name, seed=seed, clean=float(correct_over_passes(model, x, y, passes).mean()),
               near=near_threshold_of(model, test))
    for k in (16, 32):
        eps = k / 255
        for attack, key in ((FGSM(model, eps, eot=eot), f"fgsm{k}"),
                            (PGD(model, eps, alpha=2.5 * eps / 10, steps=10, eot=eot), f"pgd{k}")):
            adv = adversarial_examples(attack, x, y)
            row[key] = float(correct_over_passes(model, adv, y, passes).mean())
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default="runs/lambda_scale.json")
    args = ap.parse_args()
    train, test = load_digits_split()
    rows = []
    for seed in args.seeds:
        for name in VARIANTS:
            rows.append(run(name, seed, train, test))
            print(json.dumps(rows[-1]), flush=True)
    groups = collections.defaultdict(list)
    for r in rows:
        groups[r["name"]].append(r)
    means = {n: {k: sum(r[k] for r in rs) / len(rs) for k in METRICS} for n, rs in groups.items()}
    print("model".ljust(12), *(k.rjust(8) for k in METRICS))
    for n, m in means.items():
        print(n.ljust(12), *(f"{100 * m[k]:8.1f}" for k in METRICS))
    atomic_write_json(args.out, {"runs": rows, "mean": means, "seeds": args.seeds})


if __name__ == "__main__":
    main()
