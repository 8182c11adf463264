"""Triton kernels for the fused LIF / Noisy-LIF scan (the GPU path of ``backend="fused"``).

One program handles ``BLOCK`` neurons for all ``T`` steps, keeping the recurrence state in
registers: the forward reads the input once and writes ``U`` (float32) and the spikes once;
the backward reads ``U`` and the incoming gradients once and writes ``dL/dI`` once. The
arithmetic is :mod:`spikeguard.neurons.fused`'s derivation, in float32 whatever the input
dtype (bf16/fp16 inputs are widened on load, spikes and ``dL/dI`` narrowed on store).

Noisy-LIF's Gaussian noise is drawn *inside* the kernel from Triton's counter-based Philox
generator, ``tl.randn(seed, t * N + i) * sigma``: the forward does not store it and the
backward regenerates exactly the same values from the same ``(seed, counter)``.
:func:`philox_noise` materialises the same numbers as a tensor (tests, and the reference
comparison).

Each surrogate's derivative comes from its own definition,
:meth:`SurrogateKind.triton <spikeguard.neurons.surrogate.SurrogateKind>`, compiled as a
``triton.jit`` function and passed to the backward kernel as a compile-time argument.

Exactness: the kernels are compiled with ``enable_fp_fusion=False`` (no FMA contraction), in
the reference's operation order ``u = decay * v + x``, ``z = (u - V_th) + eta``, so the forward
equals the reference loop bit for bit in float32; the backward agrees to rounding.

Importing this module needs ``triton`` (the ``gpu`` extra). On a CPU, ``TRITON_INTERPRET=1``
(set before the import) runs the same kernels in Triton's interpreter: that is how the tests
check them without a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch import Tensor

from .layout import empty_steps, like, step_view
from . import surrogate as _surrogate_module
from .surrogate import Surrogate, surrogate_kind

_surrogate_module.tl = tl  # the built-in surrogates' Triton expressions read this name

__all__ = [
    "PhiloxNoise",
    "triton_forward",
    "triton_backward",
    "philox_noise",
    "triton_supports",
    "BLOCK",
    "INTERPRETED",
]

BLOCK = 1024
_FLOATS = (torch.float32, torch.bfloat16, torch.float16)
_LIMIT = 2**31 - 1  # element counters and offsets are int32


@dataclass(frozen=True)
class PhiloxNoise:
    """Noise ``eta[t, i] = sigma * randn(seed, counter = t * N + i)``, drawn inside the kernels."""

    seed: int
    sigma: float


@triton.jit
def _noise_kernel(OUT, N, TN, seed, sigma, BLOCK_: tl.constexpr):
    offs = tl.program_id(0) * BLOCK_ + tl.arange(0, BLOCK_)
    mask = offs < TN
    eta = tl.randn(seed, offs) * sigma
    tl.store(OUT + offs, eta, mask=mask)


@triton.jit
def _fwd_kernel(
    X,
    xs_t,
    NOISE,
    U,
    S,
    N,
    decay,
    vth,
    seed,
    sigma,
    T: tl.constexpr,
    NOISE_MODE: tl.constexpr,
    STORE_U: tl.constexpr,
    BLOCK_: tl.constexpr,
):
    offs = tl.program_id(0) * BLOCK_ + tl.arange(0, BLOCK_)
    mask = offs < N
    v = tl.zeros([BLOCK_], dtype=tl.float32)
    for t in range(T):
        x = tl.load(X + t * xs_t + offs, mask=mask, other=0.0).to(tl.float32)
        u = decay * v + x
        z = u - vth
        if NOISE_MODE == 1:  # a given noise tensor
            z = z + tl.load(NOISE + t * N + offs, mask=mask, other=0.0).to(tl.float32)
        if NOISE_MODE == 2:  # Philox, regenerated in the backward
            z = z + tl.randn(seed, t * N + offs) * sigma
        fired = z >= 0.0
        tl.store(S + t * N + offs, fired.to(S.dtype.element_ty), mask=mask)
        if STORE_U:
            tl.store(U + t * N + offs, u, mask=mask)
        v = tl.where(fired, 0.0, u)


@triton.jit
def _bwd_kernel(
    GS,
    GU,
    U,
    NOISE,
    GX,
    N,
    decay,
    vth,
    width,
    seed,
    sigma,
    T: tl.constexpr,
    SUR: tl.constexpr,
    NOISE_MODE: tl.constexpr,
    HAS_GS: tl.constexpr,
    HAS_GU: tl.constexpr,
    AT_NOISY: tl.constexpr,
    DETACH_RESET: tl.constexpr,
    BLOCK_: tl.constexpr,
):
    offs = tl.program_id(0) * BLOCK_ + tl.arange(0, BLOCK_)
    mask = offs < N
    acc = tl.zeros([BLOCK_], dtype=tl.float32)
    for i in range(T):
        t = T - 1 - i
        idx = t * N + offs
        u = tl.load(U + idx, mask=mask, other=0.0)
        d = u - vth
        z = d
        if NOISE_MODE == 1:
            z = d + tl.load(NOISE + idx, mask=mask, other=0.0).to(tl.float32)
        if NOISE_MODE == 2:
            z = d + tl.randn(seed, idx) * sigma
        keep = tl.where(z >= 0.0, 0.0, 1.0)
        if AT_NOISY:
            g = SUR(z, width)
        else:
            g = SUR(d, width)
        if DETACH_RESET:
            a = keep
        else:
            a = keep - u * g
        gu = decay * a * acc
        if HAS_GS:
            gu = gu + g * tl.load(GS + idx, mask=mask, other=0.0).to(tl.float32)
        if HAS_GU:
            gu = gu + tl.load(GU + idx, mask=mask, other=0.0).to(tl.float32)
        tl.store(GX + idx, gu.to(GX.dtype.element_ty), mask=mask)
        acc = gu


_JIT: dict = {}

#: True when the kernels run in Triton's interpreter (``TRITON_INTERPRET=1`` when this module
#: was imported): they then take tensors on any device (the CPU tests); compiled, CUDA only.
INTERPRETED = not isinstance(_fwd_kernel, triton.runtime.jit.JITFunction)


def _surrogate_jit(surrogate: Surrogate):
    """The surrogate's Triton expression as a ``triton.jit`` function (compiled once per kind)."""
    kind = surrogate_kind(surrogate.name)
    fn = _JIT.get(kind)
    if fn is None:
        fn = _JIT[kind] = triton.jit(kind.triton)
    return fn


