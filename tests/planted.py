"""Planted models with known answers, shared by the audit and evaluate-any tests: a nearest-
centroid linear classifier (honest gradients) and gradient-masked copies of it."""

import torch
from torch import nn


def centroid_data(n=150, k=3, seed=0, spread=0.15):
    """``(mu, x, y)``: k class centroids in [0.5 - spread, 0.5 + spread]^16 and n samples
    ``centroid + N(0, 0.03^2)`` as ``[n, 1, 4, 4]`` images (spread 0.15: ~38/255 from the
    boundary; 0.08: ~20/255)."""
    g = torch.Generator().manual_seed(seed)
    mu = 0.5 + spread * (torch.randint(0, 2, (k, 16), generator=g) * 2 - 1).float()
    y = torch.arange(n) % k
    x = (mu[y] + 0.03 * torch.randn(n, 16, generator=g)).clamp(0, 1).view(n, 1, 4, 4)
    return mu, x, y


class Centroid(nn.Module):
    """Nearest-centroid linear classifier: z_k = 5 (mu_k . x - |mu_k|^2 / 2)."""

    def __init__(self, mu):
        super().__init__()
        self.register_buffer("mu", mu)

    def forward(self, x):
        x = x.flatten(1)
        return 5 * (x @ self.mu.T - 0.5 * (self.mu ** 2).sum(1))


class Rounded(Centroid):
    """The same classifier behind a rounding layer: same decisions, zero input gradient."""

    def forward(self, x):
        return super().forward(torch.round(x * 32) / 32)


class StopGrad(Centroid):
    """The same classifier behind a stop-gradient layer."""

    def forward(self, x):
        return super().forward(x.detach())
