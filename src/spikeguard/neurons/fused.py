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

import ctypes
import hashlib
import math
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .surrogate import Surrogate

__all__ = ["LIFScan", "lif_scan", "scan_forward", "scan_backward", "surrogate_derivative_", "set_kernel",
           "native_available", "native_forward", "native_backward", "KERNELS"]


def _exact_scale(decay: float) -> bool:
    """True if multiplying by ``decay`` is exact (0 or a power of two), so FMA == mul + add."""
    if decay == 0.0:
        return True
    m, _ = math.frexp(decay)
    return m == 0.5


def scan_forward(x: Tensor, decay: float, v_threshold: float, neg_noise: Tensor | None,
                 keep_potentials: bool = True) -> tuple[Tensor, Tensor]:
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
    tmp = torch.empty(rest, dtype=x.dtype, device=x.device) if (neg_noise is not None or not _exact_scale(decay)) else None
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
            torch.ge(tmp, neg_noise[t], out=spikes[t])
            if t + 1 < steps:
                torch.lt(tmp, neg_noise[t], out=keep)
        if t + 1 < steps:
            nxt = u_all[t + 1 if keep_potentials else (t + 1) % 2]
            if fma:
                torch.addcmul(x[t + 1], u, keep, value=decay, out=nxt)
            else:  # reference rounding: (decay * (u * keep)) + x, u * keep is exact
                torch.mul(u, keep, out=tmp)
                tmp.mul_(decay)
                torch.add(tmp, x[t + 1], out=nxt)
    return spikes, (u_all if keep_potentials else None)  # type: ignore[return-value]


def surrogate_derivative_(surrogate: Surrogate, x: Tensor) -> Tensor:
    """``surrogate.derivative(x)`` computed in place in ``x`` (which is overwritten and returned).

    Same function as :meth:`Surrogate.derivative` (up to rounding); surrogates this module
    does not know fall back to the out-of-place definition.
    """
    name, w = surrogate.name, float(surrogate.width)
    if name == "triangle":
        return x.abs_().mul_(-1.0 / (w * w)).add_(1.0 / w).clamp_min_(0.0)
    if name == "rectangle":
        return x.abs_().lt_(w / 2.0).mul_(1.0 / w)
    if name == "sigmoid":
        k = 4.0 / w
        s = x.mul_(k).sigmoid_()
        return s.mul_(s.neg().add_(1.0)).mul_(k)
    if name == "atan":
        a = 2.0 / w
        return x.mul_(math.pi / 2.0 * a).square_().add_(1.0).reciprocal_().mul_(a / 2.0)
    if name == "gaussian":
        return x.mul_(1.0 / w).square_().mul_(-0.5).exp_().mul_(1.0 / (w * math.sqrt(2.0 * math.pi)))
    if name == "ste":
        return x.fill_(1.0 / w)
    return surrogate.derivative(x)


def scan_backward(grad_s: Tensor | None, grad_u: Tensor | None, u_all: Tensor, noise: Tensor | None,
                  decay: float, v_threshold: float, surrogate: Surrogate,
                  at_noisy: bool, detach_reset: bool) -> Tensor:
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


