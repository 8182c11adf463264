"""ASSG, SA-PGD and PDSG: their equations on small tensors, and the attacks end to end."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spikeguard.attacks import ASSG, PDSG, SAPGD, build_attack, list_attacks, normalize_name
from spikeguard.attacks.apgd import apgd_checkpoints
from spikeguard.attacks.sapgd import l1_normalised, sapgd_direction, step_schedule
from spikeguard.errors import SpikeguardError
from spikeguard.models import create_model
from spikeguard.neurons import LIF, NoisyLIF, spiking_neurons
from spikeguard.neurons.fused import get_kernel
from spikeguard.neurons.potential_surrogate import (
    AssgRule,
    PdsgRule,
    assg_scale,
    atan_derivative,
    pdsg_derivative,
    potential_surrogate,
)


# -- the surrogates ------------------------------------------------------------------------------
def test_atan_surrogate_values_and_the_vanishing_bound():
    x = torch.tensor([0.0, 0.5, -1.0])
    alpha = torch.tensor([2.0, 2.0, 4.0])
    want = torch.tensor([1.0, 1.0 / (1 + (math.pi / 2) ** 2), 2.0 / (1 + (2 * math.pi) ** 2)])
    torch.testing.assert_close(atan_derivative(x, alpha), want)
    assert assg_scale(0.5) == pytest.approx(2 / math.pi)
    for a_bound in (0.3, 0.85, 0.95):
        a = assg_scale(a_bound)
        # with alpha = a / d, a share A of the surrogate's mass lies within |x| < d
        d = 0.7
        assert (2 / math.pi) * math.atan(math.pi / 2 * (a / d) * d) == pytest.approx(a_bound)
    with pytest.raises(ValueError, match="vanishing"):
        assg_scale(1.0)


def test_pdsg_surrogate_is_a_gaussian_centred_half_a_deviation_above_threshold():
    sigma = 0.4
    xs = torch.linspace(-4, 4, 20001, dtype=torch.float64)
    g = pdsg_derivative(xs, torch.tensor(sigma, dtype=torch.float64))
    assert float(torch.trapezoid(g, xs)) == pytest.approx(1.0, abs=1e-6)
    peak = xs[g.argmax()]
    assert float(peak) == pytest.approx(sigma / 2, abs=1e-3)
    assert float(g.max()) == pytest.approx(1 / (sigma * math.sqrt(2 * math.pi)), rel=1e-6)
    c = sigma / 2
    left, right = pdsg_derivative(torch.tensor([c - 0.3]), sigma), pdsg_derivative(torch.tensor([c + 0.3]), sigma)
    torch.testing.assert_close(left, right)


def test_pdsg_spread_is_the_cumulative_per_channel_deviation():
    torch.manual_seed(0)
    u = torch.randn(3, 4, 2, 3, 3) * torch.tensor([0.5, 2.0]).view(1, 1, 2, 1, 1)
    sig = PdsgRule().cumulative_std(u)
    assert sig.shape == (3, 1, 2, 1, 1)
    for t in range(3):
        for c in range(2):
            assert float(sig[t, 0, c]) == pytest.approx(float(u[: t + 1, :, c].std()), rel=1e-5)
    flat = torch.randn(2, 5, 7)
    torch.testing.assert_close(PdsgRule().cumulative_std(flat)[1].flatten(), flat.std().view(1))
    assert float(PdsgRule().cumulative_std(torch.zeros(1, 3, 4)).flatten()[0]) == 1.0  # zero spread -> 1


# -- ASSG's running statistics ----------------------------------------------------------------------
def test_assg_statistics_follow_the_running_averages_over_iterations():
    rule = AssgRule(vanishing=0.85, relax=1.5, beta_m=0.9, beta_d=0.9)
    points = [torch.tensor([[0.2, -0.5]]), torch.tensor([[0.4, 0.1]]), torch.tensor([[-0.3, 2.0]])]
    m, d = torch.ones(1, 2), torch.zeros(1, 2)
    for p in points:
        with rule.observing():
            alpha = rule.observe(("n", None), p, None)
            again = rule.observe(("n", None), p * 5, None)  # a second pass of the same iteration: no update
        m = 0.9 * m + 0.1 * p.abs()
        d = 0.9 * d + 0.1 * (p.abs() - m).abs()
        torch.testing.assert_close(alpha, assg_scale(0.85) / (m + 1.5 * d + 1e-4))
        torch.testing.assert_close(again, alpha)
    # outside an iteration (clean or final logits) nothing moves either
    torch.testing.assert_close(rule.observe(("n", None), torch.zeros(1, 2), None), alpha)


def test_assg_batched_eot_uses_the_first_pass_statistics_for_every_pass():
    rule = AssgRule()
    first, second = torch.tensor([[0.1], [0.3]]), torch.tensor([[5.0], [7.0]])
    with rule.observing(rows=2):
        alpha = rule.observe(("n", None), torch.cat([first, second]).T.unsqueeze(-1), None)  # [1, 4, 1]
    m = 0.9 + 0.1 * first.T.unsqueeze(-1)
    d = 0.1 * (first.T.unsqueeze(-1) - m).abs()
    want = assg_scale(0.85) / (m + 1.5 * d + 1e-4)
    torch.testing.assert_close(alpha, torch.cat([want, want], 1))


def _one_step_layer(neuron: nn.Module) -> nn.Module:
    return nn.Sequential(neuron)


def test_lif_backward_uses_the_assg_sharpness_of_each_neuron():
    lif = LIF(v_threshold=1.0, surrogate="triangle")
    x = torch.tensor([[[0.8, 1.1, 2.5]]])  # T=1, B=1, three neurons: U = x
    rule = AssgRule()
    m, d = torch.ones(1, 1, 3), torch.zeros(1, 1, 3)
    with potential_surrogate(lif, rule):
        for shift in (0.0, 0.3, -0.2):  # three attack iterations at different inputs
            xi = (x + shift).requires_grad_(True)
            with rule.observing():
                lif(xi).sum().backward()
            p = xi.detach() - 1.0
            m = 0.9 * m + 0.1 * p.abs()
            d = 0.9 * d + 0.1 * (p.abs() - m).abs()
            torch.testing.assert_close(xi.grad, atan_derivative(p, assg_scale(0.85) / (m + 1.5 * d + 1e-4)))
    xi = x.clone().requires_grad_(True)
    lif(xi).sum().backward()  # the model's own triangle surrogate again
    torch.testing.assert_close(xi.grad, (1.0 - (x - 1.0).abs()).clamp_min(0.0))


def test_noisy_lif_backward_uses_pdsg_at_the_noisy_potential_and_settings_come_back():
    torch.manual_seed(0)
    neuron = NoisyLIF(sigma=0.3, noisy_grad="expected", v_threshold=1.0, backend="loop")
    x = torch.rand(1, 6, 2, 2, 2) * 2  # T=1, conv layout [T, B, C, H, W]
    g = torch.Generator().manual_seed(5)
    neuron.generator = g
    xi = x.clone().requires_grad_(True)
    with potential_surrogate(neuron, PdsgRule()):
        assert neuron.backend == "fused" and neuron.noisy_grad == "surrogate" and get_kernel() == "torch"
        g.manual_seed(5)
        neuron(xi).sum().backward()
    g.manual_seed(5)
    eta = torch.randn(x.shape, generator=g) * 0.3
    sigma = PdsgRule().cumulative_std(x - 1.0)
    torch.testing.assert_close(xi.grad, pdsg_derivative(x - 1.0 + eta, sigma))
    assert neuron.backend == "loop" and neuron.noisy_grad == "expected" and neuron.surrogate.name == "triangle"


def test_surrogates_are_restored_when_the_attack_raises():
    model = create_model("small_conv", num_classes=10, T=2, in_channels=1, image_size=8, channels=(4, 8, 8))
    before = [(m.surrogate, m.backend) for _, m in spiking_neurons(model)]
    kernel = get_kernel()

    def bad_loss(z, y):
        raise RuntimeError("boom")

    attack = ASSG(model, eps=8 / 255, steps=2)
    attack.loss_fn = bad_loss
    with pytest.raises(RuntimeError, match="boom"):
        attack(torch.rand(2, 1, 8, 8), torch.tensor([0, 1]))
    assert [(m.surrogate, m.backend) for _, m in spiking_neurons(model)] == before and get_kernel() == kernel


# -- SA-PGD's update --------------------------------------------------------------------------------
def test_sapgd_momentum_is_l1_normalised_and_the_step_is_clipped():
    g = torch.tensor([[[[1.0, -3.0]]], [[[0.0, 0.0]]]])
    n = l1_normalised(g)
    torch.testing.assert_close(n[0].abs().mean(), torch.tensor(1.0))
    assert torch.equal(n[1], torch.zeros_like(n[1]))
    g1 = torch.tensor([[[[1.0, -3.0]]]])
    g2 = torch.tensor([[[[2.0, 2.0]]]])
    m, v, _ = sapgd_direction(None, None, g1, 0.5, 0.8)
    torch.testing.assert_close(m, torch.tensor([[[[0.5, -1.5]]]]))
    torch.testing.assert_close(v, torch.tensor([[[[0.2, 1.8]]]]))
    m, v, direction = sapgd_direction(m, v, g2, 0.5, 0.8)
    want_m = 0.5 * torch.tensor([0.5, -1.5]) + torch.tensor([1.0, 1.0])
    want_v = 0.8 * torch.tensor([0.2, 1.8]) + torch.tensor([1.0, 1.0])
    torch.testing.assert_close(m.flatten(), want_m)
    torch.testing.assert_close(v.flatten(), want_v)
    torch.testing.assert_close(direction.flatten(), want_m / want_v.sqrt())


def test_sapgd_halves_its_step_on_the_auto_pgd_schedule():
    assert step_schedule(100) == [22, 41, 57, 70, 80, 87, 93, 99] == apgd_checkpoints(100)
    assert step_schedule(1) == [1]
    assert step_schedule(10) == [2, 3, 4, 5, 6, 7, 8, 9, 10]


def test_sapgd_first_step_on_a_linear_model_is_the_clipped_adaptive_step():
    torch.manual_seed(0)
    fc = nn.Linear(4, 2)
    model = nn.Sequential(nn.Flatten(), fc)
    x = torch.full((1, 1, 2, 2), 0.5)
    y = torch.tensor([0])
    eps = 0.1
    adv = SAPGD(model, eps=eps, steps=1, assg=False, random_start=False)(x, y)
    # a linear model, one step from the clean point: eps * clip(m / sqrt(v), -1, 1) with m, v from the first gradient
    xr = x.clone().requires_grad_(True)
    F.cross_entropy(model(xr), y).backward()
    g = xr.grad
    direction = (g / g.abs().mean()) / (g * g / (g * g).mean()).sqrt()
    want = x + (direction * eps).clamp(-eps, eps)
    # the step goes up the gradient of a loss convex along the path: it beats the start, so it is returned
    torch.testing.assert_close(adv, want.clamp(0, 1))


# -- end to end -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained_snn():
    torch.manual_seed(0)
    from spikeguard.data import batches, load_digits_split
    from spikeguard.training import Trainer, make_sgd

    train, test = load_digits_split()
    train = train.subset(600, seed=0)
    model = create_model("small_conv", num_classes=10, T=2, in_channels=1, image_size=8, mean=train.mean,
                         std=train.std, channels=(8, 16, 32))
    opt, sched = make_sgd(model, lr=0.1, epochs=3, steps_per_epoch=10)
    trainer = Trainer(model, opt, sched)
    for epoch in range(3):
        trainer.train_epoch(batches(train, 64, shuffle=True), epoch)
    model.eval()
    for p in model.parameters():
        p.grad = None  # so the test sees whether an attack leaves gradients behind
    return model, test.float_images()[:32], test.labels[:32]


@pytest.mark.parametrize("name", ["assg10", "sa-pgd10", "pdsg10"])
def test_each_attack_lowers_accuracy_within_budget_and_restores_the_model(trained_snn, name):
    model, x, y = trained_snn
    eps = 32 / 255
    before = [(m.surrogate, m.backend) for _, m in spiking_neurons(model)]
    torch.manual_seed(1)
    adv = build_attack(name, model, eps=eps, alpha="eps")(x, y)
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).float().mean()
        robust = (model(adv).argmax(1) == y).float().mean()
    assert clean > 0.5
    assert robust < clean - 0.2
    assert (adv - x).abs().max() <= eps + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    assert [(m.surrogate, m.backend) for _, m in spiking_neurons(model)] == before
    assert not model.training and all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("name", ["assg2", "sa-pgd2", "pdsg2"])
def test_attacks_run_with_eot_on_a_noisy_model_and_leave_it_alone(name):
    torch.manual_seed(0)
    model = create_model("small_conv", num_classes=10, T=2, neuron="noisy_lif", in_channels=1, image_size=8,
                         channels=(4, 8, 8))
    model.train()
    before = [(m.surrogate, m.noise, m.noisy_grad, m.backend) for _, m in spiking_neurons(model)]
    x = torch.rand(4, 1, 8, 8)
    y = torch.randint(0, 10, (4,))
    for batched in (True, False):
        adv = build_attack(name, model, eps=8 / 255, eot=3, alpha="eps", eot_batched=batched)(x, y)
        assert (adv - x).abs().max() <= 8 / 255 + 1e-6
    assert model.training
    assert [(m.surrogate, m.noise, m.noisy_grad, m.backend) for _, m in spiking_neurons(model)] == before


def test_names_errors_and_listing():
    listed = list_attacks()
    assert {"assgK", "sa-pgdK", "pdsgK"} <= set(listed)
    assert normalize_name("sapgd") == "sa-pgd" and normalize_name("ASSG20") == "assg20"
    plain = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    for cls in (ASSG, PDSG, SAPGD):
        with pytest.raises(SpikeguardError, match="spiking neurons"):
            cls(plain, eps=0.1)
    assert SAPGD(plain, eps=0.1, assg=False).requires == ()
    with pytest.raises(SpikeguardError, match="vanishing"):
        ASSG(create_model("small_conv", num_classes=10, T=1, in_channels=1, image_size=8, channels=(4, 4, 4)),
             vanishing=1.5)


def test_cli_lists_the_attacks(capsys):
    from spikeguard.cli.main import main

    assert main(["list", "attacks"]) == 0
    out = capsys.readouterr().out
    assert all(n in out for n in ("assgK", "sa-pgdK", "pdsgK"))


# -- SpikingJelly and snnTorch ----------------------------------------------------------------------
def _sj_net():
    pytest.importorskip("spikingjelly.activation_based.neuron", reason="spikingjelly (test-only extra) not installed")
    from spikingjelly.activation_based import functional, neuron

    class SJNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.lif, self.fc2 = nn.Linear(16, 32), neuron.LIFNode(step_mode="m"), nn.Linear(32, 3)

        def forward(self, x):
            functional.reset_net(self)
            seq = x.flatten(1).unsqueeze(0).repeat(3, 1, 1)
            return self.fc2(self.lif(self.fc1(seq))).mean(0)

    return SJNet()


def _snntorch_net():
    snn = pytest.importorskip("snntorch", reason="snntorch (test-only extra) not installed")

    class SnnNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2, self.lif = nn.Linear(16, 32), nn.Linear(32, 3), snn.Leaky(beta=0.5)

        def forward(self, x):
            self.lif.reset_mem()
            cur, out = self.fc1(x.flatten(1)), 0
            for _ in range(3):
                spk, _ = self.lif(cur)
                out = out + self.fc2(spk)
            return out / 3

    return SnnNet()


@pytest.mark.parametrize("make", [_sj_net, _snntorch_net], ids=["spikingjelly", "snntorch"])
def test_attacks_reach_adapted_neurons_per_time_step(make):
    from spikeguard.adapters import foreign_neurons
    from spikeguard.attacks import Attack

    torch.manual_seed(0)
    model = make()
    (neuron,) = foreign_neurons(model)
    x = torch.rand(5, 1, 4, 4)
    y = torch.randint(0, 3, (5,))
    probe = Attack(model, eps=0.0)
    g0, _ = probe.input_grad(x, y)
    rule = AssgRule()
    with potential_surrogate(model, rule):
        with rule.observing(rows=5):
            g1, _ = probe.input_grad(x, y)
    # one running statistic per time step of the adapted neuron, per sample and unit
    assert sorted(rule.state) == [(neuron.name, t) for t in range(3)]
    assert rule.state[(neuron.name, 0)][0].shape == (1, 5, 32)
    assert not torch.allclose(g0, g1)
    g2, _ = probe.input_grad(x, y)
    assert torch.equal(g0, g2)  # the neuron's own surrogate again
    for name in ("assg2", "sa-pgd2", "pdsg2"):
        adv = build_attack(name, model, eps=16 / 255, alpha="eps")(x, y)
        assert (adv - x).abs().max() <= 16 / 255 + 1e-6
    assert torch.equal(probe.input_grad(x, y)[0], g0)
