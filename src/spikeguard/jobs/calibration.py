"""Calibrate the constraint's weight to what the paper observed, not to its lambda value.

The paper's lambda_max (0.4 / 0.6) only means something under its (unknown) normalisation of
``L_mc``; what it reports is an effect: TGO has about 40% fewer near-threshold potentials than
vanilla LIF (and costs 5-7 clean points, Table 4). So every cut here is measured against a
**reference**: by default vanilla LIF without the constraint, on the same data, seed, length and
strategy (``reference = "same-neuron"``: the config's own neuron, e.g. Noisy-LIF, without the
constraint; its noise alone already cuts the share). The share is measured on test images as the
model runs (Noisy-LIF noise seeded). Runs are as long as the config's unless ``short`` shortens
them: the constraint keeps cutting the share after a short trial ends.

:func:`calibrate_lambda` (``method = "search"``) picks the smallest ``tgo.lambda_max`` whose
share is at least ``target_reduction`` below the reference's:

1. the reference, one run per seed;
2. a log grid (``lambdas``, ascending) until the reduction reaches the target;
3. ``bisect`` steps of bisection in log(lambda) between the last grid point below the target and
   the first one at or above it;
4. the pick: the smallest lambda measured to reach the target (the largest tried, with a
   warning, if none does).

:func:`control_lambda` (``method = "controller"``) instead trains one run per seed whose lambda
is steered during training toward the target share (the ``share`` schedule of
:mod:`spikeguard.tgo.schedules`). :func:`compare_normalisations` trains one given weight (the
paper's) under each normalisation of ``L_mc`` and tabulates the cuts.

Every run is a normal run folder (``OUT/reference-lif-s0``, ``OUT/lam0.3-s0``...), so a finished
one is reused (after checking it was trained with the same settings) and an interrupted one
resumed. Shares are averaged over ``seeds``.
"""

from __future__ import annotations

import copy
import inspect
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ..config import ExperimentConfig, apply_overrides, config_from_dict, config_to_dict
from ..errors import ConfigError
from ..tgo.constraint import HINGES, LAYER_REDUCTIONS, NEURON_REDUCTIONS, Normalisation
from ..io import atomic_write_json, atomic_write_text, ensure_dir
from ..analysis.membrane import potential_histogram
from ..checkpoint import CONFIG_FILE, load_run, read_run_config, run_config_diff
from ..data import load_dataset
from .train import LOG_FILE, RESULTS_FILE, run_experiment
from ..neurons import LIF
from ..utils import resolve_device

RESULT_FILE = "calibration.json"


REFERENCES = ("lif", "same-neuron")
"""What a share cut is measured against: ``lif`` (vanilla LIF without the constraint, the paper's
baseline) or ``same-neuron`` (the config's own neuron, e.g. Noisy-LIF, without the constraint)."""
METHODS = ("search", "controller")


