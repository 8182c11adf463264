"""Foundation-level attack checks (the full suite has its own tests)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spikeguard.attacks import FGSM, PGD
from spikeguard.errors import SpikeguardError
from spikeguard.models import create_model


class Linear(nn.Module):
    def __init__(self, d=12, k=3):
        super().__init__()
        self.fc = nn.Linear(d, k)

    def forward(self, x):
        return self.fc(x.flatten(1))


def test_fgsm_finds_analytic_worst_case_on_linear_model():
    torch.manual_seed(0)
    model = Linear()
    x = torch.rand(8, 1, 3, 4) * 0.5 + 0.25  # interior, so clipping to [0, 1] is inactive
    y = torch.randint(0, 3, (8,))
    eps = 0.05
    adv = FGSM(model, eps=eps)(x, y)
    # the analytic worst case of a first-order attack on a linear model: x + eps * sign(d loss / d x)
    xg = x.clone().requires_grad_(True)
    F.cross_entropy(model(xg), y, reduction="sum").backward()
    torch.testing.assert_close(adv, x + eps * xg.grad.sign())


def test_pgd_budget_and_range_and_mode_untouched():
    model = create_model("small_conv", num_classes=10, T=2, neuron="noisy_lif", in_channels=1, image_size=8)
    model.train()
    x = torch.rand(6, 1, 8, 8)
    x[0] = 0.0
    x[1] = 1.0
    y = torch.randint(0, 10, (6,))
    for attack in (FGSM(model, eps=8 / 255, eot=3), PGD(model, eps=8 / 255, alpha=2 / 255, steps=3, eot=2, restarts=2),
                   PGD(model, eps=0.1, steps=2, eot=2, eot_batched=False)):
        adv = attack(x, y)
        assert (adv - x).abs().max() <= attack.eps + 1e-6
        assert adv.min() >= 0 and adv.max() <= 1
        assert model.training  # the attack never switches the mode


def test_pgd_loss_at_least_fgsm_on_trained_tiny_model():
    torch.manual_seed(0)
    from spikeguard.data import batches, load_digits_split
    from spikeguard.training import Trainer, make_sgd

    train, test = load_digits_split()
    model = create_model("small_conv", num_classes=10, T=2, in_channels=1, image_size=8, mean=train.mean, std=train.std)
    opt, sched = make_sgd(model, lr=0.1, epochs=2, steps_per_epoch=23)
    trainer = Trainer(model, opt, sched)
    for epoch in range(2):
        trainer.train_epoch(batches(train, 64, shuffle=True), epoch)
    model.eval()
    x, y = test.float_images()[:64], test.labels[:64]
    eps = 16 / 255
    with torch.no_grad():
        l_fgsm = F.cross_entropy(model(FGSM(model, eps=eps)(x, y)), y)
        l_pgd = F.cross_entropy(model(PGD(model, eps=eps, alpha=eps / 4, steps=10)(x, y)), y)
        l_clean = F.cross_entropy(model(x), y)
    assert l_fgsm > l_clean
    assert l_pgd >= l_fgsm


def test_attack_input_validation():
    model = Linear()
    x = torch.rand(2, 1, 3, 4)
    y = torch.zeros(2, dtype=torch.long)
    with pytest.raises(SpikeguardError, match="eps"):
        FGSM(model, eps=2.0)
    with pytest.raises(SpikeguardError, match=r"\[0, 1\]"):
        FGSM(model)(x * 3, y)
    with pytest.raises(SpikeguardError, match="NaN"):
        FGSM(model)(x * float("nan"), y)
    with pytest.raises(SpikeguardError, match="labels"):
        FGSM(model)(x, torch.zeros(3, dtype=torch.long))
