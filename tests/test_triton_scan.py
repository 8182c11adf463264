"""The Triton LIF / Noisy-LIF kernels against the reference per-step loop.

Without a GPU the kernels run in Triton's interpreter (``TRITON_INTERPRET=1``, set here before
Triton is imported); with one they run compiled. Skipped where Triton is not installed
(``pip install -e .[gpu]``).
"""

from __future__ import annotations

import itertools
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton", reason="Triton is not installed (pip install -e .[gpu])")

from spikeguard.neurons import LIF, NoisyLIF, Surrogate, noise_seed, record_potentials  # noqa: E402
from spikeguard.neurons import fused  # noqa: E402
from spikeguard.neurons.surrogate import SURROGATES  # noqa: E402
from spikeguard.tgo import membrane_constraint  # noqa: E402

ts = pytest.importorskip("spikeguard.neurons.triton_scan", reason="the Triton kernels do not import here")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture
def triton_kernel():
    old = fused.set_kernel("triton")
    yield
    fused.set_kernel(old)


class _GivenNoise(NoisyLIF):
    """A Noisy-LIF whose noise is a given tensor (the reference side of the comparison)."""

    def __init__(self, eta, **kw):
        super().__init__(**kw)
        self.eta = eta

    def sample_noise(self, x):
        return self.eta.to(x.dtype)


def _data(shape=(5, 3, 70), seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(*shape, generator=g) * 1.2 + 0.4).to(DEVICE)  # many fire, many sit near V_th
    return x, torch.randn(*shape, generator=g).to(DEVICE)


def _grads(run, x, w_s, tgo=3.0):
    """Spikes, U and dL/dx for L = <w_s, S> + tgo * L_mc(U)."""
    x = x.detach().clone().requires_grad_(True)
    s, u = run(x)
    loss = (s.float() * w_s).sum() + tgo * membrane_constraint([u])
    (gx,) = torch.autograd.grad(loss, x)
    return s.detach(), u.detach(), gx


def _reference(x, w_s, eta, **kw):
    m = (_GivenNoise(eta, sigma=1.0, **kw) if eta is not None else LIF(**kw))
    m.backend = "loop"

    def run(inp):
        with record_potentials(m) as rec:
            s = m(inp)
        return s, rec.potentials[0]

    return _grads(run, x, w_s)


def _triton(x, w_s, noise, surrogate, at_noisy, **kw):
    def run(inp):
        return fused.LIFScan.apply(inp, noise, kw["decay"], 1.0, surrogate, at_noisy, kw["detach_reset"])

    return _grads(run, x, w_s)


CASES = list(itertools.product(SURROGATES, [False, True], ["none", "philox", "philox-expected"]))


@pytest.mark.parametrize("surrogate,detach_reset,noise", CASES,
                         ids=[f"{c[0]}-{'det' if c[1] else 'nodet'}-{c[2]}" for c in CASES])
def test_matches_reference_loop(triton_kernel, surrogate, detach_reset, noise):
    x, w_s = _data()
    kw = dict(decay=0.7, detach_reset=detach_reset)
    spec = None if noise == "none" else ts.PhiloxNoise(seed=1234, sigma=0.6)
    eta = None if spec is None else ts.philox_noise(spec, x.shape, DEVICE)
    sg = Surrogate(surrogate, 0.9)
    expected = noise == "philox-expected"
    ref_kw = dict(kw, surrogate=sg) if spec is None else dict(kw, surrogate=sg, noisy_grad="surrogate")
    if expected:  # Noisy-LIF's "expected" gradient: Gaussian surrogate at the clean potential
        ref_kw.update(noisy_grad="expected")
    s_ref, u_ref, g_ref = _reference(x, w_s, eta, **ref_kw)
    if expected:  # the reference's sigma is 1.0 (see _reference): the Gaussian of width 1
        s, u, gx = _triton(x, w_s, spec, Surrogate("gaussian", 1.0), False, **kw)
    else:
        s, u, gx = _triton(x, w_s, spec, sg, True, **kw)
    assert 0 < s.mean() < 1
    assert torch.equal(s, s_ref)  # forward spikes and U bit-identical
    assert torch.equal(u, u_ref)
    torch.testing.assert_close(gx, g_ref, rtol=1e-5, atol=1e-6)  # float32 rounding
    assert gx.abs().sum() > 0


