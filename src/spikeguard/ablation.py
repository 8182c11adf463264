"""The TGO ablation (Table 4): membrane constraint (MC) x Noisy-LIF (NLIF) for one strategy.

:func:`run_ablation` derives four experiments from one base config,

====  ====  ==========================================
MC    NLIF  config changes
====  ====  ==========================================
 -     -    ``tgo.enabled = false``, ``neuron.kind = "lif"``
 x     -    ``tgo.enabled = true``,  ``neuron.kind = "lif"``
 -     x    ``tgo.enabled = false``, ``neuron.kind = "noisy_lif"``
 x     x    ``tgo.enabled = true``,  ``neuron.kind = "noisy_lif"``
====  ====  ==========================================

trains each with :func:`spikeguard.experiment.run_experiment` (one run folder per cell; a
finished cell is reused, an interrupted one resumed), evaluates clean accuracy and the attacks
(default FGSM, RFGSM, PGD-40 at eps 8/255, step 0.01, as in the paper) with
:func:`spikeguard.evaluation.evaluate_robustness` (each cell's result, with its provenance, in
``CELL/evaluation/<time>-ablation-eps<k>/robustness.json``), and reports the table in the paper's layout with deltas to the
first row. Stochastic (Noisy-LIF) cells are attacked with EoT gradients and judged over several
forward passes.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from .config import ExperimentConfig, config_to_dict
from .errors import ConfigError, SpikeguardError
from .io import atomic_write_json, ensure_dir

CELLS: tuple[tuple[bool, bool], ...] = ((False, False), (True, False), (False, True), (True, True))
"""(MC, NLIF) of the four rows, in the paper's order."""

DEFAULT_ATTACKS: tuple[str, ...] = ("fgsm", "rfgsm", "pgd40")
RESULTS = "ablation.json"


def cell_name(mc: bool, nlif: bool) -> str:
    """Run-folder name of a cell (``mc0-nlif1`` ...)."""
    return f"mc{int(mc)}-nlif{int(nlif)}"


def cell_config(base: ExperimentConfig, mc: bool, nlif: bool, strategy: str | None = None) -> ExperimentConfig:
    """The base config with the constraint and the neuron set for one cell.

    ``strategy`` replaces the base's strategy; the base's ``strategy_kw`` are kept only when the
    strategy is unchanged. Attacks are evaluated by the ablation itself, so ``eval.attacks`` is
    cleared.
    """
    cfg = copy.deepcopy(base)
    if strategy is not None and strategy != cfg.strategy:
        cfg.strategy = strategy
        cfg.strategy_kw = {}
    if cfg.neuron.kind not in ("lif", "noisy_lif"):
        raise ConfigError(f"the ablation toggles LIF/Noisy-LIF; the base config uses neuron.kind = {cfg.neuron.kind!r}")
    cfg.tgo.enabled = bool(mc)
    cfg.neuron.kind = "noisy_lif" if nlif else "lif"
    cfg.eval.attacks = []
    cfg.name = f"{base.name or 'ablation'}-{cfg.strategy}-{cell_name(mc, nlif)}"
    return cfg.validate()


@dataclass
class AttackSettings:
    """How the cells are attacked.

    Attributes:
        attacks: names understood by :func:`spikeguard.attacks.build_attack` (or plain FGSM/PGD).
        eps: L-inf budget (paper: 8/255).
        alpha: PGD step size (paper: 0.01).
        eot: EoT samples for stochastic cells (deterministic cells always use 1).
        passes: forward passes per image when judging stochastic cells.
        batch_size: attack batch size.
        seed: seed of the attack randomness.
    """

    attacks: Sequence[str] = DEFAULT_ATTACKS
    eps: float = 8 / 255
    alpha: float = 0.01
    eot: int = 4
    passes: int = 4
    batch_size: int = 256
    seed: int = 0


def evaluate_cell(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, s: AttackSettings,
                  progress: bool = False):
    """Clean and per-attack accuracy of one trained model, measured by
    :func:`~spikeguard.evaluation.evaluate_robustness` (returns its report)."""
    from .evaluation import evaluate_robustness

    model.eval()
    report = evaluate_robustness(model, images, labels, list(s.attacks), eps=s.eps, eot=s.eot, passes=s.passes,
                                 alpha=s.alpha, batch_size=s.batch_size, seed=s.seed, progress=progress)
    for name, r in report.results.items():
        if not r.within_budget:
            raise SpikeguardError(f"attack {name} left the eps-ball (||delta||_inf = {r.max_linf:.5f} > {s.eps:.5f})")
    return report


