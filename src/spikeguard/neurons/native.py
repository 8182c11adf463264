"""Native CPU kernel for the fused LIF scan: the whole scan in one pass over memory.

Eager tensor ops cost a full pass over ``[T, B, ...]`` each (the forward needs ~3 per step,
the backward ~8): on a CPU that is memory-bound work, several times the cost of a ReLU.
The C kernel below reads the input once and writes U and the spikes once (forward), and
reads U, the incoming gradients and writes dL/dI once (backward), keeping the recurrence
state in a small block that stays in L1. It is plain C99 + OpenMP, compiled on first use
with the system C compiler into a per-user cache (well under a second) and loaded with
ctypes; OpenMP resolves to the libgomp torch has already loaded, so there is one thread
pool. Without a compiler the torch-op kernel of :mod:`spikeguard.neurons.fused` is used
(same numbers).

The backward is generated once per registered surrogate from its ``c_code``
(:class:`~spikeguard.neurons.surrogate.SurrogateKind`); registering a new surrogate
rebuilds the library (the cache key is the generated source).

Exactness: compiled without FP contraction (-ffp-contract=off) and with the reference's
operation order, ``u = decay * v + x`` and ``z = (u - V_th) + eta``, so the forward is
bit-identical to the reference loop; the backward agrees to rounding.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch
from torch import Tensor

from .layout import empty_steps, like, step_view
from .surrogate import Surrogate, surrogate_kind, surrogate_names

__all__ = ["c_source", "native_available", "native_error", "native_supports", "native_forward", "native_backward"]

_C_TEMPLATE = r"""
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


DEFINE_FWD(lif_fwd_f32, float)
DEFINE_FWD(lif_fwd_f64, double)
#define BOTH(SNAME, SUR)                                                                    \
    DEFINE_BWD(lif_bwd_##SNAME##_f32, float, expf, fabsf, SUR)                              \
    DEFINE_BWD(lif_bwd_##SNAME##_f64, double, exp, fabs, SUR)
"""

# -ffp-contract=off: no FMA contraction (the reference rounds products and sums separately);
# -fno-trapping-math: lets the compiler vectorise the branchy selects (values are unchanged).
_CFLAGS = ["-O3", "-std=gnu99", "-fPIC", "-shared", "-ffp-contract=off", "-fno-trapping-math"]

# One loaded library per generated source (a surrogate registered later gets a new one).
_libs: dict[str, ctypes.CDLL] = {}
_errors: dict[str, str] = {}


def _native_names() -> tuple[str, ...]:
    """Registered surrogates that have C code and a name usable as a C identifier."""
    return tuple(n for n in surrogate_names() if surrogate_kind(n).c_code and n.isidentifier() and n.isascii())


def c_source() -> str:
    """The C source: the shared forward/backward templates plus one backward per surrogate."""
    parts = [_C_TEMPLATE]
    for name in _native_names():
        code = " ".join(surrogate_kind(name).c_code.split())  # type: ignore[union-attr]  # _native_names() lists only kinds with c_code
        parts.append(f"#define SUR_{name}(R, E, F) {{ {code} }}\nBOTH({name}, SUR_{name})\n")
    return "\n".join(parts)


def _cache_dir() -> Path:
    root = os.environ.get("SPIKEGUARD_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "spikeguard"
    )
    return Path(root) / "kernels"


def _build(source: str, names: tuple[str, ...]) -> ctypes.CDLL:
    """Compile (once per source/compiler/flags, cached on disk) and load the C kernels."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        raise RuntimeError("no C compiler found (set CC)")
    last: str = ""
    for omp in (["-fopenmp"], []):  # OpenMP if the compiler has it, else serial
        flags = _CFLAGS + omp
        key = hashlib.sha256("\0".join([source, cc, *flags, platform.machine()]).encode()).hexdigest()[:16]
        target = _cache_dir() / f"lif_scan_{key}.so"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
                src = Path(tmp) / "lif_scan.c"
                src.write_text(source)
                out = Path(tmp) / target.name
                proc = subprocess.run(
                    [cc, *flags, str(src), "-o", str(out), "-lm"], capture_output=True, text=True, timeout=120
                )
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
            for name in names:
                f = getattr(lib, f"lif_bwd_{name}_{suffix}")
                f.argtypes = [vp, vp, vp, vp, vp, i64, i64, real, real, real, ci, ci, ci]
                f.restype = None
        return lib
    raise RuntimeError(f"C compiler {cc} failed: {last}")


def _lib() -> ctypes.CDLL | None:
    source = c_source()
    if source not in _libs and source not in _errors:
        try:
            _libs[source] = _build(source, _native_names())
        except Exception as e:  # noqa: BLE001 - any failure just means "use the torch kernel"
            _errors[source] = f"{type(e).__name__}: {e}"
    return _libs.get(source)


def native_available() -> bool:
    """True if the compiled kernel is (or can be) loaded; builds it on first call."""
    return _lib() is not None


def native_error() -> str | None:
    """Why the kernel could not be built (``None`` if it was, or was not tried yet)."""
    return _errors.get(c_source())


def native_supports(surrogate: Surrogate | None) -> bool:
    """True if the C kernel has a backward for ``surrogate`` (``None``: forward only)."""
    return surrogate is None or surrogate.name in _native_names()


def _threads(n: int) -> int:
    # Below ~32k neurons the OpenMP fork/join costs more than it saves.
    return max(1, min(torch.get_num_threads(), n // 32768)) if n >= 65536 else 1


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def native_forward(
    x: Tensor, decay: float, v_threshold: float, noise: Tensor | None, keep_potentials: bool = True
) -> tuple[Tensor, Tensor | None]:
    """The scan's forward with the C kernel (``noise`` is ``eta`` itself here)."""
    lib = _lib()
    x, xs = step_view(x)
    steps, n = x.shape[0], x[0].numel()
    spikes = empty_steps(x)
    u_all = empty_steps(x) if keep_potentials else None
    noise = like(noise, spikes)
    fn = getattr(lib, "lif_fwd_f32" if x.dtype == torch.float32 else "lif_fwd_f64")
    fn(x.data_ptr(), xs, _ptr(noise), _ptr(u_all), spikes.data_ptr(), steps, n, decay, v_threshold, _threads(n))
    return spikes, u_all


def native_backward(
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
    """The scan's backward with the C kernel."""
    lib = _lib()
    steps, n = u_all.shape[0], u_all[0].numel()
    gx = torch.empty_like(u_all)
    grad_s, grad_u, noise = like(grad_s, u_all), like(grad_u, u_all), like(noise, u_all)
    suffix = "f32" if u_all.dtype == torch.float32 else "f64"
    fn = getattr(lib, f"lif_bwd_{surrogate.name}_{suffix}")
    fn(
        _ptr(grad_s),
        _ptr(grad_u),
        u_all.data_ptr(),
        _ptr(noise),
        gx.data_ptr(),
        steps,
        n,
        decay,
        v_threshold,
        float(surrogate.width),
        int(at_noisy),
        int(detach_reset),
        _threads(n),
    )
    return gx
