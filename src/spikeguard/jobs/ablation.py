"""The TGO ablation (Table 4): membrane constraint (MC) x Noisy-LIF (NLIF) for one strategy, run as a study.

:func:`run_ablation` derives four runs from one base config,

====  ====  ===========  ==========================================
MC    NLIF  run          config changes
====  ====  ===========  ==========================================
 -     -    mc0-nlif0    ``tgo.enabled = false``, ``neuron.kind = "lif"``
 x     -    mc1-nlif0    ``tgo.enabled = true``,  ``neuron.kind = "lif"``
 -     x    mc0-nlif1    ``tgo.enabled = false``, ``neuron.kind = "noisy_lif"``
 x     x    mc1-nlif1    ``tgo.enabled = true``,  ``neuron.kind = "noisy_lif"``
====  ====  ===========  ==========================================

builds a :class:`~spikeguard.jobs.study.StudySpec` of them in memory (:func:`ablation_study`) and
runs it with :func:`spikeguard.jobs.study.run_study`: training into ``OUT/runs/<run>/`` (a finished
run is reused, an interrupted one resumed), the near-threshold share and the BN-rescaled
control (clean accuracy only), the attacks through the evaluation engine
(``OUT/runs/<run>/eval-ablation/table4.json``, the one result schema), and the study's
``OUT/study.md``, ``OUT/study.json``, figures and ``OUT/report.html``.

The evaluation is one protocol, ``ablation`` (tag ``A``, :func:`ablation_protocol`): the
``paper`` protocol's single-pass group with its attacks replaced (default FGSM, RFGSM, PGD-40
at eps 8/255, step 0.01, as in the paper), and EoT gradients and several judging passes for
the stochastic (Noisy-LIF) cells. The ablation's own table (the paper's layout, deltas to the
first row, :func:`format_table`) and ``OUT/ablation.json`` are derived from the study's rows
(:func:`ablation_result`).

``spikeguard ablation`` is the in-memory, one-strategy version of the shipped study file
``configs/studies/cifar100-vgg11-table4.toml`` (both strategies, the paper's and the strong
protocol, the paper's numbers beside).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from ..config import ExperimentConfig, config_to_dict
from ..errors import ConfigError, SpikeguardError
from ..io import atomic_write_json, ensure_dir
from ..protocols import Protocol, get_protocol
from .study import STUDY_JSON, RunSpec, StudySpec, group_result_path, run_study
from ..evaluation.engine import display_name
from ..evaluation.results import command_line

CELLS: tuple[tuple[bool, bool], ...] = ((False, False), (True, False), (False, True), (True, True))
"""(MC, NLIF) of the four rows, in the paper's order."""

DEFAULT_ATTACKS: tuple[str, ...] = ("fgsm", "rfgsm", "pgd40")
RESULTS = "ablation.json"
PROTOCOL = "ablation"
"""Name of the ablation's protocol (its results: ``OUT/runs/<run>/eval-ablation/``)."""
TAG = "A"
"""Column tag of the ablation's protocol in ``study.md`` (``FGSM (A)``)."""
GROUP = "table4"
"""The protocol's one group (``OUT/runs/<run>/eval-ablation/table4.json``)."""
CONTROL = {"k": 3.0, "attack": ""}
"""The BN-rescaled control next to the share: share and clean accuracy only (no attack, so it costs a few passes)."""


def cell_name(mc: bool, nlif: bool) -> str:
    """Run-folder name of a cell (``mc0-nlif1`` ...)."""
    return f"mc{int(mc)}-nlif{int(nlif)}"


def cell_label(mc: bool, nlif: bool) -> str:
    """The paper's row label of a cell (``MC / -``, ``- / NLIF`` ...), the study's model column."""
    return f"{'MC' if mc else '-'} / {'NLIF' if nlif else '-'}"


