"""The study's comparison: rows per run and eps, seed means, paired differences, study.md/json, figures.

Statistics (functions in :mod:`spikeguard.evaluation.stats`):

* a run's accuracy: interval over the test samples, each sample's value being the fraction of
  judging passes on which it was robust (Wilson for 0/1 values, Student t over the per-sample
  pass means for a noisy model judged on several passes), so it covers the finite test set and
  the model's noise together;
* a run against its row's baseline (the run's ``baseline``, default the study's ``reference``)
  at the same seed: paired per sample (same images), mean difference with a paired t interval;
* a row: the mean over its seeds with a Student-t interval over the seeds; with one seed, the
  per-sample interval of that seed (the tables say "1 seed").
"""

from __future__ import annotations

import html
import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from ...config import ExperimentConfig
from ...io import atomic_write_json, atomic_write_text, ensure_dir
from .spec import STUDY_JSON, STUDY_MD, Log, RunSpec, StudySpec, pending_work, result_path, share_path
from ...analysis.plotting import color, new_figure, save_figure
from ...analysis.report import build_report, table
from ...attacks.registry import attack_class
from ...errors import SpikeguardError
from ...evaluation.engine import display_name
from ...evaluation.results import read_results
from ...evaluation.stats import paired_difference_ci95, sample_accuracy_ci95, seeds_mean_ci95
from ..train import LOG_FILE, RESULTS_FILE
from ...tgo import Normalisation
from ...utils import eps_label

WORST = "worst case"
FRESH = "worst case, fresh noise"
HEADERS = {
    WORST: "worst case incl. FIXED-NOISE",
    FRESH: "worst case, fresh noise",
    "TRANSFER": "TRANSFER from source",
    "NOISE-FREE": "NOISE-FREE twin",
}
"""``study.md`` headers of columns whose name alone would be ambiguous (see :data:`COLUMN_NOTES`)."""

COLUMN_NOTES = [
    "**TRANSFER from source**: PGD-20 crafted on the row's `source` run (the same seed; e.g. the vanilla model) "
    "and judged on the row's model; a row without a source has none (a deterministic model) or uses its own "
    "noise-free twin.",
    "**NOISE-FREE twin**: PGD crafted on the row's own model with its Noisy-LIF noise switched off (same weights, "
    "sigma = 0), judged on the noisy model.",
    "**worst case, fresh noise**: per sample and judging pass, robust to every attack that does not know the "
    "judging noise draw (the threat model of a deployed noisy model).",
    "**worst case incl. FIXED-NOISE**: the same including FIXED-NOISE, PGD against the very noise draw it is "
    "judged under (a known-noise diagnostic, stronger than any deployed attacker). Equal to the fresh-noise worst "
    "case where no known-noise attack ran (deterministic models).",
]


def neuron_text(cfg: ExperimentConfig) -> str:
    """``LIF``, ``NLIF sigma^2=0.2``: the neuron of a run as the tables show it."""
    n = cfg.neuron
    if n.kind == "lif":
        return "LIF"
    if n.kind == "noisy_lif":
        var = n.sigma**2
        reading = f"sigma^2={var:.3g}" if abs(var - round(var, 3)) < 1e-9 else f"sigma={n.sigma:.3g}"
        return f"NLIF {reading}" + (", expected grad" if n.noisy_grad == "expected" else "")
    return n.kind


def _norm_text(cfg: ExperimentConfig) -> str:
    t = cfg.tgo
    return Normalisation(t.layer_reduce, t.neuron_reduce, t.hinge, t.potential).label()


def _last_log(run_dir: Path) -> dict:
    p = run_dir / LOG_FILE
    rows = [json.loads(x) for x in p.read_text(encoding="utf-8").splitlines() if x.strip()] if p.is_file() else []
    return rows[-1] if rows else {}


def _read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _read_result(path: Path) -> dict:
    """A group's result through the one reader (:func:`spikeguard.evaluation.results.read_results`)."""
    raw = _read(path)
    docs = read_results(raw)
    return {**raw, **docs[0]} if docs else raw