class LIFScan(torch.autograd.Function):
    """``(spikes, U) = LIFScan.apply(x, noise, decay, v_threshold, surrogate, at_noisy, detach_reset)``.

    ``x``: layer input ``[T, B, ...]``; ``noise``: the membrane noise ``eta`` (same shape) or
    ``None``; ``surrogate`` / ``at_noisy``: the backward surrogate and whether it is evaluated
    at the noisy potential (as in :class:`~spikeguard.neurons.surrogate.SpikeFunction`).
    Both outputs are differentiable: gradients reaching ``U`` (the TGO constraint) are
    propagated through the recurrence like those reaching the spikes.
    """

    @staticmethod
    def forward(ctx, x: Tensor, noise: Tensor | None, decay: float, v_threshold: float,  # type: ignore[override]
                surrogate: Surrogate, at_noisy: bool, detach_reset: bool) -> tuple[Tensor, Tensor]:
        spikes, u_all = _forward(x, decay, v_threshold, noise, True)
        ctx.set_materialize_grads(False)
        ctx.params = (decay, v_threshold, surrogate, at_noisy, detach_reset, noise is not None)
        if noise is None:
            ctx.save_for_backward(u_all)
        else:
            ctx.save_for_backward(u_all, noise)
        return spikes, u_all

    @staticmethod
    @once_differentiable  # double backward (create_graph=True) raises; use backend="loop" for it
    def backward(ctx, grad_s: Tensor | None, grad_u: Tensor | None):  # type: ignore[override]
        decay, v_threshold, surrogate, at_noisy, detach_reset, noisy = ctx.params
        saved = ctx.saved_tensors
        u_all, noise = (saved[0], saved[1]) if noisy else (saved[0], None)
        if not ctx.needs_input_grad[0] or (grad_s is None and grad_u is None):
            return (None,) * 7
        kernel = native_backward if _use_native(u_all, surrogate) else scan_backward
        gx = kernel(grad_s, grad_u, u_all, noise, decay, v_threshold, surrogate, at_noisy, detach_reset)
        return (gx,) + (None,) * 6


def lif_scan(x: Tensor, noise: Tensor | None, decay: float, v_threshold: float, surrogate: Surrogate,
             at_noisy: bool = True, detach_reset: bool = False,
             need_potentials: bool = True) -> tuple[Tensor, Tensor | None]:
    """Run the fused LIF scan; returns ``(spikes, U)``, both ``[T, B, ...]`` (``U`` differentiable).

    Without autograd (``no_grad``/``inference_mode`` or an input that needs no gradient) the
    scan runs without building a graph, and with ``need_potentials=False`` without holding
    ``U`` for all steps (``U`` is then ``None``).
    """
    if torch.is_grad_enabled() and x.requires_grad:
        return LIFScan.apply(x, noise, decay, v_threshold, surrogate, at_noisy, detach_reset)
    return _forward(x, decay, v_threshold, noise, need_potentials)


def _forward(x: Tensor, decay: float, v_threshold: float, noise: Tensor | None,
             keep_potentials: bool) -> tuple[Tensor, Tensor | None]:
    if _use_native(x, None):
        return native_forward(x, decay, v_threshold, noise, keep_potentials)
    return scan_forward(x, decay, v_threshold, None if noise is None else noise.neg(), keep_potentials)



# ---------------------------------------------------------------------------------------
# Native CPU kernel: the whole scan in one pass over memory.
#
# Eager tensor ops cost a full pass over [T, B, ...] each (the forward needs ~3 per step,
# the backward ~8): on a CPU that is memory-bound work, several times the cost of a ReLU.
# The C kernel below reads the input once and writes U and the spikes once (forward), and
# reads U, the incoming gradients and writes dL/dI once (backward), keeping the recurrence
# state in a small block that stays in L1. It is plain C99 + OpenMP, compiled on first use
# with the system C compiler into a per-user cache (well under a second) and loaded with
# ctypes; OpenMP resolves to the libgomp torch has already loaded, so there is one thread
# pool. Without a compiler the torch-op kernel above is used (same numbers).
#
# Exactness: compiled without FP contraction (-ffp-contract=off) and with the reference's
# operation order, ``u = decay * v + x`` and ``z = (u - V_th) + eta``, so the forward is
# bit-identical to the reference loop; the backward agrees to rounding.
# ---------------------------------------------------------------------------------------

