"""A SpikingJelly SNN on the embedded digits, to evaluate with ``spikeguard evaluate --model-file``.

``build()`` is the factory spikeguard calls: a two-layer SpikingJelly ``LIFNode`` network
(``activation_based``, multi-step, T = 4, direct encoding, sigmoid surrogate) that takes
images in [0, 1] and resets its neurons at the start of every forward (so its output
depends only on its input). Running the file trains it with SpikingJelly's own surrogate
gradients (Adam, BPTT) and writes ``OUT/model.safetensors``:

    pip install --no-deps spikingjelly==2.0.0 loguru   # not a spikeguard dependency (see below)
    python examples/spikingjelly_digits.py --out runs/sj-digits
    spikeguard evaluate --model-file examples/spikingjelly_digits.py:build \\
        --weights runs/sj-digits/model.safetensors --data digits --suite strong --n-samples 200

``--no-deps``: SpikingJelly 2.0.0 declares torchvision, torchaudio, scipy, h5py, tensorboard and more,
and pip would replace a CPU torch with a CUDA build to satisfy them. The modules used here
(``spikingjelly.activation_based``: layer, neuron, functional, surrogate) import only torch,
numpy (both already installed with spikeguard) and loguru.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

T = 4
INSTALL = "pip install --no-deps spikingjelly==2.0.0 loguru"


def missing_package() -> str | None:
    """A one-line message naming the package this example cannot import, with the install command
    (None when SpikingJelly and what it imports are there)."""
    try:
        from spikingjelly.activation_based import functional, layer, neuron  # noqa: F401
    except ImportError as e:  # ModuleNotFoundError names the package: spikingjelly itself, or loguru
        package = (getattr(e, "name", None) or str(e)).split(".")[0]
        return f"the package {package!r} is missing; install with: {INSTALL}"
    return None


class SJDigits(nn.Module):
    """conv(1->16) -> LIF -> pool -> fc(256->10) -> LIF-free readout, mean over T steps."""

    def __init__(self) -> None:
        super().__init__()
        from spikingjelly.activation_based import layer, neuron

        self.features = nn.Sequential(
            layer.Conv2d(1, 16, 3, padding=1, step_mode="m"), layer.BatchNorm2d(16, step_mode="m"),
            neuron.LIFNode(step_mode="m"), layer.MaxPool2d(2, step_mode="m"))
        self.classifier = nn.Sequential(layer.Flatten(step_mode="m"), layer.Linear(16 * 4 * 4, 64, step_mode="m"),
                                        neuron.LIFNode(step_mode="m"), layer.Linear(64, 10, step_mode="m"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from spikingjelly.activation_based import functional

        functional.reset_net(self)
        seq = x.unsqueeze(0).repeat(T, 1, 1, 1, 1)  # direct encoding: the image at every step
        return self.classifier(self.features(seq)).mean(0)


def build() -> nn.Module:
    """The factory ``spikeguard evaluate --model-file examples/spikingjelly_digits.py:build`` calls."""
    problem = missing_package()
    if problem:  # spikeguard turns this into its one-line error
        raise ImportError(problem)
    return SJDigits()


def main() -> None:
    from spikeguard.data import load_dataset

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/sj-digits", help="output folder (default runs/sj-digits)")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    problem = missing_package()
    if problem:
        sys.exit(f"spikingjelly_digits.py: error: {problem}")
    torch.manual_seed(args.seed)
    train, test = load_dataset("digits", "train", cache_dir=""), load_dataset("digits", "test", cache_dir="")
    x, y = train.float_images(), train.labels
    model = build()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(y))
        for i in range(0, len(y), 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            acc = (model(test.float_images()).argmax(1) == test.labels).float().mean().item()
        print(f"epoch {epoch + 1}: test accuracy {100 * acc:.1f}%")
    print(f"wrote {save_weights(model, Path(args.out))}")


def save_weights(model: nn.Module, out: Path) -> Path:
    """``out/model.safetensors``, written atomically with the mode a plain ``open()`` gives (0666
    minus the umask) as spikeguard's own checkpoints are, not the 0600 of a temporary file."""
    from safetensors.torch import save

    from spikeguard.io import atomic_write_bytes

    out.mkdir(parents=True, exist_ok=True)
    path = out / "model.safetensors"
    atomic_write_bytes(path, save({k: v.contiguous() for k, v in model.state_dict().items()}))
    return path


if __name__ == "__main__":
    main()