# --------------------------------------------------------------------------------------- rows per run
def _run_row(spec: StudySpec, r: RunSpec, out: Path) -> dict:
    """A run's eps-independent facts: training, neuron, constraint, share and BN control."""
    run_dir = out / "runs" / r.name
    cfg = r.config
    train = _read(run_dir / RESULTS_FILE)
    share = _read(share_path(run_dir))
    return {
        "run": r.name,
        "entry": r.row,
        "seed": cfg.seed,
        "training": r.training,
        "model": r.label,
        "strategy": cfg.strategy,
        "neuron": neuron_text(cfg),
        "tgo": cfg.tgo.enabled,
        "normalisation": _norm_text(cfg) if cfg.tgo.enabled else None,
        "lambda_max": cfg.tgo.lambda_max if cfg.tgo.enabled else None,
        "grad_ratio": _last_log(run_dir).get("grad_ratio"),
        "epochs": cfg.optim.epochs,
        "train_seconds": train.get("train_seconds"),
        "test_accuracy_full": train.get("test_accuracy"),
        "near_threshold": share.get("near_threshold"),
        "bn_control": share.get("bn_control"),
        "source": r.source or None,
        "source_entry": next((x.row for x in spec.runs if x.name == r.source), None) if r.source else None,
        "accuracy": {},
        "ci95": {},
        "ci95_method": {},
        "skipped": {},
        "audit": None,
        "paper": dict(r.paper),
        "_samples": {},
        "_labels": {},
    }


def _sample_key(rep: dict, col: str) -> str | None:
    """The per-sample list of a table column (``clean``, an attack name, ``worst_case``...)."""
    if col == "clean":
        return "clean"
    if col == WORST:
        return "worst_case"
    if col == FRESH:
        return "worst_case_fresh_noise"
    return next((k for k in (rep.get("attacks") or {}) if display_name(k) == col or k.upper() == col), None)


def _group_cells(doc: dict, first: bool, paper: bool) -> dict[str, tuple[float, dict, str | None]]:
    """A group's table cells: column -> (accuracy, summary, per-sample key); both worst cases."""
    rep = doc.get("report") or {}
    cells: dict[str, tuple[float, dict, str | None]] = {}
    for col, acc in (doc.get("table") or {}).items():
        if (col == "clean" and not first) or (col == WORST and paper):
            continue  # one clean column per protocol (its first group's); the paper reports no worst case
        key = _sample_key(rep, col)
        src = (
            rep.get("clean")
            if col == "clean"
            else rep.get("worst_case")
            if col == WORST
            else (rep.get("attacks") or {}).get(key, {})
        )
        cells[col] = (float(acc), src or {}, key)
    if WORST in cells and _has_known_noise(doc):  # else there is one worst case, shown as before
        fresh = rep.get("worst_case_fresh_noise")
        known = any((a or {}).get("threat") == "known-noise" for a in (rep.get("attacks") or {}).values())
        if isinstance(fresh, dict) and "accuracy" in fresh:
            cells[FRESH] = (float(fresh["accuracy"]), fresh, "worst_case_fresh_noise")
        elif not known:  # the known-noise attacks were skipped (a deterministic model): the two coincide
            cells[FRESH] = (cells[WORST][0], cells[WORST][1], "worst_case")
    return cells


def _has_known_noise(doc: dict) -> bool:
    """Whether the group asked for a known-noise attack (FIXED-NOISE), run or skipped on this model."""
    names = list((doc.get("settings") or {}).get("attacks") or (doc.get("report") or {}).get("attacks") or [])
    for n in names:
        try:
            if getattr(attack_class(n), "threat", "") == "known-noise":
                return True
        except SpikeguardError:  # an attack this version does not know: not one we can label
            continue
    return False


