"""A study: train a list of runs, evaluate each under named protocols, write one comparison.

``spikeguard study configs/studies/NAME.toml --out runs/NAME`` is this module's
:func:`run_study`. A study file is TOML (paths are relative to the study file)::

    name = "cpu-digits-smoke"
    description = "..."

    [defaults]                     # every run starts from this preset and these overrides
    preset = "../cpu/digits-small_conv-bptt.toml"
    set = ["optim.epochs=2"]

    [evaluation]
    protocols = ["paper", "strong"]    # spikeguard.protocols
    n_samples = 1000                   # class-balanced test images (0 = the whole split)
    eps = "8/255"
    batch_size = 128
    seed = 0
    reference = "vanilla"              # the run the share reduction is measured against

    [protocols.strong]                 # optional overrides of a protocol (Protocol.with_overrides)
    eot = 4

    [control]                          # the BN-rescaled control next to the share
    k = 3.0
    attack = "pgd10"                   # "" = clean accuracy only

    [calibration]                      # spikeguard.calibration settings, for runs with calibrate = true
    target_reduction = 0.4

    [budget]                           # used with --budget
    eval_reserve = 0.3                 # share of the budget kept for evaluation
    probe_images = 0                   # images of the probe epoch (0 = a whole epoch)

    [[runs]]
    name = "vanilla"                   # folder OUT/runs/vanilla
    training = "BPTT"                  # Table 1's first column
    label = "vanilla"                  # Table 1's second column
    set = ["neuron.kind=\\"lif\\""]     # overrides after the defaults (preset = "..." replaces it)
    source = ""                        # transfer source (a run name) for the strong protocol
    calibrate = false                  # pick tgo.lambda_max with spikeguard.calibration first
    paper = {clean = 93.32, FGSM = 14.05}   # the paper's numbers for this row (%), shown beside

Stages, each printed as it starts: plan (and ``--budget``'s probe), calibration, training
(finished runs reused, interrupted ones resumed), evaluation (near-threshold share, BN control,
every protocol group through the evaluation engine; finished groups reused, interrupted ones
resumed from the engine's journal), tables (``study.md``, ``study.json``), figures and the
HTML report (:func:`spikeguard.analysis.report.build_report`).
"""

from __future__ import annotations

import copy
import json
import math
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from .config import ExperimentConfig, config_to_dict, load_config, read_toml
from .errors import ConfigError, SpikeguardError
from .io import atomic_write_json, atomic_write_text, ensure_dir
from .protocols import Protocol, get_protocol

STUDY_JSON = "study.json"
STUDY_MD = "study.md"
PLAN_JSON = "plan.json"
Log = Callable[[str], None]


# --------------------------------------------------------------------------------------- spec
@dataclass
class RunSpec:
    """One row of the study (see the module docstring)."""

    name: str
    config: ExperimentConfig
    training: str = ""
    label: str = ""
    source: str = ""
    calibrate: bool = False
    paper: dict = field(default_factory=dict)


@dataclass
class StudySpec:
    """A parsed study file, or a study built in memory (``spikeguard ablation``: ``path`` None).

    ``evaluation``, ``control`` and ``budget`` hold every key of the study file's tables (the
    defaults filled in); ``command`` is the command line recorded in the results and under the
    table (default ``spikeguard study PATH``).
    """

    name: str
    path: Path | None
    description: str
    runs: list[RunSpec]
    protocols: list[Protocol]
    evaluation: dict
    control: dict
    calibration: dict
    budget: dict
    command: str = ""

    def command_text(self) -> str:
        """The command that ran this study, as recorded in provenance and ``study.md``."""
        return self.command or f"spikeguard study {self.path}"


_TOP = {"name", "description", "defaults", "evaluation", "protocols", "control", "calibration", "budget", "runs"}
_RUN = {"name", "training", "label", "preset", "set", "source", "calibrate", "paper"}
_EVAL = {"protocols": ["paper", "strong"], "n_samples": 1000, "eps": "8/255", "batch_size": 128, "seed": 0,
         "split": "test", "reference": ""}
_CONTROL = {"k": 3.0, "attack": "pgd10"}
_BUDGET = {"eval_reserve": 0.3, "probe_images": 0}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _table(doc: dict, key: str, defaults: dict) -> dict:
    t = doc.get(key, {})
    if not isinstance(t, dict):
        raise ConfigError(f"study: [{key}] must be a table")
    bad = set(t) - set(defaults)
    if bad:
        raise ConfigError(f"study: unknown key(s) in [{key}]: {', '.join(sorted(bad))} "
                          f"(known: {', '.join(defaults)})")
    return {**defaults, **t}


def _strings(v: Any, what: str) -> list[str]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ConfigError(f"study: {what} must be a list of strings")
    return list(v)