_C_SOURCE = r"""
#include <math.h>
#include <stdint.h>
#include <stddef.h>

#define BLK 256
#define PI_ 3.14159265358979323846

/* Missing optional inputs (noise, gradients) read a block of zeros, and an unkept U is
   written to a scratch block: adding an exact 0 changes no value, and the inner loops stay
   branch-free so the compiler vectorises them. */
#define DEFINE_FWD(NAME, REAL)                                                              \
void NAME(const REAL* restrict x, int64_t xs, const REAL* restrict noise, REAL* restrict U, \
          REAL* restrict S, int64_t T, int64_t N, REAL decay, REAL vth, int nthreads) {     \
    int64_t nblk = (N + BLK - 1) / BLK;                                                     \
    _Pragma("omp parallel for schedule(static) num_threads(nthreads)")                       \
    for (int64_t b = 0; b < nblk; ++b) {                                                    \
        int64_t lo = b * BLK, n = (N - lo < BLK) ? N - lo : BLK;                            \
        REAL v[BLK], zero[BLK], scratch[BLK];                                               \
        for (int64_t i = 0; i < n; ++i) { v[i] = 0; zero[i] = 0; }                          \
        for (int64_t t = 0; t < T; ++t) {                                                   \
            const REAL* restrict xt = x + t * xs + lo;                                      \
            const REAL* restrict nt = noise ? noise + t * N + lo : zero;                    \
            REAL* restrict St = S + t * N + lo;                                             \
            REAL* restrict Ut = U ? U + t * N + lo : scratch;                               \
            _Pragma("omp simd")                                                             \
            for (int64_t i = 0; i < n; ++i) {                                               \
                REAL u = decay * v[i] + xt[i];  /* v = 0 at t = 0: u = x exactly */         \
                REAL z = (u - vth) + nt[i];                                                 \
                St[i] = z >= (REAL)0 ? (REAL)1 : (REAL)0;                                   \
                Ut[i] = u;                                                                  \
                v[i] = z >= (REAL)0 ? (REAL)0 : u;  /* == u * (1 - S) up to the sign of 0 */ \
            }                                                                               \
        }                                                                                   \
    }                                                                                       \
}

/* SUR(REAL, EXP, FABS) stores the surrogate derivative at p in g (w = width). */
#define DEFINE_BWD(NAME, REAL, EXP, FABS, SUR)                                              \
void NAME(const REAL* restrict gS, const REAL* restrict gU, const REAL* restrict U,         \
          const REAL* restrict noise, REAL* restrict gX, int64_t T, int64_t N, REAL decay,  \
          REAL vth, REAL w, int at_noisy, int detach_reset, int nthreads) {                 \
    int64_t nblk = (N + BLK - 1) / BLK;                                                     \
    const REAL sel = at_noisy ? (REAL)1 : (REAL)0;     /* surrogate at z or at U - V_th */  \
    const REAL through = detach_reset ? (REAL)0 : (REAL)1;  /* reset-path gradient */       \
    (void)w;                                                                                \
    _Pragma("omp parallel for schedule(static) num_threads(nthreads)")                       \
    for (int64_t b = 0; b < nblk; ++b) {                                                    \
        int64_t lo = b * BLK, n = (N - lo < BLK) ? N - lo : BLK;                            \
        REAL acc[BLK], zero[BLK];                                                           \
        for (int64_t i = 0; i < n; ++i) { acc[i] = 0; zero[i] = 0; }                        \
        for (int64_t t = T - 1; t >= 0; --t) {                                              \
            const REAL* restrict Ut = U + t * N + lo;                                       \
            const REAL* restrict nt = noise ? noise + t * N + lo : zero;                    \
            const REAL* restrict gSt = gS ? gS + t * N + lo : zero;                         \
            const REAL* restrict gUt = gU ? gU + t * N + lo : zero;                         \
            REAL* restrict gXt = gX + t * N + lo;                                           \
            _Pragma("omp simd")                                                             \
            for (int64_t i = 0; i < n; ++i) {                                               \
                REAL u = Ut[i];                                                             \
                REAL d = u - vth;                                                           \
                REAL z = d + nt[i];                                                         \
                REAL keep = z >= (REAL)0 ? (REAL)0 : (REAL)1;                               \
                REAL p = sel != (REAL)0 ? z : d;                                            \
                REAL g;                                                                     \
                SUR(REAL, EXP, FABS)                                                        \
                REAL a = keep - through * (u * g);                                          \
                REAL gu = decay * a * acc[i] + g * gSt[i] + gUt[i];                         \
                gXt[i] = gu;                                                                \
                acc[i] = gu;                                                                \
            }                                                                               \
        }                                                                                   \
    }                                                                                       \
}

#define SUR_TRIANGLE(R, E, F)  { g = (R)1 / w - F(p) / (w * w); g = g > (R)0 ? g : (R)0; }
#define SUR_SIGMOID(R, E, F)   { R k = (R)4 / w; R s = (R)1 / ((R)1 + E(-k * p)); g = k * s * ((R)1 - s); }
#define SUR_ATAN(R, E, F)      { R a2 = (R)2 / w; R q = (R)(PI_ / 2.0) * a2 * p; g = (a2 / (R)2) / ((R)1 + q * q); }
#define SUR_RECTANGLE(R, E, F) { g = F(p) < w / (R)2 ? (R)1 / w : (R)0; }
#define SUR_GAUSSIAN(R, E, F)  { R q = p / w; g = E((R)(-0.5) * q * q) / (w * (R)2.5066282746310002); }
#define SUR_STE(R, E, F)       { g = (R)1 / w; }

DEFINE_FWD(lif_fwd_f32, float)
DEFINE_FWD(lif_fwd_f64, double)
#define BOTH(SNAME, SUR)                                                                    \
    DEFINE_BWD(lif_bwd_##SNAME##_f32, float, expf, fabsf, SUR)                              \
    DEFINE_BWD(lif_bwd_##SNAME##_f64, double, exp, fabs, SUR)
BOTH(triangle, SUR_TRIANGLE)
BOTH(sigmoid, SUR_SIGMOID)
BOTH(atan, SUR_ATAN)
BOTH(rectangle, SUR_RECTANGLE)
BOTH(gaussian, SUR_GAUSSIAN)
BOTH(ste, SUR_STE)
"""