def _add_group(row: dict, doc: dict, tag: str, first: bool, paper: bool) -> None:
    """One group's result into a run's row: accuracies, per-sample intervals, skips, audit."""
    rep = doc.get("report") or {}
    ps = _got if isinstance(_got := rep.get("per_sample"), dict) else {}
    if ps.get("labels") is not None:
        row["_labels"][tag] = ps["labels"]
    for col, (acc, src, key) in _group_cells(doc, first, paper).items():
        name = f"{col} ({tag})"
        row["accuracy"][name] = acc
        samples = ps.get(key) if key else None
        if isinstance(samples, list) and samples:
            s = sample_accuracy_ci95(samples)
            row["ci95"][name], row["ci95_method"][name] = s["ci95"], s["method"]
            row["_samples"][name] = samples
        else:  # an older result without per-sample lists: the engine's own interval over the samples
            row["ci95"][name] = src.get("ci95_samples") or src.get("ci95")
            row["ci95_method"][name] = "engine"
    for k, why in (rep.get("skipped") or {}).items():
        row["skipped"][f"{k.upper()} ({tag})"] = why
    if "audit" in doc:
        row["audit"] = {
            "verdict": doc["audit"]["verdict"],
            "warnings": [c["key"] for c in doc["audit"]["checks"] if c["status"] == "WARN"],
        }


def build_rows(spec: StudySpec, out: Path, eps: float | None = None) -> tuple[list[dict], list[str]]:
    """Table rows (one per run) at ``eps`` (default: the first) and the ordered columns ``"ATTACK (tag)"``.

    Rows carry private ``_samples`` / ``_labels`` (per-sample lists for the paired statistics);
    :func:`public` drops them.
    """
    eps = spec.eps_list()[0] if eps is None else float(eps)
    rows, columns = [], []
    for r in spec.runs:
        row = _run_row(spec, r, out)
        for prot in spec.protocols:
            for gi, g in enumerate(prot.groups):
                p = result_path(spec, out / "runs" / r.name, prot, g, eps)
                if p.is_file():
                    _add_group(row, _read_result(p), prot.tag, gi == 0, prot.name == "paper")
        columns += [c for c in row["accuracy"] if c not in columns]
        rows.append(row)
    ref = spec.evaluation.get("reference")
    for x in rows:
        base = _partner(spec, rows, ref, x["seed"]) if ref else None
        if base and base["near_threshold"] and x["near_threshold"] is not None:
            x["share_reduction"] = 1.0 - x["near_threshold"] / base["near_threshold"]
    order = {p.tag: i for i, p in enumerate(spec.protocols)}
    first = {c: i for i, c in enumerate(columns)}

    def key(c: str) -> tuple:  # paper protocol first, then strong; clean, attacks, worst cases
        head, tag = c.rsplit(" (", 1)
        return (
            order.get(tag.rstrip(")"), 99),
            0 if head == "clean" else 2 if head == FRESH else 3 if head == WORST else 1,
            first[c],
        )

    columns.sort(key=key)
    _paired_differences(spec, rows)
    return rows, columns


def _partner(spec: StudySpec, rows: list[dict], entry: str, seed: int) -> dict | None:
    """The run of row ``entry`` trained with ``seed`` (without study seeds: the row's one run)."""
    return next((b for b in rows if b["entry"] == entry and (spec.seeds is None or b["seed"] == seed)), None)


def _paired_differences(spec: StudySpec, rows: list[dict]) -> None:
    """Each run against its row's baseline run of the same seed, paired per sample (``row["difference"]``)."""
    for x in rows:
        x["difference"] = {}
        base_row = spec.baseline_of(x["entry"])
        base = _partner(spec, rows, base_row, x["seed"]) if base_row else None
        if base is None:
            continue
        x["baseline_run"] = base["run"]
        for col, a in x["_samples"].items():
            b = base["_samples"].get(col)
            tag = col.rsplit(" (", 1)[1].rstrip(")")
            la, lb = x["_labels"].get(tag), base["_labels"].get(tag)
            if b is None or len(a) != len(b) or (la is not None and lb is not None and la != lb):
                continue  # not the same images: no pairing
            x["difference"][col] = paired_difference_ci95(a, b)


def public(rows: list[dict]) -> list[dict]:
    """Rows without their private per-sample lists (what ``study.json`` holds)."""
    return [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]


