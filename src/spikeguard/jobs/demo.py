"""The end-to-end demo: vanilla vs TGO spiking nets on the embedded digits data.

Trains a vanilla BPTT SNN (LIF) and a TGO SNN (membrane constraint + Noisy-LIF) with the
same seed, attacks both with FGSM and PGD over an eps sweep (EoT for the noisy model),
and reports clean/robust accuracy and the share of near-threshold potentials.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from ..analysis import plot_potential_histograms, potential_histogram
from ..attacks import FGSM, PGD, check_eps
from ..checkpoint import load_model
from ..config import ExperimentConfig
from ..data import load_digits_split
from ..errors import ConfigError
from ..evaluation import adversarial_examples, clean_accuracy
from ..evaluation.results import DEMO_SCHEMA, PROTOCOL_DEMO, command_line, evaluation_provenance
from ..evaluation.results import DEMO_VERSION as VERSION
from .train import run_experiment
from ..io import ensure_dir
from .output import write_result
from ..neurons import is_stochastic
from ..utils import eps_label, resolve_device


@dataclass
class DemoConfig:
    """Settings of ``spikeguard demo`` (the defaults take about 40 s on 2 cores; README.md)."""

    seed: int = 0
    epochs: int = 20
    T: int = 4
    batch_size: int = 64
    lr: float = 0.1
    eps: list[float] = field(default_factory=lambda: [8 / 255, 16 / 255, 32 / 255])
    pgd_steps: int = 10
    pgd_alpha_factor: float = 2.5  # alpha = factor * eps / steps (Madry et al.)
    eot: int = 8  # EoT samples for the noisy model's attack gradients
    passes: int = 8  # stochastic forward passes when judging the noisy model
    delta: float = 0.5
    lambda_max: float = 0.4
    schedule: str = "linear"
    sigma: float = math.sqrt(0.4)
    n_test: int = 0  # 0 = the whole test split (360 images)
    threads: int = 0  # 0 = leave torch's default
    out: str = "runs/demo"
    device: str = "cpu"

    def validate(self) -> None:
        if self.epochs < 1 or self.T < 1 or self.batch_size < 1 or self.pgd_steps < 1:
            raise ConfigError("epochs, T, batch_size and pgd_steps must all be >= 1")
        if self.eot < 1 or self.passes < 1:
            raise ConfigError("eot and passes must be >= 1")
        if not self.eps:
            raise ConfigError("give at least one eps")
        for e in self.eps:
            check_eps(e)
        resolve_device(self.device)


def demo_experiment(cfg: DemoConfig, tgo: bool) -> ExperimentConfig:
    """The :class:`ExperimentConfig` of one demo model (saved with its checkpoint)."""
    e = ExperimentConfig(
        name=f"demo-{'tgo' if tgo else 'vanilla'}", seed=cfg.seed, device=cfg.device, checkpoint_every=cfg.epochs
    )
    e.data.name, e.data.augment = "digits", False  # flips and crops would destroy 8x8 digits
    e.model.name, e.model.T = "small_conv", cfg.T
    e.neuron.kind = "noisy_lif" if tgo else "lif"
    e.neuron.sigma = cfg.sigma
    e.tgo.enabled, e.tgo.delta, e.tgo.lambda_max, e.tgo.schedule = tgo, cfg.delta, cfg.lambda_max, cfg.schedule
    e.optim.epochs, e.optim.lr, e.optim.batch_size = cfg.epochs, cfg.lr, cfg.batch_size
    return e


def _train(name: str, cfg: DemoConfig, tgo: bool, out: Path, progress: bool) -> tuple[torch.nn.Module, list[dict]]:
    """Train one model as a full run folder ``out/name`` (usable by evaluate/analyze)."""
    final = out / name
    tmp = out / f".{name}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    log: list[dict] = []
    bar = tqdm(total=cfg.epochs, desc=f"train {name}", disable=not progress, leave=False)

    def on_epoch(_done: int, row: dict) -> None:
        log.append(row)
        bar.update(1)
        bar.set_postfix(
            loss=f"{row.get('loss', float('nan')):.3f}",
            acc=f"{row.get('accuracy', float('nan')):.3f}",
            lam=f"{row.get('lam', 0.0):.2f}",
            near=f"{row.get('near_threshold', float('nan')):.3f}",
        )

    run_experiment(demo_experiment(cfg, tgo), tmp, progress=False, on_epoch=on_epoch)
    bar.close()
    # Replace the previous demo's run only once the new one is complete.
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    model = load_model(final, device=resolve_device(cfg.device))
    model.eval()
    return model, log


def _evaluate(name: str, model: torch.nn.Module, cfg: DemoConfig, test_ds, progress: bool) -> dict:
    """The demo's measurement protocol (``PROTOCOL_DEMO`` in :mod:`spikeguard.evaluation.results`): one
    RNG stream seeded with ``seed + 1``, fresh noise per judging pass, robust = correct after the
    attack. It predates :func:`~spikeguard.evaluation.evaluate_robustness` and is kept so that the
    README's demo numbers reproduce; its results carry that protocol name in their provenance."""
    device = resolve_device(cfg.device)
    x, y = test_ds.float_images().to(device), test_ds.labels.to(device)
    stochastic = is_stochastic(model)
    eot = cfg.eot if stochastic else 1
    passes = cfg.passes if stochastic else 1
    torch.manual_seed(cfg.seed + 1)
    res: dict = {"clean": clean_accuracy(model, x, y, passes), "attacks": {"fgsm": {}, f"pgd{cfg.pgd_steps}": {}}}
    jobs = [(e, kind) for e in cfg.eps for kind in ("fgsm", "pgd")]
    bar = tqdm(total=len(jobs) * len(y), desc=f"attack {name}", disable=not progress, leave=False, unit="img")
    for eps, kind in jobs:
        if kind == "fgsm":
            attack: FGSM | PGD = FGSM(model, eps=eps, eot=eot)
            key = "fgsm"
        else:
            attack = PGD(model, eps=eps, alpha=cfg.pgd_alpha_factor * eps / cfg.pgd_steps, steps=cfg.pgd_steps, eot=eot)
            key = f"pgd{cfg.pgd_steps}"
        adv = adversarial_examples(attack, x, y, progress=bar.update)
        res["attacks"][key][eps_label(eps)] = clean_accuracy(model, adv, y, passes)
    bar.close()
    res.update(stochastic=stochastic, eot=eot, passes=passes)
    return res


