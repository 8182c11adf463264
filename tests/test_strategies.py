"""Training strategies and baselines: AT, RAT, SR, StoG, DLIF, and their composition with TGO."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from spikeguard.data import load_digits_split
from spikeguard.errors import ConfigError
from spikeguard.models import create_model
from spikeguard.neurons import is_stochastic, noise_enabled
from spikeguard.neurons.baselines import StoGLIF, gate_parameters, materialize
from spikeguard.tgo import LambdaSchedule, ThresholdGuard
from spikeguard.training import Trainer, create_strategy, crafting_mode, make_sgd
from spikeguard.training.regularizers import (
    input_gradient_l1,
    mpp_penalty,
    orthogonal_retraction_,
    orthogonality_penalty,
    parseval_penalty,
    sparsity_penalty,
)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def batch():
    train, _ = load_digits_split()
    sub = train.subset(48, seed=0)
    return sub.float_images(), sub.labels, (train.mean, train.std)


def tiny(neuron: str = "lif", norm=None, seed: int = 0, **neuron_kw) -> nn.Module:
    torch.manual_seed(seed)
    mean, std = norm if norm else (None, None)
    model = create_model("small_conv", num_classes=10, T=2, neuron=neuron, neuron_kw=neuron_kw,
                         in_channels=1, image_size=8, channels=(8, 16, 16), mean=mean, std=std)
    materialize(model, (1, 8, 8))
    return model


CASES = [
    ("bptt", {}, "lif"),
    ("tet", {}, "lif"),
    ("at", {"eps": 8 / 255}, "lif"),
    ("at", {"eps": "8/255", "attack": "fgsm", "adv_ratio": 0.5, "loss": "tet"}, "lif"),
    ("rat", {"eps": 8 / 255, "beta": 0.002}, "lif"),
    ("rat", {"eps": 8 / 255, "beta": 1e-3, "mode": "penalty"}, "lif"),
    ("sr", {"lam": 0.01}, "lif"),
    ("sr_at", {"lam": 0.01, "eps": 8 / 255}, "lif"),
    ("stog", {"base": "bptt", "gamma": 5e-6}, "stog_lif"),
    ("stog", {"base": "at", "base_kw": {"eps": 8 / 255, "attack": "fgsm"}}, "stog_lif"),
    ("at", {"eps": 8 / 255, "adv_ratio": 0.5, "mpp_weight": 1.0}, "dlif"),
]


@pytest.mark.parametrize("name,kw,neuron", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_strategy_loss_finite_and_decreases(batch, name, kw, neuron):
    x, y, norm = batch
    model = tiny(neuron, norm)
    strategy = create_strategy(name, **kw)
    opt, _ = make_sgd(model, lr=0.05, weight_decay=0.0)
    trainer = Trainer(model, opt, strategy=strategy)
    torch.manual_seed(1)
    losses = [trainer.train_step(x, y, epoch=0.0)["task_loss"] for _ in range(10)]
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-3:]) / 3 < losses[0] - 0.05, losses


def test_at_trains_on_perturbed_inputs(batch):
    x, y, norm = batch
    model = tiny("lif", norm)
    # warm BatchNorm's running statistics up first: at initialisation the eval-mode network has
    # no potential inside the surrogate's support, so every input gradient is exactly zero
    opt, _ = make_sgd(model, lr=0.05, weight_decay=0.0)
    trainer = Trainer(model, opt)
    for _ in range(5):
        trainer.train_step(x, y, 0.0)
    model.train()
    seen: list[torch.Tensor] = []

    def forward(inp):
        seen.append(inp.detach())
        return model.forward_steps(inp)

    eps = 4 / 255
    out = create_strategy("at", eps=eps, attack="fgsm")(model, x, y, forward)
    assert len(seen) == 1 and torch.isfinite(out.loss)
    linf = (seen[0] - x).abs().flatten(1).amax(1)
    assert torch.allclose(linf, torch.full_like(linf, eps), atol=1e-6)  # sign step: exactly eps
    seen.clear()
    create_strategy("at", eps=eps, steps=3)(model, x, y, forward)  # PGD: inside the ball, not zero
    linf = (seen[0] - x).abs().flatten(1).amax(1)
    assert (linf > 0).all() and (linf <= eps + 1e-6).all()
    assert model.training and all(m.training for m in model.modules())


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_crafting_restores_mode_and_bn_statistics(batch, mode):
    x, y, norm = batch
    model = tiny("lif", norm)
    model.train()
    model.body[1].eval()  # a mixed state must come back exactly
    flags = [m.training for m in model.modules()]
    bn = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    before = [m.running_mean.clone() for m in bn]
    strategy = create_strategy("at", eps=8 / 255, steps=2, craft_mode=mode)
    with crafting_mode(model, mode):
        assert model.training == (mode == "train")
    strategy.craft(model, x, y)
    assert [m.training for m in model.modules()] == flags
    assert all(torch.equal(a, m.running_mean) for a, m in zip(before, bn))


def test_rat_penalty_zero_for_orthogonal_weight_positive_otherwise():
    torch.manual_seed(0)
    lin = nn.Linear(8, 4, bias=False)
    nn.init.orthogonal_(lin.weight)
    assert float(parseval_penalty(lin.weight.detach())) < 1e-10
    conv = nn.Conv2d(2, 4, 2, bias=False)  # [4, 2*2*2]: orthonormal rows possible
    nn.init.orthogonal_(conv.weight)
    with torch.no_grad():
        assert float(orthogonality_penalty(nn.Sequential(conv, lin))) < 1e-10
    lin.weight.data.mul_(1.5)
    assert float(parseval_penalty(lin.weight.detach())) > 0.1
    rand = nn.Linear(8, 4, bias=False)
    assert float(parseval_penalty(rand.weight.detach())) > 0


def test_rat_retraction_is_a_gradient_step_on_the_penalty():
    torch.manual_seed(0)
    lin = nn.Linear(6, 3, bias=False)
    w0 = lin.weight.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(parseval_penalty(w0), w0)
    orthogonal_retraction_(lin, beta=0.01)
    assert torch.allclose(lin.weight, w0.detach() - 0.01 * g, atol=1e-6)
    before = float(parseval_penalty(lin.weight.detach()))
    for _ in range(50):
        orthogonal_retraction_(lin, beta=0.05)
    assert float(parseval_penalty(lin.weight.detach())) < before


def test_rat_after_step_retracts_weights(batch):
    x, y, norm = batch
    model = tiny("lif", norm)
    opt, _ = make_sgd(model, lr=0.0, momentum=0.0, weight_decay=0.0)  # lr 0: only the retraction moves W
    before = float(orthogonality_penalty(model).detach())
    trainer = Trainer(model, opt, strategy=create_strategy("rat", eps=2 / 255, beta=0.01, steps=1))
    for _ in range(3):
        trainer.train_step(x, y, 0.0)
    assert float(orthogonality_penalty(model).detach()) < before


def test_sr_estimate_matches_exact_gradient_norm():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 5)).double()
    x = torch.rand(6, 3, 2, 2, dtype=torch.float64)
    y = torch.randint(0, 5, (6,))
    _, est = sparsity_penalty(net, x, y, h=1e-5)
    exact = input_gradient_l1(net, x, y)
    assert torch.allclose(est, exact, rtol=1e-3, atol=1e-8), (est, exact)
    pen, _ = sparsity_penalty(net, x, y, h=1e-5)
    assert math.isclose(float(pen.detach()), float(exact.square().mean()), rel_tol=2e-3)


@pytest.mark.parametrize("name,kw", [("at", {"eps": 8 / 255}), ("sr", {"lam": 0.01}),
                                     ("rat", {"eps": 8 / 255, "adv_ratio": 0.5})])
def test_tgo_composes_with_strategy(batch, name, kw):
    x, y, norm = batch
    model = tiny("noisy_lif", norm)
    opt, _ = make_sgd(model, lr=0.05, weight_decay=0.0)
    guard = ThresholdGuard(delta=0.5, schedule=LambdaSchedule("constant", lambda_max=0.5))
    m = Trainer(model, opt, strategy=create_strategy(name, **kw), guard=guard).train_step(x, y, 0.0)
    assert m["constraint"] > 0 and m["lam"] == 0.5
    assert math.isclose(m["loss"], m["task_loss"] + 0.5 * m["constraint"], rel_tol=1e-5)


def test_stog_gates_are_stochastic_and_freeze_after_prior_epochs(batch):
    x, y, norm = batch
    model = tiny("stog_lif", norm)
    assert is_stochastic(model)
    model.train()  # batch statistics: a fresh eval-mode net emits no spikes for the gates to drop
    with torch.no_grad():
        gates = [m for m in model.modules() if isinstance(m, StoGLIF)]
        for g in gates:
            g.keep.fill_(0.5)
        a, b = model(x), model(x)
        assert not torch.equal(a, b)
        with noise_enabled(model, False):  # gate off: the expectation, deterministic
            assert torch.equal(model(x), model(x))
        for g in gates:
            g.keep.fill_(1.0)
    opt, _ = make_sgd(model, lr=0.1, weight_decay=5e-4)
    assert any(g.get("weight_decay") == 0.0 and any(p is q for p in g["params"] for q in gate_parameters(model))
               for g in opt.param_groups)
    trainer = Trainer(model, opt, strategy=create_strategy("stog", base="bptt", gamma=0.5, prior_epochs=1))
    trainer.train_step(x, y, 0.0)
    moved = [q.detach().clone() for q in gate_parameters(model)]
    assert any(float(q.min()) < 1.0 for q in moved)  # the prior pulls the keep logits below 1
    for _ in range(2):
        trainer.train_step(x, y, 1.5)
    assert all(torch.equal(a, q) for a, q in zip(moved, gate_parameters(model)))
    assert not any(q.requires_grad for q in gate_parameters(model))


def test_stog_requires_gated_model(batch):
    x, y, norm = batch
    opt, _ = make_sgd(tiny("lif", norm), lr=0.1)
    trainer = Trainer(tiny("lif", norm), opt, strategy=create_strategy("stog"))
    with pytest.raises(ConfigError, match="stog_lif"):
        trainer.train_step(x, y, 0.0)


def test_dlif_gain_is_trained_and_mpp_logged(batch):
    x, y, norm = batch
    model = tiny("dlif", norm, decay=0.99)
    opt, _ = make_sgd(model, lr=0.05, weight_decay=0.0)
    m = Trainer(model, opt, strategy=create_strategy("at", eps=8 / 255, adv_ratio=0.5, mpp_weight=1.0)).train_step(x, y, 0.0)
    assert m["mpp"] > 0
    gains = [p for n, p in model.named_parameters() if n.endswith("gain")]
    assert len(gains) == 3 and any(not torch.equal(g, torch.ones_like(g)) for g in gains)


def test_mpp_penalty_is_leaky_integration():
    d = torch.tensor([[1.0], [1.0]])  # [T=2, 1]
    # Y = [1, 0.5 + 1] -> mean of squares over steps = (1 + 2.25) / 2
    assert math.isclose(float(mpp_penalty(d, torch.zeros_like(d), tau=0.5)), 1.625)


@pytest.mark.parametrize("name,kw,msg", [
    ("at", {"eps": 2}, "eps"), ("at", {"attack": "cw"}, "attack"), ("at", {"adv_ratio": 1.5}, "adv_ratio"),
    ("at", {"mpp_weight": 1.0}, "adv_ratio"), ("rat", {"mode": "svd"}, "mode"), ("sr", {"h": 0}, "h"),
    ("sr", {"eps": 2 / 255}, "adversarial"), ("stog", {"base": "nope"}, "unknown strategy"),
])
def test_bad_arguments_are_config_errors(name, kw, msg):
    with pytest.raises(ConfigError, match=msg):
        create_strategy(name, **kw)


def test_ablation_quick_mode_on_digits(tmp_path):
    from spikeguard.jobs.ablation import QUICK_OVERRIDES, AttackSettings, format_table, run_ablation
    from spikeguard.config import load_config

    base = load_config(None, list(QUICK_OVERRIDES) + ["data.subset=200", "data.test_subset=30", "optim.epochs=1",
                                                       "threads=1"])
    settings = AttackSettings(attacks=("fgsm", "pgd3"), eot=2, passes=2)
    res = run_ablation(base, tmp_path, strategy="bptt", settings=settings, progress=False, log=lambda s: None)
    assert [(r["mc"], r["nlif"]) for r in res["rows"]] == [(False, False), (True, False), (False, True), (True, True)]
    assert [r["stochastic"] for r in res["rows"]] == [False, False, True, True]
    for r in res["rows"]:
        assert all(0.0 <= r[k] <= 1.0 for k in ("clean", "fgsm", "pgd3"))
    assert [(r["eot"], r["passes"]) for r in res["rows"]][2:] == [(2, 2), (2, 2)]
    cfgs = [json.loads((tmp_path / "runs" / f"mc{int(mc)}-nlif{int(nl)}" / "config.json").read_text()) for mc, nl in
            ((0, 0), (1, 1))]
    text = json.dumps(cfgs)
    assert '"noisy_lif"' in text and (tmp_path / "ablation.json").is_file()
    # the ablation is a study: its rows, its result files (one schema), its tables
    study = json.loads((tmp_path / "study.json").read_text())
    assert [r["run"] for r in study["rows"]] == ["mc0-nlif0", "mc1-nlif0", "mc0-nlif1", "mc1-nlif1"]
    assert [r["model"] for r in study["rows"]] == ["- / -", "MC / -", "- / NLIF", "MC / NLIF"]
    assert study["columns"] == ["clean (A)", "FGSM (A)", "PGD3 (A)", "worst case (A)"]
    for r, row in zip(res["rows"], study["rows"]):
        assert r["fgsm"] == row["accuracy"]["FGSM (A)"] and 0.0 < r["near_threshold"] < 1.0
        assert r["worst_case"] <= min(r["fgsm"], r["pgd3"])
        doc = json.loads(Path(r["result"]).read_text())
        assert doc["schema"] == "spikeguard.robustness" and Path(r["result"]).parent.name == "eval-ablation"
    assert res["test_samples"] == 30 and (tmp_path / "study.md").is_file()
    table = format_table(res).splitlines()
    assert table[1].split()[:4] == ["MC", "NLIF", "Clean", "FGSM"] and "(" in table[3] and "(" not in table[2]


def test_sr_uses_common_noise_on_stochastic_models(batch):
    x, y, norm = batch
    model = tiny("noisy_lif", norm, sigma=2.0)
    model.train()

    def forward(inp):
        return model.forward_steps(inp)

    strategy = create_strategy("sr", lam=1.0, h=1e-6)
    out = strategy(model, x, y, forward)
    # with independent noise at x and x + h v the estimate would be (noise difference) / 1e-6
    assert math.isfinite(out.metrics["grad_l1_est"]) and out.metrics["grad_l1_est"] < 1e3