# --------------------------------------------------------------------------------------- rows per [[runs]] entry
def _seed_summary(per_seed: list[float], one_seed_ci: list | None, low: float = 0.0) -> dict:
    """Mean over seeds with its t interval over seeds (clipped to [low, 1]: a t interval over a few seeds can
    pass the ends of what an accuracy or a difference can be); one seed: the per-sample interval, so labelled."""
    s = seeds_mean_ci95(per_seed)
    if s["ci95"]:
        s["ci95"] = [max(low, s["ci95"][0]), min(1.0, s["ci95"][1])]
    if s["n_seeds"] == 1:
        s["ci95"], s["method"] = one_seed_ci, "samples (1 seed)"
    return s


def aggregate(spec: StudySpec, rows: list[dict], columns: list[str]) -> list[dict]:
    """One entry per ``[[runs]]`` row: every column's mean over seeds and its paired difference to the baseline.

    ``accuracy[col]`` / ``difference[col]``: ``{"mean", "ci95", "n_seeds", "per_seed", "method"}``
    (method ``t-seeds``, or ``samples (1 seed)`` with the per-sample interval); ``accuracy[col]``
    also has ``ci95_samples``: the interval over samples of the per-sample values averaged over
    the seeds. A column some seeds lack is averaged over those that have it (``n_seeds`` says).
    """
    out = []
    for entry in spec.rows():
        runs = [r for r in rows if r["entry"] == entry]
        e: dict[str, Any] = {
            "entry": entry,
            "training": runs[0]["training"],
            "model": runs[0]["model"],
            "runs": [r["run"] for r in runs],
            "seeds": [r["seed"] for r in runs],
            "baseline": spec.baseline_of(entry) or None,
            "source": runs[0]["source_entry"],
            "accuracy": {},
            "difference": {},
            "paper": runs[0]["paper"],
        }
        for col in columns:
            have = [r for r in runs if col in r["accuracy"]]
            if have:
                e["accuracy"][col] = _seed_summary([r["accuracy"][col] for r in have], have[0]["ci95"].get(col))
                e["accuracy"][col]["seeds"] = [r["seed"] for r in have]
                lists = [r["_samples"][col] for r in have if col in r["_samples"]]
                if len(lists) == len(have) and len({len(v) for v in lists}) == 1:
                    e["accuracy"][col]["ci95_samples"] = sample_accuracy_ci95(
                        [sum(v) / len(v) for v in zip(*lists, strict=True)]
                    )["ci95"]
            diffs = [r for r in runs if col in r.get("difference", {})]
            if diffs:
                d = _seed_summary(
                    [r["difference"][col]["diff"] for r in diffs], diffs[0]["difference"][col]["ci95"], low=-1.0
                )
                d["seeds"] = [r["seed"] for r in diffs]
                d["per_seed_ci95"] = [r["difference"][col]["ci95"] for r in diffs]
                e["difference"][col] = d
        out.append(e)
    return out


# --------------------------------------------------------------------------------------- study.md
def _pct(v: Any, digits: int = 2) -> str:
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{100 * v:.{digits}f}"


def _cell(s: dict | None, sign: bool = False) -> str:
    """``62.3 [58.1, 66.4]`` (accuracy, %) or ``+3.1 [+1.0, +5.2]`` (difference, points)."""
    if not s:
        return "–"
    f = "+.1f" if sign else ".1f"
    ci = s.get("ci95")
    return f"{100 * s['mean']:{f}}" + (f" [{100 * ci[0]:{f}}, {100 * ci[1]:{f}}]" if ci else "")


def header(col: str) -> str:
    """A column's ``study.md`` header (``TRANSFER (S)`` -> ``TRANSFER from source (S)``)."""
    head, tag = col.rsplit(" (", 1)
    return f"{HEADERS.get(head, head)} ({tag}"