def test_regenerated_noise_equals_forward_noise():
    """The backward redraws the forward's noise: same result as handing it the stored sample."""
    x, _ = _data((4, 2, 300), seed=3)
    spec = ts.PhiloxNoise(seed=99, sigma=0.63)
    eta = ts.philox_noise(spec, x.shape, DEVICE)
    assert torch.equal(eta, ts.philox_noise(spec, x.shape, DEVICE))  # reproducible
    assert not torch.equal(eta, ts.philox_noise(ts.PhiloxNoise(100, 0.63), x.shape, DEVICE))
    assert abs(float(eta.std()) - 0.63) < 0.05 and abs(float(eta.mean())) < 0.05
    s_a, u_a = ts.triton_forward(x, 0.5, 1.0, spec)
    s_b, u_b = ts.triton_forward(x, 0.5, 1.0, eta)
    assert torch.equal(s_a, s_b) and torch.equal(u_a, u_b)
    gs, gu = torch.randn_like(x), torch.randn_like(x)
    for sg in (Surrogate("rectangle", 0.3), Surrogate("ste")):  # both read the regenerated spikes
        a = ts.triton_backward(gs, gu, u_a, spec, 0.5, 1.0, sg, True, False)
        b = ts.triton_backward(gs, gu, u_a, eta, 0.5, 1.0, sg, True, False)
        assert torch.equal(a, b)


def test_noisy_lif_draws_in_kernel_and_is_reproducible(triton_kernel):
    """NoisyLIF on the Triton kernel: noise_seed reproduces the draw; different seeds differ."""
    x, _ = _data((4, 3, 50), seed=4)
    m = NoisyLIF(backend="fused").to(DEVICE)
    outs = []
    for seed in (5, 5, 6):
        with noise_seed(m, seed):
            outs.append(m(x))
    assert torch.equal(outs[0], outs[1]) and not torch.equal(outs[0], outs[2])
    spec = fused.philox_noise_for(x, m.sigma, None)
    assert isinstance(spec, ts.PhiloxNoise)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_input_keeps_float32_state(triton_kernel, dtype):
    if dtype == torch.bfloat16 and DEVICE == "cpu":
        pytest.skip("Triton's interpreter cannot load bfloat16 (numpy has no such type); runs on CUDA")
    x, w_s = _data((4, 2, 40), seed=5)
    xh = x.to(dtype)
    s, u = fused.LIFScan.apply(xh.requires_grad_(), None, 0.5, 1.0, Surrogate(), True, False)
    assert s.dtype == dtype and u.dtype == torch.float32
    s_ref, u_ref = fused.scan_forward(xh.detach().float(), 0.5, 1.0, None)
    assert torch.equal(s.float(), s_ref) and torch.equal(u, u_ref)
    (g,) = torch.autograd.grad((s.float() * w_s).sum(), xh)
    assert g.dtype == dtype


def test_expanded_input_and_inference(triton_kernel):
    """The broadcast stem output (stride 0 over T) and the no-grad path without stored U."""
    h = torch.randn(3, 5, generator=torch.Generator().manual_seed(2)).mul(1.5).to(DEVICE)
    s, u = ts.triton_forward(h.expand(4, 3, 5), 0.5, 1.0, None)
    s_ref, u_ref = fused.scan_forward(h.expand(4, 3, 5).contiguous(), 0.5, 1.0, None)
    assert torch.equal(s, s_ref) and torch.equal(u, u_ref)
    s2, u2 = ts.triton_forward(h.expand(4, 3, 5), 0.5, 1.0, None, keep_potentials=False)
    assert u2 is None and torch.equal(s2, s)


def test_auto_selects_triton_only_on_cuda():
    x = torch.zeros(2, 3)
    assert fused.kernel_for(x) in ("native", "torch")
    if torch.cuda.is_available():
        assert fused.kernel_for(x.cuda()) == "triton"
