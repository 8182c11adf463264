"""The fused LIF scan (both CPU kernels) against the reference per-step loop."""

from __future__ import annotations

import itertools

import pytest
import torch

from spikeguard.models import create_model
from spikeguard.neurons import LIF, SURROGATES, NoisyLIF, Surrogate, noise_seed, record_potentials
from spikeguard.neurons import fused
from spikeguard.neurons.lif import get_default_backend, set_default_backend
from spikeguard.tgo import membrane_constraint

torch.set_num_threads(1)

KERNELS = ["torch", "native"] if fused.native_available() else ["torch"]


@pytest.fixture(params=KERNELS)
def kernel(request):
    old = fused.set_kernel(request.param)
    yield request.param
    fused.set_kernel(old)


def _neuron(cls, backend, **kw):
    if cls is LIF:
        kw.pop("noisy_grad", None)
    return cls(backend=backend, **kw)


def _run(neuron, x, w_s, tgo_weight=3.0, seed=7):
    """Spikes, recorded U and dL/dx for L = <w_s, S> + tgo_weight * L_mc(U)."""
    x = x.detach().clone().requires_grad_(True)
    with noise_seed(neuron, seed), record_potentials(neuron) as rec:
        s = neuron(x)
    (u,) = rec.potentials
    loss = (s * w_s).sum() + tgo_weight * membrane_constraint([u])
    (gx,) = torch.autograd.grad(loss, x)
    return s.detach(), u.detach(), gx


CASES = list(itertools.product([LIF, NoisyLIF], SURROGATES, [False, True], ["surrogate", "expected"]))
CASES = [c for c in CASES if not (c[0] is LIF and c[3] == "expected")]


@pytest.mark.parametrize("cls,surrogate,detach_reset,noisy_grad", CASES,
                         ids=[f"{c[0].__name__}-{c[1]}-{'det' if c[2] else 'nodet'}-{c[3]}" for c in CASES])
def test_fused_matches_loop(kernel, cls, surrogate, detach_reset, noisy_grad):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 4, 3, 6, generator=g) * 1.2 + 0.4  # many neurons fire, many sit near V_th
    w_s = torch.randn(5, 4, 3, 6, generator=g)
    kw = dict(surrogate=surrogate, width=0.9, detach_reset=detach_reset, decay=0.7, noisy_grad=noisy_grad)
    s_ref, u_ref, g_ref = _run(_neuron(cls, "loop", **kw), x, w_s)
    s, u, gx = _run(_neuron(cls, "fused", **kw), x, w_s)
    assert 0 < s.mean() < 1
    assert torch.equal(s, s_ref)  # forward is bit-identical
    assert torch.equal(u, u_ref)
    torch.testing.assert_close(gx, g_ref, rtol=1e-5, atol=1e-6)
    assert gx.abs().sum() > 0


