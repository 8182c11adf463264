"""Memory layout of the fused scan's ``[T, B, ...]`` tensors.

The kernels index every tensor as ``t * N + i`` with ``i`` the position *in memory* within
one time step, so any layout works as long as each step is one dense block and all tensors
of a call share it: plain contiguous, or channels_last steps (a ``[T*B, C, H, W]``
channels_last activation viewed as ``[T, B, C, H, W]``), which then need no copy.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _dense_step(s: Tensor) -> bool:
    return s.is_contiguous() or (s.dim() == 4 and s.is_contiguous(memory_format=torch.channels_last))


def step_view(x: Tensor) -> tuple[Tensor, int]:
    """``x`` with dense time steps (an input expanded over T stays un-copied) and its T stride."""
    if x.shape[0] == 1 or _dense_step(x[0]):
        return x, (x.stride(0) if x.shape[0] > 1 else 0)
    x = x.contiguous()
    return x, x.stride(0)


def empty_steps(x: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """An uninitialised ``[T, ...]`` tensor whose steps have ``x[0]``'s layout (``x`` from :func:`step_view`)."""
    dtype = dtype or x.dtype
    step = x[0]
    if step.dim() == 4 and not step.is_contiguous() and step.is_contiguous(memory_format=torch.channels_last):
        flat = torch.empty(
            (x.shape[0] * step.shape[0],) + tuple(step.shape[1:]),
            dtype=dtype,
            device=x.device,
            memory_format=torch.channels_last,
        )
        return flat.view(x.shape)
    return torch.empty(x.shape, dtype=dtype, device=x.device)


def like(t: Tensor | None, ref: Tensor) -> Tensor | None:
    """``t`` (same shape as ``ref``) with ``ref``'s strides, copied only if they differ."""
    if t is None:
        return None
    t = t.expand(ref.shape)
    if t.stride() == ref.stride():
        return t
    return torch.empty_like(ref, dtype=t.dtype).copy_(t)