def format_table(results: dict) -> str:
    """Side-by-side table: rows = clean / near-threshold / attack@eps, columns = models."""
    names = list(results["models"])
    rows = [
        ("clean accuracy", [results["models"][n]["clean"] for n in names]),
        (
            f"near-threshold share (|U-V_th|<{results['config']['delta']:g})",
            [results["models"][n]["near_threshold"] for n in names],
        ),
    ]
    first = results["models"][names[0]]["attacks"]
    for attack, by_eps in first.items():
        for e in by_eps:
            rows.append((f"{attack.upper()} eps={e}", [results["models"][n]["attacks"][attack][e] for n in names]))
    w = max(len(r[0]) for r in rows)
    lines = [f"{'':<{w}}  " + "  ".join(f"{n:>8}" for n in names) + "  " + f"{'delta':>8}"]
    for label, vals in rows:
        diff = vals[-1] - vals[0]
        lines.append(f"{label:<{w}}  " + "  ".join(f"{100 * v:7.1f}%" for v in vals) + f"  {100 * diff:+7.1f}")
    return "\n".join(lines)


# What a demo folder holds; any of them there means an earlier demo (with its evaluations) lives there.
DEMO_OUTPUTS = ("results.json", "potentials.png", "vanilla", "tgo")


def run_demo(
    cfg: DemoConfig,
    progress: bool = True,
    log: Callable[[str], None] = print,
    argv: list[str] | None = None,
    overwrite: bool = False,
) -> dict:
    """Train, attack and compare the two models; write ``results.json`` (schema ``spikeguard.demo``,
    one provenance record per model) and the histogram PNG. ``argv``: the command line to record.

    A folder that already holds a demo's output is refused unless ``overwrite`` (replacing it also
    replaces both run folders and every evaluation written into them).
    """
    cfg.validate()
    taken = [n for n in DEMO_OUTPUTS if (Path(cfg.out) / n).exists()]
    if taken and not overwrite:
        raise ConfigError(
            f"{cfg.out} already holds a demo ({', '.join(taken)}); choose another --out, or pass "
            "--overwrite to replace it (its models, results and their evaluations)"
        )
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = ensure_dir(cfg.out)
    t0 = time.perf_counter()
    _, test_ds = load_digits_split()
    if cfg.n_test:
        test_ds = test_ds.subset(cfg.n_test, seed=cfg.seed)
    results: dict[str, Any]
    models, results = {}, {"schema": DEMO_SCHEMA, "version": VERSION, "config": dataclasses.asdict(cfg), "models": {}}
    for name, tgo in (("vanilla", False), ("tgo", True)):
        model, train_log = _train(name, cfg, tgo, out, progress)
        models[name] = model
        ev = _evaluate(name, model, cfg, test_ds, progress)
        ev["train_log"] = train_log
        ev["provenance"] = evaluation_provenance(
            command=command_line(argv),
            protocol=PROTOCOL_DEMO,
            checkpoint=out / name,
            attacks=list(ev["attacks"]),
            eps=list(cfg.eps),  # the demo records its list of budgets
            n_samples=len(test_ds),
            seed=cfg.seed,
            passes=ev["passes"],
            eot=ev["eot"],
            data={"name": "digits", "split": "test", "n_samples": len(test_ds)},
        )
        results["models"][name] = ev
    hists = {
        n: potential_histogram(m, test_ds, delta=cfg.delta, device=resolve_device(cfg.device))
        for n, m in models.items()
    }
    for n, h in hists.items():
        results["models"][n]["near_threshold"] = h.near_threshold
        results["models"][n]["layer_near_threshold"] = h.layer_near_threshold()
    # The fields a reader looks for first (clean, near-threshold share, attacks) lead each model's entry.
    for n in results["models"]:
        r = results["models"][n]
        results["models"][n] = {k: r[k] for k in ("clean", "near_threshold", "attacks")} | r
    results["seconds"] = time.perf_counter() - t0
    plot_potential_histograms(
        {n: hists[n] for n in hists},
        str(Path(out) / "potentials.png"),
        title=f"Digits, small conv SNN, T={cfg.T} (seed {cfg.seed})",
    )
    write_result(Path(out) / "results.json", results)
    log(format_table(results))
    log(
        f"\nwrote {Path(out) / 'results.json'}, {Path(out) / 'potentials.png'} and the runs {out / 'vanilla'}, "
        f"{out / 'tgo'} (checkpoints for 'spikeguard evaluate/analyze') in {results['seconds']:.0f} s"
    )
    return results
