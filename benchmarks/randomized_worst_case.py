"""Worst case of the paper suite on a randomized (non-Noisy-LIF) defence, with whatever
spikeguard is importable: run it against two checkouts to compare their evaluations.

The model: a small MLP on the embedded digits behind a random input transform (Gaussian
noise, sigma 0.2, drawn from the global torch generator on every forward), trained with
that noise. Its randomness is not spikeguard's Noisy-LIF noise. Prints one JSON object
(clean, each attack, worst case, and how the evaluation treated the model).

    python benchmarks/randomized_worst_case.py                      # this checkout
    PYTHONPATH=/path/to/other/src python benchmarks/randomized_worst_case.py
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch import nn


class NoisyInputMLP(nn.Module):
    """Gaussian input noise (a randomized defence), then a two-layer MLP."""

    def __init__(self, sigma: float = 0.2) -> None:
        super().__init__()
        self.sigma = sigma
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x + self.sigma * torch.randn_like(x))


def main() -> None:
    import spikeguard
    from spikeguard.attacks import PAPER_SUITE
    from spikeguard.data import load_dataset
    from spikeguard.evaluation import evaluate_robustness

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--eps", type=float, default=16 / 255)
    ap.add_argument("--n", type=int, default=300, help="test images (class-balanced subset)")
    ap.add_argument("--eot", type=int, default=8)
    ap.add_argument("--passes", type=int, default=8)
    args = ap.parse_args()
    torch.manual_seed(0)
    train = load_dataset("digits", "train", cache_dir="")
    test = load_dataset("digits", "test", cache_dir="", subset=args.n, seed=0)
    model = NoisyInputMLP()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y = train.float_images(), train.labels
    for _ in range(30):
        perm = torch.randperm(len(y))
        for i in range(0, len(y), 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    model.eval()
    t0 = time.perf_counter()
    rep = evaluate_robustness(model, test.float_images(), test.labels, list(PAPER_SUITE), eps=args.eps, eot=args.eot,
                              passes=args.passes, seed=0)
    d = rep.to_dict(per_sample=False)
    print(json.dumps({
        "spikeguard": getattr(spikeguard, "__file__", "?"), "eps": args.eps, "n": len(test.labels),
        "stochastic": d["stochastic"], "eot": d["eot"], "passes": d["passes"],
        "randomness": d.get("randomness"), "clean": round(d["clean"]["accuracy"], 4),
        "attacks": {k: round(v["accuracy"], 4) for k, v in d["attacks"].items()},
        "worst_case": round(d["worst_case"]["accuracy"], 4), "worst_case_ci95": d["worst_case"]["ci95"],
        "seconds": round(time.perf_counter() - t0, 1)}, indent=1))


if __name__ == "__main__":
    main()
