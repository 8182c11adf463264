"""The membrane-potential constraint of TGO (arXiv 2602.20548, section 4.2.1, Eq. 12-13).

    L_mc = 1/(T*L) * sum_l sum_t mean_i [ relu(delta - |U_i^l[t] - V_th|) ]^2

Pre-spike potentials within ``delta`` of the threshold are penalised quadratically; those
further away cost nothing.

The paper's text leaves the normalisation open, so the readings a reader could mean are
options (:class:`Normalisation`); the default is the formula above:

* ``layer_reduce``: ``mean`` (default) or ``sum`` over the spiking layers;
* ``neuron_reduce``: ``mean`` (default) over time steps, neurons and samples, or ``sum`` over
  time steps and neurons, then the mean over the batch (a per-sample total, so the loss does
  not depend on the batch size but grows with the network's size);
* ``hinge``: ``squared`` (default, "average quadratic penalty") or ``plain``
  (``max(0, delta - |U - V_th|)``, the public summary's formula);
* ``potential``: ``pre`` (default, the pre-spike U the paper's theory is about) or ``post``
  (the post-reset V = U (1 - S): a neuron that fires is reset to 0 and, for
  ``delta <= V_th``, costs nothing). ``post`` takes S from the noise-free threshold
  crossing ``U >= V_th`` (the recorder sees U, not the noise), so for Noisy-LIF it is the
  expected reset of the noise-free twin.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

DEFAULT_DELTA = 0.5
"""Default margin. The paper does not give its value. 0.5 covers the inner half of the
default triangle surrogate's support (|U - V_th| < 1), where the surrogate gradient is
largest, and is just under one noise std (sigma ~ 0.63) of Noisy-LIF."""

LAYER_REDUCTIONS = ("mean", "sum")
NEURON_REDUCTIONS = ("mean", "sum")
HINGES = ("squared", "plain")
POTENTIALS = ("pre", "post")


@dataclass(frozen=True)
class Normalisation:
    """How ``L_mc`` is reduced (see the module docstring); the default is the paper's formula."""

    layer_reduce: str = "mean"
    neuron_reduce: str = "mean"
    hinge: str = "squared"
    potential: str = "pre"

    def __post_init__(self) -> None:
        for key, value, allowed in (
            ("layer_reduce", self.layer_reduce, LAYER_REDUCTIONS),
            ("neuron_reduce", self.neuron_reduce, NEURON_REDUCTIONS),
            ("hinge", self.hinge, HINGES),
            ("potential", self.potential, POTENTIALS),
        ):
            if value not in allowed:
                raise ValueError(f"{key} must be one of {', '.join(allowed)}, got {value!r}")

    @property
    def is_default(self) -> bool:
        return self == Normalisation()

    def label(self) -> str:
        """Short text for tables, e.g. ``mean/mean/sq/U`` (layers/neurons/hinge/potential)."""
        return (
            f"{self.layer_reduce}/{self.neuron_reduce}/{'sq' if self.hinge == 'squared' else 'plain'}/"
            f"{'U' if self.potential == 'pre' else 'V'}"
        )


def layer_penalty(
    u: Tensor, v_threshold: float = 1.0, delta: float = DEFAULT_DELTA, norm: Normalisation | None = None
) -> Tensor:
    """One layer's penalty: by default the mean over time steps and neurons of ``relu(delta - |u - V_th|)^2``.

    Args:
        u: pre-spike potentials ``[T, B, ...]``.
        norm: the reduction (default: :class:`Normalisation`'s defaults).
    """
    if norm is None or norm.is_default:
        # the original expression, kept verbatim so default runs give bit-identical numbers
        return torch.relu(delta - (u - v_threshold).abs()).square().mean()
    if norm.potential == "post":
        u = u * (u < v_threshold).to(u.dtype)  # V = U (1 - S): fired neurons are reset to 0
    h = torch.relu(delta - (u - v_threshold).abs())
    if norm.hinge == "squared":
        h = h.square()
    if norm.neuron_reduce == "mean":
        return h.mean()
    if u.dim() < 2:
        return h.sum()
    # sum over time steps and neurons, mean over the batch (dim 1 of [T, B, ...])
    return h.sum() / u.shape[1]


def membrane_constraint(
    potentials: Sequence[Tensor],
    v_threshold: float = 1.0,
    delta: float = DEFAULT_DELTA,
    norm: Normalisation | None = None,
) -> Tensor:
    """``L_mc``: the layer penalties averaged (or summed) over the spiking layers.

    Args:
        potentials: one pre-spike potential tensor ``[T, B, ...]`` per spiking layer.
        v_threshold: firing threshold V_th.
        delta: margin around V_th.
        norm: the reduction (default: the paper's formula, see the module docstring).
    """
    if not potentials:
        raise ValueError("membrane_constraint needs the potentials of at least one spiking layer")
    if delta <= 0:
        raise ValueError(f"delta must be > 0, got {delta}")
    per_layer = torch.stack([layer_penalty(u, v_threshold, delta, norm) for u in potentials])
    if norm is not None and norm.layer_reduce == "sum":
        return per_layer.sum()
    return per_layer.mean()


@torch.no_grad()
def near_threshold_share(potentials: Sequence[Tensor], v_threshold: float = 1.0, delta: float = DEFAULT_DELTA) -> float:
    """Share of all recorded potentials with ``|U - V_th| < delta`` (threshold-neighbouring)."""
    near = sum(int(((u - v_threshold).abs() < delta).sum()) for u in potentials)
    total = sum(u.numel() for u in potentials)
    return near / total if total else float("nan")
