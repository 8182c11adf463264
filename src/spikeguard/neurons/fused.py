"""Fused multi-step LIF scan: one autograd node for all T time steps.

The reference implementation (``LIF(backend="loop")``) builds the recurrence out of
ordinary tensor operations, so autograd stores several tensors per step (the potential,
the spike, ``1 - S``, the surrogate's input) and runs ~8 small backward nodes per step.
:class:`LIFScan` runs the whole scan inside one ``torch.autograd.Function`` instead:

* forward writes ``U`` and the spikes into preallocated ``[T, B, ...]`` buffers with
  ``out=`` ops (two or three elementwise passes per step), saves only ``U`` (and
  the noise sample of Noisy-LIF) and returns ``U`` itself as a second output, so the TGO
  constraint reads the very tensor that was saved for backward: no copy, no ``torch.stack``;
* backward recomputes the spikes and the surrogate derivative for all steps at once
  (vectorised over T, in place) and runs the linear adjoint recurrence with one
  multiply-add per step.

Backward derivation (``eta`` the noise, ``z[t] = U[t] - V_th + eta[t]``, ``S[t] = H(z[t])``;
``g[t] = surrogate'(p[t])`` with ``p[t] = z[t]``, or ``U[t] - V_th`` for Noisy-LIF's
``"expected"`` gradient)::

    U[t+1] = beta * V[t] + I[t+1],      V[t] = U[t] * (1 - S[t])

    dL/dV[t] = beta * dL/dU[t+1]                        (0 at t = T-1)
    dL/dS[t] = gS[t] - U[t] * dL/dV[t]                  (the reset term; dropped if detach_reset)
    dL/dU[t] = gU[t] + (1 - S[t]) * dL/dV[t] + g[t] * dL/dS[t]
             = gU[t] + g[t] * gS[t] + beta * A[t] * dL/dU[t+1]
    A[t]     = (1 - S[t]) - U[t] * g[t]                 (detach_reset: A[t] = 1 - S[t])
    dL/dI[t] = dL/dU[t]

``gS`` is the gradient arriving at the spikes, ``gU`` the one arriving at the recorded
potentials (e.g. from the TGO membrane constraint), ``I`` the layer input.

The forward is bit-for-bit the reference loop: the spike test uses the exact identity
``fl(a - b) >= 0  <=>  a >= b`` (IEEE subtraction keeps the sign and is zero only when
``a == b``), and ``beta * (U * (1 - S)) + I`` is evaluated with a single multiply-add only
when ``beta`` is a power of two (then every product is exact and the rounding is the same).
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Any, Union

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from . import native
from .native import native_available, native_backward, native_forward  # re-exported
from .surrogate import Surrogate

__all__ = [
    "LIFScan",
    "lif_scan",
    "scan_forward",
    "scan_backward",
    "surrogate_derivative_",
    "set_kernel",
    "get_kernel",
    "kernel_for",
    "triton_available",
    "philox_noise_for",
    "native_available",
    "native_forward",
    "native_backward",
    "KERNELS",
]


def _exact_scale(decay: float) -> bool:
    """True if multiplying by ``decay`` is exact (0 or a power of two), so FMA == mul + add."""
    if decay == 0.0:
        return True
    m, _ = math.frexp(decay)
    return m == 0.5


def scan_forward(
    x: Tensor, decay: float, v_threshold: float, neg_noise: Tensor | None, keep_potentials: bool = True
) -> tuple[Tensor, Tensor]:
    """The LIF recurrence without autograd: returns ``(spikes, U)``, both shaped like ``x``.

    Args:
        x: input current ``[T, ...]`` (may be an expanded view, e.g. the broadcast stem output).
        neg_noise: ``-eta`` or ``None``. The spike test ``U - V_th >= -eta`` equals the
            reference's ``(U - V_th) + eta >= 0`` bit for bit (sign of a rounded sum).
        keep_potentials: if False only two rows of ``U`` are held (no-grad paths without
            recording); the returned ``U`` is then ``None``.
    """
    steps = x.shape[0]
    rest = x.shape[1:]
    spikes = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    u_all = torch.empty((steps if keep_potentials else min(steps, 2),) + tuple(rest), dtype=x.dtype, device=x.device)
    keep = torch.empty(rest, dtype=x.dtype, device=x.device)
    tmp = (
        torch.empty(rest, dtype=x.dtype, device=x.device)
        if (neg_noise is not None or not _exact_scale(decay))
        else None
    )
    fma = _exact_scale(decay)
    u_all[0].copy_(x[0])
    for t in range(steps):
        u = u_all[t if keep_potentials else t % 2]
        if neg_noise is None:
            torch.ge(u, v_threshold, out=spikes[t])  # == (u - V_th >= 0), written as 0./1.
            if t + 1 < steps:
                torch.lt(u, v_threshold, out=keep)  # 1 - S[t]
        else:
            torch.sub(u, v_threshold, out=tmp)
            torch.ge(tmp, neg_noise[t], out=spikes[t])  # type: ignore[arg-type]  # tmp exists whenever noise is given
            if t + 1 < steps:
                torch.lt(tmp, neg_noise[t], out=keep)  # type: ignore[arg-type]
        if t + 1 < steps:
            nxt = u_all[t + 1 if keep_potentials else (t + 1) % 2]
            if fma:
                torch.addcmul(x[t + 1], u, keep, value=decay, out=nxt)
            else:  # reference rounding: (decay * (u * keep)) + x, u * keep is exact
                torch.mul(u, keep, out=tmp)
                tmp.mul_(decay)  # type: ignore[union-attr]  # tmp exists whenever decay is not exact
                torch.add(tmp, x[t + 1], out=nxt)  # type: ignore[arg-type]
    return spikes, (u_all if keep_potentials else None)  # type: ignore[return-value]


def surrogate_derivative_(surrogate: Surrogate, x: Tensor) -> Tensor:
    """``surrogate.derivative(x)`` computed in place in ``x`` (which is overwritten and returned);
    each surrogate's in-place form lives with its definition (:mod:`.surrogate`)."""
    return surrogate.derivative_(x)


