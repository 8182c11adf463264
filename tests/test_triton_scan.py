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


# --------------------------------------------------------------------------------------------
# Device checks, several program blocks, layouts, and the fallback after a Triton failure


def test_compiled_kernels_take_only_cuda_tensors(monkeypatch):
    """Compiled (not interpreted) kernels are chosen for CUDA tensors only, even under set_kernel("triton"):
    a host pointer handed to a GPU kernel would be read as device memory."""
    x = torch.randn(3, 2, 5)
    monkeypatch.setattr(ts, "INTERPRETED", False)
    assert not ts.triton_supports(x)
    old = fused.set_kernel("triton")
    try:
        assert fused.kernel_for(x) == "torch" and fused.philox_noise_for(x, 0.5, None) is None
        m = NoisyLIF(backend="fused")
        with noise_seed(m, 3):
            s = m(x)  # the sampled-tensor path, on the CPU
        assert s.shape == x.shape
    finally:
        fused.set_kernel(old)
    monkeypatch.setattr(ts, "INTERPRETED", True)
    assert ts.triton_supports(x)  # the interpreter takes host tensors (these tests)
    if torch.cuda.is_available():
        assert ts.triton_supports(x.cuda())


def _layouts():
    """``[T, B, ...]`` inputs with N = 3,000 neurons per step (three program blocks of 1,024)."""
    g = torch.Generator().manual_seed(11)

    def r(*shape):
        return (torch.randn(*shape, generator=g) * 1.2 + 0.4).to(DEVICE)

    return {
        "contiguous": r(3, 2, 1500),
        "channels-last": r(3 * 2, 6, 10, 25).contiguous(memory_format=torch.channels_last).view(3, 2, 6, 10, 25),
        "t-strided": r(6, 2, 1500)[::2],                     # dense steps, T stride 2N: no copy
        "sliced-steps": r(3, 2, 1600)[:, :, :1500],          # steps not dense: copied
        "time-major-view": r(2, 3, 1500).transpose(0, 1),    # [B, T, N] viewed as [T, B, N]
        "expanded": r(1, 2, 1500).expand(3, 2, 1500),        # the broadcast stem: stride 0 over T
    }


LAYOUTS = list(_layouts())


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("noisy", [False, True], ids=["lif", "noise-tensor"])
def test_several_blocks_and_layouts_match_reference(triton_kernel, layout, noisy):
    x = _layouts()[layout]
    assert x[0].numel() == 3000 and triton_kernel is None
    g = torch.Generator().manual_seed(12)
    w_s = torch.randn(x.shape, generator=g).to(DEVICE)
    eta = (torch.randn(x.shape, generator=g) * 0.6).to(DEVICE) if noisy else None
    kw = dict(decay=0.7, detach_reset=False)
    sg = Surrogate("triangle", 0.9)
    s_ref, u_ref, g_ref = _reference(x.contiguous(), w_s, eta, surrogate=sg, **kw)
    s, u, gx = _triton(x, w_s, eta, sg, True, **kw)
    assert 0 < s.float().mean() < 1
    assert torch.equal(s, s_ref) and torch.equal(u, u_ref)
    torch.testing.assert_close(gx, g_ref, rtol=1e-5, atol=1e-6)


def test_philox_noise_in_memory_order_across_blocks():
    """In-kernel noise over three blocks and channels_last steps equals the tensor the fallback
    regenerates (fused._philox_tensor, the kernels' counter t * N + i in memory order)."""
    x = _layouts()["channels-last"]
    spec = ts.PhiloxNoise(seed=2024, sigma=0.6)
    s_a, u_a = ts.triton_forward(x, 0.5, 1.0, spec)
    eta = fused._philox_tensor(ts, spec, u_a)
    assert eta.stride() == u_a.stride() and abs(float(eta.std()) - 0.6) < 0.05
    s_b, u_b = ts.triton_forward(x, 0.5, 1.0, eta)
    assert torch.equal(s_a, s_b) and torch.equal(u_a, u_b)
    gs = torch.randn_like(u_a)
    a = ts.triton_backward(gs, None, u_a, spec, 0.5, 1.0, Surrogate(), True, False)
    b = ts.triton_backward(gs, None, u_a, eta, 0.5, 1.0, Surrogate(), True, False)
    assert torch.equal(a, b)