def _seeds_text(spec: StudySpec, rows: list[dict]) -> str:
    seeds = spec.seeds or sorted({r["seed"] for r in rows})
    if len(seeds) == 1:
        return (
            f"1 seed (training seed {seeds[0]}): each cell is the accuracy with its 95% interval over the test samples"
        )
    text = (
        f"{len(seeds)} training seeds ({', '.join(map(str, seeds))}): each cell is the mean over the seeds with "
        "a 95% Student-t interval over the seeds"
    )
    done = sorted({r["seed"] for r in rows if r.get("accuracy") and r.get("seed") is not None})
    if done != sorted(seeds):
        text += (
            f" (evaluated so far: seed{'s' if len(done) != 1 else ''} {', '.join(map(str, done)) or 'none'}; "
            "a cell over one seed shows that seed's accuracy with its interval over the test samples)"
        )
    return text


def _eps_section(
    spec: StudySpec, label: str, entries: list[dict], rows: list[dict], columns: list[str], meta: dict
) -> list[str]:
    """One eps: per protocol, the accuracy table and the paired-difference table."""
    per = meta.get("n_per_protocol", {})
    lines = [f"## eps {label}", ""]
    for p in spec.protocols:
        cols = [c for c in columns if c.endswith(f"({p.tag})")]
        if not cols:
            lines += [f"No result of the {p.name} protocol at eps {label} yet.", ""]
            continue
        n = per.get(p.tag, meta.get("n_samples"))
        lines += [
            f"### Accuracy (%), {p.name} protocol ({p.tag}), eps {label}, {n} images",
            "",
            "| training | model | " + " | ".join(header(c) for c in cols) + " |",
            "|" + "---|" * (len(cols) + 2),
        ]
        for e in entries:
            skipped = {k for r in rows if r["entry"] == e["entry"] for k in r["skipped"]}
            lines.append(
                f"| {e['training']} | {e['model']} | "
                + " | ".join(
                    _cell(e["accuracy"].get(c)) if c in e["accuracy"] else ("skip" if c in skipped else "–")
                    for c in cols
                )
                + " |"
            )
        diffs = [e for e in entries if e["baseline"]]
        if diffs:
            lines += [
                "",
                f"Paired difference to the baseline (points; row minus baseline, the same {n} images and "
                f"seed, per-sample paired; over seeds as above), eps {label}:",
                "",
                "| model | baseline | " + " | ".join(header(c) for c in cols) + " |",
                "|" + "---|" * (len(cols) + 2),
            ]
            label_of = {x["entry"]: x["model"] for x in entries}
            for e in diffs:
                lines.append(
                    f"| {e['model']} | {label_of.get(e['baseline'], e['baseline'])} | "
                    + " | ".join(_cell(e["difference"].get(c), sign=True) for c in cols)
                    + " |"
                )
        lines.append("")
    return lines


def _share_lines(spec: StudySpec, rows: list[dict]) -> list[str]:
    """The constraint/noise/near-threshold-share table (one line per run)."""
    k = spec.control.get("k")
    att = (spec.control.get("attack") or "").upper() or "attack"
    lines = [
        "Constraint, noise and the near-threshold share (|U - V_th| < delta, all layers and steps, as the "
        "model runs) next to the BN-rescaled control (every BatchNorm scaled by k about V_th: first-step "
        "spikes unchanged, share falls; a lower share alone is not robustness); the control's attack at the "
        "first eps:",
        "",
        f"| run | model | neuron | normalisation | lambda_max | grad ratio | share | share vs ref | "
        f"control k={k}: share | control clean | control {att} | {att} (model) | audit |",
        "|" + "---|" * 13,
    ]
    for r in rows:
        c = r["bn_control"] or {}
        gr = f"{r['grad_ratio']:.3g}" if isinstance(r.get("grad_ratio"), (int, float)) else "–"
        red = (
            "ref"
            if r["entry"] == spec.evaluation.get("reference")
            else f"{-100 * r['share_reduction']:+.1f}%"
            if r.get("share_reduction") is not None
            else "–"
        )
        lam = f"{r['lambda_max']:.4g}" if r["lambda_max"] is not None else "–"
        audit = (
            "–"
            if not r["audit"]
            else r["audit"]["verdict"] + (f" ({', '.join(r['audit']['warnings'])})" if r["audit"]["warnings"] else "")
        )
        lines.append(
            f"| {r['run']} | {r['model']} ({r['training']}) | {r['neuron']} | {r['normalisation'] or '–'} | "
            f"{lam} | {gr} | {_pct(r['near_threshold'])} | {red} | {_pct(c.get('share_rescaled'))} | "
            f"{_pct(c.get('clean_rescaled'))} | {_pct(c.get('attacked_rescaled'))} | "
            f"{_pct(c.get('attacked'))} | {audit} |"
        )
    return lines