@pytest.mark.parametrize("detach_reset", [False, True])
@pytest.mark.parametrize("surrogate", SURROGATES)
def test_float64_jacobian_matches_loop(kernel, surrogate, detach_reset):
    """Every output direction (spikes and U) of the fused backward equals the reference's, in float64."""
    x = (torch.randn(4, 2, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 1.5 + 0.5)
    for cls in (LIF, NoisyLIF):
        jac = []
        for backend in ("loop", "fused"):
            m = _neuron(cls, backend, surrogate=surrogate, detach_reset=detach_reset, decay=0.6)

            def f(inp, m=m):
                with noise_seed(m, 3), record_potentials(m) as rec:
                    s = m(inp)
                return s, rec.potentials[0]

            jac.append(torch.autograd.functional.jacobian(f, x))
        for a, b in zip(*jac):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("detach_reset", [False, True])
def test_gradcheck_float64(kernel, detach_reset):
    """True finite-difference gradcheck of the fused function where it is differentiable: a
    narrow rectangle surrogate and potentials away from V_th make the surrogate terms vanish,
    so the backward must be the exact derivative of the recurrence and its reset."""
    x = torch.tensor([0.3, 1.6, 0.9, 0.2, 0.75, 2.0], dtype=torch.float64).repeat(3, 1).view(3, 2, 3)
    x = x + torch.linspace(0, 0.05, 18, dtype=torch.float64).view(3, 2, 3)
    sg = Surrogate("rectangle", 0.02)
    noise = torch.randn(3, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 0.01

    def f(inp):
        return fused.LIFScan.apply(inp, noise, 0.5, 1.0, sg, True, detach_reset)

    s, u = f(x)
    assert 0 < s.mean() < 1 and ((u - 1.0 + noise).abs() > 0.05).all()
    assert torch.autograd.gradcheck(f, (x.clone().requires_grad_(),), eps=1e-6, atol=1e-8)


def test_weight_gradients_and_tgo_in_a_model(kernel):
    """Whole model: same logits, potentials, and parameter gradients of CE + TGO."""
    torch.manual_seed(0)
    kw = dict(num_classes=3, T=2, neuron="noisy_lif", image_size=8)
    ref = create_model("small_conv", neuron_kw=dict(backend="loop"), **kw)
    fast = create_model("small_conv", neuron_kw=dict(backend="fused"), **kw)
    fast.load_state_dict(ref.state_dict())
    x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 0])
    grads = []
    for m in (ref, fast):
        with noise_seed(m, 5), record_potentials(m) as rec:
            logits = m(x)
        loss = torch.nn.functional.cross_entropy(logits, y) + membrane_constraint(rec.potentials)
        m.zero_grad()
        loss.backward()
        grads.append((logits.detach(), [u.detach() for u in rec.potentials],
                      [p.grad.clone() for p in m.parameters()]))
    (l0, u0, g0), (l1, u1, g1) = grads
    assert torch.equal(l0, l1)
    assert all(torch.equal(a, b) for a, b in zip(u0, u1))
    for a, b in zip(g0, g1):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_expanded_input_and_no_grad_paths(kernel):
    """The broadcast stem output (stride 0 over T) and the no-grad / inference paths."""
    h = torch.randn(3, 5, generator=torch.Generator().manual_seed(2)).mul(1.5).requires_grad_()
    ref, fast = LIF(backend="loop"), LIF(backend="fused")
    outs = []
    for m in (ref, fast):
        s = m(h.expand(4, 3, 5))
        (g,) = torch.autograd.grad((s * torch.arange(4.0).view(4, 1, 1)).sum(), h)
        outs.append((s.detach(), g))
    assert torch.equal(outs[0][0], outs[1][0])
    torch.testing.assert_close(outs[0][1], outs[1][1])
    x = torch.randn(4, 3, 5)
    with torch.inference_mode():
        s_inf = fast(x)
    with torch.no_grad(), record_potentials(fast) as rec:
        s_ng = fast(x)
    assert torch.equal(s_inf, ref(x)) and torch.equal(s_ng, s_inf)
    assert rec.potentials[0].shape == x.shape


def test_backend_selection():
    assert get_default_backend() == "fused"
    with pytest.raises(ValueError, match="backend"):
        LIF(backend="cuda-magic")
    with pytest.raises(ValueError, match="backend"):
        set_default_backend("nope")
    with pytest.raises(ValueError, match="kernel"):
        fused.set_kernel("nope")
    old = set_default_backend("loop")
    try:
        x = torch.randn(3, 2, 4, requires_grad=True)
        s = LIF()(x)
        assert s.grad_fn is not None and "LIFScan" not in type(s.grad_fn).__name__
    finally:
        set_default_backend(old)
    s = LIF()(torch.randn(3, 2, 4, requires_grad=True))
    assert "LIFScan" in type(s.grad_fn).__name__


def test_double_backward_is_refused_not_silently_wrong():
    """The JVP-by-double-backward trick must fail loudly on the fused backend (use "loop")."""
    x = torch.randn(3, 2, 4, requires_grad=True)
    s = LIF()(x)
    u = torch.zeros_like(s, requires_grad=True)
    (g,) = torch.autograd.grad(s, x, u, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|twice|not have been used"):
        torch.autograd.grad(g, u, torch.ones_like(g))
    s = LIF(backend="loop")(x)  # the reference supports it
    (g,) = torch.autograd.grad(s, x, u, create_graph=True)
    (jv,) = torch.autograd.grad(g, u, torch.ones_like(g))
    assert jv.shape == s.shape


def test_channels_last_steps_need_no_copy_and_match(kernel):
    """A channels_last activation viewed as [T, B, C, H, W]: same spikes, U and gradients as the
    contiguous layout, outputs in the input's layout."""
    g = torch.Generator().manual_seed(3)
    flat = (torch.randn(3 * 2, 4, 5, 6, generator=g) * 1.2 + 0.4)
    w = torch.randn(3, 2, 4, 5, 6, generator=g)
    outs = []
    for fmt in (torch.contiguous_format, torch.channels_last):
        x = flat.contiguous(memory_format=fmt).requires_grad_()
        m = NoisyLIF(backend="fused")
        with noise_seed(m, 1), record_potentials(m) as rec:
            s = m(x.view(3, 2, 4, 5, 6))
        loss = (s * w).sum() + membrane_constraint(rec.potentials)
        (gx,) = torch.autograd.grad(loss, x)
        outs.append((s.detach(), rec.potentials[0].detach(), gx))
        if fmt is torch.channels_last and kernel == "native":
            assert s[0].is_contiguous(memory_format=torch.channels_last)
    (s0, u0, g0), (s1, u1, g1) = outs
    assert torch.equal(s0, s1) and torch.equal(u0, u1)
    torch.testing.assert_close(g0, g1)