def run_ablation(base: ExperimentConfig, out_dir: str | Path, strategy: str | None = None,
                 settings: AttackSettings | None = None, progress: bool = True,
                 log: Callable[[str], None] = print, argv: list[str] | None = None) -> dict:
    """Train and evaluate the four MC/NLIF cells of ``base``; write ``OUT/ablation.json``.

    Args:
        base: the base experiment (its ``tgo.*`` settings are used where MC is on).
        out_dir: folder holding one run folder per cell and the summary.
        strategy: training strategy of every cell (default: the base's).
        settings: attack settings (default: the paper's FGSM/RFGSM/PGD-40 at 8/255).
        progress: show training progress.
        log: where one line per finished cell goes.
    """
    from .checkpoint import load_model
    from .evaluation.results import command_line, provenance, write_robustness
    from .experiment import RESULTS_FILE, build_datasets, run_experiment
    from .io import new_dir, stamp
    from .utils import eps_label

    s = settings or AttackSettings()
    if not s.attacks:
        raise ConfigError("give at least one attack")
    configs = [cell_config(base, mc, nlif, strategy) for mc, nlif in CELLS]  # validate all before any work
    out = ensure_dir(out_dir)
    t0 = time.perf_counter()
    rows = []
    test_cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for (mc, nlif), cfg in zip(CELLS, configs):
        run_dir = Path(out) / cell_name(mc, nlif)
        if (run_dir / RESULTS_FILE).is_file():
            log(f"[{cell_name(mc, nlif)}] already trained in {run_dir}; evaluating it again")
        else:
            resume = (run_dir / "config.json").is_file()
            run_experiment(None if resume else cfg, run_dir, resume=resume, progress=progress)
        model = load_model(run_dir)
        key = json.dumps(config_to_dict(cfg.data), sort_keys=True)
        if key not in test_cache:
            _, test_ds = build_datasets(cfg)
            test_cache[key] = (test_ds.float_images(), test_ds.labels)
        x, y = test_cache[key]
        device = next(model.parameters()).device
        report = evaluate_cell(model, x.to(device), y.to(device), s, progress=progress)
        prov = provenance(command=command_line(argv), checkpoint=run_dir, report=report, attacks=list(s.attacks),
                          data={"name": cfg.data.name, "split": "test", "n_samples": len(y)}, alpha=s.alpha,
                          batch_size=s.batch_size)
        path = write_robustness(new_dir(run_dir / "evaluation", f"{stamp()}-ablation-eps{eps_label(s.eps).replace('/255', '')}")
                                / "robustness.json", report, prov, per_sample=False,
                                lambda_max=cfg.tgo.lambda_max if mc else None)
        res = {"clean": report.accuracy("clean"), "stochastic": report.stochastic, "eot": report.eot,
               "passes": report.passes, **{k: report.accuracy(k) for k in s.attacks if k in report.results}}
        train = json.loads((run_dir / RESULTS_FILE).read_text(encoding="utf-8"))
        rows.append({"mc": mc, "nlif": nlif, "run": str(run_dir), **res, "result": str(path),
                     "train_seconds": train.get("train_seconds")})
        log(f"[{cell_name(mc, nlif)}] " + "  ".join(f"{k} {100 * res[k]:.1f}" for k in ("clean", *s.attacks)))
    result = {
        "strategy": strategy or base.strategy, "attacks": list(s.attacks), "eps": s.eps, "alpha": s.alpha,
        "eot": s.eot, "passes": s.passes, "test_samples": int(len(next(iter(test_cache.values()))[1])),
        "rows": rows, "base_config": config_to_dict(base), "seconds": time.perf_counter() - t0,
    }
    atomic_write_json(Path(out) / RESULTS, result)
    return result


def format_table(result: dict) -> str:
    """The paper's layout: ``MC | NLIF | Clean | attacks...``, accuracies in %, deltas to row 1."""
    cols = ["clean", *result["attacks"]]
    heads = ["Clean" if c == "clean" else c.upper() for c in cols]
    rows = result["rows"]
    first = rows[0]
    width = [max(len(h), 13) for h in heads]
    title = f"{result['strategy'].upper()}  (eps {result['eps'] * 255:.3g}/255, {result['test_samples']} test images)"
    lines = [title, "MC  NLIF  " + "  ".join(f"{h:>{w}}" for h, w in zip(heads, width))]
    for i, r in enumerate(rows):
        cells = []
        for c, w in zip(cols, width):
            v = 100 * r[c]
            txt = f"{v:.1f}" if i == 0 else f"{v:.1f} ({v - 100 * first[c]:+.1f})"
            cells.append(f"{txt:>{w}}")
        lines.append(f"{'x' if r['mc'] else '-':<2}  {'x' if r['nlif'] else '-':<4}  " + "  ".join(cells))
    return "\n".join(lines)


QUICK_OVERRIDES: tuple[str, ...] = (
    'data.name="digits"', "data.subset=0", "data.test_subset=120", "data.augment=false", 'model.name="small_conv"',
    "model.T=2", "model.kw={}", "optim.epochs=3", "optim.batch_size=64", "optim.lr=0.1", "checkpoint_every=0",
    "tgo.ramp_epochs=0",
)
"""``--quick``: the embedded digits data, a small conv SNN, T=2, 3 epochs (about a minute per cell)."""


__all__ = ["CELLS", "DEFAULT_ATTACKS", "AttackSettings", "cell_config", "cell_name", "evaluate_cell", "run_ablation",
           "format_table", "QUICK_OVERRIDES"]