def _paper_lines(entries: list[dict]) -> list[str]:
    paper_rows = [r for r in entries if r["paper"]]
    if not paper_rows:
        return []
    pcols = list(dict.fromkeys(k for r in paper_rows for k in r["paper"]))
    lines = [
        "",
        "The paper's numbers for the same rows (%, arXiv 2602.20548, Tables 1 and 3-4; its protocol as far as the text "
        "says: no EoT in Table 1):",
        "",
        "| training | model | " + " | ".join(pcols) + " |",
        "|" + "---|" * (len(pcols) + 2),
    ]
    for r in paper_rows:
        lines.append(
            f"| {r['training']} | {r['model']} | "
            + " | ".join(f"{r['paper'][c]:.2f}" if c in r["paper"] else "–" for c in pcols)
            + " |"
        )
    return lines


def _intro(spec: StudySpec, rows: list[dict], meta: dict, calibrations: dict) -> list[str]:
    ev = spec.evaluation
    per = meta.get("n_per_protocol", {})
    lines = [
        f"Robust accuracy at eps {', '.join(meta['eps_labels'])} on class-balanced {ev['split']} images (the "
        f"same images for every run and seed; image seed {ev['seed']}). Column tags: "
        + "; ".join(
            f"**({p.tag})** = `{p.name}` protocol on {per.get(p.tag, meta['n_samples'])} images" for p in spec.protocols
        )
        + f". {_seeds_text(spec, rows)}.",
        "",
        "Intervals over test samples: each sample's value is the fraction of judging passes on which it was "
        "robust; Wilson score interval when every value is 0 or 1 (deterministic models, single passes), else "
        "a Student-t interval over the samples' pass means (noise and test-set sampling together). Paired "
        "differences: per sample, row minus baseline on the same images and seed, mean with a paired t "
        "interval over the samples; over several seeds, the mean of the per-seed differences with a t "
        "interval over the seeds. An interval over seeds measures how much training seeds disagree on these "
        "fixed images; the test-sample interval of each seed mean is in study.json (`ci95_samples`).",
    ]
    refs = {e: spec.baseline_of(e) for e in spec.rows() if spec.baseline_of(e)}
    if refs:
        lines += ["", "Baselines: " + "; ".join(f"{e} vs {b}" for e, b in refs.items()) + "."]
    for row, cal in calibrations.items():
        lines += [
            "",
            f"lambda_max of `{row}` calibrated once ({cal.get('lambda_max', float('nan')):.4g}, target "
            f"{100 * float(cal.get('target_reduction', 0)):.0f}% near-threshold share cut) and used for every "
            "seed of that row.",
        ]
    return lines + [""]