@dataclass
class CalibrationSettings:
    """How lambda_max is calibrated.

    Attributes:
        target_reduction: wanted relative cut of the near-threshold share (0.4 = 40%, the paper's).
        lambdas: the log grid tried in ascending order until the target is reached.
        bisect: bisection steps in log(lambda) after the grid brackets the target.
        seeds: training seeds; the share is their mean.
        short: overrides that shorten the runs (e.g. ``optim.epochs=1``, ``data.subset=2000``);
            empty (the default and the recommendation): the run's full length, because the
            constraint keeps cutting the share after a short trial ends.
        share_samples: test images the share is measured on (class-balanced, 0 = all).
        schedule: the lambda schedule of the search trials (``constant`` so a short run feels the
            full weight; ``""`` keeps the config's).
        reference: ``lif`` (vanilla LIF, no constraint: the paper's baseline) or ``same-neuron``
            (the config's neuron without the constraint: noise alone already cuts the share).
        method: ``search`` (grid + bisection of lambda_max) or ``controller`` (one run per seed
            whose lambda follows the ``share`` schedule toward ``(1 - target_reduction)`` times the
            reference's training share, see :func:`control_lambda`).
        controller_cap: the controller's largest lambda (its ``lambda_max``).
        controller_lr: the controller's step per unit of share error per batch (0 = chosen from
            the cap, the target and the run's batches, see :func:`controller_lr`).
        tolerance: the controller counts as on target when its measured cut is within this many
            points (absolute, 0.05 = 5 points) of ``target_reduction``.
    """

    target_reduction: float = 0.4
    lambdas: Sequence[float] = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
    bisect: int = 2
    seeds: Sequence[int] = (0,)
    short: Sequence[str] = ()
    share_samples: int = 256
    schedule: str = "constant"
    reference: str = "lif"
    method: str = "search"
    controller_cap: float = 100.0
    controller_lr: float = 0.0
    tolerance: float = 0.05

    def validate(self) -> CalibrationSettings:
        if not 0 < self.target_reduction < 1:
            raise ConfigError(f"calibration target_reduction must be in (0, 1), got {self.target_reduction}")
        if not self.lambdas or any(not (v > 0 and math.isfinite(v)) for v in self.lambdas):
            raise ConfigError(f"calibration lambdas must be positive numbers, got {list(self.lambdas)}")
        if self.bisect < 0 or not self.seeds or self.share_samples < 0:
            raise ConfigError("calibration needs bisect >= 0, at least one seed and share_samples >= 0")
        if self.reference not in REFERENCES:
            raise ConfigError(f"calibration reference must be one of {', '.join(REFERENCES)}, got {self.reference!r}")
        if self.method not in METHODS:
            raise ConfigError(f"calibration method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if not (self.controller_cap > 0 and math.isfinite(self.controller_cap)) or not self.controller_lr >= 0:
            raise ConfigError(
                f"calibration needs controller_cap > 0 and controller_lr >= 0, got "
                f"{self.controller_cap} and {self.controller_lr}"
            )
        if not 0 < self.tolerance < 1:
            raise ConfigError(f"calibration tolerance must be in (0, 1), got {self.tolerance}")
        return self


@dataclass
class Trial:
    """One lambda (or the reference, ``lam = 0``) measured over the seeds."""

    lam: float
    share: float
    clean: float
    reduction: float | None = None
    grad_ratio: float | None = None
    runs: list[str] = field(default_factory=list)
    seed_shares: list[float] = field(default_factory=list)
    """The share of each seed's run (in ``runs`` order): the spread the mean hides."""
    seed_cleans: list[float] = field(default_factory=list)
    train_share: float | None = None
    """Near-threshold share of the training batches in the last epoch (``log.jsonl``), seed mean."""
    lam_trajectory: list[list[float]] = field(default_factory=list)
    """Per seed, the epoch means of lambda (``lam`` in ``log.jsonl``): a controller's path."""


def _fmt_lam(lam: float) -> str:
    return f"{lam:.4g}"


def _lif_kw(kw: dict) -> dict:
    """The extra neuron arguments vanilla LIF accepts (the noisy neuron's own ones dropped)."""
    accepted = set(inspect.signature(LIF.__init__).parameters) - {"self"}
    return {k: v for k, v in kw.items() if k in accepted}


def reference_config(base: ExperimentConfig, seed: int, s: CalibrationSettings) -> ExperimentConfig:
    """The reference run of ``base`` (same data, seed, length and strategy, no constraint):
    with vanilla LIF for ``reference = "lif"``, the config's neuron for ``"same-neuron"``."""
    data = _run_dict(base, seed, s)
    data["tgo"]["enabled"] = False
    if s.reference == "lif":
        data["neuron"]["kind"] = "lif"
        data["neuron"]["kw"] = _lif_kw(dict(data["neuron"].get("kw") or {}))
    return config_from_dict(data)


def reference_info(base: ExperimentConfig, s: CalibrationSettings) -> dict:
    """``{"neuron": ..., "tgo": False, "kind": s.reference}``: what the cuts are measured against."""
    return {"neuron": "lif" if s.reference == "lif" else base.neuron.kind, "tgo": False, "kind": s.reference}


def reference_name(s: CalibrationSettings, seed: int) -> str:
    """Run folder of the reference (distinct per reference, so one is never reused as the other)."""
    return f"reference-lif-s{seed}" if s.reference == "lif" else f"baseline-s{seed}"


def _run_dict(base: ExperimentConfig, seed: int, s: CalibrationSettings) -> dict:
    data = apply_overrides(config_to_dict(copy.deepcopy(base)), list(s.short))
    data["seed"] = int(seed)
    data["eval"]["attacks"] = []
    return data


def trial_config(base: ExperimentConfig, lam: float, seed: int, s: CalibrationSettings) -> ExperimentConfig:
    """The trial run of ``base`` at ``lam`` and ``seed`` (``lam = 0``: the reference)."""
    if lam <= 0:
        return reference_config(base, seed, s)
    data = _run_dict(base, seed, s)
    data["tgo"]["enabled"] = True
    data["tgo"]["lambda_max"] = float(lam)
    if s.schedule:
        data["tgo"]["schedule"] = s.schedule
    if data["tgo"].get("lambda_start", -1.0) > lam:
        data["tgo"]["lambda_start"] = -1.0
    return config_from_dict(data)


_SAME = (
    "seed",
    "strategy",
    "strategy_kw",
    ("data", "name"),
    ("data", "subset"),
    ("model", "name"),
    ("model", "T"),
    ("neuron", "kind"),
    ("neuron", "sigma"),
    ("optim", "epochs"),
    ("optim", "lr"),
    ("optim", "batch_size"),
    ("tgo", "enabled"),
    ("tgo", "lambda_max"),
    ("tgo", "schedule"),
    ("tgo", "dual_target"),
    ("tgo", "dual_lr"),
    ("tgo", "layer_reduce"),
    ("tgo", "neuron_reduce"),
    ("tgo", "hinge"),
    ("tgo", "potential"),
)


def _check_reuse(cfg: ExperimentConfig, run_dir: Path) -> None:
    """Refuse to reuse a run folder trained with other settings (e.g. another length or neuron)."""
    old = config_to_dict(read_run_config(run_dir)[0])
    new = config_to_dict(cfg)
    for key in _SAME:
        a, b = (
            (old.get(key), new.get(key)) if isinstance(key, str) else (old[key[0]].get(key[1]), new[key[0]].get(key[1]))
        )
        if a != b and not (key == ("tgo", "lambda_max") and not new["tgo"]["enabled"]):
            name = key if isinstance(key, str) else ".".join(key)
            raise ConfigError(
                f"{run_dir} was trained with {name} = {a!r}, this calibration needs {b!r}: "
                "use another --out (or delete that folder)"
            )


def _measure(cfg: ExperimentConfig, run_dir: Path, s: CalibrationSettings, progress: bool) -> dict:
    """Train one run unless finished and measure it: ``share`` (test images, noise seeded),
    ``clean`` accuracy, and from ``log.jsonl`` the last ``grad_ratio``, the last epoch's training
    ``train_share`` and ``lams`` (the epoch means of lambda)."""
    resume = (run_dir / CONFIG_FILE).is_file()
    if resume:
        _check_reuse(cfg, run_dir)
    if not (run_dir / RESULTS_FILE).is_file():
        run_experiment(None if resume else cfg, run_dir, resume=resume, progress=progress)
    res = json.loads((run_dir / RESULTS_FILE).read_text(encoding="utf-8"))
    dev = resolve_device(cfg.device)  # measure where the trial trained (load_run alone loads to CPU)
    run = load_run(run_dir, device=dev)
    d = cfg.data
    ds = load_dataset(
        d.name,
        "test",
        root=d.root or None,
        cache_dir=d.cache_dir or None,
        subset=s.share_samples,
        seed=0,
        verify=d.verify_md5,
    )
    with torch.no_grad():
        hist = potential_histogram(
            run.model.eval(), ds, v_threshold=cfg.neuron.v_threshold, delta=cfg.tgo.delta, device=dev, seed=0
        )
    log = run_dir / LOG_FILE
    rows = [json.loads(x) for x in log.read_text(encoding="utf-8").splitlines() if x.strip()] if log.is_file() else []
    last = rows[-1] if rows else {}
    return {
        "share": hist.near_threshold,
        "clean": float(res["test_accuracy"]),
        "grad_ratio": last.get("grad_ratio"),
        "train_share": last.get("near_threshold"),
        "lams": [float(r.get("lam", 0.0)) for r in rows],
    }


def _mean(xs: Sequence[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def _trial(
    lam: float, configs: Sequence[tuple[str, ExperimentConfig]], out: Path, s: CalibrationSettings, progress: bool
) -> Trial:
    """Train and measure one setting over its seeds (``configs``: ``(folder name, config)`` per seed)."""
    ms = [_measure(cfg, out / name, s, progress) for name, cfg in configs]
    shares, cleans = [m["share"] for m in ms], [m["clean"] for m in ms]
    return Trial(
        lam=float(lam),
        share=sum(shares) / len(shares),
        clean=sum(cleans) / len(cleans),
        runs=[name for name, _ in configs],
        grad_ratio=_mean([m["grad_ratio"] for m in ms]),
        seed_shares=shares,
        seed_cleans=cleans,
        train_share=_mean([m["train_share"] for m in ms]),
        lam_trajectory=[m["lams"] for m in ms],
    )


def _reference(base: ExperimentConfig, out: Path, s: CalibrationSettings, progress: bool) -> Trial:
    return _trial(
        0.0, [(reference_name(s, seed), reference_config(base, seed, s)) for seed in s.seeds], out, s, progress
    )


def _reduction(t: Trial, ref: Trial) -> float:
    return 1.0 - t.share / ref.share if ref.share > 0 else float("nan")


def _settings_dict(s: CalibrationSettings) -> dict:
    return {**asdict(s), "lambdas": list(s.lambdas), "seeds": list(s.seeds), "short": list(s.short)}


def calibrate_lambda(
    base: ExperimentConfig,
    out_dir: str | Path,
    settings: CalibrationSettings | None = None,
    progress: bool = False,
    log: Callable[[str], None] = print,
) -> dict:
    """Pick ``tgo.lambda_max`` for ``base`` so that the near-threshold share falls by the target.

    The cut is measured against the reference (``settings.reference``: vanilla LIF without the
    constraint by default). ``settings.method = "controller"`` hands over to
    :func:`control_lambda`. Returns (and writes to ``OUT/calibration.json``, with a Markdown table
    in ``OUT/calibration.md``): the reference (``baseline``) share, every trial, the chosen lambda
    and whether it reached the target.
    """
    s = (settings or CalibrationSettings()).validate()
    if s.method == "controller":
        return control_lambda(base, out_dir, s, progress=progress, log=log)
    out = ensure_dir(out_dir)
    t0 = time.perf_counter()
    cache: dict[float, Trial] = {}
    base_t = _reference(base, Path(out), s, progress)
    log(
        f"[calibrate] reference ({reference_info(base, s)['neuron']}, no constraint): near-threshold share "
        f"{100 * base_t.share:.2f}%, clean {100 * base_t.clean:.2f}% over seeds {list(s.seeds)}"
    )

    reaches = _prober(base, base_t, Path(out), s, cache, progress, log)
    _bracket_and_bisect(reaches, s)
    trials = sorted(cache.values(), key=lambda t: t.lam)
    reached = [t for t in trials if t.reduction is not None and t.reduction >= s.target_reduction]
    chosen = reached[0] if reached else trials[-1]
    result = {
        "method": "search",
        "reference": reference_info(base, s),
        "target_reduction": s.target_reduction,
        "reached": bool(reached),
        "lambda_max": chosen.lam,
        "chosen": asdict(chosen),
        "baseline": asdict(base_t),
        "trials": [asdict(t) for t in trials],
        "settings": _settings_dict(s),
        "base_config": config_to_dict(base),
        "seconds": time.perf_counter() - t0,
    }
    _write(result, Path(out))
    msg = "reached" if reached else "NOT reached (largest lambda tried)"
    log(
        f"[calibrate] chose tgo.lambda_max = {_fmt_lam(chosen.lam)}: reduction {100 * (chosen.reduction or 0):.1f}% "
        f"(target {100 * s.target_reduction:.0f}%, {msg}), clean {100 * chosen.clean:.2f}% vs "
        f"{100 * base_t.clean:.2f}%; wrote {Path(out) / RESULT_FILE}"
    )
    return result


def _prober(
    base: ExperimentConfig,
    base_t: Trial,
    out: Path,
    s: CalibrationSettings,
    cache: dict[float, Trial],
    progress: bool,
    log: Callable[[str], None],
) -> Callable[[float, str], bool]:
    """``reaches(lam, step)``: measure ``lam`` once (kept in ``cache``), log it, and say whether its
    cut against the reference ``base_t`` reaches the target."""

    def reaches(lam: float, step: str) -> bool:
        """Measure ``lam`` (once), log it, and say whether it reaches the target."""
        key = round(float(lam), 10)
        if key not in cache:
            cache[key] = _trial(
                lam,
                [(f"lam{_fmt_lam(lam)}-s{seed}", trial_config(base, lam, seed, s)) for seed in s.seeds],
                out,
                s,
                progress,
            )
        t = cache[key]
        t.reduction = _reduction(t, base_t)
        log(
            f"[calibrate] {step}lambda {_fmt_lam(lam)}: share {100 * t.share:.2f}% (reduction "
            f"{100 * t.reduction:.1f}%), clean {100 * t.clean:.2f}%"
        )
        return t.reduction >= s.target_reduction

    return reaches


def _bracket_and_bisect(reaches: Callable[[float, str], bool], s: CalibrationSettings) -> None:
    """Try ``s.lambdas`` upwards until one reaches the target, then bisect (geometrically) between it
    and the last one that did not, ``s.bisect`` times."""
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


def _write(result: dict, out: Path) -> None:
    atomic_write_json(out / RESULT_FILE, result)
    atomic_write_text(out / "calibration.md", format_calibration(result))


def reuse_calibration(
    base: ExperimentConfig,
    source_dir: str | Path,
    out_dir: str | Path,
    settings: CalibrationSettings | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Take a finished search calibration from ``source_dir`` (another study's ``calibration/ROW``) after
    checking that it is the one ``calibrate_lambda(base, ..., settings)`` would run: the same settings
    and, run by run, trials of exactly the configs it would train (``name`` and ``data.root``, a label and
    a location, aside). Writes it to ``out_dir`` with ``reused_from`` (the source, relative to
    ``out_dir``) and returns it; :class:`ConfigError` names the first difference.

    Why: a study whose calibration trials are shortened to another study's runs (the full-set study
    calibrating on the 10k subset) would retrain the same trials bit for bit; reading them is free.
    """
    s = (settings or CalibrationSettings()).validate()
    src, out = Path(source_dir), Path(out_dir)
    path = src / RESULT_FILE
    if not path.is_file():
        raise ConfigError(f"calibration reuse_from: {path} does not exist (calibrate that study first)")
    result = json.loads(path.read_text(encoding="utf-8"))
    if result.get("method", "search") != "search" or s.method != "search":
        raise ConfigError("calibration reuse_from: only a search calibration (method = 'search') can be reused")
    mine, theirs = _settings_dict(s), result.get("settings") or {}
    other = sorted(k for k in mine if mine[k] != theirs.get(k))
    if other:
        raise ConfigError(f"calibration reuse_from: {path} was run with other settings ({', '.join(other)})")
    for t in [result["baseline"], *result["trials"]]:
        for name, seed in zip(t["runs"], s.seeds, strict=True):
            want = trial_config(base, float(t["lam"]), int(seed), s)
            diff = run_config_diff(want, src / str(name), ignore=("name", "data.root"))
            if diff:
                raise ConfigError(
                    f"calibration reuse_from: trial {src / str(name)} differs from this calibration's in "
                    f"{', '.join(diff)}"
                )
    result = {**result, "reused_from": Path(os.path.relpath(src.resolve(), out.resolve())).as_posix()}
    ensure_dir(out)
    _write(result, out)
    log(f"[calibrate] reused {path} (same settings and trials): lambda_max {result['lambda_max']:.4g}")
    return result


# ------------------------------------------------------------------ controller
def controller_lr(cap: float, target_share: float, steps: int) -> float:
    """The ``share`` schedule's default step, ``0.25 * cap / (target_share * steps)``: a share that
    stays twice the target for the whole run (``steps`` batches) takes lambda from 0 to a quarter
    of ``cap``; the usual start (noise alone: about a third of the target above it) moves it a
    twelfth of the cap if nothing changed.

    Slow on purpose: the share follows lambda with a lag and does not come back when lambda is
    lowered (the weights keep what they learned, less so as the learning rate anneals), so a
    faster step overshoots and leaves the share below the target. Measured on digits
    (``small_conv``, 20 epochs, cap 100, target 17.1% against LIF's 28.6%): this step rose to
    lambda 4.5 and ended 0.8 points of training share above the target (test cut 37.0%); four
    times it peaked at lambda 8.4 in epoch 8 and ended 2.2 points below (test cut 47.5%). A cap
    far above the lambda needed speeds the step up the same way; choose it a few tens of times
    the expected lambda at most.
    """
    return 0.25 * float(cap) / (max(float(target_share), 1e-6) * max(int(steps), 1))


def controlled_config(
    base: ExperimentConfig, seed: int, target_share: float, lr: float, s: CalibrationSettings
) -> ExperimentConfig:
    """``base`` at ``seed`` with lambda steered by the ``share`` schedule toward ``target_share``."""
    data = _run_dict(base, seed, s)
    data["tgo"].update(
        enabled=True,
        schedule="share",
        lambda_max=float(s.controller_cap),
        lambda_start=0.0,
        dual_target=float(target_share),
        dual_lr=float(lr),
        ramp_fraction=0.0,
    )
    return config_from_dict(data)


def control_lambda(
    base: ExperimentConfig,
    out_dir: str | Path,
    settings: CalibrationSettings | None = None,
    progress: bool = False,
    log: Callable[[str], None] = print,
) -> dict:
    """Calibrate with a feedback controller instead of trials: one run per seed, no grid.

    1. the reference (``settings.reference``) at full length: its test share and the near-threshold
       share of its training batches in the last epoch;
    2. one run per seed of ``base`` whose lambda follows the ``share`` schedule
       (``lambda <- clip(lambda + lr * (share - target), 0, controller_cap)`` after every batch,
       on that batch's share) with ``target = (1 - target_reduction) * reference training share``;
    3. the measured cut of the test share against the reference's, on target when within
       ``tolerance``. ``lambda_max`` in the result is the seed mean of the last epoch's mean
       lambda (a constant weight that the controller settled at, for runs that take a number);
       each epoch's lambda is in the run's ``log.jsonl`` (``lam``) and ``lam_trajectory``.
    """
    s = (settings or CalibrationSettings(method="controller")).validate()
    out = ensure_dir(out_dir)
    t0 = time.perf_counter()
    ref = _reference(base, Path(out), s, progress)
    if not ref.train_share:
        raise ConfigError("calibration controller: the reference run logged no near-threshold share")
    target = (1.0 - s.target_reduction) * ref.train_share
    steps = _run_steps(Path(out) / ref.runs[0])
    lr = s.controller_lr or controller_lr(s.controller_cap, target, steps)
    log(
        f"[calibrate] reference ({reference_info(base, s)['neuron']}, no constraint): training share "
        f"{100 * ref.train_share:.2f}%, test share {100 * ref.share:.2f}%; controller target {100 * target:.2f}% "
        f"(lr {lr:.4g}, cap {_fmt_lam(s.controller_cap)})"
    )
    t = _trial(
        0.0,
        [(f"controller-s{seed}", controlled_config(base, seed, target, lr, s)) for seed in s.seeds],
        Path(out),
        s,
        progress,
    )
    t.lam = float(_mean([traj[-1] for traj in t.lam_trajectory if traj]) or 0.0)
    t.reduction = _reduction(t, ref)
    reached = abs(t.reduction - s.target_reduction) <= s.tolerance
    result = {
        "method": "controller",
        "reference": reference_info(base, s),
        "target_reduction": s.target_reduction,
        "reached": bool(reached),
        "lambda_max": t.lam,
        "controller": {"target_share": target, "lr": lr, "cap": s.controller_cap, "steps": steps},
        "chosen": asdict(t),
        "baseline": asdict(ref),
        "trials": [asdict(t)],
        "settings": _settings_dict(s),
        "base_config": config_to_dict(base),
        "seconds": time.perf_counter() - t0,
    }
    _write(result, Path(out))
    log(
        f"[calibrate] controller: training share {100 * (t.train_share or float('nan')):.2f}% (target "
        f"{100 * target:.2f}%), test share cut {100 * t.reduction:.1f}% ({'on' if reached else 'NOT on'} target "
        f"{100 * s.target_reduction:.0f}% +- {100 * s.tolerance:.0f}), last-epoch lambda {_fmt_lam(t.lam)}, clean "
        f"{100 * t.clean:.2f}% vs {100 * ref.clean:.2f}%; wrote {Path(out) / RESULT_FILE}"
    )
    return result


def _run_steps(ref_dir: Path) -> int:
    """Training batches of one run (epochs x batches per epoch, read from the reference's log)."""
    rows = [json.loads(x) for x in (ref_dir / LOG_FILE).read_text(encoding="utf-8").splitlines() if x.strip()]
    last = rows[-1]
    return max(1, int(last.get("step") or last.get("epoch") or 1))


# ------------------------------------------------------------------ normalisations
def normalisations() -> list[Normalisation]:
    """The readings of ``L_mc`` compared: layers mean/sum x neurons mean/sum x hinge squared/plain
    (potential ``pre``, the paper's pre-spike U); the default (the paper's formula) first."""
    return [
        Normalisation(layer_reduce=lr, neuron_reduce=nr, hinge=h)
        for lr in LAYER_REDUCTIONS
        for nr in NEURON_REDUCTIONS
        for h in HINGES
    ]


def normalisation_config(
    base: ExperimentConfig, norm: Normalisation, lam: float, seed: int, s: CalibrationSettings
) -> ExperimentConfig:
    """``base`` with the constraint on at ``lam`` under ``norm`` (the config's schedule and neuron kept)."""
    data = _run_dict(base, seed, s)
    data["tgo"].update(
        enabled=True,
        lambda_max=float(lam),
        layer_reduce=norm.layer_reduce,
        neuron_reduce=norm.neuron_reduce,
        hinge=norm.hinge,
        potential=norm.potential,
    )
    if data["tgo"].get("lambda_start", -1.0) > lam:
        data["tgo"]["lambda_start"] = -1.0
    return config_from_dict(data)


def _norm_folder(norm: Normalisation) -> str:
    return f"norm-{norm.layer_reduce}-{norm.neuron_reduce}-{norm.hinge}"


NORMALISATIONS_FILE = "normalisations.json"


def compare_normalisations(
    base: ExperimentConfig,
    out_dir: str | Path,
    lam: float,
    settings: CalibrationSettings | None = None,
    progress: bool = False,
    log: Callable[[str], None] = print,
) -> dict:
    """What the paper's own weight ``lam`` does under each reading of ``L_mc``'s normalisation.

    Trains, per seed, the reference (vanilla LIF by default), the config's neuron without the
    constraint (``noise only``, when that neuron is not LIF) and one run per
    :func:`normalisations` at ``tgo.lambda_max = lam`` (the config's schedule and neuron kept),
    all at the length ``settings.short`` leaves (the run's own by default). Writes
    ``OUT/normalisations.json`` and ``OUT/normalisations.md``: per normalisation the share, its cut
    against the reference, the clean accuracy and the gradient ratio, and which readings come
    closest to ``target_reduction`` (the paper's ~40%). Run folders are reused when finished.
    """
    s = (settings or CalibrationSettings()).validate()
    if not (lam > 0 and math.isfinite(lam)):
        raise ConfigError(f"the weight to compare normalisations at must be a positive number, got {lam}")
    out = Path(ensure_dir(out_dir))
    t0 = time.perf_counter()
    ref = _reference(base, out, s, progress)
    log(
        f"[normalisations] reference ({reference_info(base, s)['neuron']}, no constraint): share "
        f"{100 * ref.share:.2f}%, clean {100 * ref.clean:.2f}%"
    )
    noise = _noise_only(base, out, s, ref, progress, log)
    rows = [_normalisation_row(base, norm, lam, out, s, ref, progress, log) for norm in normalisations()]
    result: dict[str, Any] = {
        "reference": reference_info(base, s),
        "lambda_max": float(lam),
        "schedule": base.tgo.schedule,
        "neuron": base.neuron.kind,
        "target_reduction": s.target_reduction,
        "tolerance": s.tolerance,
        "baseline": asdict(ref),
        "noise_only": asdict(noise) if noise else None,
        "rows": rows,
        "closest": closest_rows(rows, s.target_reduction, s.tolerance),
        "settings": _settings_dict(s),
        "base_config": config_to_dict(base),
        "seconds": time.perf_counter() - t0,
    }
    atomic_write_json(out / NORMALISATIONS_FILE, result)
    atomic_write_text(out / "normalisations.md", format_normalisations(result))
    log(
        f"[normalisations] closest to a {100 * s.target_reduction:.0f}% cut: {', '.join(result['closest'])}; "
        f"wrote {out / NORMALISATIONS_FILE}"
    )
    return result


def _noise_only(
    base: ExperimentConfig,
    out: Path,
    s: CalibrationSettings,
    ref: Trial,
    progress: bool,
    log: Callable[[str], None],
) -> Trial | None:
    """The config's neuron without the constraint, per seed (None: the reference already is that neuron)."""
    noise = None
    if base.neuron.kind != "lif" and s.reference == "lif":
        same = replace(s, reference="same-neuron")
        noise = _trial(
            0.0, [(f"noise-only-s{seed}", reference_config(base, seed, same)) for seed in s.seeds], out, s, progress
        )
        noise.reduction = _reduction(noise, ref)
        log(
            f"[normalisations] {base.neuron.kind} without the constraint: share {100 * noise.share:.2f}% (cut "
            f"{100 * noise.reduction:.1f}%), clean {100 * noise.clean:.2f}%"
        )
    return noise


def _normalisation_row(
    base: ExperimentConfig,
    norm: Normalisation,
    lam: float,
    out: Path,
    s: CalibrationSettings,
    ref: Trial,
    progress: bool,
    log: Callable[[str], None],
) -> dict:
    """One normalisation's row: its runs at weight ``lam`` per seed, their share, cut, clean accuracy and ratio."""
    t = _trial(
        lam,
        [(f"{_norm_folder(norm)}-s{seed}", normalisation_config(base, norm, lam, seed, s)) for seed in s.seeds],
        out,
        s,
        progress,
    )
    t.reduction = _reduction(t, ref)
    row = {
        "normalisation": norm.label(),
        "layer_reduce": norm.layer_reduce,
        "neuron_reduce": norm.neuron_reduce,
        "hinge": norm.hinge,
        "potential": norm.potential,
        "default": norm.is_default,
        **asdict(t),
    }
    log(
        f"[normalisations] {norm.label()}: share {100 * t.share:.2f}% (cut {100 * t.reduction:.1f}%), clean "
        f"{100 * t.clean:.2f}%"
    )
    return row


def closest_rows(rows: Sequence[dict], target: float, tolerance: float) -> list[str]:
    """Labels of the rows whose cut is within ``tolerance`` of ``target`` (nearest first), or the
    single nearest row when none is."""
    ranked = sorted(
        (r for r in rows if r.get("reduction") is not None and math.isfinite(r["reduction"])),
        key=lambda r: abs(r["reduction"] - target),
    )
    near = [r["normalisation"] for r in ranked if abs(r["reduction"] - target) <= tolerance]
    return near or [r["normalisation"] for r in ranked[:1]]


def format_normalisations(result: dict) -> str:
    """Markdown table of :func:`compare_normalisations`."""
    b, ref = result["baseline"], result["reference"]
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    lines = [
        f"# The paper's weight under each normalisation of L_mc (lambda_max {_fmt_lam(result['lambda_max'])}, "
        f"{result['schedule']} schedule, {result['neuron']})",
        "",
        f"Cut: relative fall of the near-threshold share against the reference, {ref['neuron']} without the "
        f"constraint. The paper reports about {100 * result['target_reduction']:.0f}%.",
        "",
        "| normalisation (layers/neurons/hinge/potential) | near-threshold share | per seed | cut vs "
        f"{ref['neuron']} | clean | clean vs {ref['neuron']} (points) | grad ratio (last epoch) | runs |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def row(label: str, t: dict) -> str:
        gr = f"{t['grad_ratio']:.3g}" if t.get("grad_ratio") is not None else "-"
        cut = "-" if t is b else pct(t.get("reduction"))
        return (
            f"| {label} | {100 * t['share']:.2f}% | {_seeds(t)} | {cut} | {100 * t['clean']:.2f}% | "
            f"{100 * (t['clean'] - b['clean']):+.1f} | {gr} | {', '.join(t['runs'])} |"
        )

    lines.append(row(f"reference: {ref['neuron']}, no constraint", b))
    if result.get("noise_only"):
        lines.append(row(f"{result['neuron']}, no constraint (noise only)", result["noise_only"]))
    for r in result["rows"]:
        lines.append(row(r["normalisation"] + (" (default)" if r.get("default") else ""), r))
    s = result["settings"]
    lines += [
        "",
        f"Closest to a {100 * result['target_reduction']:.0f}% cut (within "
        f"{100 * result['tolerance']:.0f} points, else the nearest): {', '.join(result['closest'])}.",
        "",
        f"Runs: {', '.join(s['short']) or 'the config length'}; seeds {s['seeds']}; share measured on "
        f"{s['share_samples'] or 'all'} test images.",
    ]
    return "\n".join(lines) + "\n"


def _seeds(t: dict) -> str:
    """``21.9 / 22.4 / 23.0`` (the per-seed shares, %), ``-`` for results written before they were kept."""
    return " / ".join(f"{100 * v:.1f}" for v in t.get("seed_shares") or []) or "-"


def _reference_text(result: dict) -> str:
    ref = result.get("reference")
    if not ref:  # written before the reference was recorded: the config's neuron without the constraint
        return "the config's neuron without the constraint (recorded before the reference was kept)"
    return f"{ref['neuron']} without the constraint"


def format_calibration(result: dict) -> str:
    """Markdown table of a calibration: lambda, share, reduction, clean, gradient ratio."""
    b = result["baseline"]
    controller = result.get("method") == "controller"
    verdict = (
        ("on target" if result["reached"] else "NOT on target")
        if controller
        else ("target reached" if result["reached"] else "target NOT reached: largest lambda tried")
    )
    lines = [
        f"# lambda_max calibration (target: {100 * result['target_reduction']:.0f}% fewer near-threshold potentials)",
        "",
        f"Reference: {_reference_text(result)} (same data, seeds and length).",
        "",
        *(
            [f"Reused from `{result['reused_from']}` (its trials, checked to be this calibration's).", ""]
            if result.get("reused_from")
            else []
        ),
        f"{'Controller' if controller else 'Chosen'}: `tgo.lambda_max = {_fmt_lam(result['lambda_max'])}` ({verdict}).",
        "",
    ]
    if controller:
        c = result["controller"]
        lines += [
            f"Lambda steered by the `share` schedule toward a training share of {100 * c['target_share']:.2f}% "
            f"(step {c['lr']:.4g}, cap {_fmt_lam(c['cap'])}); lambda_max above is the last epoch's mean "
            "lambda. Lambda per epoch (epoch means, per seed): "
            + "; ".join(" ".join(_fmt_lam(v) for v in traj) for traj in result["chosen"].get("lam_trajectory", []))
            + ".",
            "",
        ]
    lines += [
        "| lambda_max | near-threshold share | per seed | reduction | clean | grad ratio (last epoch) | runs |",
        "|---|---|---|---|---|---|---|",
        f"| 0 (reference) | {100 * b['share']:.2f}% | {_seeds(b)} | - | {100 * b['clean']:.2f}% | - | "
        f"{', '.join(b['runs'])} |",
    ]
    for t in result["trials"]:
        gr = f"{t['grad_ratio']:.3g}" if t.get("grad_ratio") is not None else "-"
        red = f"{100 * t['reduction']:.1f}%" if t.get("reduction") is not None else "-"
        lam = f"{_fmt_lam(t['lam'])} (controller)" if controller else _fmt_lam(t["lam"])
        lines.append(
            f"| {lam} | {100 * t['share']:.2f}% | {_seeds(t)} | {red} | {100 * t['clean']:.2f}% | {gr} | "
            f"{', '.join(t['runs'])} |"
        )
    s = result["settings"]
    sched = "share (controller)" if controller else (s["schedule"] or "as configured")
    lines += [
        "",
        f"Runs: {', '.join(s['short']) or 'the config length'}; seeds {s['seeds']}; lambda schedule "
        f"{sched}; share measured on {s['share_samples'] or 'all'} test images.",
    ]
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


__all__ = [
    "CalibrationSettings",
    "Trial",
    "calibrate_lambda",
    "control_lambda",
    "compare_normalisations",
    "normalisations",
    "trial_config",
    "reuse_calibration",
    "reference_config",
    "controlled_config",
    "normalisation_config",
    "controller_lr",
    "closest_rows",
    "format_calibration",
    "format_normalisations",
    "settings_from_dict",
    "REFERENCES",
    "METHODS",
    "RESULT_FILE",
    "NORMALISATIONS_FILE",
]
