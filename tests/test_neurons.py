import math

import pytest
import torch

from spikeguard.neurons import (LIF, NoisyLIF, Surrogate, is_stochastic, make_neuron, noise_enabled, noise_seed,
                                record_potentials, spike, use_surrogate)
from spikeguard.neurons.surrogate import SURROGATES


def reference_lif(x, decay=0.5, vth=1.0, noise=None):
    """Plain-Python LIF: returns spikes and pre-reset potentials."""
    T = x.shape[0]
    flat = x.reshape(T, -1).tolist()
    nz = None if noise is None else noise.reshape(T, -1).tolist()
    n = len(flat[0])
    v = [0.0] * n
    S, U = [], []
    for t in range(T):
        s_t, u_t = [], []
        for i in range(n):
            u = decay * v[i] + flat[t][i]
            s = 1.0 if u + (0.0 if nz is None else nz[t][i]) - vth >= 0 else 0.0
            v[i] = u * (1 - s)
            s_t.append(s)
            u_t.append(u)
        S.append(s_t)
        U.append(u_t)
    return torch.tensor(S).reshape(x.shape), torch.tensor(U).reshape(x.shape)


def test_lif_matches_python_reference_and_records_pre_reset_potential():
    x = torch.randn(6, 3, 5) * 1.5
    lif = LIF(decay=0.5, v_threshold=1.0)
    with record_potentials(lif) as rec:
        s = lif(x)
    s_ref, u_ref = reference_lif(x)
    assert torch.equal(s, s_ref)
    assert len(rec.potentials) == 1
    torch.testing.assert_close(rec.potentials[0], u_ref)
    # U is pre-reset: wherever a spike fired, the recorded U is >= threshold (a post-reset V would be 0).
    assert (rec.potentials[0][s.bool()] >= 1.0).all()
    assert s.bool().any()


def test_hard_reset_to_zero():
    # constant input 0.6, decay 0.5: U = 0.6, 0.9, 1.05 -> spike, reset -> U = 0.6 again
    x = torch.full((6, 1), 0.6)
    lif = LIF(decay=0.5)
    with record_potentials(lif) as rec:
        s = lif(x)
    torch.testing.assert_close(rec.potentials[0].flatten(), torch.tensor([0.6, 0.9, 1.05, 0.6, 0.9, 1.05]))
    assert s.flatten().tolist() == [0, 0, 1, 0, 0, 1]


def test_neurons_hold_no_state_between_calls():
    lif = LIF()
    x = torch.rand(4, 2, 3) * 2
    assert torch.equal(lif(x), lif(x))


def test_recording_is_scoped_and_nested():
    lif = LIF()
    x = torch.rand(3, 2)
    with record_potentials(lif) as outer:
        with record_potentials(lif, detach=True) as inner:
            lif(x)
        lif(x)
    lif(x)  # outside: nothing recorded
    assert len(inner.potentials) == 1 and not inner.potentials[0].requires_grad
    assert len(outer.potentials) == 2
    assert lif._recorders == ()


@pytest.mark.parametrize("name", SURROGATES)
def test_surrogates_peak_and_integrate_to_one(name):
    sg = Surrogate(name, width=0.5)
    x = torch.linspace(-200, 200, 400001, dtype=torch.float64)
    d = sg.derivative(x)
    peak = float(sg.derivative(torch.zeros(1, dtype=torch.float64)))
    # every surrogate peaks at 1/width, except the Gaussian whose width is its std
    assert peak == pytest.approx(1 / (0.5 * math.sqrt(2 * math.pi)) if name == "gaussian" else 2.0)
    if name != "ste":
        integral = torch.trapezoid(d, x)
        assert abs(float(integral) - 1.0) < 0.02


def test_surrogate_gradient_flows_through_spike():
    x = torch.tensor([-0.5, 0.0, 0.5], requires_grad=True)
    spike(x, Surrogate("triangle", 1.0)).sum().backward()
    torch.testing.assert_close(x.grad, torch.tensor([0.5, 1.0, 0.5]))


def test_unknown_surrogate_and_bad_args_raise():
    with pytest.raises(ValueError, match="unknown surrogate"):
        Surrogate("nope")
    with pytest.raises(ValueError):
        LIF(decay=1.5)
    with pytest.raises(ValueError):
        NoisyLIF(sigma=-1)
    with pytest.raises(ValueError):
        make_neuron("izhikevich")


def test_noisy_lif_firing_probability_matches_normal_cdf():
    sigma = math.sqrt(0.4)
    n = 40000
    u = torch.tensor([0.2, 0.6, 0.9, 1.0, 1.2, 1.6])
    x = u.repeat(n, 1).unsqueeze(0)  # T=1: U = I
    nl = NoisyLIF(sigma=sigma)
    rate = nl(x).mean(dim=(0, 1))
    expected = 0.5 * (1 + torch.erf((u - 1.0) / (sigma * math.sqrt(2))))
    # binomial std <= 0.5/sqrt(n) = 0.0025; 5 sigma tolerance
    assert (rate - expected).abs().max() < 0.0125


def test_noise_switch_is_independent_of_train_eval_and_seedable():
    nl = NoisyLIF()
    x = torch.full((4, 1000), 0.9)
    nl.eval()
    assert is_stochastic(nl)
    a, b = nl(x), nl(x)
    assert not torch.equal(a, b)  # still noisy in eval mode
    with noise_enabled(nl, False):
        assert not is_stochastic(nl)
        assert torch.equal(nl(x), LIF()(x))
    assert nl.noise
    with noise_seed(nl, 7):
        c = nl(x)
    with noise_seed(nl, 7):
        d = nl(x)
    assert torch.equal(c, d)
    assert nl.generator is None


def test_expected_gradient_is_normal_pdf():
    sigma = 0.5
    nl = NoisyLIF(sigma=sigma, noisy_grad="expected")
    u = torch.tensor([[0.5, 1.0, 1.5]], requires_grad=True)
    nl(u).sum().backward()
    expected = torch.exp(-0.5 * ((u.detach() - 1.0) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
    torch.testing.assert_close(u.grad, expected)


def test_use_surrogate_swaps_and_restores():
    lif = LIF(surrogate="triangle")
    with use_surrogate(lif, "sigmoid", 2.0):
        assert lif.surrogate == Surrogate("sigmoid", 2.0)
    assert lif.surrogate.name == "triangle"
