"""The study's stages: plan, calibration, training, evaluation; :func:`run_study` and ``--tables-only``."""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Any

import datetime as _dt

import torch

from ..._version import __version__
from ...analysis.bn_control import bn_rescale_control
from ...analysis.membrane import potential_histogram
from ...checkpoint import CONFIG_FILE, MODEL_FILE, load_run, run_config_diff
from ...data import load_dataset
from ..train import RESULTS_FILE, build_datasets, run_experiment
from ..calibration import RESULT_FILE as CALIBRATION_FILE, calibrate_lambda, reuse_calibration, settings_from_dict
from ...utils import eps_label, resolve_device
from .tables import neuron_text
from ...config import ExperimentConfig, config_to_dict
from ...errors import ConfigError, SpikeguardError
from ...evaluation.results import checkpoint_id, evaluation_provenance, robustness_document
from ...evaluation.sharded import journal_key
from ...io import atomic_write_json, ensure_dir
from ..evaluate import attack_and_audit
from ..output import write_result
from ...protocols import Protocol
from .spec import (
    PLAN_JSON,
    Log,
    RunSpec,
    StudySpec,
    apply_plan_and_calibration,
    calibrated_rows,
    calibration_dir,
    calibration_path,
    parse_duration,
    restrict,
    result_path,
    share_path,
)
from .tables import write_comparison


# --------------------------------------------------------------------------------------- plan
def _train_size(cfg: ExperimentConfig) -> int:

    train, _ = build_datasets(cfg)
    return len(train)


def _probe(r: RunSpec, out: Path, probe_images: int, progress: bool, log: Log, tag: str) -> float:
    """Seconds of one full training epoch of ``r``, measured on ``probe_images`` images (0 = all)."""

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
    log(f"[plan] probe {tag} '{r.name}': one epoch on {n} of {full} training images")
    if not (d / RESULTS_FILE).is_file():
        run_experiment(cfg, d, resume=(d / CONFIG_FILE).is_file(), progress=progress)
    res = json.loads((d / RESULTS_FILE).read_text(encoding="utf-8"))
    return float(res["train_seconds"]) * full / max(n, 1)


