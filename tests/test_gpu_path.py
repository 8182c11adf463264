"""The GPU path's logic, checked on a CPU: noise generators placed on the input's device, and
Noisy-LIF under ``torch.compile`` (fresh noise per call, the same noise in forward and backward).

The compile tests take 10-60 s on a 2-core CPU, so there they run only with
``SPIKEGUARD_TEST_COMPILE=1`` (``benchmarks/gpu/dry_run.sh`` sets it); on CUDA they always run.
"""

from __future__ import annotations

import os
import shutil

import pytest
import torch
from torch import nn

from spikeguard import perf
from spikeguard.neurons import LIF, NoisyLIF, fused, noise_seed
from spikeguard.neurons.baselines import StoGLIF


class _OtherDevice:
    """Stands in for a generator on another device (this machine has only a CPU)."""

    device = torch.device("meta")


def test_noise_seed_on_a_parameterless_model_records_the_seed():
    m = nn.Sequential(NoisyLIF(backend="fused"), LIF(), NoisyLIF(backend="loop"))
    x = torch.randn(3, 2, 7)
    with noise_seed(m, 40):
        assert [n.generator_seed for n in (m[0], m[2])] == [40, 41] and m[1].generator_seed is None
        assert all(n.generator.device == torch.device("cpu") for n in (m[0], m[2]))
        a = m(x)
    assert m[0].generator is None and m[0].generator_seed is None  # restored on exit
    with noise_seed(m, 40):
        assert torch.equal(m(x), a)


@pytest.mark.parametrize("backend", ["fused", "loop"])
def test_seeded_generator_is_recreated_on_the_input_device(backend):
    """A noise_seed generator on another device than the input is re-made there from its seed, once."""
    x = torch.randn(3, 2, 9)
    ref = NoisyLIF(backend=backend, generator=torch.Generator().manual_seed(17))(x)
    m = NoisyLIF(backend=backend)
    m.generator, m.generator_seed = _OtherDevice(), 17
    assert torch.equal(m(x), ref)
    assert isinstance(m.generator, torch.Generator) and m.generator.device == x.device
    made = m.generator
    m(x)
    assert m.generator is made  # not re-seeded on every call: the stream goes on


def test_generator_set_by_hand_on_another_device_is_an_error():
    m = NoisyLIF(backend="fused")
    m.generator = _OtherDevice()
    with pytest.raises(RuntimeError, match="generator is on meta but input is on cpu"):
        m(torch.randn(2, 1, 3))


def test_stog_gate_uses_the_placed_generator():
    x = torch.randn(3, 2, 5)
    a = StoGLIF(generator=torch.Generator().manual_seed(4))
    b = StoGLIF()
    b.generator, b.generator_seed = _OtherDevice(), 4
    assert torch.equal(a(x), b(x))


# ------------------------------------------------------------------------------ torch.compile
_COMPILE = torch.cuda.is_available() or bool(os.environ.get("SPIKEGUARD_TEST_COMPILE"))
_CC = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


class _Tiny(nn.Module):
    """Linear -> Noisy-LIF -> Linear over T steps, with the ``forward_steps`` perf.compile_model compiles."""

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.lif, self.out = nn.Linear(8, 16), NoisyLIF(backend="fused"), nn.Linear(16, 3)

    def forward_steps(self, x):
        return self.out(self.lif(self.fc(x)))

    def forward(self, x):
        return self.forward_steps(x).mean(0)


def _seeded_run(model, x):
    xr = x.clone().requires_grad_()
    with noise_seed(model, 3):
        out = model(xr)
    (g,) = torch.autograd.grad(out.square().sum(), xr)
    return out.detach(), g


def _check_compiled_noise(model, x):
    """Fresh noise per call; under noise_seed the compiled outputs and input gradients equal the
    eager ones (the backward used the forward's noise, and the seed was read on each call)."""
    a, b = model(x), model(x)
    assert not torch.equal(a, b), "compiled Noisy-LIF reused its noise"
    out_c, g_c = _seeded_run(model, x)
    out_c2, _ = _seeded_run(model, x)
    perf.uncompile_model(model)
    out_e, g_e = _seeded_run(model, x)
    assert torch.equal(out_c, out_c2)
    torch.testing.assert_close(out_c, out_e, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g_c, g_e, rtol=1e-5, atol=1e-6)
    assert g_e.abs().sum() > 0


@pytest.mark.slow
@pytest.mark.skipif(not _COMPILE, reason="compiling takes 30-60 s on a 2-core CPU; set SPIKEGUARD_TEST_COMPILE=1")
@pytest.mark.skipif(_CC is None and not torch.cuda.is_available(), reason="no C compiler for CPU inductor")
def test_compiled_noisy_lif_draws_fresh_noise():
    """perf.compile_model (inductor) with Noisy-LIF on the default kernel of the device."""
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    model = _Tiny().to(dev)
    x = torch.randn(4, 5, 8, device=dev) * 2
    perf.compile_model(model)
    _check_compiled_noise(model, x)


@pytest.mark.slow
@pytest.mark.skipif(not _COMPILE, reason="compiling takes 10-30 s on a 2-core CPU; set SPIKEGUARD_TEST_COMPILE=1")
def test_compiled_noisy_lif_on_the_triton_kernel_draws_fresh_noise():
    """The Philox path: the seed is a host integer from the generator; a traced graph must not
    keep it as a constant. On a CPU the interpreted kernels cannot go through inductor, so the
    graph is traced with aot_eager (the capture is what matters); on CUDA with inductor."""
    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")
    pytest.importorskip("triton")
    pytest.importorskip("spikeguard.neurons.triton_scan", reason="the Triton kernels do not import here")
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    old = fused.set_kernel("triton")
    try:
        torch.manual_seed(0)
        model = _Tiny().to(dev)
        x = torch.randn(4, 5, 8, device=dev) * 2
        assert fused.kernel_for(x) == "triton"
        model.forward_steps = torch.compile(model.forward_steps, backend="inductor" if dev == "cuda" else "aot_eager")
        _check_compiled_noise(model, x)
    finally:
        fused.set_kernel(old)