@pytest.fixture
def fresh_triton_state(monkeypatch):
    """Restore the module's Triton state (a test below marks Triton as failed)."""
    monkeypatch.setattr(fused, "_triton", ts)
    monkeypatch.setattr(fused, "_triton_error", None)
    old = fused.set_kernel("triton")
    yield
    fused.set_kernel(old)


def _boom(*a, **k):
    raise RuntimeError("injected Triton failure")


def _philox_reference(x, spec, w_s):
    """Spikes and dL/dx of <w_s, S> + TGO on the torch kernel with the Philox noise as a tensor."""
    eta = ts.philox_noise(spec, x.shape, DEVICE)
    old = fused.set_kernel("torch")
    try:
        return _triton(x, w_s, eta, Surrogate(), True, decay=0.5, detach_reset=False)
    finally:
        fused.set_kernel(old)


def test_pending_backward_survives_a_later_triton_failure(fresh_triton_state, monkeypatch):
    """A forward ran on Triton (Philox noise, nothing stored); then another forward's Triton
    kernel fails and 'auto' falls back for good. The first graph's backward still runs on the
    Triton module it was recorded with, with the same noise."""
    x, w_s = _data((3, 2, 1500), seed=8)
    spec = ts.PhiloxNoise(seed=77, sigma=0.6)
    xr = x.clone().requires_grad_()
    s, u = fused.LIFScan.apply(xr, spec, 0.5, 1.0, Surrogate(), True, False)
    fused.set_kernel("auto")
    monkeypatch.setattr(ts, "triton_forward", _boom)
    with pytest.warns(RuntimeWarning, match="Triton LIF kernel failed"):
        s2, u2, kernel, _ = fused._run_forward("triton", x, 0.5, 1.0, None, True)
    assert fused._triton is False and kernel == "torch"
    assert torch.equal(s2, fused.scan_forward(x, 0.5, 1.0, None)[0])  # the fallback's numbers
    loss = (s * w_s).sum() + 3.0 * membrane_constraint([u])
    (gx,) = torch.autograd.grad(loss, xr)  # crashed with AttributeError before ctx kept the module
    s_ref, _, g_ref = _philox_reference(x, spec, w_s)
    assert torch.equal(s.detach(), s_ref)
    torch.testing.assert_close(gx, g_ref, rtol=1e-5, atol=1e-6)


def test_failed_triton_backward_falls_back_with_the_same_noise(fresh_triton_state, monkeypatch):
    x, w_s = _data((3, 2, 1500), seed=9)
    spec = ts.PhiloxNoise(seed=78, sigma=0.6)
    fused.set_kernel("auto")
    xr = x.clone().requires_grad_()
    monkeypatch.setattr(fused, "kernel_for", lambda *a, **k: "triton")  # 'auto' on a CPU tensor
    s, u = fused.LIFScan.apply(xr, spec, 0.5, 1.0, Surrogate(), True, False)
    monkeypatch.setattr(ts, "triton_backward", _boom)
    loss = (s * w_s).sum() + 3.0 * membrane_constraint([u])
    with pytest.warns(RuntimeWarning, match="Triton LIF kernel failed"):
        (gx,) = torch.autograd.grad(loss, xr)
    monkeypatch.undo()  # the reference runs on the torch kernel
    _, _, g_ref = _philox_reference(x, spec, w_s)
    torch.testing.assert_close(gx, g_ref, rtol=1e-5, atol=1e-6)


def test_backward_refuses_when_the_noise_cannot_be_regenerated(fresh_triton_state, monkeypatch):
    x, w_s = _data((3, 2, 40), seed=10)
    fused.set_kernel("auto")
    xr = x.clone().requires_grad_()
    monkeypatch.setattr(fused, "kernel_for", lambda *a, **k: "triton")
    s, _ = fused.LIFScan.apply(xr, ts.PhiloxNoise(seed=1, sigma=0.6), 0.5, 1.0, Surrogate(), True, False)
    monkeypatch.setattr(ts, "triton_backward", _boom)
    monkeypatch.setattr(ts, "philox_noise", _boom)
    with pytest.warns(RuntimeWarning), pytest.raises(RuntimeError, match="cannot be regenerated"):
        torch.autograd.grad((s * w_s).sum(), xr)