def scan_backward(
    grad_s: Tensor | None,
    grad_u: Tensor | None,
    u_all: Tensor,
    noise: Tensor | None,
    decay: float,
    v_threshold: float,
    surrogate: Surrogate,
    at_noisy: bool,
    detach_reset: bool,
) -> Tensor:
    """Gradient w.r.t. the layer input from the gradients at the spikes and at ``U``."""
    point = u_all - v_threshold  # U - V_th
    if noise is None:
        keep = torch.lt(u_all, v_threshold).to(u_all.dtype)  # 1 - S
    else:
        keep = torch.lt(point, -noise).to(u_all.dtype)
        if at_noisy:
            point.add_(noise)
    g = surrogate_derivative_(surrogate, point)  # point's storage now holds g
    if u_all.shape[0] > 1 and not detach_reset:
        keep.addcmul_(u_all, g, value=-1.0)  # A = (1 - S) - U * g, in keep's storage
    carry = keep
    if grad_s is not None:
        gx = g.mul_(grad_s)  # g is not needed any more: reuse its storage for the result
        if grad_u is not None:
            gx.add_(grad_u)
    elif grad_u is not None:
        gx = grad_u.clone(memory_format=torch.contiguous_format)
    else:
        gx = torch.zeros_like(u_all)
    for t in range(u_all.shape[0] - 2, -1, -1):
        gx[t].addcmul_(carry[t], gx[t + 1], value=decay)
    return gx


# ---------------------------------------------------------------------------------------
# Kernel choice. One autograd Function (LIFScan) over all T steps whatever runs inside it:
#   "triton": the Triton kernels (CUDA; on a CPU only through TRITON_INTERPRET=1, for tests),
#   "native": the compiled C kernel (CPU, float32/float64),
#   "torch":  the tensor-op scan above (any device and dtype).
# "auto" (the default) takes triton on CUDA when it imports, native on CPU when it builds,
# else torch; a kernel that cannot handle an input (dtype, surrogate without code) falls back
# to the torch ops, which compute the same numbers.
# ---------------------------------------------------------------------------------------

KERNELS = ("auto", "native", "torch", "triton")
_kernel_choice = os.environ.get("SPIKEGUARD_LIF_KERNEL", "auto")
if _kernel_choice not in KERNELS:
    warnings.warn(
        f"SPIKEGUARD_LIF_KERNEL={_kernel_choice!r} is not one of {KERNELS}; using 'auto'", RuntimeWarning, stacklevel=1
    )
    _kernel_choice = "auto"
