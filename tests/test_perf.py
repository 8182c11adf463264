"""Speed options: bf16 autocast training, channels_last, fused SGD, compile, precision records."""

from __future__ import annotations

import os
import time

import pytest
import torch
from torch import nn

from spikeguard.config import load_config
from spikeguard.errors import ConfigError
from spikeguard.evaluation import evaluate_robustness
from spikeguard.jobs.train import run_experiment
from spikeguard.models import create_model
from spikeguard.neurons import record_potentials
from spikeguard.perf import (
    autocast, compile_model, current_precision, resolve_precision, to_channels_last, uncompile_model,
)
from spikeguard.training.trainer import Trainer, make_sgd

TINY = ["data.name=digits", "model.name=small_conv", "model.T=2", "model.kw={channels = [4, 8, 8]}",
        "optim.epochs=1", "optim.batch_size=64", "data.subset=128", "data.test_subset=40",
        "neuron.kind=noisy_lif", "tgo.enabled=true", "eval.attacks=[\"fgsm\"]"]


def _model(neuron="lif", seed=0):
    torch.manual_seed(seed)
    return create_model("small_conv", num_classes=3, T=2, neuron=neuron, in_channels=3, image_size=8,
                        channels=(4, 6, 8))


def _cpu_bf16_works() -> bool:
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return nn.Conv2d(3, 2, 3)(torch.rand(1, 3, 5, 5)).dtype == torch.bfloat16
    except Exception:  # noqa: BLE001
        return False


def test_precision_names_and_records():
    assert resolve_precision("off") == "float32" and resolve_precision("bfloat16") == "bf16"
    with pytest.raises(ConfigError):
        resolve_precision("fp8")
    assert current_precision("cpu") == "float32"
    with autocast("bf16", "cpu"):
        assert current_precision("cpu") == "bf16"
        with autocast("float32", "cpu"):  # float32 switches an outer autocast off
            assert current_precision("cpu") == "float32"
    with pytest.raises(ConfigError, match="perf.amp"):
        load_config(None, ["perf.amp=fp8"]).validate()


@pytest.mark.skipif(not _cpu_bf16_works(), reason="bf16 autocast does not work on this CPU build")
@pytest.mark.parametrize("neuron", ["lif", "noisy_lif"])
def test_bf16_training_step_keeps_float32_state_and_weights(neuron):
    model = _model(neuron)
    opt, _ = make_sgd(model, lr=0.05)
    trainer = Trainer(model, opt, precision="bf16")
    x, y = torch.rand(8, 3, 8, 8), torch.arange(8) % 3
    with autocast("bf16", "cpu"), record_potentials(model) as rec:
        logits = model(x)
    assert logits.dtype == torch.bfloat16
    assert all(u.dtype == torch.float32 for u in rec.potentials)  # LIF state stays float32
    before = [p.detach().clone() for p in model.parameters()]
    m = trainer.train_step(x, y, 0.0)
    assert torch.isfinite(torch.tensor(m["loss"]))
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    # evaluation after bf16 training stays float32 and says so
    model.eval()
    rep = evaluate_robustness(model, x, y, ["fgsm"], eps=4 / 255, batch_size=8)
    assert rep.precision == "float32" and rep.to_dict()["precision"] == "float32"
    with autocast("bf16", "cpu"):  # asked for explicitly: recorded
        assert evaluate_robustness(model, x, y, ["fgsm"], eps=4 / 255, batch_size=8).precision == "bf16"


def test_channels_last_and_fused_sgd_give_the_same_step():
    x, y = torch.rand(8, 3, 8, 8), torch.arange(8) % 3
    results = []
    for fast in (False, True):
        model = _model("lif")
        if fast:
            to_channels_last(model)
            assert any(p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
                       for p in model.parameters())
        opt, _ = make_sgd(model, lr=0.05, fused=fast)
        Trainer(model, opt).train_step(x, y, 0.0)
        results.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_experiment_with_every_perf_option(tmp_path):
    overrides = TINY + ["perf.channels_last=true", "perf.fused_optimizer=true", "perf.gpu_data=true"]
    if _cpu_bf16_works():
        overrides.append("perf.amp=bf16")
    res = run_experiment(load_config(None, overrides), tmp_path / "run", progress=False)
    assert res["train_precision"] == ("bf16" if _cpu_bf16_works() else "float32")
    assert 0.0 <= res["test_accuracy"] <= 1.0


@pytest.mark.slow
@pytest.mark.skipif(not (torch.cuda.is_available() or os.environ.get("SPIKEGUARD_TEST_COMPILE")),
                    reason="compiling takes ~20 s on a 2-core CPU; set SPIKEGUARD_TEST_COMPILE=1 to run it")
def test_compile_keeps_the_module_and_its_numbers():
    """torch.compile of forward_steps (measured: 21 s on the 2-core CPU VM, so opt-in there)."""
    model = _model("lif").eval()
    x = torch.rand(4, 3, 8, 8)
    with torch.no_grad():
        ref = model(x)
    compile_model(model, mode=None)
    t0 = time.perf_counter()
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as e:  # noqa: BLE001 - no compiler toolchain here
        pytest.skip(f"torch.compile does not run here: {type(e).__name__}: {str(e)[:120]}")
    if time.perf_counter() - t0 > 60:
        pytest.skip("compiling took over a minute on this CPU")
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    assert "forward_steps" not in model.state_dict()
    uncompile_model(model)
    assert "forward_steps" not in model.__dict__


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bf16_on_cuda_uses_the_triton_kernel():
    from spikeguard.neurons import fused

    model = _model("noisy_lif").cuda()
    x = torch.rand(8, 3, 8, 8, device="cuda")
    with autocast("bf16", "cuda"), record_potentials(model) as rec:
        logits = model(x)
    assert logits.dtype == torch.bfloat16 and rec.potentials[0].dtype == torch.float32
    assert fused.kernel_for(x) == "triton" or not fused.triton_available()


def test_batched_restarts_pick_the_best_run_per_sample():
    from spikeguard.attacks.base import best_of_restarts
    from spikeguard.attacks.gradient import PGD

    model = _model("lif").eval()
    x, y = torch.rand(5, 3, 8, 8), torch.arange(5) % 3
    loop = PGD(model, eps=8 / 255, steps=2, restarts=3, random_start=False)(x, y)
    atk = PGD(model, eps=8 / 255, steps=2, restarts=3, random_start=False)
    atk.batch_restarts = True
    assert torch.equal(atk(x, y), loop)  # identical runs: the same answer either way

    calls = []

    def run_once(images, labels):  # three "restarts" with known scores per sample
        calls.append(images.shape[0])
        adv = torch.arange(images.shape[0], dtype=torch.float32).view(-1, 1)
        score = torch.tensor([0., 5., 1., 2., 5., 0., 3., 5., 9.])  # restart-major, B = 3
        return adv, score

    out = best_of_restarts(run_once, torch.zeros(3, 1), torch.zeros(3, dtype=torch.long), 3, batched=True)
    assert calls == [9]  # one batched call
    assert out.view(-1).tolist() == [6.0, 1.0, 8.0]  # sample 1: the first of the tied scores