def load_study(path: str | Path, overrides: list[str] | None = None) -> StudySpec:
    """Read and check a study file; every run's config is built and validated before any work.

    Args:
        path: the study TOML.
        overrides: ``key=value`` config overrides applied to every run last (e.g. ``data.root=...``).
    """
    from .calibration import settings_from_dict
    from .utils import parse_eps

    p = Path(path)
    doc = read_toml(p)
    bad = set(doc) - _TOP
    if bad:
        raise ConfigError(f"study {p}: unknown key(s) {', '.join(sorted(bad))} (known: {', '.join(sorted(_TOP))})")
    name = doc.get("name") or p.stem
    defaults = doc.get("defaults", {})
    if not isinstance(defaults, dict) or set(defaults) - {"preset", "set"}:
        raise ConfigError("study: [defaults] takes preset and set")
    runs_doc = doc.get("runs")
    if not isinstance(runs_doc, list) or not runs_doc:
        raise ConfigError(f"study {p}: needs at least one [[runs]] entry")
    runs: list[RunSpec] = []
    for i, r in enumerate(runs_doc):
        if not isinstance(r, dict):
            raise ConfigError(f"study: runs[{i}] must be a table")
        bad = set(r) - _RUN
        if bad:
            raise ConfigError(f"study: runs[{i}] has unknown key(s) {', '.join(sorted(bad))} (known: {', '.join(sorted(_RUN))})")
        rname = r.get("name")
        if not isinstance(rname, str) or not _NAME.match(rname):
            raise ConfigError(f"study: runs[{i}].name must be a folder-safe name (letters, digits, . _ -), got {rname!r}")
        if rname in {x.name for x in runs}:
            raise ConfigError(f"study: run name {rname!r} is used twice")
        preset = r.get("preset", defaults.get("preset"))
        preset_path = (p.parent / preset) if preset else None
        sets = _strings(defaults.get("set", []), "[defaults].set") + _strings(r.get("set", []), f"runs[{i}].set")
        try:
            cfg = load_config(preset_path, sets + list(overrides or []))
        except ConfigError as e:
            raise ConfigError(f"study run {rname!r}: {e}") from None
        cfg.name = f"{name}-{rname}"
        cfg.eval.attacks = []  # the study evaluates every run itself, under its protocols
        paper = r.get("paper", {})
        if not isinstance(paper, dict):
            raise ConfigError(f"study: runs[{i}].paper must be a table of column = accuracy (%)")
        runs.append(RunSpec(rname, cfg, str(r.get("training", cfg.strategy.upper())), str(r.get("label", rname)),
                            str(r.get("source", "")), bool(r.get("calibrate", False)), dict(paper)))
    names = {r.name for r in runs}
    for r in runs:
        if r.source and r.source not in names:
            raise ConfigError(f"study run {r.name!r}: source {r.source!r} is not a run of this study")
    ev = _table(doc, "evaluation", _EVAL)
    try:
        ev["eps"] = float(parse_eps(str(ev["eps"]))) if isinstance(ev["eps"], str) else float(ev["eps"])
    except ValueError:
        raise ConfigError(f"study: [evaluation].eps {ev['eps']!r} is not a budget (e.g. 8/255)") from None
    if ev["reference"] and ev["reference"] not in names:
        raise ConfigError(f"study: [evaluation].reference {ev['reference']!r} is not a run of this study")
    prot_over = doc.get("protocols", {})
    if not isinstance(prot_over, dict):
        raise ConfigError("study: [protocols.NAME] tables hold protocol overrides")
    for k in prot_over:
        if k not in ev["protocols"]:
            raise ConfigError(f"study: [protocols.{k}] overrides a protocol the study does not run")
    protocols = [get_protocol(n, prot_over.get(n)) for n in _strings(ev["protocols"], "[evaluation].protocols")]
    calibration = doc.get("calibration", {})
    if any(r.calibrate for r in runs):
        settings_from_dict(calibration)  # checked now, used in the calibration stage
    return StudySpec(name=name, path=p, description=str(doc.get("description", "")), runs=runs, protocols=protocols,
                     evaluation=ev, control=_table(doc, "control", _CONTROL), calibration=calibration,
                     budget=_table(doc, "budget", _BUDGET))


# --------------------------------------------------------------------------------------- budget
def parse_duration(text: str) -> float:
    """``"9m"``, ``"1h30m"``, ``"540s"``, ``"540"`` (seconds) -> seconds."""
    t = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", t):
        return float(t)
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([hms])", t)
    if not parts or "".join(f"{a}{b}" for a, b in parts) != t.replace(" ", ""):
        raise ConfigError(f"cannot read the budget {text!r} (use e.g. 9m, 1h30m or 540s)")
    return sum(float(a) * {"h": 3600, "m": 60, "s": 1}[b] for a, b in parts)


def _train_size(cfg: ExperimentConfig) -> int:
    from .experiment import build_datasets

    train, _ = build_datasets(cfg)
    return len(train)