_triton: Any = None  # the triton_scan module once imported; False if it cannot be
_triton_error: str | None = None
_HALF = (torch.bfloat16, torch.float16)


def set_kernel(kernel: str) -> str:
    """Choose the fused scan's kernel: ``"triton"`` (GPU kernels for CUDA tensors, any device in
    Triton's interpreter; an error if Triton is missing; other tensors run the torch ops),
    ``"native"`` (compiled C on CPU; an error if it cannot be built), ``"torch"`` (tensor ops) or
    ``"auto"`` (triton on CUDA, native on CPU, else torch; the default, also settable with
    ``SPIKEGUARD_LIF_KERNEL``). Returns the previous choice."""
    global _kernel_choice
    if kernel not in KERNELS:
        raise ValueError(f"unknown LIF kernel {kernel!r}; choose one of {', '.join(KERNELS)}")
    old, _kernel_choice = _kernel_choice, kernel
    return old


def get_kernel() -> str:
    """The current kernel choice (see :func:`set_kernel`)."""
    return _kernel_choice


def _triton_module():
    global _triton, _triton_error
    if _triton is None:
        try:
            # lazy: triton_scan imports triton (optional, slow to import) at its top
            from . import triton_scan

            _triton = triton_scan
        except Exception as e:  # noqa: BLE001 - triton missing or broken: use another kernel
            _triton, _triton_error = False, f"{type(e).__name__}: {e}"
    return _triton or None


def triton_available() -> bool:
    """True if the Triton kernels import (``pip install spikeguard[gpu]``)."""
    return _triton_module() is not None


def kernel_for(x: Tensor, surrogate: Surrogate | None = None) -> str:
    """The kernel that runs the scan for input ``x`` (and backward ``surrogate``)."""
    choice = _kernel_choice
    if choice == "torch":
        return "torch"
    if choice == "triton" or (choice == "auto" and x.device.type == "cuda"):
        mod = _triton_module()
        if mod is None:
            if choice == "triton":
                raise RuntimeError(f"the Triton LIF kernel is unavailable: {_triton_error}")
        elif mod.triton_supports(x, surrogate):
            return "triton"
    if (
        choice in ("auto", "native")
        and x.device.type == "cpu"
        and native.native_supports(surrogate)
        and x.dtype in (torch.float32, torch.float64, *_HALF)
    ):
        if native_available():
            return "native"
        if choice == "native":
            raise RuntimeError(f"the native LIF kernel is unavailable: {native.native_error()}")
        if not getattr(kernel_for, "warned", False):
            warnings.warn(
                f"spikeguard: native LIF kernel unavailable ({native.native_error()}); using torch ops",
                RuntimeWarning,
                stacklevel=3,
            )
            kernel_for.warned = True  # type: ignore[attr-defined]
    return "torch"


# Under torch.compile the scan and its noise seed run eagerly (a graph break at each neuron
# layer; what lies between neurons is still compiled): the seed is a host integer read from the
# generator, which a traced graph would bake in as a constant (the same noise on every call),
# and the scan is one fused kernel already.
_eager = getattr(torch.compiler, "disable", lambda fn: fn)


@_eager
def philox_noise_for(x: Tensor, sigma: float, generator: torch.Generator | None):
    """In-kernel noise for the Triton scan, or ``None`` where another kernel runs ``x``.

    The Philox seed comes from ``generator`` (or the device's default generator), so
    ``torch.manual_seed`` and :func:`~spikeguard.neurons.noise_seed` make it reproducible. On
    CUDA it is the generator's seed mixed with its offset, which is advanced like torch's own
    random ops advance it (no device synchronisation); on a CPU generator one number is drawn.
    """
    if kernel_for(x) != "triton":
        return None
    gen = generator
    if gen is None:
        gen = (
            torch.cuda.default_generators[x.device.index if x.device.index is not None else torch.cuda.current_device()]
            if x.device.type == "cuda"
            else torch.default_generator
        )
    seed = None
    if gen.device.type == "cuda":
        try:
            offset = gen.get_offset()
            gen.set_offset(offset + 4)
            seed = (gen.initial_seed() ^ ((offset + 1) * 0x9E3779B97F4A7C15)) & (2**62 - 1)
        except (AttributeError, RuntimeError):
            seed = None
    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,), generator=gen, device=gen.device).item())
    return _triton.PhiloxNoise(seed=seed, sigma=float(sigma))


