"""Small statistics helpers for accuracies measured over stochastic passes and finite test sets."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor

# Two-sided 95% Student-t quantiles t_{0.975, df} for df = 1..30 (used if scipy is missing).
_T975 = (
    12.706,
    4.303,
    3.182,
    2.776,
    2.571,
    2.447,
    2.365,
    2.306,
    2.262,
    2.228,
    2.201,
    2.179,
    2.160,
    2.145,
    2.131,
    2.120,
    2.110,
    2.101,
    2.093,
    2.086,
    2.080,
    2.074,
    2.069,
    2.064,
    2.060,
    2.056,
    2.052,
    2.048,
    2.045,
    2.042,
)


def t_quantile_975(df: int) -> float:
    """``t_{0.975}`` with ``df`` degrees of freedom."""
    if df < 1:
        raise ValueError("df must be >= 1")
    try:
        from scipy.stats import t  # lazy: optional, slow to import; a fallback follows

        return float(t.ppf(0.975, df))
    except ImportError:  # pragma: no cover - scipy comes with scikit-learn
        return _T975[df - 1] if df <= len(_T975) else 1.96


def mean_ci95(values: Sequence[float]) -> tuple[float, tuple[float, float] | None]:
    """Mean of per-pass values and its 95% Student-t interval (None for a single value).

    The interval describes pass-to-pass variation (the model's noise), not the finite
    test set; see :func:`wilson_ci95` for the latter.
    """
    vals = [float(v) for v in values]
    n = len(vals)
    if n == 0:
        return float("nan"), None
    m = sum(vals) / n
    if n == 1:
        return m, None
    sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (n - 1))
    h = t_quantile_975(n - 1) * sd / math.sqrt(n)
    return m, (m - h, m + h)


def wilson_ci95(p: float, n: int) -> tuple[float, float] | None:
    """95% Wilson score interval of a proportion ``p`` measured on ``n`` samples."""
    if n <= 0 or not math.isfinite(p):
        return None
    z = 1.959964
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value of paired outcomes.

    ``b``: pairs where only the first condition "succeeded" (e.g. samples broken by attack A
    only), ``c``: where only the second did; concordant pairs carry no information. Under the
    null hypothesis each discordant pair goes either way with probability 1/2, so ``b`` is
    Binomial(b + c, 1/2) and ``p = min(1, 2 * P[X <= min(b, c)])``.
    """
    b, c = int(b), int(c)
    if b < 0 or c < 0:
        raise ValueError("counts must be >= 0")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2**n)


def paired_counts(robust_a: Tensor, robust_b: Tensor) -> tuple[int, int]:
    """``(b, c)`` of two attacks' per-sample outcomes on the same samples (bool ``[P, n]``).

    ``b``: samples attack A breaks more often than B (robust on fewer of the passes; with one
    pass: broken by A only), ``c``: the other way round. With several passes this is the sign
    test over samples, of which McNemar's is the one-pass case.
    """
    ra, rb = robust_a.float().mean(0), robust_b.float().mean(0)
    return int((ra < rb).sum()), int((rb < ra).sum())


# ------------------------------------------------------------------ per-sample and paired intervals
def _clip01(lo: float, hi: float) -> list[float]:
    return [max(0.0, lo), min(1.0, hi)]


def sample_accuracy_ci95(per_sample: Sequence[float]) -> dict:
    """Accuracy over test samples and its 95% interval over the samples.

    ``per_sample[i]`` is the fraction of judging passes on which sample ``i`` was robust (a
    deterministic model or a single pass: 0 or 1). The interval treats the samples as the unit,
    so it covers the finite test set and, for noisy models, the pass-to-pass noise as well:

    * every value 0 or 1: the Wilson score interval of the proportion (``method = "wilson"``);
    * fractional values (several passes of a noisy model): the mean of the per-sample pass
      means with a Student-t interval over the samples, clipped to [0, 1] (``"t-samples"``).

    Returns ``{"accuracy", "ci95", "n", "method"}`` (``ci95`` None without samples).
    """
    vals = [float(v) for v in per_sample]
    n = len(vals)
    if n == 0:
        return {"accuracy": float("nan"), "ci95": None, "n": 0, "method": None}
    m = sum(vals) / n
    if all(v in (0.0, 1.0) for v in vals):
        ci = wilson_ci95(m, n)
        return {"accuracy": m, "ci95": list(ci) if ci else None, "n": n, "method": "wilson"}
    _, ci = mean_ci95(vals)
    return {"accuracy": m, "ci95": _clip01(*ci) if ci else None, "n": n, "method": "t-samples"}


def paired_difference_ci95(target: Sequence[float], baseline: Sequence[float]) -> dict:
    """Paired difference ``target - baseline`` over the same samples, with a 95% Student-t interval.

    ``d_i = target_i - baseline_i`` per sample (per-sample pass means, as in
    :func:`sample_accuracy_ci95`); the result is ``mean(d)`` and ``mean(d) +- t_{0.975, n-1}
    sd(d) / sqrt(n)``. Pairing removes the between-image variation both models share, so the
    interval is much narrower than two independent accuracy intervals would suggest.

    Raises:
        ValueError: the two lists differ in length (not the same samples) or are empty.
    """
    a = [float(v) for v in target]
    b = [float(v) for v in baseline]
    if len(a) != len(b) or not a:
        raise ValueError(f"a paired difference needs the same non-empty samples ({len(a)} vs {len(b)})")
    m, ci = mean_ci95([x - y for x, y in zip(a, b, strict=True)])
    return {"diff": m, "ci95": list(ci) if ci else None, "n": len(a), "method": "paired-t-samples"}


def seeds_mean_ci95(values: Sequence[float]) -> dict:
    """Mean over training seeds with a 95% Student-t interval over the seeds (df = seeds - 1).

    One seed gives no interval (``ci95`` None): the caller shows the per-sample one instead and
    says "1 seed".
    """
    vals = [float(v) for v in values]
    m, ci = mean_ci95(vals)
    return {
        "mean": m,
        "ci95": list(ci) if ci else None,
        "n_seeds": len(vals),
        "per_seed": vals,
        "method": "t-seeds" if ci else None,
    }