def cell_config(base: ExperimentConfig, mc: bool, nlif: bool, strategy: str | None = None) -> ExperimentConfig:
    """The base config with the constraint and the neuron set for one cell.

    ``strategy`` replaces the base's strategy; the base's ``strategy_kw`` are kept only when the
    strategy is unchanged. Attacks are evaluated by the study, so ``eval.attacks`` is cleared.
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
    """How the cells are attacked (the ablation's protocol, :func:`ablation_protocol`).

    Attributes:
        attacks: attack registry names (:mod:`spikeguard.attacks.registry`).
        eps: L-inf budget (paper: 8/255).
        alpha: PGD step size (paper: 0.01).
        eot: EoT samples for stochastic cells (deterministic cells always use 1).
        passes: forward passes per image when judging stochastic cells.
        batch_size: attack batch size.
        seed: seed of the attack randomness and of the class-balanced draw of test images.
    """

    attacks: Sequence[str] = DEFAULT_ATTACKS
    eps: float = 8 / 255
    alpha: float = 0.01
    eot: int = 4
    passes: int = 4
    batch_size: int = 256
    seed: int = 0


def ablation_protocol(s: AttackSettings) -> Protocol:
    """The ablation's evaluation as a protocol: ``paper``'s single-pass group with ``s``'s attacks, EoT, passes, step.

    Raises :class:`ConfigError` (one line) for an attack name the registry does not know.
    """
    p = get_protocol(
        "paper",
        {
            "groups": ["single-pass"],
            "single-pass": {
                "attacks": list(s.attacks),
                "eot": int(s.eot),
                "passes": int(s.passes),
                "alpha": float(s.alpha),
            },
        },
    )
    (g,) = p.groups
    g = dataclasses.replace(
        g,
        name=GROUP,
        note="As spikeguard ablation: stochastic (Noisy-LIF) cells attacked with "
        "EoT gradients and judged over several passes",
    )
    return dataclasses.replace(
        p,
        name=PROTOCOL,
        tag=TAG,
        groups=(g,),
        description=f"the ablation's evaluation (Table 4): {', '.join(g.attacks)} at the study's eps, step "
        f"{g.alpha:g}; the paper protocol's single-pass group with EoT {g.eot} and {g.passes} judging "
        "passes for stochastic cells",
    )


def ablation_study(
    base: ExperimentConfig, strategy: str | None = None, settings: AttackSettings | None = None, command: str = ""
) -> StudySpec:
    """The four cells of ``base`` as an in-memory study (what :func:`run_ablation` runs).

    Args:
        base: the base experiment (its ``tgo.*`` settings are used where MC is on).
        strategy: training strategy of every cell (default: the base's).
        settings: attack settings (default: the paper's FGSM/RFGSM/PGD-40 at 8/255).
        command: the command line recorded with the results.

    The test images are the class-balanced draw of ``data.test_subset`` images (0 = the whole
    test split) with ``settings.seed``; the share is measured against the first cell.
    """
    s = settings or AttackSettings()
    if not s.attacks:
        raise ConfigError("give at least one attack")
    protocol = ablation_protocol(s)
    configs = [cell_config(base, mc, nlif, strategy) for mc, nlif in CELLS]  # validate all before any work
    strat = configs[0].strategy
    runs = [
        RunSpec(cell_name(mc, nlif), cfg, training=strat.upper(), label=cell_label(mc, nlif))
        for (mc, nlif), cfg in zip(CELLS, configs, strict=True)
    ]
    evaluation = {
        "protocols": [PROTOCOL],
        "n_samples": int(base.data.test_subset or 0),
        "eps": float(s.eps),
        "batch_size": int(s.batch_size),
        "seed": int(s.seed),
        "split": "test",
        "reference": runs[0].name,
    }
    return StudySpec(
        name=f"ablation-{strat}",
        path=None,
        description=f"The TGO ablation (Table 4: membrane constraint x Noisy-LIF) under {strat.upper()}, from "
        f"spikeguard ablation (the in-memory version of configs/studies/cifar100-vgg11-table4.toml for "
        "one strategy).",
        runs=runs,
        protocols=[protocol],
        evaluation=evaluation,
        control=dict(CONTROL),
        calibration={},
        budget={"eval_reserve": 0.3, "probe_images": 0},
        command=command or "spikeguard ablation",
    )


def ablation_result(spec: StudySpec, doc: dict, out_dir: str | Path, base: ExperimentConfig | None = None) -> dict:
    """``ablation.json``'s content from a finished ablation study (``doc``: ``study.json``'s content).

    One row per cell with ``mc``, ``nlif``, ``clean``, one accuracy per attack (None where the
    engine skipped it; the reason in ``skipped``), the per-sample ``worst_case`` over them and the
    near-threshold share, read from the study's rows (``doc["rows"]``);
    ``stochastic``, ``eot`` and ``passes`` as the engine applied them, read from the cell's
    result file (``result``), where every attack is checked to have stayed in the eps-ball.
    """
    out = Path(out_dir)
    prot = spec.protocols[0]
    (group,) = prot.groups
    attacks = list(group.attacks)
    by_run = {r["run"]: r for r in doc["rows"]}
    rows, n = [], None
    for (mc, nlif), run in zip(CELLS, spec.runs, strict=False):
        row = by_run[run.name]
        path = group_result_path(out / "runs" / run.name, prot, group)
        if not path.is_file():
            raise SpikeguardError(f"ablation cell {run.name}: no evaluation in {path} (rerun with the same --out)")
        rep = json.loads(path.read_text(encoding="utf-8"))["report"]
        for name, a in rep["attacks"].items():
            if not a.get("within_budget", True):
                raise SpikeguardError(
                    f"attack {name} left the eps-ball on {run.name} (||delta||_inf = "
                    f"{a['max_linf']:.5f} > {rep['eps']:.5f})"
                )
        acc = row["accuracy"]
        res = {
            "clean": acc.get(f"clean ({prot.tag})"),
            **{k: acc.get(f"{display_name(k)} ({prot.tag})") for k in attacks},
        }
        rows.append(
            {
                "mc": mc,
                "nlif": nlif,
                "cell": run.name,
                "label": run.label,
                "run": str(out / "runs" / run.name),
                "stochastic": bool(rep["stochastic"]),
                "eot": rep["eot"],
                "passes": rep["passes"],
                **res,
                "worst_case": acc.get(f"worst case ({prot.tag})"),
                "skipped": dict(rep.get("skipped", {})),
                "near_threshold": row.get("near_threshold"),
                "share_reduction": row.get("share_reduction"),
                "result": str(path),
                "train_seconds": row.get("train_seconds"),
            }
        )
        n = int(rep["n_samples"])
    return {
        "strategy": spec.runs[0].config.strategy,
        "attacks": attacks,
        "eps": float(spec.evaluation["eps"]),
        "alpha": group.alpha,
        "eot": group.eot,
        "passes": group.passes,
        "test_samples": n,
        "rows": rows,
        "base_config": config_to_dict(base) if base is not None else None,
        "study": str(out / STUDY_JSON),
        "protocol": dataclasses.asdict(prot),
    }


def run_ablation(
    base: ExperimentConfig,
    out_dir: str | Path,
    strategy: str | None = None,
    settings: AttackSettings | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    argv: list[str] | None = None,
    report: bool = True,
) -> dict:
    """Train and evaluate the four MC/NLIF cells of ``base`` as a study; write ``OUT/ablation.json``.

    The study (:func:`ablation_study`) is run by :func:`spikeguard.jobs.study.run_study` in
    ``out_dir`` (runs under ``OUT/runs/``, ``study.md``, ``study.json``, figures, report); the
    ablation's result is derived from its rows by :func:`ablation_result`.

    Args:
        base: the base experiment (its ``tgo.*`` settings are used where MC is on).
        out_dir: the study folder; also holds ``ablation.json``.
        strategy: training strategy of every cell (default: the base's).
        settings: attack settings (default: the paper's FGSM/RFGSM/PGD-40 at 8/255).
        progress: show training and evaluation progress.
        log: where the study's stage lines and one line per cell go.
        argv: the command line, recorded with the results.
        report: also write the study's ``report.html``.

    Returns:
        ``ablation.json``'s content (see :func:`ablation_result`), with ``seconds``.
    """
    t0 = time.perf_counter()
    command = command_line(argv) if argv is not None else "spikeguard.jobs.ablation.run_ablation"
    spec = ablation_study(base, strategy, settings, command=command)  # everything checked before any work
    out = ensure_dir(out_dir)
    doc = run_study(spec, out, progress=progress, log=log, report=report)
    result = ablation_result(spec, doc, out, base)
    result["seconds"] = time.perf_counter() - t0
    atomic_write_json(Path(out) / RESULTS, result)
    for r in result["rows"]:
        log(f"[{r['cell']}] " + "  ".join(f"{k} {_pct(r[k])}" for k in ("clean", *result["attacks"])))
    return result


def _pct(v: float | None) -> str:
    return "skip" if v is None else f"{100 * v:.1f}"


def format_table(result: dict) -> str:
    """The paper's layout: ``MC | NLIF | Clean | attacks...``, accuracies in %, deltas to row 1 (``skip``: not run)."""
    cols = ["clean", *result["attacks"]]
    heads = ["Clean" if c == "clean" else c.upper() for c in cols]
    rows = result["rows"]
    first = rows[0]
    width = [max(len(h), 13) for h in heads]
    title = f"{result['strategy'].upper()}  (eps {result['eps'] * 255:.3g}/255, {result['test_samples']} test images)"
    lines = [title, "MC  NLIF  " + "  ".join(f"{h:>{w}}" for h, w in zip(heads, width, strict=True))]
    for i, r in enumerate(rows):
        cells = []
        for c, w in zip(cols, width, strict=True):
            v = r.get(c)
            if v is None:
                txt = "skip"
            elif i == 0 or first.get(c) is None:
                txt = f"{100 * v:.1f}"
            else:
                txt = f"{100 * v:.1f} ({100 * v - 100 * first[c]:+.1f})"
            cells.append(f"{txt:>{w}}")
        lines.append(f"{'x' if r['mc'] else '-':<2}  {'x' if r['nlif'] else '-':<4}  " + "  ".join(cells))
    return "\n".join(lines)


QUICK_OVERRIDES: tuple[str, ...] = (
    'data.name="digits"',
    "data.subset=0",
    "data.test_subset=120",
    "data.augment=false",
    'model.name="small_conv"',
    "model.T=2",
    "model.kw={}",
    "optim.epochs=3",
    "optim.batch_size=64",
    "optim.lr=0.1",
    "checkpoint_every=0",
    "tgo.ramp_epochs=0",
)
"""``--quick``: the embedded digits data, a small conv SNN, T=2, 3 epochs (about a minute per cell)."""


__all__ = [
    "CELLS",
    "DEFAULT_ATTACKS",
    "RESULTS",
    "PROTOCOL",
    "GROUP",
    "AttackSettings",
    "cell_config",
    "cell_name",
    "cell_label",
    "ablation_protocol",
    "ablation_study",
    "ablation_result",
    "run_ablation",
    "format_table",
    "QUICK_OVERRIDES",
]