def _materialise(noise, x: Tensor) -> Tensor | None:
    """A tensor for noise given as ``PhiloxNoise`` (when a non-Triton kernel runs it)."""
    if noise is None or isinstance(noise, Tensor):
        return noise
    if _triton:
        try:
            return _triton.philox_noise(noise, x.shape, x.device).to(x.dtype)
        except Exception as e:  # noqa: BLE001
            _triton_failed(e)
    # Triton failed: the same distribution from torch's generator, seeded with the same seed
    gen = torch.Generator(device=x.device).manual_seed(int(noise.seed) & (2**63 - 1))
    return torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype) * noise.sigma


def _philox_tensor(mod, noise: NoiseArg, u_all: Tensor) -> Tensor | None:
    """The forward's in-kernel noise as a tensor, for a backward that cannot run the Triton
    kernel: only Triton's Philox reproduces it, so if that fails too the gradient cannot be
    computed and this raises (rather than return a gradient for other noise)."""
    if noise is None or isinstance(noise, Tensor):
        return noise
    try:
        flat = mod.philox_noise(noise, (u_all.shape[0], u_all[0].numel()), u_all.device)
    except Exception as e:
        raise RuntimeError(
            "the Triton LIF backward failed and the forward's noise cannot be regenerated "
            f"without it ({type(e).__name__}: {e}); rerun with set_kernel('torch')"
        ) from e
    # the kernels count t * N + i over memory order (U's layout, e.g. channels_last steps)
    out = torch.empty_like(u_all)
    out.as_strided((out.numel(),), (1,)).copy_(flat.view(-1))
    return out


def _widen(x: Tensor) -> Tensor:
    # float32 state whatever the input dtype (bf16 autocast): the C/torch kernels widen here,
    # the Triton kernels on load.
    return x.float() if x.dtype in _HALF else x


NoiseArg = Union[Tensor, "object", None]  # a tensor, a triton_scan.PhiloxNoise, or None


def _triton_failed(e: Exception) -> None:
    """A Triton kernel failed to compile or launch under ``auto``: warn once, use the others."""
    global _triton, _triton_error
    if _kernel_choice == "triton":
        raise e
    _triton, _triton_error = False, f"{type(e).__name__}: {e}"
    warnings.warn(
        f"spikeguard: the Triton LIF kernel failed ({_triton_error[:200]}); using torch ops",
        RuntimeWarning,
        stacklevel=4,
    )


def _run_forward(
    kernel: str, x: Tensor, decay: float, v_threshold: float, noise: NoiseArg, keep_potentials: bool
) -> tuple[Tensor, Tensor | None, str, NoiseArg]:
    """``(spikes, U, the kernel that ran, the noise it used)``."""
    if kernel == "triton":
        mod = _triton_module()
        try:
            if mod is None:  # failed since kernel_for chose it (another thread, or a recursion)
                raise RuntimeError(f"the Triton LIF kernel is unavailable: {_triton_error}")
            return (*mod.triton_forward(x, decay, v_threshold, noise, keep_potentials), kernel, noise)
        except Exception as e:  # noqa: BLE001 - fall back (same numbers) rather than stop a run
            _triton_failed(e)
            kernel = "torch"
    xw = _widen(x)
    noise = _materialise(noise, xw)
    if kernel == "native":
        spikes, u_all = native_forward(
            xw, decay, v_threshold, None if noise is None else noise.to(xw.dtype), keep_potentials
        )
    else:
        spikes, u_all = scan_forward(
            xw, decay, v_threshold, None if noise is None else noise.to(xw.dtype).neg(), keep_potentials
        )
    return spikes.to(x.dtype), u_all, kernel, noise


