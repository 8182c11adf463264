"""Regularisers of the published baseline defences (RAT, SR, RSSNN/DLIF).

* **RAT** (Ding et al., NeurIPS 2022, "SNN-RAT"; reference ``putshua/SNN-RAT``): keep every conv
  and linear weight close to a Parseval tight frame, ``R(W) = 1/4 ||W W^T - I||_F^2`` with ``W``
  reshaped to ``[out, in * k * k]``. The reference applies it as a *retraction* after each
  optimiser step, ``W <- (1 + beta) W - beta W W^T W``, which is one gradient step of size
  ``beta`` on ``R`` (``grad R = (W W^T - I) W``); for linear layers with 200 rows or more it
  retracts a random 30% of the rows per step. :func:`orthogonal_retraction_` does exactly that,
  :func:`orthogonality_penalty` gives ``R`` as a differentiable loss term.
* **SR** (Liu et al., ICML 2024; reference ``putshua/gradient_reg_defense``): penalise the
  L1 norm of the input gradient of ``f(x) = p(y | x)`` restricted to the true class and the
  strongest other class, ``f = exp(z_y) / (exp(z_y) + exp(z_m))``. The norm is estimated by a
  finite difference along the gradient's sign,
  ``||grad f||_1 ~ (f(x + h sign(grad f)) - f(x)) / h``, and its square is averaged over the
  batch. :func:`sparsity_penalty` computes it; :func:`input_gradient_l1` is the exact norm.
* **RSSNN / DLIF** (Ding et al., ICML 2024; reference ``DingJianhao/stable-snn``): reduce the
  mean square of the membrane-potential perturbation of the last spiking layer, modelled by
  the firing-free leaky dynamics ``Y[t] = tau Y[t-1] + (I_clean[t] - I_pert[t])``:
  :func:`mpp_penalty`, with :class:`NeuronInput` capturing the layer's input current.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from ..neurons import spiking_neurons


def _weighted_layers(model: nn.Module) -> list[nn.Conv1d | nn.Conv2d | nn.Conv3d | nn.Linear]:
    return [m for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))]


def _as_matrix(weight: Tensor) -> Tensor:
    return weight.reshape(weight.shape[0], -1)


def parseval_penalty(weight: Tensor) -> Tensor:
    """``1/4 ||W W^T - I||_F^2`` of one weight (conv kernels flattened to ``[out, in*k*k]``).

    Zero exactly when the rows of ``W`` are orthonormal.
    """
    w = _as_matrix(weight)
    gram = w @ w.t()
    eye = torch.eye(gram.shape[0], device=w.device, dtype=w.dtype)
    return 0.25 * (gram - eye).square().sum()


def orthogonality_penalty(model: nn.Module) -> Tensor:
    """Sum of :func:`parseval_penalty` over every conv and linear layer of ``model``."""
    layers = _weighted_layers(model)
    if not layers:
        return torch.zeros(())
    return torch.stack([parseval_penalty(m.weight) for m in layers]).sum()


@torch.no_grad()
def orthogonal_retraction_(
    model: nn.Module,
    beta: float,
    row_threshold: int = 200,
    row_fraction: float = 0.3,
    generator: torch.Generator | None = None,
) -> None:
    """In place: ``W <- (1 + beta) W - beta W W^T W`` for every conv and linear weight.

    Args:
        beta: retraction step (one gradient step of size ``beta`` on :func:`parseval_penalty`).
        row_threshold, row_fraction: linear layers with at least ``row_threshold`` rows retract a
            random ``row_fraction`` of their rows per call (the reference's cost saving).
        generator: optional CPU generator for the row sample.
    """
    if beta == 0:
        return
    for m in _weighted_layers(model):
        w = _as_matrix(m.weight.data)
        if isinstance(m, nn.Linear) and w.shape[0] >= row_threshold:
            k = max(1, int(w.shape[0] * row_fraction))
            rows = torch.randperm(w.shape[0], generator=generator)[:k].to(w.device)
            sub = w[rows]
            w[rows] = (1 + beta) * sub - beta * (sub @ sub.t()) @ sub
        else:
            w.copy_((1 + beta) * w - beta * (w @ w.t()) @ w)
        # ``w`` is a view of the weight for contiguous weights; write back for safety otherwise
        if w.data_ptr() != m.weight.data.data_ptr():
            m.weight.data.copy_(w.view_as(m.weight))


# --------------------------------------------------------------------------------------- SR
def two_class_probability(logits: Tensor, labels: Tensor, other: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``f = exp(z_y) / (exp(z_y) + exp(z_m))`` per sample and the index ``m`` used.

    ``m`` is the strongest class other than ``y`` unless ``other`` fixes it (SR evaluates the
    perturbed point with the clean point's ``m``).
    """
    if other is None:
        other = logits.scatter(1, labels[:, None], float("-inf")).argmax(1)
    z_y = logits.gather(1, labels[:, None]).squeeze(1)
    z_m = logits.gather(1, other[:, None]).squeeze(1)
    return torch.sigmoid(z_y - z_m), other


def sparsity_penalty(
    logit_fn: Callable[[Tensor], Tensor],
    images: Tensor,
    labels: Tensor,
    h: float = 0.01,
    logits: Tensor | None = None,
    perturbed_logit_fn: Callable[[Tensor], Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """SR's finite-difference estimate of the squared L1 input-gradient norm of ``f``.

    Args:
        logit_fn: maps images to logits ``[B, K]`` (graph-connected to the parameters).
        images: inputs ``[B, ...]``; must have ``requires_grad=True`` if ``logits`` is given.
        labels: true classes ``[B]``.
        h: finite-difference step on the [0, 1] pixel scale (reference: 0.01).
        logits: the logits of ``images`` if already computed (must depend on ``images``).
        perturbed_logit_fn: logits of the shifted point (default ``logit_fn``).

    Returns:
        ``(penalty, estimate)``: ``mean(((f(x + h v) - f(x)) / h)^2)`` and the per-sample
        estimate ``(f(x + h v) - f(x)) / h`` (~ ``||grad_x f||_1``), ``v = sign(grad_x f)``.
    """
    if logits is None:
        images = images.detach().requires_grad_(True)
        logits = logit_fn(images)
    f1, other = two_class_probability(logits, labels)
    (grad,) = torch.autograd.grad(f1.sum(), images, retain_graph=True)
    v = grad.detach().sign()
    shifted = images.detach() + h * v  # as in the reference: no clipping to [0, 1]
    f2, _ = two_class_probability((perturbed_logit_fn or logit_fn)(shifted), labels, other)
    est = (f2 - f1) / h
    return est.square().mean(), est


def input_gradient_l1(logit_fn: Callable[[Tensor], Tensor], images: Tensor, labels: Tensor) -> Tensor:
    """Exact per-sample ``||grad_x f||_1`` of the two-class probability (for checks and analyses)."""
    x = images.detach().requires_grad_(True)
    f, _ = two_class_probability(logit_fn(x), labels)
    (grad,) = torch.autograd.grad(f.sum(), x)
    return grad.abs().flatten(1).sum(1)


# ------------------------------------------------------------------------------- RSSNN/DLIF
class NeuronInput:
    """Captures the input current ``[T, B, ...]`` of one spiking layer (default: the last one).

    Use as a context manager around a forward pass; :attr:`value` holds the last input seen.
    """

    def __init__(self, model: nn.Module, layer: int = -1) -> None:
        neurons = spiking_neurons(model)
        if not neurons:
            raise ValueError("the model has no spiking neurons")
        self.module = neurons[layer][1]
        self.value: Tensor | None = None
        self._handle: RemovableHandle | None = None

    def _hook(self, _module: nn.Module, args: tuple) -> None:
        self.value = args[0]

    def __enter__(self) -> NeuronInput:
        self._handle = self.module.register_forward_pre_hook(self._hook)
        return self

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


def mpp_penalty(clean_input: Tensor, perturbed_input: Tensor, tau: float = 0.99) -> Tensor:
    """RSSNN's membrane-potential-perturbation term ``mean(Y^2)``.

    ``Y[t] = tau * Y[t-1] + D[t]`` with ``D = I_clean.detach() - I_pert`` (``[T, B, ...]``): the
    perturbation of a firing-free leaky membrane; the clean side is a fixed target.
    """
    d = clean_input.detach() - perturbed_input
    y = torch.zeros_like(d[0])
    total = d.new_zeros(())
    for t in range(d.shape[0]):
        y = tau * y + d[t]
        total = total + y.square().mean()
    return total / d.shape[0]
