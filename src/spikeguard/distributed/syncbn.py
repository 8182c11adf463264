"""SyncBatchNorm that also runs on CPU (gloo), weighted by each rank's share of the batch."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .loader import ShardWeight


class _AllReduceWeighted(torch.autograd.Function):
    """Forward: sum over ranks. Backward: ``sum_s w_s g_s / w_r``.

    Rank ``r``'s gradient is later scaled by ``w_r`` in the DDP hook; dividing here makes the
    contributions that flow through the shared statistics carry each *source* rank's weight
    ``w_s`` instead, so the result is the gradient of ``sum_s w_s L_s`` exactly.
    """

    @staticmethod
    def forward(ctx: Any, t: Tensor, weight: float) -> Tensor:
        out = t.clone()
        dist.all_reduce(out)
        ctx.weight = float(weight)
        return out

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor, None]:
        w = ctx.weight
        g = (g * w).contiguous()
        dist.all_reduce(g)
        return g / w, None


class SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm over the global batch of all ranks (CPU/gloo and GPU/NCCL).

    Same parameters, buffers and ``state_dict`` keys as ``nn.BatchNorm1d/2d``, so checkpoints
    load into a plain model. Synchronises only in training mode with a process group of more
    than one rank; otherwise it is plain BatchNorm.
    """

    def __init__(self, *args: Any, shard: ShardWeight | None = None, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.shard = shard

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input, got {input.dim()}D")

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        w = self.shard.weight if self.shard is not None else 1.0 / dist.get_world_size()
        dims = [0] + list(range(2, x.dim()))
        n_local = float(x.numel() // x.shape[1])
        c = x.shape[1]
        # two-pass statistics (as stable as the single-process kernel)
        s = torch.cat([x.sum(dims), x.new_full((1,), n_local)])
        s = _AllReduceWeighted.apply(s, w)
        n = s[-1].detach()
        mean = s[:c] / n
        shape = [1, c] + [1] * (x.dim() - 2)
        xc = x - mean.view(shape)
        var = _AllReduceWeighted.apply(xc.square().sum(dims), w) / n
        y = xc * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)  # type: ignore[union-attr]  # buffers exist: track_running_stats
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)  # type: ignore[arg-type]
                nn_ = float(n)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * (nn_ / max(nn_ - 1, 1.0)), alpha=m)  # type: ignore[union-attr]
        return y


def convert_sync_batchnorm(module: nn.Module, shard: ShardWeight | None = None) -> nn.Module:
    """Replace every ``BatchNorm1d/2d/3d`` in ``module`` by :class:`SyncBatchNorm`, in place.

    The parameters and buffers are *moved*, not copied: an optimizer built before the
    conversion keeps working.
    """
    for name, child in list(module.named_children()):
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, SyncBatchNorm):
            new = SyncBatchNorm(
                child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats, shard=shard
            )
            if child.affine:
                new.weight, new.bias = child.weight, child.bias
            if child.track_running_stats:
                new.running_mean, new.running_var = child.running_mean, child.running_var
                new.num_batches_tracked = child.num_batches_tracked
            new.training = child.training
            setattr(module, name, new)
        else:
            convert_sync_batchnorm(child, shard)
    return module