_NATIVE_SURROGATES = ("triangle", "sigmoid", "atan", "rectangle", "gaussian", "ste")
# -ffp-contract=off: no FMA contraction (the reference rounds products and sums separately);
# -fno-trapping-math: lets the compiler vectorise the branchy selects (values are unchanged).
_CFLAGS = ["-O3", "-std=gnu99", "-fPIC", "-shared", "-ffp-contract=off", "-fno-trapping-math"]

KERNELS = ("auto", "native", "torch")
_kernel_choice = os.environ.get("SPIKEGUARD_LIF_KERNEL", "auto")
if _kernel_choice not in KERNELS:
    warnings.warn(f"SPIKEGUARD_LIF_KERNEL={_kernel_choice!r} is not one of {KERNELS}; using 'auto'", RuntimeWarning)
    _kernel_choice = "auto"
_native_lib: ctypes.CDLL | None = None
_native_error: str | None = None


def set_kernel(kernel: str) -> str:
    """Choose the fused scan's CPU kernel: ``"native"`` (compiled C; an error if it cannot be
    built), ``"torch"`` (tensor ops) or ``"auto"`` (native when it builds, else torch; the
    default, also settable with ``SPIKEGUARD_LIF_KERNEL``). Returns the previous choice."""
    global _kernel_choice
    if kernel not in KERNELS:
        raise ValueError(f"unknown LIF kernel {kernel!r}; choose one of {', '.join(KERNELS)}")
    old, _kernel_choice = _kernel_choice, kernel
    return old


