"""Calibrate the constraint's weight to what the paper observed, not to its lambda value.

The paper's lambda_max (0.4 / 0.6) only means something under its (unknown) normalisation of
``L_mc``; what it reports is an effect: the constraint cuts the near-threshold share by about
40% (and costs 5-7 clean points, Table 4). :func:`calibrate_lambda` trains short runs of one
config at growing ``tgo.lambda_max`` and picks the smallest lambda whose near-threshold share
(measured on test images as the model runs, Noisy-LIF noise seeded) is at least
``target_reduction`` below that of the same short run without the constraint:

1. the baseline: the config with ``tgo.enabled = false``, one run per seed;
2. a log grid (``lambdas``, ascending) until the reduction reaches the target;
3. ``bisect`` steps of bisection in log(lambda) between the last grid point below the target and
   the first one at or above it;
4. the pick: the smallest lambda measured to reach the target (the largest tried, with a
   warning, if none does).

Every trial is a normal run folder (``OUT/baseline-s0``, ``OUT/lam0.3-s0``...), so a finished
trial is reused and an interrupted one resumed. Shares are averaged over ``seeds``.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from .config import ExperimentConfig, apply_overrides, config_from_dict, config_to_dict
from .errors import ConfigError
from .io import atomic_write_json, atomic_write_text, ensure_dir

RESULT_FILE = "calibration.json"


@dataclass
class CalibrationSettings:
    """How lambda_max is calibrated.

    Attributes:
        target_reduction: wanted relative cut of the near-threshold share (0.4 = 40%, the paper's).
        lambdas: the log grid tried in ascending order until the target is reached.
        bisect: bisection steps in log(lambda) after the grid brackets the target.
        seeds: training seeds; the share is their mean.
        short: overrides that make the runs short (e.g. ``optim.epochs=1``, ``data.subset=2000``).
        share_samples: test images the share is measured on (class-balanced, 0 = all).
        schedule: the lambda schedule of the trials (``constant`` so a short run feels the full
            weight; ``""`` keeps the config's).
    """

    target_reduction: float = 0.4
    lambdas: Sequence[float] = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
    bisect: int = 2
    seeds: Sequence[int] = (0,)
    short: Sequence[str] = ("optim.epochs=1",)
    share_samples: int = 256
    schedule: str = "constant"

    def validate(self) -> "CalibrationSettings":
        if not 0 < self.target_reduction < 1:
            raise ConfigError(f"calibration target_reduction must be in (0, 1), got {self.target_reduction}")
        if not self.lambdas or any(not (v > 0 and math.isfinite(v)) for v in self.lambdas):
            raise ConfigError(f"calibration lambdas must be positive numbers, got {list(self.lambdas)}")
        if self.bisect < 0 or not self.seeds or self.share_samples < 0:
            raise ConfigError("calibration needs bisect >= 0, at least one seed and share_samples >= 0")
        return self


@dataclass
class Trial:
    """One lambda (or the baseline, ``lam = 0``) measured over the seeds."""

    lam: float
    share: float
    clean: float
    reduction: float | None = None
    grad_ratio: float | None = None
    runs: list[str] = field(default_factory=list)
    seed_shares: list[float] = field(default_factory=list)
    """The share of each seed's run (in ``runs`` order): the spread the mean hides."""
    seed_cleans: list[float] = field(default_factory=list)


def _fmt_lam(lam: float) -> str:
    return f"{lam:.4g}"


def trial_config(base: ExperimentConfig, lam: float, seed: int, s: CalibrationSettings) -> ExperimentConfig:
    """The short run of ``base`` at ``lam`` (0 = the constraint off) and ``seed``."""
    data = apply_overrides(config_to_dict(copy.deepcopy(base)), list(s.short))
    data["seed"] = int(seed)
    data["eval"]["attacks"] = []
    data["tgo"]["enabled"] = lam > 0
    if lam > 0:
        data["tgo"]["lambda_max"] = float(lam)
        if s.schedule:
            data["tgo"]["schedule"] = s.schedule
        if data["tgo"].get("lambda_start", -1.0) > lam:
            data["tgo"]["lambda_start"] = -1.0
    return config_from_dict(data)


def _measure(cfg: ExperimentConfig, run_dir: Path, s: CalibrationSettings, progress: bool) -> tuple[float, float, float | None]:
    """``(share, clean accuracy, last grad ratio)`` of one trial; trains it unless finished."""
    import torch

    from .analysis.membrane import potential_histogram
    from .checkpoint import load_run
    from .data import load_dataset
    from .experiment import LOG_FILE, RESULTS_FILE, run_experiment
    from .utils import resolve_device

    if not (run_dir / RESULTS_FILE).is_file():
        resume = (run_dir / "config.json").is_file()
        run_experiment(None if resume else cfg, run_dir, resume=resume, progress=progress)
    res = json.loads((run_dir / RESULTS_FILE).read_text(encoding="utf-8"))
    dev = resolve_device(cfg.device)  # measure where the trial trained (load_run alone loads to CPU)
    run = load_run(run_dir, device=dev)
    d = cfg.data
    ds = load_dataset(d.name, "test", root=d.root or None, cache_dir=d.cache_dir or None, subset=s.share_samples,
                      seed=0, verify=d.verify_md5)
    with torch.no_grad():
        hist = potential_histogram(run.model.eval(), ds, v_threshold=cfg.neuron.v_threshold,
                                   delta=cfg.tgo.delta, device=dev, seed=0)
    ratio = None
    log = run_dir / LOG_FILE
    if log.is_file():
        rows = [json.loads(x) for x in log.read_text(encoding="utf-8").splitlines() if x.strip()]
        ratio = rows[-1].get("grad_ratio") if rows else None
    return hist.near_threshold, float(res["test_accuracy"]), ratio


def calibrate_lambda(base: ExperimentConfig, out_dir: str | Path, settings: CalibrationSettings | None = None,
                     progress: bool = False, log: Callable[[str], None] = print) -> dict:
    """Pick ``tgo.lambda_max`` for ``base`` so that the near-threshold share falls by the target.

    Returns (and writes to ``OUT/calibration.json``, with a Markdown table in
    ``OUT/calibration.md``): the baseline share, every trial, the chosen lambda and whether it
    reached the target.
    """
    s = (settings or CalibrationSettings()).validate()
    out = ensure_dir(out_dir)
    t0 = time.perf_counter()
    cache: dict[float, Trial] = {}

    def trial(lam: float) -> Trial:
        key = round(float(lam), 10)
        if key in cache:
            return cache[key]
        shares, cleans, ratios, runs = [], [], [], []
        for seed in s.seeds:
            name = f"baseline-s{seed}" if lam == 0 else f"lam{_fmt_lam(lam)}-s{seed}"
            sh, cl, gr = _measure(trial_config(base, lam, seed, s), Path(out) / name, s, progress)
            shares.append(sh)
            cleans.append(cl)
            runs.append(name)
            if gr is not None:
                ratios.append(gr)
        t = Trial(lam=float(lam), share=sum(shares) / len(shares), clean=sum(cleans) / len(cleans), runs=runs,
                  grad_ratio=sum(ratios) / len(ratios) if ratios else None, seed_shares=shares, seed_cleans=cleans)
        cache[key] = t
        return t

    base_t = trial(0.0)
    log(f"[calibrate] baseline (no constraint): near-threshold share {100 * base_t.share:.2f}%, "
        f"clean {100 * base_t.clean:.2f}% over seeds {list(s.seeds)}")

    def reaches(lam: float, step: str) -> bool:
        """Measure ``lam``, log it, and say whether it reaches the target."""
        t = trial(lam)
        t.reduction = 1.0 - t.share / base_t.share if base_t.share > 0 else float("nan")
        log(f"[calibrate] {step}lambda {_fmt_lam(lam)}: share {100 * t.share:.2f}% (reduction "
            f"{100 * t.reduction:.1f}%), clean {100 * t.clean:.2f}%")
        return t.reduction >= s.target_reduction

    below, above = None, None
    for lam in sorted(s.lambdas):
        if reaches(lam, ""):
            above = lam
            break
        below = lam
    if above is not None and below is not None:
        lo, hi = below, above
        for i in range(s.bisect):
            mid = math.sqrt(lo * hi)
            if reaches(mid, f"bisection {i + 1}/{s.bisect}: "):
                hi = mid
            else:
                lo = mid
    trials = sorted((t for t in cache.values() if t.lam > 0), key=lambda t: t.lam)
    reached = [t for t in trials if t.reduction is not None and t.reduction >= s.target_reduction]
    chosen = reached[0] if reached else trials[-1]
    result = {
        "target_reduction": s.target_reduction, "reached": bool(reached), "lambda_max": chosen.lam,
        "chosen": asdict(chosen), "baseline": asdict(base_t), "trials": [asdict(t) for t in trials],
        "settings": {**asdict(s), "lambdas": list(s.lambdas), "seeds": list(s.seeds), "short": list(s.short)},
        "base_config": config_to_dict(base), "seconds": time.perf_counter() - t0,
    }
    atomic_write_json(Path(out) / RESULT_FILE, result)
    atomic_write_text(Path(out) / "calibration.md", format_calibration(result))
    msg = "reached" if reached else "NOT reached (largest lambda tried)"
    log(f"[calibrate] chose tgo.lambda_max = {_fmt_lam(chosen.lam)}: reduction {100 * (chosen.reduction or 0):.1f}% "
        f"(target {100 * s.target_reduction:.0f}%, {msg}), clean {100 * chosen.clean:.2f}% vs "
        f"{100 * base_t.clean:.2f}%; wrote {Path(out) / RESULT_FILE}")
    return result


def _seeds(t: dict) -> str:
    """``21.9 / 22.4 / 23.0`` (the per-seed shares, %), ``-`` for results written before they were kept."""
    return " / ".join(f"{100 * v:.1f}" for v in t.get("seed_shares") or []) or "-"


def format_calibration(result: dict) -> str:
    """Markdown table of a calibration: lambda, share, reduction, clean, gradient ratio."""
    b = result["baseline"]
    lines = [f"# lambda_max calibration (target: {100 * result['target_reduction']:.0f}% fewer near-threshold "
             "potentials)", "",
             f"Chosen: `tgo.lambda_max = {_fmt_lam(result['lambda_max'])}` "
             f"({'target reached' if result['reached'] else 'target NOT reached: largest lambda tried'}).", "",
             "| lambda_max | near-threshold share | per seed | reduction | clean | grad ratio (last epoch) | runs |",
             "|---|---|---|---|---|---|---|",
             f"| 0 (no constraint) | {100 * b['share']:.2f}% | {_seeds(b)} | - | {100 * b['clean']:.2f}% | - | "
             f"{', '.join(b['runs'])} |"]
    for t in result["trials"]:
        gr = f"{t['grad_ratio']:.3g}" if t.get("grad_ratio") is not None else "-"
        red = f"{100 * t['reduction']:.1f}%" if t.get("reduction") is not None else "-"
        lines.append(f"| {_fmt_lam(t['lam'])} | {100 * t['share']:.2f}% | {_seeds(t)} | {red} | {100 * t['clean']:.2f}% | {gr} | "
                     f"{', '.join(t['runs'])} |")
    s = result["settings"]
    lines += ["", f"Short runs: {', '.join(s['short']) or 'as configured'}; seeds {s['seeds']}; lambda schedule "
              f"{s['schedule'] or 'as configured'}; share measured on {s['share_samples'] or 'all'} test images."]
    return "\n".join(lines) + "\n"


def settings_from_dict(d: dict) -> CalibrationSettings:
    """:class:`CalibrationSettings` from a TOML table (unknown keys are an error)."""
    known = {f for f in CalibrationSettings.__dataclass_fields__}
    bad = set(d) - known
    if bad:
        raise ConfigError(f"calibration: unknown key(s) {', '.join(sorted(bad))} (known: {', '.join(sorted(known))})")
    kw = dict(d)
    for k in ("lambdas", "seeds", "short"):
        if k in kw:
            kw[k] = tuple(kw[k])
    return CalibrationSettings(**kw).validate()


__all__ = ["CalibrationSettings", "Trial", "calibrate_lambda", "trial_config", "format_calibration",
           "settings_from_dict", "RESULT_FILE"]