def format_markdown(spec: StudySpec, tables: dict[str, dict], meta: dict, calibrations: dict | None = None) -> str:
    """``study.md``: per eps and protocol, accuracy (seed means) and paired differences; then the share table."""
    first = next(iter(tables.values()))
    lines = [f"# Study {spec.name}", ""] + ([spec.description, ""] if spec.description else [])
    lines += _intro(spec, first["_rows"], meta, calibrations or {})
    for label, t in tables.items():
        lines += _eps_section(spec, label, t["entries"], t["_rows"], t["columns"], meta)
    sources = [
        f"{e['model']} <- {next((x['model'] for x in first['entries'] if x['entry'] == e['source']), '')}"
        for e in first["entries"]
        if e["source"]
    ]
    lines += ["Columns:"] + [f"- {n}" for n in COLUMN_NOTES]
    if sources:
        lines.append("- TRANSFER sources (row <- source): " + "; ".join(sources) + ".")
    lines += _paper_lines(first["entries"]) + [""] + _share_lines(spec, first["_rows"]) + ["", "Protocols:"]
    for p in spec.protocols:
        lines.append(f"- **{p.name} ({p.tag})**: {p.description}.")
        for g in p.groups:
            lines.append(f"  - group `{g.name}`: {', '.join(g.attacks)}; {g.describe()}")
    skipped = {(k, why) for t in tables.values() for r in t["_rows"] for k, why in r["skipped"].items()}
    if skipped:
        lines += ["", "Skipped (the engine's reasons): " + "; ".join(f"{k}: {why}" for k, why in sorted(skipped)) + "."]
    lines += [
        "",
        "Normalisation = layers/neurons/hinge/potential (see `spikeguard.tgo.constraint`); grad ratio = "
        "||lambda grad L_mc|| / ||grad L_task|| on one training batch after the last epoch. The eps in a "
        "protocol's description is its default; the tables' eps is the one evaluated.",
        "",
        f"Made by `{spec.command_text()}` ({meta['date']}, spikeguard {meta['version']}, "
        f"{meta['device']}); every number above is read from the run folders under `runs/`.",
    ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------- html, figures, writer
def study_html(spec: StudySpec, entries: list[dict], rows: list[dict], columns: list[str], eps_label: str) -> str:
    """The comparison tables for the HTML report (the first eps's seed means, as in ``study.md``)."""

    def acc(e: dict, c: str) -> Any:
        return (e["accuracy"].get(c) or {}).get("mean")

    tags = "; ".join(f"({p.tag}) = {p.name} protocol" for p in spec.protocols)
    parts = [
        f"<h2>Study {html.escape(spec.name)}</h2><p>{html.escape(spec.description)}</p>"
        f"<p class=meta>Robust accuracy at eps {html.escape(eps_label)}, mean over seeds; column tags: {tags}. "
        "Intervals, paired differences, other eps, protocols and settings: study.md.</p>",
        table(
            ["training", "model", *(header(c) for c in columns)],
            [[e["training"], e["model"], *(acc(e, c) for c in columns)] for e in entries],
            pct_cols=range(2, 2 + len(columns)),
        ),
        table(
            [
                "run",
                "neuron",
                "normalisation",
                "lambda_max",
                "grad ratio",
                "near-threshold share",
                f"BN control (k={spec.control.get('k')}) share",
                "audit",
            ],
            [
                [
                    f"{r['run']} ({r['training']})",
                    r["neuron"],
                    r["normalisation"],
                    r["lambda_max"],
                    r["grad_ratio"],
                    r["near_threshold"],
                    (r["bn_control"] or {}).get("share_rescaled"),
                    (r["audit"] or {}).get("verdict"),
                ]
                for r in rows
            ],
            pct_cols=(5, 6),
        ),
    ]
    return "\n".join(parts)


def plot_study(entries: list[dict], rows: list[dict], columns: list[str], spec: StudySpec, out: Path) -> list[Path]:
    """``figures/accuracy.png`` (seed means per attack and row, first eps) and ``figures/near_threshold.png``."""
    fdir = ensure_dir(out / "figures")
    written: list[Path] = []
    if columns and entries:
        fig, axes = new_figure((max(6.0, 0.55 * len(columns) * max(1, len(entries)) / 2 + 3), 3.8))
        ax = axes[0][0]
        w = 0.8 / len(entries)
        xs = np.arange(len(columns))
        for i, e in enumerate(entries):
            vals = [100 * e["accuracy"][c]["mean"] if c in e["accuracy"] else np.nan for c in columns]
            ax.bar(
                xs + (i - (len(entries) - 1) / 2) * w, vals, w, label=f"{e['training']} {e['model']}", color=color(i)
            )
        ax.set_xticks(xs, [header(c) for c in columns], rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("accuracy (%)")
        ax.set_title(f"{spec.name}: accuracy per attack (mean over seeds), (tag) = protocol")
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
        ax.set_xticks(xs, [f"{r['training']}\n{r['run']}" for r in have], fontsize=7)
        ax.set_ylabel("near-threshold share (%)")
        ax.legend(fontsize=7)
        written += save_figure(fig, fdir / "near_threshold.png")
    return written


def _calibration_summary(cal: dict) -> dict:
    return {k: cal[k] for k in ("lambda_max", "reached", "target_reduction", "trials") if k in cal}


def write_comparison(
    spec: StudySpec,
    out: Path,
    meta: dict,
    *,
    plan: dict | None = None,
    calibrations: dict[str, dict] | None = None,
    report: bool = True,
    log: Log = print,
    t0: float | None = None,
) -> dict:
    """Stage 5: ``study.md``, ``study.json``, the figures and the HTML report from the run folders.

    ``study.json`` holds ``tables`` (per eps label: ``columns``, per-run ``rows`` with per-sample
    intervals and paired differences, per-row ``entries`` with seed means) and, for readers of
    single-eps studies, the first eps's ``columns`` and ``rows`` at the top level. Unfinished
    work (:func:`pending_work`) is listed in both files as "not finished", never filled in.
    """
    t0 = time.perf_counter() if t0 is None else t0
    calibrations = calibrations or {}
    pending = pending_work(spec, out)
    tables: dict[str, dict] = {}
    for eps in spec.eps_list():
        rows, columns = build_rows(spec, out, eps)
        tables[eps_label(eps)] = {
            "eps": eps,
            "columns": columns,
            "entries": aggregate(spec, rows, columns),
            "_rows": rows,
        }
    md = format_markdown(spec, tables, meta, calibrations)
    if pending:
        md += (
            "\n**Not finished** when this was written (the tables show what had finished; rerun the study "
            "with the same `--out` to complete it): " + "; ".join(pending) + ".\n"
        )
    first = next(iter(tables.values()))
    doc = _study_doc(spec, tables, meta, plan, calibrations, pending, t0)
    atomic_write_json(out / STUDY_JSON, doc)
    atomic_write_text(out / STUDY_MD, md)
    figs = plot_study(first["entries"], first["_rows"], first["columns"], spec, out)
    if report:
        build_report(
            [out / "figures"] + [d for d in (out / "runs" / r.name for r in spec.runs) if d.is_dir()],
            out / "report.html",
            title=f"spikeguard study {spec.name}",
            preface=study_html(spec, first["entries"], first["_rows"], first["columns"], doc["eps"][0]),
        )
    log(md)
    log(
        f"[study] wrote {out / STUDY_MD}, {out / STUDY_JSON}, {len(figs)} figures"
        + (f", {out / 'report.html'}" if report else "")
        + f" in {time.perf_counter() - t0:.0f} s"
        + (f"; {len(pending)} item(s) not finished" if pending else "")
    )
    return doc


def _study_doc(
    spec: StudySpec,
    tables: dict[str, dict],
    meta: dict,
    plan: dict | None,
    calibrations: dict[str, dict],
    pending: list[str],
    t0: float,
) -> dict:
    """``study.json``: every eps's table, the first eps's at the top level, the plan, the calibrations
    and what is not finished."""
    first = next(iter(tables.values()))
    cal = {row: _calibration_summary(c) for row, c in calibrations.items()}
    return {
        "study": spec.name,
        "description": spec.description,
        "file": str(spec.path) if spec.path else None,
        "command": spec.command_text(),
        "meta": meta,
        "seeds": meta.get("seeds") or sorted({r["seed"] for r in first["_rows"]}),
        "eps": list(tables),
        "protocols": [asdict(p) for p in spec.protocols],
        "columns": first["columns"],
        "rows": public(first["_rows"]),
        "entries": first["entries"],
        "tables": {
            k: {"eps": t["eps"], "columns": t["columns"], "rows": public(t["_rows"]), "entries": t["entries"]}
            for k, t in tables.items()
        },
        "plan": plan,
        "calibration": next(iter(cal.values()), None),
        "calibrations": cal,
        "complete": not pending,
        "pending": pending,
        "seconds": time.perf_counter() - t0,
    }
