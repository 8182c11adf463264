"""Spiking VGG-11 / WRN-16-4: parameter counts, shapes, gradients, neuron coverage, ANN twin."""

import pytest
import torch

from spikeguard.models import MultiStep, count_parameters, create_model, list_models
from spikeguard.neurons import LIF, NoisyLIF, record_potentials, spiking_neurons
from spikeguard.neurons.lif import MultiStepReLU

torch.set_num_threads(1)


def test_registered():
    assert {"vgg11", "wrn16_4", "vgg_small"} <= set(list_models())


@pytest.mark.parametrize("name,kw,classes,expected", [
    # exact counts of what we build (docs/models.md); published: VGG-11 9.2-9.8M, WRN-16-4 2.7M
    ("vgg11", {}, 10, 9_228_362),
    ("vgg11", {}, 100, 9_274_532),
    ("vgg11", {"classifier": "mlp"}, 10, 9_753_674),
    ("wrn16_4", {}, 10, 2_748_902),
    ("wrn16_4", {}, 100, 2_772_032),
    ("vgg_small", {}, 10, 579_098),
])
def test_parameter_counts(name, kw, classes, expected):
    m = create_model(name, classes, T=2, **kw)
    n = count_parameters(m)
    assert n == expected
    if name == "vgg11":
        assert 9.2e6 <= n <= 9.8e6
    if name == "wrn16_4":
        assert 2.7e6 <= n <= 2.8e6


def test_snn_rat_layout_is_the_large_variant():
    m = create_model("vgg11", 10, T=1, layout="snn_rat")
    assert 60e6 < count_parameters(m) < 62e6
    # 8 conv spiking layers + 2 spiking hidden linear layers
    assert len(spiking_neurons(m)) == 10


@pytest.mark.parametrize("name,n_neurons", [("vgg_small", 8), ("wrn16_4", 13)])
def test_forward_backward_T2(name, n_neurons):
    kw = {"width": 0.125} if name == "vgg_small" else {}
    m = create_model(name, 10, T=2, neuron="lif", **kw)
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    with record_potentials(m) as rec:
        steps = m.forward_steps(x)
    assert steps.shape == (2, 2, 10)
    # every activation is a spiking neuron from the factory, and all of them are recorded
    assert len(spiking_neurons(m)) == n_neurons
    assert len(rec.potentials) == n_neurons
    assert all(u.shape[:2] == (2, 2) for u in rec.potentials)
    steps.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    first_conv = m.stem[0].weight
    assert first_conv.grad is not None and torch.isfinite(first_conv.grad).all()
    # no ReLU sneaks in: activations are only LIF modules
    assert not any(isinstance(mod, (torch.nn.ReLU, MultiStepReLU)) for mod in m.modules())


def test_deterministic_forward_and_stem_once():
    m = create_model("vgg_small", 10, T=3, width=0.125).eval()
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(m(x), m(x))
    assert isinstance(m.body[1], MultiStep)  # stateless layers run on [T*B, ...]


def test_noisy_lif_everywhere():
    m = create_model("wrn16_4", 10, T=2, neuron="noisy_lif", neuron_kw={"sigma": 0.5})
    neurons = [n for _, n in spiking_neurons(m)]
    assert neurons and all(isinstance(n, NoisyLIF) and n.sigma == 0.5 for n in neurons)


def test_ann_twin():
    m = create_model("vgg11", 10, T=8, neuron="relu", width=0.125)
    assert m.T == 1
    assert not any(isinstance(mod, LIF) for mod in m.modules())
    assert sum(isinstance(mod, MultiStepReLU) for mod in m.modules()) == 8
    out = m(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, 10)
    # the twin has the same parameters as the SNN
    snn = create_model("vgg11", 10, T=2, width=0.125)
    assert count_parameters(m) == count_parameters(snn)


def test_bad_arguments():
    with pytest.raises(ValueError, match="layout"):
        create_model("vgg11", 10, T=2, layout="nope")
    with pytest.raises(ValueError, match=r"smaller than 2\^5"):
        create_model("vgg11", 10, T=2, image_size=24)
    with pytest.raises(ValueError, match="depth"):
        create_model("wrn16_4", 10, T=2, depth=15)