class LIFScan(torch.autograd.Function):
    """``(spikes, U) = LIFScan.apply(x, noise, decay, v_threshold, surrogate, at_noisy, detach_reset)``.

    ``x``: layer input ``[T, B, ...]``; ``noise``: the membrane noise ``eta`` (same shape), a
    ``PhiloxNoise`` (drawn inside the Triton kernels) or ``None``; ``surrogate`` / ``at_noisy``:
    the backward surrogate and whether it is evaluated at the noisy potential (as in
    :class:`~spikeguard.neurons.surrogate.SpikeFunction`). Both outputs are differentiable:
    gradients reaching ``U`` (the TGO constraint) are propagated through the recurrence like
    those reaching the spikes. Spikes have ``x``'s dtype; ``U`` is float32 for half inputs.
    """

    @staticmethod
    def forward(
        ctx,
        x: Tensor,
        noise: NoiseArg,
        decay: float,
        v_threshold: float,
        surrogate: Surrogate,
        at_noisy: bool,
        detach_reset: bool,
    ) -> tuple[Tensor, Tensor]:
        kernel = kernel_for(x, surrogate)
        if kernel != "triton":
            noise = _materialise(noise, _widen(x))
        spikes, u_all, kernel, noise = _run_forward(kernel, x, decay, v_threshold, noise, True)
        ctx.set_materialize_grads(False)
        ctx.params = (kernel, decay, v_threshold, surrogate, at_noisy, detach_reset, x.dtype)
        # the module whose kernel ran: a later Triton failure sets the global _triton to False,
        # and this graph's backward must still regenerate the same Philox noise with it
        ctx.triton = _triton if kernel == "triton" else None
        ctx.noise_spec = None if isinstance(noise, Tensor) else noise  # PhiloxNoise: nothing stored
        if isinstance(noise, Tensor):
            ctx.save_for_backward(u_all, noise)
        else:
            ctx.save_for_backward(u_all)
        return spikes, u_all  # type: ignore[return-value]  # kept potentials: u_all is set

    @staticmethod
    @once_differentiable  # double backward (create_graph=True) raises; use backend="loop" for it
    def backward(ctx, grad_s: Tensor | None, grad_u: Tensor | None):
        kernel, decay, v_threshold, surrogate, at_noisy, detach_reset, dtype = ctx.params
        saved = ctx.saved_tensors
        u_all = saved[0]
        noise = saved[1] if len(saved) > 1 else ctx.noise_spec
        if not ctx.needs_input_grad[0] or (grad_s is None and grad_u is None):
            return (None,) * 7
        if kernel == "triton":
            try:
                gx = ctx.triton.triton_backward(
                    grad_s, grad_u, u_all, noise, decay, v_threshold, surrogate, at_noisy, detach_reset, out_dtype=dtype
                )
                return (gx,) + (None,) * 6
            except Exception as e:  # noqa: BLE001 - same numbers from the torch ops (below)
                _triton_failed(e)
                noise = _philox_tensor(ctx.triton, noise, u_all)
        wide = u_all.dtype
        grad_s = None if grad_s is None else grad_s.to(wide)
        grad_u = None if grad_u is None else grad_u.to(wide)
        noise = None if noise is None else noise.to(wide)
        fn = native_backward if kernel == "native" else scan_backward
        gx = fn(grad_s, grad_u, u_all, noise, decay, v_threshold, surrogate, at_noisy, detach_reset)
        return (gx.to(dtype),) + (None,) * 6


@_eager
def lif_scan(
    x: Tensor,
    noise: NoiseArg,
    decay: float,
    v_threshold: float,
    surrogate: Surrogate,
    at_noisy: bool = True,
    detach_reset: bool = False,
    need_potentials: bool = True,
) -> tuple[Tensor, Tensor | None]:
    """Run the fused LIF scan; returns ``(spikes, U)``, both ``[T, B, ...]`` (``U`` differentiable).

    Without autograd (``no_grad``/``inference_mode`` or an input that needs no gradient) the
    scan runs without building a graph, and with ``need_potentials=False`` without holding
    ``U`` for all steps (``U`` is then ``None``).
    """
    if torch.is_grad_enabled() and x.requires_grad:
        return LIFScan.apply(x, noise, decay, v_threshold, surrogate, at_noisy, detach_reset)
    return _run_forward(kernel_for(x, None), x, decay, v_threshold, noise, need_potentials)[:2]