def _cache_dir() -> Path:
    root = os.environ.get("SPIKEGUARD_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "spikeguard")
    return Path(root) / "kernels"


def _build_native() -> ctypes.CDLL:
    """Compile (once per source/compiler/flags, cached on disk) and load the C kernels."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        raise RuntimeError("no C compiler found (set CC)")
    last: str = ""
    for omp in (["-fopenmp"], []):  # OpenMP if the compiler has it, else serial
        flags = _CFLAGS + omp
        key = hashlib.sha256("\0".join([_C_SOURCE, cc, *flags, platform.machine()]).encode()).hexdigest()[:16]
        target = _cache_dir() / f"lif_scan_{key}.so"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
                src = Path(tmp) / "lif_scan.c"
                src.write_text(_C_SOURCE)
                out = Path(tmp) / target.name
                proc = subprocess.run([cc, *flags, str(src), "-o", str(out), "-lm"],
                                      capture_output=True, text=True, timeout=120)
                if proc.returncode != 0:
                    last = (proc.stderr or proc.stdout).strip()[-300:]
                    continue
                os.replace(out, target)  # atomic: concurrent builders race harmlessly
        lib = ctypes.CDLL(str(target))
        i64, vp, ci = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int
        for suffix, real in (("f32", ctypes.c_float), ("f64", ctypes.c_double)):
            f = getattr(lib, f"lif_fwd_{suffix}")
            f.argtypes = [vp, i64, vp, vp, vp, i64, i64, real, real, ci]
            f.restype = None
            for name in _NATIVE_SURROGATES:
                f = getattr(lib, f"lif_bwd_{name}_{suffix}")
                f.argtypes = [vp, vp, vp, vp, vp, i64, i64, real, real, real, ci, ci, ci]
                f.restype = None
        return lib
    raise RuntimeError(f"C compiler {cc} failed: {last}")


def native_available() -> bool:
    """True if the compiled kernel is (or can be) loaded; builds it on first call."""
    global _native_lib, _native_error
    if _native_lib is None and _native_error is None:
        try:
            _native_lib = _build_native()
        except Exception as e:  # noqa: BLE001 - any failure just means "use the torch kernel"
            _native_error = f"{type(e).__name__}: {e}"
    return _native_lib is not None


def _use_native(x: Tensor, surrogate: Surrogate | None) -> bool:
    if _kernel_choice == "torch" or x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
        return False
    if surrogate is not None and surrogate.name not in _NATIVE_SURROGATES:
        return False
    if not native_available():
        if _kernel_choice == "native":
            raise RuntimeError(f"the native LIF kernel is unavailable: {_native_error}")
        if not getattr(_use_native, "warned", False):
            warnings.warn(f"spikeguard: native LIF kernel unavailable ({_native_error}); using torch ops",
                          RuntimeWarning, stacklevel=3)
            _use_native.warned = True  # type: ignore[attr-defined]
        return False
    return True


def _threads(n: int) -> int:
    # Below ~32k neurons the OpenMP fork/join costs more than it saves.
    return max(1, min(torch.get_num_threads(), n // 32768)) if n >= 65536 else 1


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _step_view(x: Tensor) -> tuple[Tensor, int]:
    """``x`` with contiguous time slices (expanded-over-T inputs stay un-copied) and its T stride."""
    if x.shape[0] == 1 or x[0].is_contiguous():
        return x, (x.stride(0) if x.shape[0] > 1 else 0)
    x = x.contiguous()
    return x, x.stride(0)


def native_forward(x: Tensor, decay: float, v_threshold: float, noise: Tensor | None,
                   keep_potentials: bool = True) -> tuple[Tensor, Tensor | None]:
    """:func:`scan_forward` with the C kernel (``noise`` is ``eta`` itself here)."""
    x, xs = _step_view(x)
    steps, n = x.shape[0], x[0].numel()
    spikes = torch.empty(x.shape, dtype=x.dtype)
    u_all = torch.empty(x.shape, dtype=x.dtype) if keep_potentials else None
    noise = None if noise is None else noise.contiguous()
    fn = getattr(_native_lib, "lif_fwd_f32" if x.dtype == torch.float32 else "lif_fwd_f64")
    fn(x.data_ptr(), xs, _ptr(noise), _ptr(u_all), spikes.data_ptr(), steps, n, decay, v_threshold, _threads(n))
    return spikes, u_all


def native_backward(grad_s: Tensor | None, grad_u: Tensor | None, u_all: Tensor, noise: Tensor | None,
                    decay: float, v_threshold: float, surrogate: Surrogate, at_noisy: bool,
                    detach_reset: bool) -> Tensor:
    """:func:`scan_backward` with the C kernel."""
    steps, n = u_all.shape[0], u_all[0].numel()
    gx = torch.empty(u_all.shape, dtype=u_all.dtype)
    grad_s = None if grad_s is None else grad_s.contiguous()
    grad_u = None if grad_u is None else grad_u.contiguous()
    noise = None if noise is None else noise.contiguous()
    suffix = "f32" if u_all.dtype == torch.float32 else "f64"
    fn = getattr(_native_lib, f"lif_bwd_{surrogate.name}_{suffix}")
    fn(_ptr(grad_s), _ptr(grad_u), u_all.data_ptr(), _ptr(noise), gx.data_ptr(), steps, n, decay, v_threshold,
       float(surrogate.width), int(at_noisy), int(detach_reset), _threads(n))
    return gx