def plan_epochs(spec: StudySpec, out: Path, budget_s: float, log: Log, progress: bool = False) -> dict:
    """Choose ``optim.epochs`` for every run so that training fits ``(1 - eval_reserve) * budget``.

    One run per row (its first seed) is timed on one probe epoch (``budget.probe_images`` images,
    0 = its whole training set) in ``OUT/.probe/NAME``; a row's cost is that times its number of
    seeds; the probe time counts against the budget. The choice is written to ``OUT/plan.json``
    and reused when the study is run again (so interrupted runs resume).
    """
    plan_path = out / PLAN_JSON
    if plan_path.is_file():
        plan = json.loads(plan_path.read_text(encoding="utf-8"))
        log(
            f"[plan] reusing {plan_path}: {plan['epochs']} epochs per run (chosen for a {plan['budget_s']:.0f} s "
            "budget when the study first ran)"
        )
        return plan
    t0 = time.perf_counter()
    rows = spec.rows()
    per_epoch: dict[str, float] = {}
    total = 0.0
    for i, row in enumerate(rows):
        runs = [r for r in spec.runs if r.row == row]
        per_epoch[row] = _probe(runs[0], out, int(spec.budget["probe_images"]), progress, log, f"{i + 1}/{len(rows)}")
        total += per_epoch[row] * len(runs)
    spent = time.perf_counter() - t0
    reserve = float(spec.budget["eval_reserve"])
    train_budget = budget_s * (1.0 - reserve) - spent
    epochs = max(1, int(train_budget // total)) if total > 0 else 1
    plan = {
        "budget_s": budget_s,
        "eval_reserve": reserve,
        "probe_seconds": spent,
        "seconds_per_epoch": per_epoch,
        "train_budget_s": train_budget,
        "epochs": epochs,
        "estimated_train_s": epochs * total,
    }
    atomic_write_json(plan_path, plan)
    log(
        f"[plan] budget {budget_s:.0f} s: probes took {spent:.0f} s, one epoch of every run takes {total:.1f} s "
        f"({', '.join(f'{k} {v:.1f} s' for k, v in per_epoch.items())} per seed); {100 * reserve:.0f}% kept for "
        f"evaluation -> {epochs} epochs per run (about {epochs * total:.0f} s of training)"
        + ("; the budget does not cover one epoch of every run, so 1 is used" if train_budget < total else "")
    )
    return plan


# --------------------------------------------------------------------------------------- calibration, training
def _calibrate(spec: StudySpec, out: Path, progress: bool, log: Log, rows: list[str] | None = None) -> dict[str, dict]:
    """lambda_max once per calibrated row (on its first seed's config); the pick applies to all its seeds.

    Only ``rows`` (default: every calibrated row) are calibrated; the others' finished calibrations are read.
    """

    calibrations: dict[str, dict] = {}
    for row in calibrated_rows(spec):
        path = calibration_path(spec, out, row)
        if path.is_file():
            calibrations[row] = json.loads(path.read_text(encoding="utf-8"))
            if rows is None or row in rows:
                log(f"[calibrate] '{row}': reusing {path}: lambda_max {calibrations[row]['lambda_max']:.4g}")
            continue
        if rows is not None and row not in rows:
            continue
        base = next(r for r in spec.runs if r.row == row).config
        if spec.calibration_from is not None:
            calibrations[row] = reuse_calibration(
                copy.deepcopy(base),
                _reuse_source(spec.calibration_from, row),
                calibration_dir(spec, out, row),
                settings_from_dict(spec.calibration),
                log=log,
            )
            continue
        log(
            f"[calibrate] '{row}': lambda_max for a {100 * float(spec.calibration.get('target_reduction', 0.4)):.0f}% "
            f"near-threshold share cut -> {calibration_dir(spec, out, row)}"
        )
        calibrations[row] = calibrate_lambda(
            copy.deepcopy(base),
            calibration_dir(spec, out, row),
            settings_from_dict(spec.calibration),
            progress=progress,
            log=log,
        )
    return calibrations


def _reuse_source(folder: Path, row: str) -> Path:
    """Row ``row``'s calibration in another study's results ``folder``: ``calibration/ROW``, or
    ``calibration`` (a study with one calibrated row); its trials are checked against this row's anyway."""
    per_row = folder / "calibration" / row
    return (
        per_row
        if (per_row / CALIBRATION_FILE).is_file() or not (folder / "calibration" / CALIBRATION_FILE).is_file()
        else folder / "calibration"
    )


def _neuron_text(cfg: ExperimentConfig) -> str:

    return neuron_text(cfg)


def _calibration_twin(spec: StudySpec, out: Path, r: RunSpec, calibrations: dict[str, dict]) -> Path | None:
    """The calibration trial that already trained run ``r``: the chosen lambda's trial at ``r``'s seed,
    finished and with the same settings and seed: a run of exactly this config (on CPU bit-identical to
    retraining it; measured on cifar10k-verdict's tgo-s0)."""

    cal = calibrations.get(r.row) if r.calibrate else None
    if not cal:
        return None
    for name in (cal.get("chosen") or {}).get("runs") or []:
        d = calibration_dir(spec, out, r.row) / str(name)
        if not name.endswith(f"-s{r.config.seed}") or not (d / RESULTS_FILE).is_file():
            continue
        if not run_config_diff(r.config, d):
            return d
    return None


def _train(spec: StudySpec, out: Path, progress: bool, log: Log, calibrations: dict[str, dict] | None = None) -> None:
    """Train every run (a finished one reused, an interrupted one resumed, other settings refused);
    a calibrated run whose chosen calibration trial has its exact settings is copied from that trial."""

    for i, r in enumerate(spec.runs):
        d = out / "runs" / r.name
        tag = f"  run {i + 1}/{len(spec.runs)} '{r.name}'"
        twin = None if d.exists() else _calibration_twin(spec, out, r, calibrations or {})
        if twin is not None:
            shutil.copytree(twin, d)
            log(f"{tag}: the calibration trained it ({twin}, the same settings): copied, not retrained")
            continue
        if (d / CONFIG_FILE).is_file():
            # the name is a label (a run trained by `spikeguard train` into this layout is reused)
            diff = run_config_diff(r.config, d)
            if diff:
                raise ConfigError(
                    f"{d} holds run {r.name!r} with other settings ({', '.join(diff[:5])}); "
                    "use another --out or remove that folder"
                )
        if (d / RESULTS_FILE).is_file():
            log(f"{tag}: finished before, reused")
            continue
        resume = (d / CONFIG_FILE).is_file()
        log(
            f"{tag}: {'resuming' if resume else 'training'} ({r.config.strategy}, {_neuron_text(r.config)}, "
            f"TGO {'on, lambda_max ' + format(r.config.tgo.lambda_max, '.4g') if r.config.tgo.enabled else 'off'}, "
            f"seed {r.config.seed}, {r.config.optim.epochs} epochs)"
        )
        run_experiment(None if resume else copy.deepcopy(r.config), d, resume=resume, progress=progress)


# --------------------------------------------------------------------------------------- evaluation
def _eval_images(cfg: ExperimentConfig, ev: dict, n_samples: int | None = None):
    """The evaluation images: class-balanced, drawn with the study's evaluation seed (the same for every seed)."""

    d = cfg.data
    n = int(ev["n_samples"]) if not n_samples else int(n_samples)
    return load_dataset(
        d.name,
        ev["split"],
        root=d.root or None,
        cache_dir=d.cache_dir or None,
        subset=n,
        seed=int(ev["seed"]),
        verify=d.verify_md5,
        **d.options,
    )


def _weights_id(run_dir: Path) -> str | None:
    """The weights' content hash (:func:`checkpoint_id`): a result belongs to these bytes, wherever the
    folder was cloned, copied or moved to (a file's size and mtime, used before 0.2.1, change with a clone)."""
    return checkpoint_id(run_dir / MODEL_FILE)


def _attack_settings(settings: dict) -> dict:
    """A group's settings less the audit's (what its attacks' results depend on)."""
    return {k: v for k, v in settings.items() if k not in ("audit", "audit_steps")}


def _same_settings(old: dict, settings: dict) -> bool:
    """Whether a group result written earlier was measured with ``settings`` (an audit it holds
    and ``settings`` does not ask for is not a difference).

    A result written before 0.2.1 names its weights by ``[size, mtime_ns]``; its provenance records the
    content hash of the weights it was measured on, which is compared instead.
    """
    saved = dict(old.get("settings") or {})
    if isinstance(saved.get("weights"), list):
        saved["weights"] = (old.get("provenance") or {}).get("checkpoint_id")
    if _attack_settings(saved) != _attack_settings(settings):
        return False
    # a result with an audit serves a request without one (the attacks' results are the same)
    return not settings.get("audit") or (
        bool(saved.get("audit")) and saved.get("audit_steps") == settings["audit_steps"]
    )


def _group_settings(group, ev: dict, eps: float, run_dir: Path, n: int, source_name: str) -> dict:
    """The settings a group's result (and its journal) belongs to, as read back from its JSON."""
    settings = {
        "weights": _weights_id(run_dir),
        "attacks": list(group.attacks),
        "eps": eps,
        "eot": group.eot,
        "passes": group.passes,
        "alpha": group.alpha,
        "attack_kw": {k: dict(v) for k, v in group.attack_kw.items()},
        "n": n,
        "batch_size": int(ev["batch_size"]),
        "seed": int(ev["seed"]),
        "source": source_name,
        "audit": group.audit,
        "audit_steps": group.audit_steps,
        "individual": group.individual,
    }
    return json.loads(json.dumps(settings))  # tuples -> lists, as read back from the file


def _group_document(
    report: Any,
    audit: Any,
    group,
    protocol: Protocol,
    settings: dict,
    run_dir: Path,
    source_name: str,
    device,
    command: str,
    data_info: dict | None,
) -> dict:
    """A group's result document (model name ``RUN [PROTOCOL]``, the group's settings, the audit when run)."""
    prov = evaluation_provenance(
        command=command,
        checkpoint=run_dir,
        report=report,
        data=data_info,
        study_protocol=protocol.name,
        study_group=group.name,
        device=_device_text(device),
    )
    doc = robustness_document(
        report,
        prov,
        model=f"{run_dir.name} [{protocol.name}]",
        per_sample=True,
        protocol=protocol.name,
        group=group.name,
        note=group.note,
        settings=settings,
        source=source_name or None,
    )
    _add_fresh_worst_case(doc, report)
    if audit is not None:
        doc["audit"] = audit.to_dict()
    return doc


def _run_group(
    model,
    x,
    y,
    group,
    protocol: Protocol,
    ev: dict,
    eps: float,
    path: Path,
    run_dir: Path,
    source,
    source_name: str,
    device,
    log: Log,
    progress: bool,
    command: str = "spikeguard study",
    data_info: dict | None = None,
) -> dict:
    """One protocol group on one model at one eps through the engine; its JSON is reused when the settings match.

    The result is written to ``path`` in the one result schema (``spikeguard.evaluation.results``,
    model name ``RUN [PROTOCOL]``) with the group's settings, so ``spikeguard report`` reads it;
    the per-sample flags the study's paired statistics need are kept in it.
    """
    eps = float(eps)
    settings = _group_settings(group, ev, eps, run_dir, int(len(y)), source_name)
    folder = ensure_dir(path.parent)
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        if _same_settings(old, settings):
            log(f"    {protocol.name}/{group.name}: finished before, reused ({path})")
            return old
    # the journal holds the attacks' finished batches, which do not depend on the audit's settings
    journal = folder / f".journal-{group.name}-{journal_key(_attack_settings(settings))}"
    t0 = time.perf_counter()
    report, audit = attack_and_audit(
        model,
        x,
        y,
        list(group.attacks),
        journal=journal,
        audit_steps=group.audit_steps if group.audit else None,
        audit_alpha=group.alpha,
        progress=progress,
        eps=eps,
        eot=group.eot,
        passes=group.passes,
        alpha=group.alpha,
        batch_size=int(ev["batch_size"]),
        seed=int(ev["seed"]),
        source=source,
        attack_kw=settings["attack_kw"],
        device=device,
        individual=group.individual,
    )
    doc = _group_document(report, audit, group, protocol, settings, run_dir, source_name, device, command, data_info)
    write_result(path, doc, journal)
    log(
        f"    {protocol.name}/{group.name}: {len(group.attacks)} attacks on {len(y)} images in "
        f"{time.perf_counter() - t0:.1f} s; worst case {100 * report.accuracy('worst_case'):.2f}%"
        + (f"; audit {doc['audit']['verdict']}" if group.audit else "")
        + (f"; skipped {', '.join(report.skipped)}" if report.skipped else "")
    )
    return doc


def _share_and_control(model, ds, x, y, cfg: ExperimentConfig, spec: StudySpec, run_dir: Path, log: Log) -> dict:
    """Near-threshold share (as the model runs, noise seeded) and the BN-rescaled control; cached in the run folder.

    The control's attack runs at the study's first eps.
    """

    path = share_path(run_dir)
    key = {
        "weights": _weights_id(run_dir),
        "n": int(len(y)),
        "seed": int(spec.evaluation["seed"]),
        "control": dict(spec.control),
        "delta": cfg.tgo.delta,
        "eps": float(spec.evaluation["eps"]),
    }
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        if old.get("key") == key:
            return old
    device = x.device
    hist = potential_histogram(
        model,
        ds,
        v_threshold=cfg.neuron.v_threshold,
        delta=cfg.tgo.delta,
        batch_size=int(spec.evaluation["batch_size"]),
        device=device,
        seed=int(spec.evaluation["seed"]),
    )
    doc: dict = {"key": key, "near_threshold": hist.near_threshold, "layer_near_threshold": hist.layer_near_threshold()}
    k = float(spec.control.get("k") or 0)
    if k > 0:
        try:
            doc["bn_control"] = bn_rescale_control(
                model,
                x,
                y,
                k,
                delta=cfg.tgo.delta,
                attack=spec.control.get("attack") or None,
                eps=float(spec.evaluation["eps"]),
                seed=int(spec.evaluation["seed"]),
                batch_size=int(spec.evaluation["batch_size"]),
            )
        except SpikeguardError as e:  # e.g. a model without BatchNorm: the control does not apply
            doc["bn_control"] = {"skipped": str(e)}
    atomic_write_json(path, doc)
    return doc


def _add_fresh_worst_case(doc: dict, report: Any) -> None:
    """Per sample, the fraction of passes robust to every fresh-noise attack (the paired statistics need it).

    The engine's summary has ``worst_case_fresh_noise`` when a known-noise attack ran; its
    per-sample list is added here from the in-memory report when the document lacks it.
    """
    rep = doc.get("report") or {}
    ps = rep.get("per_sample")
    if "worst_case_fresh_noise" not in rep or not isinstance(ps, dict) or "worst_case_fresh_noise" in ps:
        return
    names = list(rep["worst_case_fresh_noise"].get("attacks") or report.fresh_noise_names())
    ps["worst_case_fresh_noise"] = [round(v, 4) for v in report.worst_case(names).float().mean(0).tolist()]


def _evaluate_run(
    spec: StudySpec, out: Path, i: int, r: RunSpec, models: dict, images, n_eval: dict, progress: bool, log: Log
):
    """Share, BN control and every protocol group at every eps of one run; returns its device."""

    ev = spec.evaluation
    d = out / "runs" / r.name
    # evaluate where the run was trained (a GPU study attacks on the GPU; load_run alone loads to CPU)
    model = load_run(d, device=resolve_device(r.config.device)).model.eval()
    device = next(model.parameters()).device
    models[r.name] = model
    ds, x, y = images(r, device)
    n_eval["study"] = len(y)
    tag = f"  run {i + 1}/{len(spec.runs)} '{r.name}'"
    log(f"{tag}: share and BN control")
    _share_and_control(model, ds, x, y, r.config, spec, d, log)
    source = None
    if r.source:
        source = models.get(r.source) or load_run(out / "runs" / r.source, device=device).model.eval()
    for prot in spec.protocols:
        _, xp, yp = images(r, device, prot.n_samples) if prot.n_samples else (ds, x, y)
        n_eval[prot.tag] = len(yp)
        for eps in spec.eps_list():
            for g in prot.groups:
                if g.audit and not g.audits_at(eps):  # the audit at the group's audit_eps only
                    g = dataclasses.replace(g, audit=False)
                transfer = "transfer" in g.attacks
                log(f"{tag}: {prot.name}/{g.name} at eps {eps_label(eps)} ({', '.join(g.attacks)}, {len(yp)} images)")
                _run_group(
                    model,
                    xp,
                    yp,
                    g,
                    prot,
                    ev,
                    eps,
                    result_path(spec, d, prot, g, eps),
                    d,
                    source if transfer else None,
                    r.source if transfer else "",
                    device,
                    log,
                    progress,
                    command=spec.command_text(),
                    data_info={
                        "name": r.config.data.name,
                        "split": ev["split"],
                        "n_samples": len(yp),
                        "seed": int(ev["seed"]),
                    },
                )
    return device


def _evaluate(spec: StudySpec, out: Path, progress: bool, log: Log) -> tuple[dict[str, int], Any]:
    """Stage 4 over every run; the images are drawn once per data setting (the same for every seed)."""
    data_cache: dict[str, Any] = {}
    models: dict[str, Any] = {}
    n_eval: dict[str, int] = {}

    def images(r: RunSpec, device, n: int = 0):
        key = json.dumps([config_to_dict(r.config.data), n], sort_keys=True)
        if key not in data_cache:
            data_cache[key] = _eval_images(r.config, spec.evaluation, n)
        ds = data_cache[key]
        return ds, ds.float_images().to(device), ds.labels.to(device)

    device = None
    for i, r in enumerate(spec.runs):
        device = _evaluate_run(spec, out, i, r, models, images, n_eval, progress, log)
    return n_eval, device


def run_study(
    spec: StudySpec,
    out_dir: str | Path,
    budget: str | float | None = None,
    progress: bool = True,
    log: Log = print,
    report: bool = True,
    seeds: list[int] | None = None,
    rows: list[str] | None = None,
) -> dict:
    """Run every stage of ``spec`` in ``out_dir`` (see :mod:`spikeguard.jobs.study`); returns ``study.json``'s content.

    ``seeds`` and ``rows`` (subsets of the file's) calibrate, train and evaluate only those runs; the
    tables cover the whole study (what is not finished is listed as such).
    """

    out = ensure_dir(out_dir)
    work = restrict(spec, seeds, rows) if (seeds or rows) else spec
    t0 = time.perf_counter()
    n_stages = 5
    seeds_text = f", seeds {spec.seeds}" if spec.seeds else ""
    if seeds or rows:
        only = [f"seeds {sorted(seeds)}"] if seeds else []
        only += [f"rows {', '.join(rows)}"] if rows else []
        seeds_text += f" (this call: {'; '.join(only)}: {len(work.runs)} runs)"
    log(
        f"[study {spec.name}] {len(spec.rows())} rows{seeds_text} ({len(spec.runs)} runs) x protocols "
        f"{', '.join(p.name for p in spec.protocols)} x eps {', '.join(eps_label(e) for e in spec.eps_list())} -> {out}"
    )

    def stage(k: int, text: str) -> None:  # elapsed time on every stage line: how long each stage took
        log(f"[study] stage {k}/{n_stages} (at {time.perf_counter() - t0:.0f} s): {text}")

    stage(1, "plan" + (f" (budget {budget})" if budget is not None else ""))
    plan = None
    if budget is not None:
        budget_s = parse_duration(budget) if isinstance(budget, str) else float(budget)
        plan = plan_epochs(spec, out, budget_s, log, progress)
        apply_plan_and_calibration(spec, plan, None)
    cal_rows = calibrated_rows(work)
    stage(
        2,
        "calibration"
        + (
            f" of lambda_max for {', '.join(cal_rows)} (once per row, for all its seeds)"
            if cal_rows
            else ": none asked for"
        ),
    )
    calibrations = _calibrate(spec, out, progress, log, cal_rows)
    apply_plan_and_calibration(spec, None, calibrations)
    stage(3, "training")
    _train(work, out, progress, log, calibrations)
    stage(
        4, f"evaluation ({', '.join(p.name for p in spec.protocols)}, {spec.evaluation['n_samples'] or 'all'} images)"
    )
    n_eval, device = _evaluate(work, out, progress, log)
    stage(5, "tables, figures and report")
    meta = _meta(spec, n_eval, _device_text(device))
    return write_comparison(spec, out, meta, plan=plan, calibrations=calibrations, report=report, log=log, t0=t0)


def _meta(spec: StudySpec, n_eval: dict[str, int], device: str, date: str | None = None) -> dict:
    """The tables' header facts: eps, image counts (``study`` = share/control, else per protocol tag), date, device."""

    eps = spec.eps_list()
    return {
        "eps": eps[0],
        "eps_label": eps_label(eps[0]),
        "eps_list": eps,
        "eps_labels": [eps_label(e) for e in eps],
        "seeds": list(spec.seeds) if spec.seeds else None,
        "n_samples": n_eval.get("study"),
        "n_per_protocol": {t: n for t, n in n_eval.items() if t != "study"},
        "date": date or _dt.date.today().isoformat(),
        "version": __version__,
        "device": device,
    }


def _device_text(device) -> str:
    """``cuda:0 (NVIDIA H200), torch 2.11`` / ``cpu, torch 2.13.0``: where a number was measured."""

    name = (
        f" ({torch.cuda.get_device_name(device)})" if device is not None and torch.device(device).type == "cuda" else ""
    )
    return f"{device}{name}, torch {torch.__version__}"


def _read_counts(spec: StudySpec, out: Path) -> tuple[dict[str, int], str | None, str | None]:
    """Image counts, device and date recorded by the finished evaluations in ``out``."""
    n_eval: dict[str, int] = {}
    device, date = None, None
    for r in spec.runs:
        d = out / "runs" / r.name
        if share_path(d).is_file():
            n_eval.setdefault("study", int(json.loads(share_path(d).read_text())["key"]["n"]))
        for p in spec.protocols:
            for g in p.groups:
                for e in spec.eps_list():
                    f = result_path(spec, d, p, g, e)
                    if not f.is_file():
                        continue
                    g_doc = json.loads(f.read_text(encoding="utf-8"))
                    n_eval.setdefault(p.tag, int(g_doc["settings"]["n"]))
                    prov = g_doc.get("provenance", {})
                    date = date or (prov.get("date") or "")[:10] or None
                    device = device or prov.get("device")
    return n_eval, device, date


def summarize_study(spec: StudySpec, out_dir: str | Path, report: bool = True, log: Log = print) -> dict:
    """Stage 5 alone (``spikeguard study --tables-only``): the comparison from what the folder holds.

    Nothing is trained or attacked; the plan's epochs and the calibrated lambda_max are read back
    from ``plan.json`` and the calibration folder(s), the image counts and the device from the
    finished evaluations. Used on an interrupted study (a GPU window that ran out, a CPU
    session that ended) and while a study is still running in another process.
    """
    out = Path(out_dir)
    if not out.is_dir():
        raise ConfigError(f"study folder {out} does not exist")
    plan_path = out / PLAN_JSON
    plan = json.loads(plan_path.read_text(encoding="utf-8")) if plan_path.is_file() else None
    calibrations = {
        row: json.loads(calibration_path(spec, out, row).read_text(encoding="utf-8"))
        for row in calibrated_rows(spec)
        if calibration_path(spec, out, row).is_file()
    }
    apply_plan_and_calibration(spec, plan, calibrations)
    n_eval, device, date = _read_counts(spec, out)
    meta = _meta(spec, n_eval, f"{device or 'device not recorded'}; tables written with --tables-only", date)
    log(f"[study {spec.name}] tables only, from {out}")
    return write_comparison(spec, out, meta, plan=plan, calibrations=calibrations, report=report, log=log)
