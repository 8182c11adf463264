"""Robust accuracy vs eps and vs lambda_max from evaluation JSON files (PAPER.md Fig. 3).

The reader is liberal; every file is turned into flat :class:`SweepRecord` rows
``(model, attack, eps, accuracy, clean, lambda_max)``. Accepted shapes:

1. the demo's ``results.json``:
   ``{"models": {name: {"clean": a, "attacks": {attack: {"8/255": a, ...}}}}, "config": {...}}``;
   lambda_max is the model entry's ``"lambda_max"``, or ``config.lambda_max`` for a model
   whose name contains ``tgo``;
2. one evaluation: a top-level ``"eps"`` (number or ``"8/255"``)
   and ``"attacks"`` or ``"results"`` mapping attack -> accuracy, where an accuracy is a
   number or a dict with ``"accuracy"`` / ``"robust_accuracy"`` / ``"acc"``; ``"clean"`` (same
   forms), ``"clean_accuracy"`` or ``"test_accuracy"``; ``"worst_case"`` becomes the attack
   ``worst case``;
3. an evaluation whose attacks map eps labels to accuracies (shape 1 without ``"models"``);
4. ``spikeguard evaluate``'s ``robustness.json``: shape 2 under ``"report"``, named after the
   evaluated run folder (``"checkpoint"``), whose ``config.json`` gives lambda_max;
5. a list of evaluations, or a dict with ``"evaluations"`` / ``"runs"`` / ``"sweep"`` holding
   one, or a training ``results.json`` whose ``"attacks"`` is an evaluation or a dict of
   evaluations keyed by eps.

Model name: the document's ``"model_name"`` / ``"name"`` / ``"run"`` / ``"label"``, else the
run folder (a folder with ``config.json``), else the file name (its folder's name when the
file is called ``results``/``eval*``). lambda_max, when the document has none, comes from a
``config.json`` next to the file whose ``tgo.enabled`` is true. Accuracies above 1 are read
as percentages. Files that match no shape raise a one-line error naming the file.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..errors import ConfigError, DataError
from ..io import atomic_write_text
from ..utils import eps_label, parse_eps
from .plotting import color, new_figure, save_figure

WORST = "worst case"


@dataclass
class SweepRecord:
    """One robust-accuracy measurement."""

    model: str
    attack: str
    eps: float
    accuracy: float
    clean: float | None = None
    lambda_max: float | None = None
    source: str = ""


def _acc(v: Any) -> float | None:
    """A number, or a dict holding one; percentages (> 1) become fractions."""
    if isinstance(v, Mapping):
        for k in ("accuracy", "robust_accuracy", "acc", "mean"):
            if k in v:
                return _acc(v[k])
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    if not math.isfinite(v):
        return None
    return v / 100.0 if 1.0 < v <= 100.0 else v


def _eps(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        v = float(v)
        return v / 255.0 if v >= 1 else v
    if isinstance(v, str):
        try:
            return parse_eps(v.replace("eps=", "").replace("eps", "").strip())
        except ValueError:
            return None
    return None


def _run_config(path: Path) -> dict | None:
    cfg = path.parent / "config.json"
    if cfg.is_file() and cfg != path:
        try:
            doc = json.loads(cfg.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return doc.get("config", doc) if isinstance(doc, dict) else None
    return None


def _default_name(path: Path, doc: Mapping) -> str:
    for k in ("model_name", "name", "run", "label"):
        if isinstance(doc.get(k), str) and doc[k]:
            return doc[k]
    if (path.parent / "config.json").is_file():
        return path.parent.name
    stem = path.stem
    if stem.lower() in ("results", "result", "metrics") or stem.lower().startswith("eval"):
        return path.parent.name or stem
    return stem


def _lambda_from(doc: Mapping, path: Path) -> float | None:
    for k in ("lambda_max", "lam_max"):
        if isinstance(doc.get(k), (int, float)):
            return float(doc[k])
    cfg = doc.get("config") if isinstance(doc.get("config"), Mapping) else _run_config(path)
    if isinstance(cfg, Mapping):
        tgo = cfg.get("tgo")
        if isinstance(tgo, Mapping) and tgo.get("enabled") and isinstance(tgo.get("lambda_max"), (int, float)):
            return float(tgo["lambda_max"])
    return None


def _clean_of(doc: Mapping) -> float | None:
    for k in ("clean", "clean_accuracy", "test_accuracy"):
        if k in doc:
            a = _acc(doc[k])
            if a is not None:
                return a
    return None


def _from_eval(doc: Mapping, name: str, lam: float | None, src: str, eps: float | None = None) -> list[SweepRecord]:
    """Shapes 2 and 3 (and a training results.json wrapping them)."""
    eps = _eps(doc.get("eps")) if eps is None else eps
    clean = _clean_of(doc)
    attacks = doc.get("attacks", doc.get("results"))
    out: list[SweepRecord] = []
    if isinstance(attacks, Mapping):
        for att, v in attacks.items():
            a = _acc(v)
            if a is not None and eps is not None:
                out.append(SweepRecord(name, str(att), eps, a, clean, lam, src))
            elif isinstance(v, Mapping):
                # {attack: {eps_label: acc}} or {eps_label: evaluation}
                e_key = _eps(att)
                if e_key is not None and ("attacks" in v or "results" in v):
                    out += _from_eval(v, name, lam, src, e_key)
                    continue
                for lab, acc in v.items():
                    e, a2 = _eps(lab), _acc(acc)
                    if e is not None and a2 is not None:
                        out.append(SweepRecord(name, str(att), e, a2, clean, lam, src))
    if eps is not None and "worst_case" in doc:
        a = _acc(doc["worst_case"])
        if a is not None:
            out.append(SweepRecord(name, WORST, eps, a, clean, lam, src))
    return out


def parse_evaluation(doc: Any, path: str | os.PathLike = "<memory>") -> list[SweepRecord]:
    """Flatten one JSON document (any accepted shape) into records."""
    p = Path(path)
    src = str(p)
    if isinstance(doc, list):
        return [r for d in doc for r in parse_evaluation(d, p)]
    if not isinstance(doc, Mapping):
        return []
    if isinstance(doc.get("models"), Mapping):
        cfg = doc.get("config") if isinstance(doc.get("config"), Mapping) else {}
        out = []
        for name, m in doc["models"].items():
            if not isinstance(m, Mapping):
                continue
            lam = m.get("lambda_max")
            if lam is None and "tgo" in str(name).lower() and isinstance(cfg.get("lambda_max"), (int, float)):
                lam = cfg["lambda_max"]
            out += _from_eval(m, str(name), None if lam is None else float(lam), src)
        return out
    if isinstance(doc.get("report"), Mapping) and "attacks" in doc["report"]:
        # ``spikeguard evaluate``'s robustness.json: the evaluation sits under "report"; the model
        # is the evaluated run folder (its config.json gives lambda_max)
        ckpt = doc.get("checkpoint")
        run = Path(ckpt) if isinstance(ckpt, str) and ckpt else None
        if run is not None and run.suffix == ".safetensors":
            run = run.parent
        name = _default_name(p, doc) if run is None or any(k in doc for k in ("model_name", "name", "label")) \
            else run.name
        lam = _lambda_from(doc, p)
        if lam is None and run is not None:
            lam = _lambda_from({}, run / "robustness.json")  # reads run/config.json
        return _from_eval(doc["report"], name, lam, src)
    for k in ("evaluations", "runs", "sweep"):
        if isinstance(doc.get(k), list):
            name = _default_name(p, doc)
            out = []
            for d in doc[k]:
                if isinstance(d, Mapping):
                    out += _from_eval(d, _default_name(p, d) if any(x in d for x in ("name", "model_name", "run", "label")) else name,
                                      _lambda_from(d, p) if _lambda_from(d, p) is not None else _lambda_from(doc, p), src)
            return out
    return _from_eval(doc, _default_name(p, doc), _lambda_from(doc, p), src)


def load_sweep_records(paths: Iterable[str | os.PathLike]) -> list[SweepRecord]:
    """Read evaluation JSON files (or folders: every ``*.json`` inside, one level deep)."""
    records: list[SweepRecord] = []
    files: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            files += sorted(f for f in p.glob("*.json") if f.name != "config.json")
        elif p.is_file():
            files.append(p)
        else:
            raise DataError(f"{p} does not exist")
    for f in files:
        try:
            doc = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"cannot read {f}: {e}") from None
        except ValueError as e:
            raise DataError(f"{f} is not valid JSON ({e})") from None
        recs = parse_evaluation(doc, f)
        if not recs and any(Path(x) == f for x in paths):
            raise DataError(f"{f} holds no robust-accuracy numbers in a known layout (see 'spikeguard analyze sweep --help')")
        records += recs
    if not records:
        raise DataError("no robust-accuracy numbers found in the given files")
    return records


def write_records_csv(records: Sequence[SweepRecord], path: str | os.PathLike) -> None:
    """All records as CSV."""
    lines = ["model,attack,eps,eps_label,accuracy,clean,lambda_max,source"]
    for r in records:
        def f(v: float | None) -> str:
            return "" if v is None else f"{v:.6g}"
        lines.append(",".join([_csv(r.model), _csv(r.attack), f"{r.eps:.6g}", eps_label(r.eps), f(r.accuracy),
                               f(r.clean), f(r.lambda_max), _csv(r.source)]))
    atomic_write_text(path, "\n".join(lines) + "\n")


def _csv(s: str) -> str:
    return '"' + s.replace('"', '""') + '"' if any(c in s for c in ',"\n') else s


def select_curve(records: Sequence[SweepRecord], attack: str | None = None) -> dict[str, list[tuple[float, float]]]:
    """Per model, ``[(eps, accuracy)]`` sorted by eps for one attack.

    ``attack=None``: the ``worst case`` entries if every model has them, else, per model and
    eps, the minimum over the attacks measured there (labelled as the worst over attacks).
    """
    models = list(dict.fromkeys(r.model for r in records))
    out: dict[str, list[tuple[float, float]]] = {}
    use_worst = attack is None and all(any(r.model == m and r.attack == WORST for r in records) for m in models)
    for m in models:
        pts: dict[float, float] = {}
        for r in records:
            if r.model != m:
                continue
            key = round(r.eps, 9)
            if attack is not None:
                if r.attack.lower() == attack.lower():
                    pts[key] = r.accuracy
            elif use_worst:
                if r.attack == WORST:
                    pts[key] = r.accuracy
            elif r.attack != WORST:
                pts[key] = min(pts.get(key, math.inf), r.accuracy)
        if pts:
            out[m] = sorted(pts.items())
    return out


_LAMBDA_TOKEN = re.compile(r"[_\-\s]*(lambda|lam|lmax)[_=\-]?[0-9.]+", re.IGNORECASE)


def series_name(model: str) -> str:
    """A model name with its lambda token removed (``tgo_lam0.4`` -> ``tgo``), to group a sweep."""
    return _LAMBDA_TOKEN.sub("", model) or model


def lambda_curves(records: Sequence[SweepRecord], eps: float, attack: str | None = None
                  ) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """Per series, ``{"robust": [(lambda_max, acc)], "clean": [...]}`` at budget ``eps``."""
    with_lam = [r for r in records if r.lambda_max is not None and abs(r.eps - eps) < 1e-6]
    out: dict[str, dict[str, list[tuple[float, float]]]] = {}
    curves = select_curve(with_lam, attack)
    for model, pts in curves.items():
        lam = next(r.lambda_max for r in with_lam if r.model == model)
        clean = next((r.clean for r in with_lam if r.model == model and r.clean is not None), None)
        s = out.setdefault(series_name(model), {"robust": [], "clean": []})
        s["robust"] += [(float(lam), a) for _, a in pts]
        if clean is not None:
            s["clean"].append((float(lam), clean))
    for s in out.values():
        s["robust"].sort()
        s["clean"].sort()
    return out


def plot_sweep(records: Sequence[SweepRecord], path: str | os.PathLike, *, attack: str | None = None,
               lambda_eps: float | None = None, include_clean: bool = True, title: str = "",
               figsize: tuple[float, float] = (9.6, 3.6), dpi: int = 150,
               formats: str | Sequence[str] | None = None) -> list[Path]:
    """Fig. 3 layout: (a) robust accuracy vs eps per model; (b) accuracy vs lambda_max.

    Panel (b) appears when the records carry two or more lambda_max values; it uses ``lambda_eps`` (default:
    the budget closest to 8/255 among those records), solid = robust, dashed = clean.
    """
    if not records:
        raise ConfigError("no records to plot")
    curves = select_curve(records, attack)
    if not curves:
        raise ConfigError(f"no records for attack {attack!r}; attacks present: "
                          f"{', '.join(sorted({r.attack for r in records}))}")
    lam_recs = [r for r in records if r.lambda_max is not None]
    if len({r.lambda_max for r in lam_recs}) < 2:
        lam_recs = []  # one lambda_max is not a sweep
    fig, axes = new_figure(figsize if lam_recs else (figsize[0] / 2 + 0.6, figsize[1]), dpi, 1, 2 if lam_recs else 1)
    ax = axes[0, 0]
    what = attack or ("worst case over attacks")
    for i, (m, pts) in enumerate(curves.items()):
        xs = [255 * e for e, _ in pts]
        ys = [100 * a for _, a in pts]
        clean = next((r.clean for r in records if r.model == m and r.clean is not None), None)
        if include_clean and clean is not None and (not xs or xs[0] > 0):
            xs, ys = [0.0] + xs, [100 * clean] + ys
        ax.plot(xs, ys, "o-", color=color(i), label=m, markersize=4)
    ax.set_xlabel("eps (x / 255)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"(a) robust accuracy vs eps ({what})", fontsize=9)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if lam_recs:
        ax2 = axes[0, 1]
        eps_set = sorted({round(r.eps, 9) for r in lam_recs})
        e = lambda_eps if lambda_eps is not None else min(eps_set, key=lambda v: abs(v - 8 / 255))
        lc = lambda_curves(records, e, attack)
        for i, (s, c) in enumerate(lc.items()):
            for key, style, size in (("robust", "o-", 4), ("clean", "s--", 3.5)):
                if c[key]:
                    ax2.plot([lam for lam, _ in c[key]], [100 * a for _, a in c[key]], style, color=color(i),
                             label=f"{s}: {key}", markersize=size)
        ax2.set_xlabel("lambda_max")
        ax2.set_ylabel("accuracy (%)")
        ax2.set_title(f"(b) accuracy vs lambda_max at eps = {eps_label(e)}", fontsize=9)
        ax2.grid(alpha=0.3)
        ax2.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path, formats)


@dataclass
class AccuracyGrid:
    """Records arranged as a model x (eps, attack) grid (tables in Markdown and in the HTML report).

    ``columns`` are ordered by eps, then by the attacks' first appearance; ``cells`` maps
    ``(model, column)`` to an accuracy, ``clean`` maps a model to its clean accuracy.
    """

    models: list[str]
    columns: list[tuple[float, str]]
    cells: dict[tuple[str, tuple[float, str]], float]
    clean: dict[str, float]

    @classmethod
    def of(cls, records: Sequence[SweepRecord]) -> "AccuracyGrid":
        attacks = list(dict.fromkeys(r.attack for r in records))
        keys = sorted({(round(r.eps, 9), attacks.index(r.attack)) for r in records})
        grid = cls(list(dict.fromkeys(r.model for r in records)), [(e, attacks[a]) for e, a in keys], {}, {})
        for r in records:
            grid.cells[(r.model, (round(r.eps, 9), r.attack))] = r.accuracy
            if r.clean is not None:
                grid.clean.setdefault(r.model, r.clean)
        return grid


def accuracy_table(records: Sequence[SweepRecord], reference: str | None = None) -> str:
    """A Markdown table: one row per model, ``clean`` then one column per (eps, attack), in %.

    Columns are ordered by eps, then by the attacks' first appearance; a cell no record fills is
    ``-``. With ``reference`` (a model name), every other row also shows its difference to that
    row in points, the layout the paper uses for its comparisons.
    """
    g = AccuracyGrid.of(records)
    if reference is not None and reference not in g.models:
        raise ConfigError(f"reference model {reference!r} is not among the models {g.models}")

    def fmt(v: float | None, ref: float | None) -> str:
        if v is None:
            return "-"
        txt = f"{100 * v:.1f}"
        return txt if ref is None else f"{txt} ({100 * (v - ref):+.1f})"

    head = ["model", "clean"] + [f"{a} {eps_label(e)}" for e, a in g.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in g.models:
        ref_m = reference if reference is not None and m != reference else None
        row = [m, fmt(g.clean.get(m), g.clean.get(ref_m) if ref_m else None)]
        row += [fmt(g.cells.get((m, c)), g.cells.get((ref_m, c)) if ref_m else None) for c in g.columns]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def sweep_summary(records: Sequence[SweepRecord], attack: str | None = None) -> dict:
    """JSON-ready: the records and the per-model curves."""
    return {"analysis": "sweep", "attack": attack or "worst",
            "curves": {m: [{"eps": e, "eps_label": eps_label(e), "accuracy": a} for e, a in pts]
                       for m, pts in select_curve(records, attack).items()},
            "records": [asdict(r) for r in records]}
