"""The membrane-potential constraint of TGO (PAPER.md section 2, Eq. 12-13).

    L_mc = 1/(T*L) * sum_l sum_t mean_i [ relu(delta - |U_i^l[t] - V_th|) ]^2

Pre-spike potentials within ``delta`` of the threshold are penalised quadratically; those
further away cost nothing.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

DEFAULT_DELTA = 0.5
"""Default margin. The paper does not give its value. 0.5 covers the inner half of the
default triangle surrogate's support (|U - V_th| < 1), where the surrogate gradient is
largest, and is just under one noise std (sigma ~ 0.63) of Noisy-LIF."""


def layer_penalty(u: Tensor, v_threshold: float = 1.0, delta: float = DEFAULT_DELTA) -> Tensor:
    """Mean over time steps and neurons of ``relu(delta - |u - V_th|)^2`` for one layer."""
    return torch.relu(delta - (u - v_threshold).abs()).square().mean()


def membrane_constraint(potentials: Sequence[Tensor], v_threshold: float = 1.0,
                        delta: float = DEFAULT_DELTA) -> Tensor:
    """``L_mc``: the layer penalties averaged over the spiking layers.

    Args:
        potentials: one pre-spike potential tensor ``[T, B, ...]`` per spiking layer.
        v_threshold: firing threshold V_th.
        delta: margin around V_th.
    """
    if not potentials:
        raise ValueError("membrane_constraint needs the potentials of at least one spiking layer")
    if delta <= 0:
        raise ValueError(f"delta must be > 0, got {delta}")
    return torch.stack([layer_penalty(u, v_threshold, delta) for u in potentials]).mean()


@torch.no_grad()
def near_threshold_share(potentials: Sequence[Tensor], v_threshold: float = 1.0,
                         delta: float = DEFAULT_DELTA) -> float:
    """Share of all recorded potentials with ``|U - V_th| < delta`` (threshold-neighbouring)."""
    near = sum(int(((u - v_threshold).abs() < delta).sum()) for u in potentials)
    total = sum(u.numel() for u in potentials)
    return near / total if total else float("nan")