def plan_epochs(spec: StudySpec, out: Path, budget_s: float, log: Log, progress: bool = False) -> dict:
    """Choose ``optim.epochs`` for every run so that training fits ``(1 - eval_reserve) * budget``.

    Each run is timed on one probe epoch (``budget.probe_images`` images, 0 = its whole training
    set) in ``OUT/.probe/NAME``; the probe time counts against the budget. The choice is written
    to ``OUT/plan.json`` and reused when the study is run again (so interrupted runs resume).
    """
    from .experiment import RESULTS_FILE, run_experiment

    plan_path = out / PLAN_JSON
    if plan_path.is_file():
        plan = json.loads(plan_path.read_text(encoding="utf-8"))
        log(f"[plan] reusing {plan_path}: {plan['epochs']} epochs per run (chosen for a {plan['budget_s']:.0f} s "
            "budget when the study first ran)")
        return plan
    t0 = time.perf_counter()
    probe_images = int(spec.budget["probe_images"])
    per_epoch: dict[str, float] = {}
    for i, r in enumerate(spec.runs):
        cfg = copy.deepcopy(r.config)
        full = _train_size(cfg)
        cfg.optim.epochs = 1
        cfg.checkpoint_every = 0
        cfg.eval.attacks, cfg.eval.test_every = [], 0
        cfg.tgo.log_grad_ratio = False
        if probe_images and probe_images < full:
            cfg.data.subset = probe_images
        n = min(probe_images, full) if probe_images else full
        d = out / ".probe" / r.name
        log(f"[plan] probe {i + 1}/{len(spec.runs)} '{r.name}': one epoch on {n} of {full} training images")
        if not (d / RESULTS_FILE).is_file():
            run_experiment(cfg, d, resume=(d / "config.json").is_file(), progress=progress)
        res = json.loads((d / RESULTS_FILE).read_text(encoding="utf-8"))
        per_epoch[r.name] = float(res["train_seconds"]) * full / max(n, 1)
    spent = time.perf_counter() - t0
    reserve = float(spec.budget["eval_reserve"])
    train_budget = budget_s * (1.0 - reserve) - spent
    total = sum(per_epoch.values())
    epochs = max(1, int(train_budget // total)) if total > 0 else 1
    plan = {"budget_s": budget_s, "eval_reserve": reserve, "probe_seconds": spent, "seconds_per_epoch": per_epoch,
            "train_budget_s": train_budget, "epochs": epochs, "estimated_train_s": epochs * total}
    atomic_write_json(plan_path, plan)
    log(f"[plan] budget {budget_s:.0f} s: probes took {spent:.0f} s, one epoch of every run takes {total:.1f} s "
        f"({', '.join(f'{k} {v:.1f} s' for k, v in per_epoch.items())}); {100 * reserve:.0f}% kept for evaluation "
        f"-> {epochs} epochs per run (about {epochs * total:.0f} s of training)"
        + ("; the budget does not cover one epoch of every run, so 1 is used" if train_budget < total else ""))
    return plan


# --------------------------------------------------------------------------------------- evaluation
def _eval_images(cfg: ExperimentConfig, ev: dict, n_samples: int | None = None):
    from .data import load_dataset

    d = cfg.data
    n = int(ev["n_samples"]) if not n_samples else int(n_samples)
    return load_dataset(d.name, ev["split"], root=d.root or None, cache_dir=d.cache_dir or None, subset=n,
                        seed=int(ev["seed"]), verify=d.verify_md5, **d.options)


def _share_path(run_dir: Path) -> Path:
    """Where a run's near-threshold share and BN control are cached."""
    return run_dir / "eval-share.json"


def group_result_path(run_dir: Path, protocol: Protocol, group) -> Path:
    """Where one protocol group's result of a run is written."""
    return run_dir / f"eval-{protocol.name}" / f"{group.name}.json"


def _calibration_path(out: Path) -> Path:
    from .calibration import RESULT_FILE

    return out / "calibration" / RESULT_FILE


def _apply_plan_and_calibration(spec: StudySpec, plan: dict | None, calibration: dict | None) -> None:
    """Set the planned epochs on every run and the calibrated lambda_max on the runs that asked for it."""
    for r in spec.runs:
        if plan:
            r.config.optim.epochs = int(plan["epochs"])
        if calibration and r.calibrate:
            r.config.tgo.lambda_max = float(calibration["lambda_max"])
            r.config.validate()


def _weights_id(run_dir: Path) -> list:
    from .checkpoint import MODEL_FILE

    st = (run_dir / MODEL_FILE).stat()
    return [st.st_size, st.st_mtime_ns]


def _run_group(model, x, y, group, protocol: Protocol, ev: dict, run_dir: Path, source, source_name: str,
               device, log: Log, progress: bool, command: str = "spikeguard study", data_info: dict | None = None) -> dict:
    """One protocol group on one model through the engine; its JSON is reused when the settings match.

    The result is written in the one result schema (``spikeguard.evaluation.results``, model
    name ``RUN [PROTOCOL]``) with the group's settings, so ``spikeguard report`` reads it.
    """
    from .evaluation import audit_robustness
    from .evaluation.results import provenance, robustness_document
    from .evaluation.sharded import evaluate_sharded, journal_key

    eps = float(ev["eps"])
    settings = {"weights": _weights_id(run_dir), "attacks": list(group.attacks), "eps": eps, "eot": group.eot,
                "passes": group.passes, "alpha": group.alpha, "attack_kw": {k: dict(v) for k, v in group.attack_kw.items()},
                "n": int(len(y)), "batch_size": int(ev["batch_size"]), "seed": int(ev["seed"]), "source": source_name,
                "audit": group.audit, "audit_steps": group.audit_steps, "individual": group.individual}
    settings = json.loads(json.dumps(settings))  # tuples -> lists, as read back from the file
    path = group_result_path(run_dir, protocol, group)
    folder = ensure_dir(path.parent)
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        if old.get("settings") == settings:
            log(f"    {protocol.name}/{group.name}: finished before, reused ({path})")
            return old
    journal = folder / f".journal-{group.name}-{journal_key(settings)}"
    t0 = time.perf_counter()
    report = evaluate_sharded(model, x, y, list(group.attacks), eps=eps, eot=group.eot, passes=group.passes,
                              alpha=group.alpha, batch_size=int(ev["batch_size"]), seed=int(ev["seed"]), source=source,
                              attack_kw=settings["attack_kw"], device=device, journal=journal, progress=progress,
                              individual=group.individual)
    prov = provenance(command=command, checkpoint=run_dir, report=report, data=data_info,
                      study_protocol=protocol.name, study_group=group.name, device=_device_text(device))
    doc = robustness_document(report, prov, model=f"{run_dir.name} [{protocol.name}]", per_sample=True,
                              protocol=protocol.name, group=group.name, note=group.note, settings=settings,
                              source=source_name or None)
    if group.audit:
        audit = audit_robustness(model, x, y, eps=eps, eot=group.eot, passes=group.passes, report=report,
                                 steps=group.audit_steps, alpha=group.alpha, batch_size=int(ev["batch_size"]),
                                 seed=int(ev["seed"]), device=device, progress=progress)
        doc["audit"] = audit.to_dict()
    atomic_write_json(path, doc)
    import shutil

    shutil.rmtree(journal, ignore_errors=True)
    log(f"    {protocol.name}/{group.name}: {len(group.attacks)} attacks on {len(y)} images in "
        f"{time.perf_counter() - t0:.1f} s; worst case {100 * report.accuracy('worst_case'):.2f}%"
        + (f"; audit {doc['audit']['verdict']}" if group.audit else "")
        + (f"; skipped {', '.join(report.skipped)}" if report.skipped else ""))
    return doc


def _share_and_control(model, ds, x, y, cfg: ExperimentConfig, spec: StudySpec, run_dir: Path, log: Log) -> dict:
    """Near-threshold share (as the model runs, noise seeded) and the BN-rescaled control; cached in the run folder."""
    from .analysis.bn_control import bn_rescale_control
    from .analysis.membrane import potential_histogram

    path = _share_path(run_dir)
    key = {"weights": _weights_id(run_dir), "n": int(len(y)), "seed": int(spec.evaluation["seed"]),
           "control": dict(spec.control), "delta": cfg.tgo.delta, "eps": float(spec.evaluation["eps"])}
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        if old.get("key") == key:
            return old
    device = x.device
    hist = potential_histogram(model, ds, v_threshold=cfg.neuron.v_threshold, delta=cfg.tgo.delta,
                               batch_size=int(spec.evaluation["batch_size"]), device=device,
                               seed=int(spec.evaluation["seed"]))
    doc: dict = {"key": key, "near_threshold": hist.near_threshold, "layer_near_threshold": hist.layer_near_threshold()}
    k = float(spec.control.get("k") or 0)
    if k > 0:
        try:
            doc["bn_control"] = bn_rescale_control(model, x, y, k, delta=cfg.tgo.delta,
                                                   attack=spec.control.get("attack") or None,
                                                   eps=float(spec.evaluation["eps"]), seed=int(spec.evaluation["seed"]),
                                                   batch_size=int(spec.evaluation["batch_size"]))
        except SpikeguardError as e:  # e.g. a model without BatchNorm: the control does not apply
            doc["bn_control"] = {"skipped": str(e)}
    atomic_write_json(path, doc)
    return doc


# --------------------------------------------------------------------------------------- tables
def _neuron_text(cfg: ExperimentConfig) -> str:
    n = cfg.neuron
    if n.kind == "lif":
        return "LIF"
    if n.kind == "noisy_lif":
        var = n.sigma ** 2
        reading = f"sigma^2={var:.3g}" if abs(var - round(var, 3)) < 1e-9 else f"sigma={n.sigma:.3g}"
        return f"NLIF {reading}" + (", expected grad" if n.noisy_grad == "expected" else "")
    return n.kind


def _last_log(run_dir: Path) -> dict:
    from .experiment import LOG_FILE

    p = run_dir / LOG_FILE
    rows = [json.loads(x) for x in p.read_text(encoding="utf-8").splitlines() if x.strip()] if p.is_file() else []
    return rows[-1] if rows else {}


def build_rows(spec: StudySpec, out: Path) -> tuple[list[dict], list[str]]:
    """Table rows (one per run) and the ordered column names ``"ATTACK (tag)"``."""
    from .experiment import RESULTS_FILE

    rows, columns = [], []
    for r in spec.runs:
        run_dir = out / "runs" / r.name
        cfg = r.config
        res_path = run_dir / RESULTS_FILE
        train = json.loads(res_path.read_text(encoding="utf-8")) if res_path.is_file() else {}
        last = _last_log(run_dir)
        share = json.loads(_share_path(run_dir).read_text()) if _share_path(run_dir).is_file() else {}
        row: dict[str, Any] = {
            "run": r.name, "training": r.training, "model": r.label, "strategy": cfg.strategy,
            "neuron": _neuron_text(cfg), "tgo": cfg.tgo.enabled,
            "normalisation": _norm_text(cfg) if cfg.tgo.enabled else None,
            "lambda_max": cfg.tgo.lambda_max if cfg.tgo.enabled else None,
            "grad_ratio": last.get("grad_ratio"), "epochs": cfg.optim.epochs,
            "train_seconds": train.get("train_seconds"), "test_accuracy_full": train.get("test_accuracy"),
            "near_threshold": share.get("near_threshold"), "bn_control": share.get("bn_control"),
            "accuracy": {}, "ci95": {}, "skipped": {}, "audit": None, "paper": dict(r.paper),
        }
        for prot in spec.protocols:
            for gi, g in enumerate(prot.groups):
                p = group_result_path(run_dir, prot, g)
                if not p.is_file():
                    continue
                doc = json.loads(p.read_text(encoding="utf-8"))
                rep = doc["report"]
                for col, acc in doc["table"].items():
                    if col == "clean" and gi > 0:
                        continue  # one clean column per protocol (its first group's)
                    if col == "worst case" and prot.name == "paper":
                        continue  # the paper reports no worst case
                    key = f"{col} ({prot.tag})"
                    row["accuracy"][key] = acc
                    src = rep["clean"] if col == "clean" else rep["worst_case"] if col == "worst case" else \
                        next((v for k, v in rep["attacks"].items() if k.upper() == col), {})
                    row["ci95"][key] = src.get("ci95") or src.get("ci95_samples")
                    if key not in columns:
                        columns.append(key)
                for k, why in rep.get("skipped", {}).items():
                    row["skipped"][f"{k.upper()} ({prot.tag})"] = why
                if "audit" in doc:
                    row["audit"] = {"verdict": doc["audit"]["verdict"],
                                    "warnings": [c["key"] for c in doc["audit"]["checks"] if c["status"] == "WARN"]}
        rows.append(row)
    ref = spec.evaluation.get("reference")
    base = next((x for x in rows if x["run"] == ref), None) if ref else None
    for x in rows:
        if base and base["near_threshold"] and x["near_threshold"] is not None:
            x["share_reduction"] = 1.0 - x["near_threshold"] / base["near_threshold"]
    # columns: paper protocol first, then strong, each in the engine's (paper) attack order
    order = {p.tag: i for i, p in enumerate(spec.protocols)}
    first = {c: i for i, c in enumerate(columns)}

    def key(c: str) -> tuple:
        head, tag = c.rsplit(" (", 1)
        return order.get(tag.rstrip(")"), 99), 0 if head == "clean" else 2 if head == "worst case" else 1, first[c]

    columns.sort(key=key)
    return rows, columns


def _norm_text(cfg: ExperimentConfig) -> str:
    from .tgo import Normalisation

    t = cfg.tgo
    return Normalisation(t.layer_reduce, t.neuron_reduce, t.hinge, t.potential).label()


def _pct(v: Any, digits: int = 2) -> str:
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{100 * v:.{digits}f}"


def format_markdown(spec: StudySpec, rows: list[dict], columns: list[str], meta: dict) -> str:
    """``study.md``: Table 1 layout (rows = models, columns = attacks tagged with their protocol)."""
    ev = spec.evaluation
    lines = [f"# Study {spec.name}", ""]
    if spec.description:
        lines += [spec.description, ""]
    per = meta.get("n_per_protocol", {})
    lines += [f"Robust accuracy (%) at eps {meta['eps_label']} on class-balanced {ev['split']} images (seed "
              f"{ev['seed']}). Column tags: " + "; ".join(f"**({p.tag})** = `{p.name}` protocol on "
                                                          f"{per.get(p.tag, meta['n_samples'])} images"
                                                          for p in spec.protocols)
              + f". The near-threshold share and the BN control use {meta['n_samples']} images.", ""]
    head = ["training", "model", *columns]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["training"], r["model"]] + [_pct(r["accuracy"].get(c)) if c in r["accuracy"] else
                                                ("skip" if c in r["skipped"] else "–") for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    paper_rows = [r for r in rows if r["paper"]]
    if paper_rows:
        pcols = list(dict.fromkeys(k for r in paper_rows for k in r["paper"]))
        lines += ["", "The paper's numbers for the same rows (%, arXiv 2602.20548, Tables 1 and 3-4; its protocol "
                  "as far as the text "
                  "says: no EoT in Table 1):", "", "| training | model | " + " | ".join(pcols) + " |",
                  "|" + "---|" * (len(pcols) + 2)]
        for r in paper_rows:
            lines.append(f"| {r['training']} | {r['model']} | " +
                         " | ".join(f"{r['paper'][c]:.2f}" if c in r["paper"] else "–" for c in pcols) + " |")
    k = spec.control.get("k")
    att = spec.control.get("attack") or ""
    lines += ["", "Constraint, noise and the near-threshold share (|U - V_th| < delta, all layers and steps, as the "
              "model runs) next to the BN-rescaled control (every BatchNorm scaled by k about V_th: first-step "
              "spikes unchanged, share falls; a lower share alone is not robustness):", "",
              f"| model | neuron | normalisation | lambda_max | grad ratio | share | share vs ref | "
              f"control k={k}: share | control clean | control {att.upper() or 'attack'} | {att.upper() or 'attack'} "
              "(model) | audit |", "|" + "---|" * 12]
    for r in rows:
        c = r["bn_control"] or {}
        gr = f"{r['grad_ratio']:.3g}" if isinstance(r.get("grad_ratio"), (int, float)) else "–"
        red = "ref" if r["run"] == spec.evaluation.get("reference") else \
            f"{-100 * r['share_reduction']:+.1f}%" if r.get("share_reduction") is not None else "–"
        lam = f"{r['lambda_max']:.4g}" if r["lambda_max"] is not None else "–"
        audit = "–" if not r["audit"] else r["audit"]["verdict"] + (
            f" ({', '.join(r['audit']['warnings'])})" if r["audit"]["warnings"] else "")
        lines.append(f"| {r['model']} ({r['training']}) | {r['neuron']} | {r['normalisation'] or '–'} | {lam} | {gr} "
                     f"| {_pct(r['near_threshold'])} | {red} | {_pct(c.get('share_rescaled'))} | "
                     f"{_pct(c.get('clean_rescaled'))} | {_pct(c.get('attacked_rescaled'))} | {_pct(c.get('attacked'))} "
                     f"| {audit} |")
    lines += ["", "Protocols:"]
    for p in spec.protocols:
        lines.append(f"- **{p.name} ({p.tag})**: {p.description}.")
        for g in p.groups:
            lines.append(f"  - group `{g.name}`: {', '.join(g.attacks)}; {g.describe()}")
    skipped = {(k, why) for r in rows for k, why in r["skipped"].items()}
    if skipped:
        lines += ["", "Skipped (the engine's reasons): " + "; ".join(f"{k}: {why}" for k, why in sorted(skipped)) + "."]
    lines += ["", "Normalisation = layers/neurons/hinge/potential (see `spikeguard.tgo.constraint`); grad ratio = "
              "||lambda grad L_mc|| / ||grad L_task|| on one training batch after the last epoch. Noisy models: where a "
              "group has several judging passes (the strong protocol), accuracies are means over them.",
              "", f"Made by `{spec.command_text()}` ({meta['date']}, spikeguard {meta['version']}, "
              f"{meta['device']}); every number above is read from the run folders under `runs/`."]
    return "\n".join(lines) + "\n"


def study_html(spec: StudySpec, rows: list[dict], columns: list[str]) -> str:
    """The comparison tables for the HTML report (the same numbers as ``study.md``)."""
    from .analysis.report import table

    def acc(r: dict, c: str) -> Any:
        return r["accuracy"].get(c, "skip" if c in r["skipped"] else None)

    import html

    tags = "; ".join(f"({p.tag}) = {p.name} protocol" for p in spec.protocols)
    parts = [f"<h2>Study {html.escape(spec.name)}</h2><p>{html.escape(spec.description)}</p>"
             f"<p class=meta>Robust accuracy; column tags: {tags}. "
             "Details, protocols and settings: study.md.</p>",
             table(["training", "model", *columns], [[r["training"], r["model"], *(acc(r, c) for c in columns)]
                                                      for r in rows], pct_cols=range(2, 2 + len(columns))),
             table(["model", "neuron", "normalisation", "lambda_max", "grad ratio", "near-threshold share",
                    f"BN control (k={spec.control.get('k')}) share", "audit"],
                   [[f"{r['model']} ({r['training']})", r["neuron"], r["normalisation"], r["lambda_max"],
                     r["grad_ratio"], r["near_threshold"], (r["bn_control"] or {}).get("share_rescaled"),
                     (r["audit"] or {}).get("verdict")] for r in rows], pct_cols=(5, 6))]
    return "\n".join(parts)


def plot_study(rows: list[dict], columns: list[str], spec: StudySpec, out: Path) -> list[Path]:
    """``figures/accuracy.png`` (paper vs strong per attack and model) and ``figures/near_threshold.png``."""
    import numpy as np

    from .analysis.plotting import color, new_figure, save_figure

    fdir = ensure_dir(out / "figures")
    written: list[Path] = []
    if columns and rows:
        fig, axes = new_figure((max(6.0, 0.55 * len(columns) * max(1, len(rows)) / 2 + 3), 3.8))
        ax = axes[0][0]
        w = 0.8 / len(rows)
        xs = np.arange(len(columns))
        for i, r in enumerate(rows):
            vals = [100 * r["accuracy"][c] if c in r["accuracy"] else np.nan for c in columns]
            ax.bar(xs + (i - (len(rows) - 1) / 2) * w, vals, w, label=f"{r['training']} {r['model']}", color=color(i))
        ax.set_xticks(xs, columns, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("accuracy (%)")
        ax.set_title(f"{spec.name}: accuracy per attack, (tag) = protocol")
        ax.legend(fontsize=7, ncol=2)
        written += save_figure(fig, fdir / "accuracy.png")
    have = [r for r in rows if r["near_threshold"] is not None]
    if have:
        fig, axes = new_figure((max(5.0, 1.1 * len(have) + 2), 3.4))
        ax = axes[0][0]
        xs = np.arange(len(have))
        ax.bar(xs - 0.2, [100 * r["near_threshold"] for r in have], 0.4, label="model", color=color(0))
        ctrl = [100 * (r["bn_control"] or {}).get("share_rescaled", np.nan) for r in have]
        ax.bar(xs + 0.2, ctrl, 0.4, label=f"BN-rescaled control (k={spec.control.get('k')})", color=color(1))
        ax.set_xticks(xs, [f"{r['training']}\n{r['model']}" for r in have], fontsize=7)
        ax.set_ylabel("near-threshold share (%)")
        ax.legend(fontsize=7)
        written += save_figure(fig, fdir / "near_threshold.png")
    return written


# --------------------------------------------------------------------------------------- driver
def run_study(spec: StudySpec, out_dir: str | Path, budget: str | float | None = None, progress: bool = True,
              log: Log = print, report: bool = True) -> dict:
    """Run every stage of ``spec`` in ``out_dir`` (see the module docstring); returns ``study.json``'s content."""
    from .calibration import calibrate_lambda, settings_from_dict
    from .checkpoint import load_run, read_run_config
    from .experiment import RESULTS_FILE, _config_diff, run_experiment
    from .utils import resolve_device

    out = ensure_dir(out_dir)
    t0 = time.perf_counter()
    n_stages = 5
    log(f"[study {spec.name}] {len(spec.runs)} runs x protocols {', '.join(p.name for p in spec.protocols)} -> {out}")

    # 1. plan
    log(f"[study] stage 1/{n_stages}: plan" + (f" (budget {budget})" if budget is not None else ""))
    plan = None
    if budget is not None:
        budget_s = parse_duration(budget) if isinstance(budget, str) else float(budget)
        plan = plan_epochs(spec, out, budget_s, log, progress)
        _apply_plan_and_calibration(spec, plan, None)

    # 2. calibration
    cal_runs = [r for r in spec.runs if r.calibrate]
    calibration = None
    if cal_runs:
        log(f"[study] stage 2/{n_stages}: calibration of lambda_max for {', '.join(r.name for r in cal_runs)}")
        settings = settings_from_dict(spec.calibration)
        cal_path = _calibration_path(out)
        if cal_path.is_file():
            calibration = json.loads(cal_path.read_text(encoding="utf-8"))
            log(f"[calibrate] reusing {cal_path}: lambda_max {calibration['lambda_max']:.4g}")
        else:
            calibration = calibrate_lambda(cal_runs[0].config, out / "calibration", settings, progress=progress,
                                           log=log)
        _apply_plan_and_calibration(spec, None, calibration)
    else:
        log(f"[study] stage 2/{n_stages}: calibration: none asked for")

    # 3. training
    log(f"[study] stage 3/{n_stages}: training")
    for i, r in enumerate(spec.runs):
        d = out / "runs" / r.name
        tag = f"  run {i + 1}/{len(spec.runs)} '{r.name}'"
        if (d / "config.json").is_file():
            saved, _ = read_run_config(d)
            diff = _config_diff(config_to_dict(r.config), config_to_dict(saved))
            if diff:
                raise ConfigError(f"{d} holds run {r.name!r} with other settings ({', '.join(diff[:5])}); "
                                  "use another --out or remove that folder")
        if (d / RESULTS_FILE).is_file():
            log(f"{tag}: finished before, reused")
            continue
        resume = (d / "config.json").is_file()
        log(f"{tag}: {'resuming' if resume else 'training'} ({r.config.strategy}, {_neuron_text(r.config)}, "
            f"TGO {'on, lambda_max ' + format(r.config.tgo.lambda_max, '.4g') if r.config.tgo.enabled else 'off'}, "
            f"{r.config.optim.epochs} epochs)")
        run_experiment(None if resume else copy.deepcopy(r.config), d, resume=resume, progress=progress)

    # 4. evaluation
    log(f"[study] stage 4/{n_stages}: evaluation ({', '.join(p.name for p in spec.protocols)}, "
        f"{spec.evaluation['n_samples'] or 'all'} images)")
    ev = spec.evaluation
    device = None
    data_cache: dict[str, Any] = {}
    models: dict[str, Any] = {}
    n_eval: dict[str, int] = {}
    for i, r in enumerate(spec.runs):
        d = out / "runs" / r.name
        # evaluate where the run was trained (a GPU study attacks on the GPU; load_run alone loads to CPU)
        run_device = resolve_device(r.config.device)
        model = load_run(d, device=run_device).model.eval()
        device = next(model.parameters()).device
        models[r.name] = model

        def images(n: int = 0):
            key = json.dumps([config_to_dict(r.config.data), n], sort_keys=True)
            if key not in data_cache:
                data_cache[key] = _eval_images(r.config, ev, n)
            ds = data_cache[key]
            return ds, ds.float_images().to(device), ds.labels.to(device)

        ds, x, y = images()
        n_eval["study"] = len(y)
        log(f"  run {i + 1}/{len(spec.runs)} '{r.name}': share and BN control")
        _share_and_control(model, ds, x, y, r.config, spec, d, log)
        source = None
        if r.source:
            source = models.get(r.source) or load_run(out / "runs" / r.source, device=device).model.eval()
        for prot in spec.protocols:
            _, xp, yp = images(prot.n_samples) if prot.n_samples else (ds, x, y)
            n_eval[prot.tag] = len(yp)
            for g in prot.groups:
                log(f"  run {i + 1}/{len(spec.runs)} '{r.name}': {prot.name}/{g.name} ({', '.join(g.attacks)}, "
                    f"{len(yp)} images)")
                _run_group(model, xp, yp, g, prot, ev, d, source if "transfer" in g.attacks else None,
                           r.source if "transfer" in g.attacks else "", device, log, progress,
                           command=spec.command_text(),
                           data_info={"name": r.config.data.name, "split": ev["split"], "n_samples": len(yp),
                                      "seed": int(ev["seed"])})

    # 5. tables, figures, report
    log(f"[study] stage 5/{n_stages}: tables, figures and report")
    meta = _meta(spec, n_eval, _device_text(device))
    return write_comparison(spec, out, meta, plan=plan, calibration=calibration, report=report, log=log, t0=t0)


def _meta(spec: StudySpec, n_eval: dict[str, int], device: str, date: str | None = None) -> dict:
    """The tables' header facts: eps, image counts (``study`` = share/control, else per protocol tag), date, device."""
    import datetime as _dt

    from . import __version__
    from .utils import eps_label

    eps = float(spec.evaluation["eps"])
    return {"eps": eps, "eps_label": eps_label(eps), "n_samples": n_eval.get("study"),
            "n_per_protocol": {t: n for t, n in n_eval.items() if t != "study"},
            "date": date or _dt.date.today().isoformat(), "version": __version__, "device": device}


def _device_text(device) -> str:
    """``cuda:0 (NVIDIA H200), torch 2.11`` / ``cpu, torch 2.13.0``: where a number was measured."""
    import torch

    name = f" ({torch.cuda.get_device_name(device)})" if device is not None and torch.device(device).type == "cuda" \
        else ""
    return f"{device}{name}, torch {torch.__version__}"


def pending_work(spec: StudySpec, out: Path) -> list[str]:
    """What the study folder does not hold yet: runs not trained, shares and groups not evaluated."""
    from .experiment import RESULTS_FILE

    missing = []
    for r in spec.runs:
        d = out / "runs" / r.name
        if not (d / RESULTS_FILE).is_file():
            missing.append(f"{r.name}: training")
            continue
        if not _share_path(d).is_file():
            missing.append(f"{r.name}: share and BN control")
        missing += [f"{r.name}: {p.name}/{g.name}" for p in spec.protocols for g in p.groups
                    if not group_result_path(d, p, g).is_file()]
    return missing


def write_comparison(spec: StudySpec, out: Path, meta: dict, *, plan: dict | None = None,
                     calibration: dict | None = None, report: bool = True, log: Log = print,
                     t0: float | None = None) -> dict:
    """Stage 5: ``study.md``, ``study.json``, the figures and the HTML report from the run folders.

    Unfinished work (:func:`pending_work`) is listed in both files as "not finished", never
    filled in, so a table written from an interrupted study says what it lacks.
    """
    t0 = time.perf_counter() if t0 is None else t0
    pending = pending_work(spec, out)
    rows, columns = build_rows(spec, out)
    md = format_markdown(spec, rows, columns, meta)
    if pending:
        md += ("\n**Not finished** when this was written (the table shows what had finished; rerun the study "
               "with the same `--out` to complete it): " + "; ".join(pending) + ".\n")
    doc = {"study": spec.name, "description": spec.description, "file": str(spec.path) if spec.path else None,
           "command": spec.command_text(), "meta": meta,
           "protocols": [asdict(p) for p in spec.protocols], "columns": columns, "rows": rows,
           "plan": plan, "calibration": calibration and {k: calibration[k] for k in
                                                         ("lambda_max", "reached", "target_reduction", "trials")},
           "complete": not pending, "pending": pending, "seconds": time.perf_counter() - t0}
    atomic_write_json(out / STUDY_JSON, doc)
    atomic_write_text(out / STUDY_MD, md)
    figs = plot_study(rows, columns, spec, out)
    if report:
        from .analysis.report import build_report

        build_report([out / "figures"] + [d for d in (out / "runs" / r.name for r in spec.runs) if d.is_dir()],
                     out / "report.html", title=f"spikeguard study {spec.name}",
                     preface=study_html(spec, rows, columns))
    log(md)
    log(f"[study] wrote {out / STUDY_MD}, {out / STUDY_JSON}, {len(figs)} figures"
        + (f", {out / 'report.html'}" if report else "") + f" in {time.perf_counter() - t0:.0f} s"
        + (f"; {len(pending)} item(s) not finished" if pending else ""))
    return doc


def summarize_study(spec: StudySpec, out_dir: str | Path, report: bool = True, log: Log = print) -> dict:
    """Stage 5 alone (``spikeguard study --tables-only``): the comparison from what the folder holds.

    Nothing is trained or attacked; the plan's epochs and the calibrated lambda_max are read back
    from ``plan.json`` and ``calibration/calibration.json``, the image counts and the device from
    the finished evaluations. Used on an interrupted study (a GPU window that ran out, a CPU
    session that ended) and while a study is still running in another process.
    """
    out = Path(out_dir)
    if not out.is_dir():
        raise ConfigError(f"study folder {out} does not exist")
    plan_path, cal_path = out / PLAN_JSON, _calibration_path(out)
    plan = json.loads(plan_path.read_text(encoding="utf-8")) if plan_path.is_file() else None
    calibration = json.loads(cal_path.read_text(encoding="utf-8")) if cal_path.is_file() else None
    _apply_plan_and_calibration(spec, plan, calibration)
    n_eval: dict[str, int] = {}
    device, date = None, None
    for r in spec.runs:
        d = out / "runs" / r.name
        if _share_path(d).is_file():
            n_eval.setdefault("study", int(json.loads(_share_path(d).read_text())["key"]["n"]))
        for p in spec.protocols:
            for g in p.groups:
                f = group_result_path(d, p, g)
                if f.is_file():
                    g_doc = json.loads(f.read_text(encoding="utf-8"))
                    n_eval.setdefault(p.tag, int(g_doc["settings"]["n"]))
                    prov = g_doc.get("provenance", {})
                    date = date or (prov.get("date") or "")[:10] or None
                    device = device or prov.get("device")
    meta = _meta(spec, n_eval, f"{device or 'device not recorded'}; tables written with --tables-only", date)
    log(f"[study {spec.name}] tables only, from {out}")
    return write_comparison(spec, out, meta, plan=plan, calibration=calibration, report=report, log=log)


__all__ = ["RunSpec", "StudySpec", "load_study", "run_study", "summarize_study", "write_comparison", "pending_work",
           "group_result_path",
           "plan_epochs", "parse_duration", "build_rows", "format_markdown", "plot_study"]
