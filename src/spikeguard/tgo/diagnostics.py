"""How large the constraint's pull is next to the task's: ``||lambda grad L_mc|| / ||grad L_task||``.

Measured on the issue's CPU preset, the gradient of ``L_mc`` is a fraction of a percent of
the cross-entropy gradient, so the constraint's scale (not only lambda) decides whether TGO
does anything. :func:`constraint_gradient_ratio` measures it on one batch; the experiment
runner logs it once per epoch (``grad_ratio`` in ``log.jsonl``).

The measurement leaves training untouched: it restores every random generator and every
buffer (BatchNorm running statistics) it touched and never writes ``.grad``, so a run with
the log gives the same weights as one without.
"""

from __future__ import annotations

import contextlib
import random
from typing import Iterator

import numpy as np
import torch
from torch import Tensor, nn

from ..neurons import record_potentials


@contextlib.contextmanager
def side_effect_free(model: nn.Module) -> Iterator[None]:
    """Restore the model's buffers and the python/numpy/torch (and CUDA) generators on exit."""
    buffers = {k: v.detach().clone() for k, v in model.named_buffers()}
    rng = (
        random.getstate(),
        np.random.get_state(),
        torch.get_rng_state(),
        torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    )
    was_training = model.training
    try:
        yield
    finally:
        with torch.no_grad():
            for k, v in model.named_buffers():
                v.copy_(buffers[k])
        random.setstate(rng[0])
        np.random.set_state(rng[1])
        torch.set_rng_state(rng[2])
        if rng[3] is not None:
            torch.cuda.set_rng_state_all(rng[3])
        model.train(was_training)


def _norm(grads: tuple[Tensor | None, ...]) -> float:
    sq = [g.detach().float().square().sum() for g in grads if g is not None]
    return float(torch.stack(sq).sum().sqrt()) if sq else 0.0


def constraint_gradient_ratio(
    model: nn.Module, strategy, guard, images: Tensor, labels: Tensor, lam: float
) -> dict[str, float]:
    """Gradient norms of the task loss and of ``lam * L_mc`` w.r.t. the weights, on one batch.

    Args:
        model: the (bare, not DDP-wrapped) spiking model, in training mode as during training.
        strategy: the run's training strategy (turns the batch into the task loss).
        guard: the run's :class:`~spikeguard.tgo.ThresholdGuard` (its normalisation is used).
        images, labels: one training batch.
        lam: the constraint weight to report the ratio at (e.g. the schedule's value now).

    Returns:
        ``grad_ratio`` (``||lam grad L_mc|| / ||grad L_task||``), ``mc_grad_ratio`` (the same
        without ``lam``), the two norms and ``lam``.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    with side_effect_free(model):
        model.train()
        with record_potentials(model) as rec:
            potentials: list[Tensor] = []

            def forward(x: Tensor) -> Tensor:
                rec.clear()
                out = model.forward_steps(x)  # type: ignore[operator]  # any model with forward_steps
                potentials[:] = rec.potentials
                return out

            out = strategy(model, images, labels, forward)
        g_task = torch.autograd.grad(out.loss, params, retain_graph=True, allow_unused=True)
        l_mc = guard.constraint(potentials)
        g_mc = torch.autograd.grad(l_mc, params, allow_unused=True) if l_mc.requires_grad else ()
    task, mc = _norm(g_task), _norm(g_mc)
    raw = mc / task if task > 0 else float("nan")
    return {"grad_ratio": lam * raw, "mc_grad_ratio": raw, "task_grad_norm": task, "mc_grad_norm": mc, "lam": lam}