def triton_supports(x: Tensor, surrogate: Surrogate | None = None) -> bool:
    """True if the kernels handle this input (a CUDA tensor, or any device in the interpreter;
    float dtype; int32-sized) and surrogate."""
    if x.device.type != "cuda" and not INTERPRETED:
        return False  # a compiled kernel would read a host pointer as device memory
    if x.dtype not in _FLOATS or x.dim() < 1 or x.numel() > _LIMIT:
        return False
    return surrogate is None or surrogate_kind(surrogate.name).triton is not None


def _grid(n: int) -> tuple[int]:
    return (triton.cdiv(max(n, 1), BLOCK),)


def _noise_args(noise: Tensor | PhiloxNoise | None, ref: Tensor) -> tuple[int, Tensor | None, int, float]:
    """``(mode, tensor, seed, sigma)`` for the kernels."""
    if noise is None:
        return 0, None, 0, 0.0
    if isinstance(noise, PhiloxNoise):
        return 2, None, int(noise.seed), float(noise.sigma)
    return 1, like(noise, ref), 0, 0.0


def philox_noise(noise: PhiloxNoise, shape: torch.Size | tuple, device: torch.device | str) -> Tensor:
    """The noise the kernels draw for ``noise``, as a float32 tensor of ``shape`` ``[T, ...]``."""
    out = torch.empty(shape, dtype=torch.float32, device=device)
    tn = out.numel()
    n = tn // shape[0] if shape[0] else 0
    if tn:
        _noise_kernel[_grid(tn)](out, n, tn, int(noise.seed), float(noise.sigma), BLOCK_=BLOCK, enable_fp_fusion=False)
    return out


def triton_forward(
    x: Tensor, decay: float, v_threshold: float, noise: Tensor | PhiloxNoise | None, keep_potentials: bool = True
) -> tuple[Tensor, Tensor | None]:
    """The scan's forward: ``(spikes [x.dtype], U [float32] or None)``."""
    x, xs = step_view(x)
    steps, n = x.shape[0], x[0].numel()
    spikes = empty_steps(x)
    u_all = empty_steps(x, torch.float32) if keep_potentials else None
    mode, tensor, seed, sigma = _noise_args(noise, spikes)
    if spikes.numel():
        _fwd_kernel[_grid(n)](
            x,
            xs,
            tensor if tensor is not None else x,
            u_all if u_all is not None else spikes,
            spikes,
            n,
            float(decay),
            float(v_threshold),
            seed,
            sigma,
            T=steps,
            NOISE_MODE=mode,
            STORE_U=keep_potentials,
            BLOCK_=BLOCK,
            enable_fp_fusion=False,
        )
    return spikes, u_all


def triton_backward(
    grad_s: Tensor | None,
    grad_u: Tensor | None,
    u_all: Tensor,
    noise: Tensor | PhiloxNoise | None,
    decay: float,
    v_threshold: float,
    surrogate: Surrogate,
    at_noisy: bool,
    detach_reset: bool,
    out_dtype: torch.dtype = torch.float32,
) -> Tensor:
    """The scan's backward: ``dL/dI`` in ``out_dtype`` (the input's dtype)."""
    steps, n = u_all.shape[0], u_all[0].numel()
    gx = torch.empty_like(u_all, dtype=out_dtype)
    grad_s, grad_u = like(grad_s, u_all), like(grad_u, u_all)
    mode, tensor, seed, sigma = _noise_args(noise, u_all)
    if gx.numel():
        _bwd_kernel[_grid(n)](
            grad_s if grad_s is not None else u_all,
            grad_u if grad_u is not None else u_all,
            u_all,
            tensor if tensor is not None else u_all,
            gx,
            n,
            float(decay),
            float(v_threshold),
            float(surrogate.width),
            seed,
            sigma,
            T=steps,
            SUR=_surrogate_jit(surrogate),
            NOISE_MODE=mode,
            HAS_GS=grad_s is not None,
            HAS_GU=grad_u is not None,
            AT_NOISY=bool(at_noisy),
            DETACH_RESET=bool(detach_reset),
            BLOCK_=BLOCK,
            enable_fp_fusion=False,
        )
    return gx
