"""Extension points: a new neuron and a new model, each one class registered where it is
defined (here), then trained and checkpointed through the normal path (config ->
``run_experiment`` -> ``load_run``) with no edit anywhere else."""

from __future__ import annotations

import json

import pytest
import torch
from torch import Tensor, nn

from spikeguard.checkpoint import load_run
from spikeguard.cli.main import main
from spikeguard.config import load_config
from spikeguard.errors import ConfigError
from spikeguard.jobs.train import build_model, run_experiment
from spikeguard.models import MultiStep, NeuronFactory, SpikingModel, register_model
from spikeguard.neurons import LIF, is_stochastic, noise_enabled, noise_seed, noisy_neurons, register_neuron

torch.set_num_threads(1)


@register_neuron("uniform_lif")
class UniformNoiseLIF(LIF):
    """LIF with uniform membrane noise in [-sigma, sigma] (a stochastic neuron that is not a NoisyLIF)."""

    config_fields = LIF.config_fields + ("sigma",)
    has_noise = True

    def __init__(self, sigma: float = 0.5, noise: bool = True, generator: torch.Generator | None = None, **kw) -> None:
        super().__init__(**kw)
        self.sigma, self.noise, self.generator = float(sigma), bool(noise), generator

    @property
    def stochastic(self) -> bool:
        return self.noise and self.sigma > 0

    def sample_noise(self, x: Tensor) -> Tensor | None:
        if not self.stochastic:
            return None
        u = torch.rand(x.shape, generator=self.generator, device=x.device, dtype=x.dtype)
        return (2 * u - 1) * self.sigma


@register_model("one_conv")
class OneConvSNN(SpikingModel):
    """One conv + BatchNorm + neuron, global average pool, linear readout (a test network)."""

    def __init__(self, num_classes: int = 10, T: int = 2, in_channels: int = 1, image_size: int = 8,
                 width: int = 6, neuron: NeuronFactory | None = None, mean=None, std=None) -> None:
        super().__init__(T, num_classes, in_channels, mean, std)
        neuron = neuron or NeuronFactory("lif")
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width))
        self.body = nn.Sequential(neuron(), MultiStep(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes)))


TINY = ["data.name=digits", "model.name=one_conv", "model.T=2", "neuron.kind=uniform_lif", "neuron.sigma=0.3",
        "optim.epochs=1", "optim.batch_size=32", "data.subset=96", "data.test_subset=40", "tgo.enabled=true",
        "eval.passes=2"]


def test_new_neuron_is_built_from_its_registration():
    cfg = load_config(None, TINY)
    assert cfg.neuron.neuron_kw() == {**{k: getattr(cfg.neuron, k) for k in LIF.config_fields}, "sigma": 0.3}
    model = build_model(cfg)  # shape, classes and statistics from the digits DatasetInfo
    neurons = [m for m in model.modules() if isinstance(m, UniformNoiseLIF)]
    assert neurons and all(n.sigma == 0.3 for n in neurons)
    assert is_stochastic(model) and noisy_neurons(model) == neurons
    x = torch.rand(3, 1, 8, 8)
    with noise_seed(model, 5):
        a = model(x)
    with noise_seed(model, 5):
        b = model(x)
    torch.testing.assert_close(a, b)  # noise_seed reaches the new neuron's generator
    with noise_enabled(model, False):
        assert not is_stochastic(model)
    assert is_stochastic(model)


def test_unknown_kinds_are_config_errors():
    with pytest.raises(ConfigError, match="neuron.kind"):
        load_config(None, ["neuron.kind=izhikevich"]).validate()
    with pytest.raises(ConfigError, match="model.name"):
        load_config(None, ["model.name=no_such_net"]).validate()


def test_new_neuron_and_model_train_and_reload(tmp_path, capsys):
    cfg = load_config(None, TINY)
    res = run_experiment(cfg, tmp_path / "run", progress=False)
    assert 0.0 <= res["test_accuracy"] <= 1.0 and res["model"] == "one_conv"
    row = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[0])
    assert row["lam"] > 0 and 0 <= row["near_threshold"] <= 1  # TGO saw the new neuron's potentials
    run = load_run(tmp_path / "run")
    assert isinstance(run.model, OneConvSNN)
    assert any(isinstance(m, UniformNoiseLIF) for m in run.model.modules())
    assert main(["list", "models"]) == 0 and main(["list", "neurons"]) == 0
    out = capsys.readouterr().out
    assert "one_conv" in out and "uniform_lif" in out and "a test network" in out


def test_list_prints_every_registry(capsys):
    from spikeguard.attacks.registry import list_attacks
    from spikeguard.training import list_strategies

    for kind in ("attacks", "strategies", "presets"):
        assert main(["list", kind]) == 0
    out = capsys.readouterr().out
    assert all(a in out for a in list_attacks()) and all(s in out for s in list_strategies())
    with pytest.raises(SystemExit):  # argparse rejects an unknown registry
        main(["list", "nothing"])
