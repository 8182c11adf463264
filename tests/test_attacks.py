"""The attack suite: known answers on linear models, strength on a tiny trained SNN,
budget/range invariants for every registered attack, EoT variance, adaptive attacks."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spikeguard.attacks import (
    APGD, FGSM, MTPGD, PGD, RFGSM, Attack, FixedNoiseModel, NoiseFreeTwin, Square, apgd_checkpoints,
    attack_surrogate, build_attack, dlr_loss, margin_loss, normalize_name, parse_attacks)
from spikeguard.errors import SpikeguardError
from spikeguard.models import create_model
from spikeguard.neurons import NoisyLIF, spiking_neurons


class Linear(nn.Module):
    def __init__(self, weight, bias):
        super().__init__()
        self.fc = nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            self.fc.weight.copy_(weight)
            self.fc.bias.copy_(bias)

    def forward(self, x):
        return self.fc(x.flatten(1))


def _two_class_linear(d=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Linear(torch.randn(2, d, generator=g), torch.zeros(2))


@pytest.mark.parametrize("make", [
    lambda m, e: FGSM(m, eps=e),
    lambda m, e: PGD(m, eps=e, alpha=e / 4, steps=10),
    lambda m, e: APGD(m, eps=e, steps=10),
    lambda m, e: APGD(m, eps=e, steps=10, loss="margin"),
    lambda m, e: MTPGD(m, eps=e, alpha=e / 4, steps=10, n_targets=1),
])
def test_first_order_attacks_reach_the_analytic_worst_case_of_a_linear_classifier(make):
    # two classes, logit margin z_y - z_o = (w_y - w_o) . x: its minimum over the eps-ball is
    # attained at x - eps * sign(w_y - w_o) (interior points, so [0, 1] clipping is inactive)
    model = _two_class_linear()
    x = torch.rand(16, 1, 3, 4) * 0.5 + 0.25
    with torch.no_grad():
        y = model(x).argmax(1)  # correctly classified (MTPGD leaves already-wrong samples alone)
    eps = 0.05
    w = model.fc.weight.detach()
    direction = (w[y] - w[1 - y]).view_as(x)
    worst = x - eps * direction.sign()
    adv = make(model, eps)(x, y)
    torch.testing.assert_close(adv, worst)
    m_clean, m_adv = -margin_loss(model(x), y), -margin_loss(model(adv), y)
    torch.testing.assert_close(m_clean - m_adv, eps * direction.flatten(1).abs().sum(1))


def test_rfgsm_is_a_random_step_then_a_gradient_step_within_budget():
    model = _two_class_linear()
    x = torch.rand(16, 1, 3, 4) * 0.5 + 0.25
    y = torch.randint(0, 2, (16,))
    eps, alpha = 0.06, 0.02
    adv = RFGSM(model, eps=eps, alpha=alpha)(x, y)
    w = model.fc.weight.detach()
    s = -(w[y] - w[1 - y]).view_as(x).sign()
    # every coordinate ends at +-alpha + (eps - alpha) * s: eps where the random sign agreed, eps - 2 alpha otherwise
    d = (adv - x) * s
    assert set(torch.round(d.flatten() * 1e4).unique().tolist()) <= {round(eps * 1e4), round((eps - 2 * alpha) * 1e4)}
    with pytest.raises(SpikeguardError, match="alpha"):
        RFGSM(model, eps=0.01, alpha=0.02)


def test_mtpgd_finds_the_targeted_misclassification_that_untargeted_pgd_misses():
    # 3 classes along one direction s = sum(x): class 1 is the runner-up but cannot be
    # reached within eps; class 2 can. The CE gradient first points at class 1.
    d, eps = 4, 0.1
    u = torch.ones(1, d)
    weight = torch.cat([torch.zeros(1, d), 2.0 * u, -10.0 * u])
    bias = torch.tensor([0.0, -1.0 - 2.0 * 2.0, -3.5 + 10.0 * 2.0])  # z1 = 2(s-2) - 1, z2 = -10(s-2) - 3.5
    model = Linear(weight, bias)
    x = torch.full((4, 1, 2, 2), 0.5)
    y = torch.zeros(4, dtype=torch.long)
    assert (model(x).argmax(1) == 0).all()
    pgd = PGD(model, eps=eps, alpha=eps / 4, steps=20, random_start=False)(x, y)
    assert (model(pgd).argmax(1) == 0).all()  # untargeted CE climbs towards the unreachable class 1
    mt = MTPGD(model, eps=eps, alpha=eps / 4, steps=20)(x, y)
    assert (model(mt).argmax(1) == 2).all()
    assert (mt - x).abs().max() <= eps + 1e-6


@pytest.fixture(scope="module")
def trained_snn():
    torch.manual_seed(0)
    from spikeguard.data import batches, load_digits_split
    from spikeguard.training import Trainer, make_sgd

    train, test = load_digits_split()
    train = train.subset(600, seed=0)  # a few seconds of training: ~70% clean accuracy is enough here
    model = create_model("small_conv", num_classes=10, T=2, in_channels=1, image_size=8, mean=train.mean,
                         std=train.std, channels=(8, 16, 32))
    opt, sched = make_sgd(model, lr=0.1, epochs=3, steps_per_epoch=10)
    trainer = Trainer(model, opt, sched)
    for epoch in range(3):
        trainer.train_epoch(batches(train, 64, shuffle=True), epoch)
    model.eval()
    return model, test.float_images()[:32], test.labels[:32]


def test_apgd_reaches_at_least_pgd_loss_on_a_trained_snn(trained_snn):
    model, x, y = trained_snn
    eps = 16 / 255
    torch.manual_seed(1)
    with torch.no_grad():
        clean = F.cross_entropy(model(x), y)
    adv_pgd = PGD(model, eps=eps, alpha=0.01, steps=10)(x, y)
    adv_apgd = APGD(model, eps=eps, steps=10)(x, y)
    with torch.no_grad():
        l_pgd = F.cross_entropy(model(adv_pgd), y, reduction="none")
        l_apgd = F.cross_entropy(model(adv_apgd), y, reduction="none")
        fooled_pgd = (model(adv_pgd).argmax(1) != y).float().mean()
        fooled_apgd = (model(adv_apgd).argmax(1) != y).float().mean()
    assert l_pgd.mean() > clean
    assert l_apgd.mean() >= l_pgd.mean()
    assert fooled_apgd >= fooled_pgd


def test_apgd_checkpoints_follow_the_paper():
    assert apgd_checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert apgd_checkpoints(1) == [1]
    assert all(0 < w <= 10 for w in apgd_checkpoints(10))


def test_square_only_uses_scores_and_beats_a_linear_model():
    model = _two_class_linear(d=16)
    x = torch.rand(32, 1, 4, 4) * 0.5 + 0.25
    with torch.no_grad():
        y = model(x).argmax(1)
    eps = 0.2
    for p in model.parameters():
        p.requires_grad_(False)  # a black-box attack must not need gradients
    adv = Square(model, eps=eps, queries=200)(x, y)
    with torch.no_grad():
        m0, m1 = -margin_loss(model(x), y), -margin_loss(model(adv), y)
    assert (m1 <= m0 + 1e-6).all()
    worst = m0 - eps * (model.fc.weight[y] - model.fc.weight[1 - y]).abs().sum(1)
    # the analytic optimum is reached on every sample the optimum misclassifies with room to spare
    assert ((m1 < 0) | (worst > -0.5)).all()
    assert (m1 < 0).float().mean() >= (worst < 0).float().mean() - 0.1


def _noisy_model():
    torch.manual_seed(0)
    return create_model("small_conv", num_classes=10, T=2, neuron="noisy_lif", in_channels=1, image_size=8,
                        channels=(4, 8, 8))


FAST = {"pgd3": {}, "pgd2-r2": {}, "apgd-ce3": {}, "apgd-dlr3": {}, "mtpgd2": {"n_targets": 2}, "square10": {},
        "fgsm": {}, "rfgsm": {}, "transfer": {"steps": 2}, "noise-free": {"steps": 2}, "fixed-noise": {"steps": 2},
        "sg-ensemble": {"steps": 1, "members": (("triangle", 0.5), ("atan", 2.0), ("ste", 1.0))},
        "sg-adaptive": {"steps": 2, "widths": (0.5, 2.0)}}


@pytest.mark.parametrize("name", sorted(FAST))
def test_every_attack_respects_budget_range_and_leaves_the_model_alone(name):
    model = _noisy_model()
    model.train()  # the attack must not switch it (nor anything else about the neurons)
    before = [(m.surrogate, getattr(m, "noise", None), getattr(m, "generator", None), getattr(m, "noisy_grad", None))
              for _, m in spiking_neurons(model)]
    x = torch.rand(6, 1, 8, 8)
    x[0] = 0.0
    x[1] = 1.0
    y = torch.randint(0, 10, (6,))
    eps = 8 / 255
    attack = build_attack(name, model, eps=eps, eot=2, **FAST[name])
    adv = attack(x, y)
    assert adv.shape == x.shape and not adv.requires_grad
    assert (adv - x).abs().max() <= eps + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1
    assert model.training
    after = [(m.surrogate, getattr(m, "noise", None), getattr(m, "generator", None), getattr(m, "noisy_grad", None))
             for _, m in spiking_neurons(model)]
    assert after == before
    assert all(p.grad is None for p in model.parameters())


def test_eot_reduces_gradient_variance_on_a_noisy_lif_model():
    model = _noisy_model().eval()
    x = torch.rand(4, 1, 8, 8)
    y = torch.randint(0, 10, (4,))

    def spread(k):
        a = Attack(model, eps=0.0, eot=k)
        grads = torch.stack([a.input_grad(x, y)[0] for _ in range(12)])
        return grads.var(0).sum()

    v1, v8 = spread(1), spread(8)
    assert v1 > 0
    assert v8 < 0.5 * v1  # ~1/8 in expectation


def test_eot_batched_and_looped_agree_in_expectation_and_return_mean_logits():
    model = _two_class_linear()
    x = torch.rand(3, 1, 3, 4)
    y = torch.tensor([0, 1, 0])
    g1, l1, z1 = Attack(model, eps=0.1, eot=3).loss_grad(x, y)
    g2, l2, z2 = Attack(model, eps=0.1, eot=3, eot_batched=False).loss_grad(x, y)
    torch.testing.assert_close(g1, g2)
    torch.testing.assert_close(l1, l2)
    torch.testing.assert_close(z1, model(x).detach())
    torch.testing.assert_close(z2, model(x).detach())


def test_noise_views_and_attack_surrogate():
    model = _noisy_model().eval()
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        a, b = FixedNoiseModel(model, 3)(x), FixedNoiseModel(model, 3)(x)
        c = FixedNoiseModel(model, 4)(x)
        t1, t2 = NoiseFreeTwin(model)(x), NoiseFreeTwin(model)(x)
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, c)
    torch.testing.assert_close(t1, t2)
    neurons = [m for _, m in spiking_neurons(model) if isinstance(m, NoisyLIF)]
    neurons[0].noisy_grad = "expected"
    with attack_surrogate(model, "atan", 2.0):
        assert all(m.surrogate.name == "atan" and m.noisy_grad == "surrogate" for m in neurons)
    assert neurons[0].noisy_grad == "expected" and neurons[0].surrogate.name == "triangle"


def test_losses_and_registry_parsing():
    z = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0]])
    y = torch.tensor([0, 0])
    torch.testing.assert_close(margin_loss(z, y), torch.tensor([-2.0, 2.0]))
    torch.testing.assert_close(dlr_loss(z, y), torch.tensor([-2.0 / 3.0, 1.0]))
    with pytest.raises(SpikeguardError, match="3 classes"):
        dlr_loss(z[:, :2], y)
    assert normalize_name("APGD") == "apgd-ce" and normalize_name("pgd") == "pgd10"
    assert parse_attacks("fgsm,paper,pgd10")[:3] == ["fgsm", "rfgsm", "pgd7"]
    assert "sg-adaptive" in parse_attacks("strong")
    with pytest.raises(SpikeguardError, match="unknown attack"):
        normalize_name("pgd-x")
    model = _two_class_linear()
    with pytest.raises(SpikeguardError, match="source"):
        build_attack("transfer", model)
    pgd = build_attack("pgd50-r3", model, eps=0.1)
    assert (pgd.steps, pgd.restarts, pgd.alpha) == (50, 3, 0.01)
    assert build_attack("square123", model).queries == 123
    assert math.isclose(build_attack("rfgsm", model, eps=0.1).alpha, 0.05)
