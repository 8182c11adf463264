"""Adding a surrogate is one class in one file: this file defines one and runs it through the
reference loop, the compiled C kernel and (where Triton installs) the Triton kernel."""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from spikeguard.config import ExperimentConfig, validate_config  # noqa: E402
from spikeguard.errors import ConfigError  # noqa: E402
from spikeguard.neurons import LIF, Surrogate, record_potentials  # noqa: E402
from spikeguard.neurons import fused, native  # noqa: E402
from spikeguard.neurons.surrogate import (  # noqa: E402
    SurrogateKind, register_surrogate, surrogate_names, unregister_surrogate,
)
from spikeguard.tgo import membrane_constraint  # noqa: E402

try:  # only the Triton expression needs it
    import triton.language as tl
except ImportError:
    tl = None


class SoftSign(SurrogateKind):
    """Derivative of the soft sign ``0.5 * (a p / (1 + a |p|) + 1)`` with ``a = 2 / w``."""

    name, aliases = "softsign_test", ("ss_test",)
    c_code = "R a = (R)2 / w; R q = (R)1 + a * F(p); g = (a / (R)2) / (q * q);"

    @staticmethod
    def derivative(x, w):
        a = 2.0 / w
        return (a / 2.0) / (1.0 + a * x.abs()) ** 2

    @staticmethod
    def triton(p, w):
        a = 2.0 / w
        q = 1.0 + a * tl.abs(p)
        return (a / 2.0) / (q * q)


@pytest.fixture
def softsign():
    register_surrogate(SoftSign)
    yield Surrogate("ss_test", 0.8)
    unregister_surrogate("softsign_test")


def _run(backend, x, w, sg):
    m = LIF(surrogate=sg, decay=0.6, backend=backend)
    x = x.detach().clone().requires_grad_(True)
    with record_potentials(m) as rec:
        s = m(x)
    loss = (s * w).sum() + 2.0 * membrane_constraint(rec.potentials)
    (g,) = torch.autograd.grad(loss, x)
    return s.detach(), rec.potentials[0].detach(), g


def _kernels():
    ks = ["torch"]
    if native.native_available():
        ks.append("native")
    try:
        import spikeguard.neurons.triton_scan  # noqa: F401
        ks.append("triton")
    except Exception:  # noqa: BLE001 - no Triton here: that kernel is skipped
        pass
    return ks


def test_registered_everywhere(softsign):
    assert softsign.name == "softsign_test" and "softsign_test" in surrogate_names()
    assert "BOTH(softsign_test, SUR_softsign_test)" in native.c_source()
    cfg = ExperimentConfig()
    cfg.neuron.surrogate = "ss_test"
    validate_config(cfg)  # the config check reads the registry
    cfg.neuron.surrogate = "no_such_surrogate"
    with pytest.raises(ConfigError):
        validate_config(cfg)
    x = torch.linspace(-2, 2, 101)
    torch.testing.assert_close(softsign.derivative_(x.clone()), softsign.derivative(x))


@pytest.mark.parametrize("kernel", _kernels())
def test_new_surrogate_on_every_kernel(softsign, kernel):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 3, 40, generator=g) * 1.2 + 0.4
    w = torch.randn(5, 3, 40, generator=g)
    if kernel == "triton" and torch.cuda.is_available():  # compiled Triton takes CUDA tensors only
        x, w = x.cuda(), w.cuda()
    s_ref, u_ref, g_ref = _run("loop", x, w, softsign)
    old = fused.set_kernel(kernel)
    try:
        assert fused.kernel_for(x, softsign) == kernel
        s, u, gx = _run("fused", x, w, softsign)
    finally:
        fused.set_kernel(old)
    assert torch.equal(s, s_ref) and torch.equal(u, u_ref)
    torch.testing.assert_close(gx, g_ref, rtol=1e-5, atol=1e-6)
    # the new surrogate's gradient differs from the default triangle's: it was really used
    _, _, g_tri = _run("loop", x, w, Surrogate("triangle", 0.8))
    assert not torch.allclose(g_ref, g_tri)


def test_duplicate_names_are_refused(softsign):
    class Clash(SurrogateKind):
        name = "triangle"

    with pytest.raises(ValueError, match="registered twice"):
        register_surrogate(Clash)
