"""Robust accuracy vs eps and vs lambda_max from result files (arXiv 2602.20548, Fig. 3).

Files are read with :func:`spikeguard.evaluation.results.read_results`: the result schema
(``spikeguard.robustness`` version 2, with provenance) and the earlier layouts spikeguard wrote
(version 1: ``evaluate``'s and training's ``robustness.json``, the demo's ``results.json``).
Every file becomes flat :class:`SweepRecord` rows ``(model, attack, eps, accuracy, clean,
lambda_max, n_samples, group)``; any other JSON is an error naming the file.

``group`` describes where a number comes from (command, protocol, sample count, passes,
seed, weights); the tables never put numbers of two groups into one row unless asked
(``merge=True``), and then say what they merged.

Model name: the document's ``label`` (a display name some writers set, e.g. a study's
``vanilla [paper]``), else its ``model`` (version 2), else the evaluated run folder's name. lambda_max:
the document's ``lambda_max``, else the evaluated run's ``config.json`` when ``tgo.enabled``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ..errors import ConfigError, DataError
from ..io import atomic_write_text
from ..utils import eps_label, parse_eps
from .plotting import color, new_figure, save_figure
from ..evaluation.results import read_results

WORST = "worst case"


@dataclass
class SweepRecord:
    """One robust-accuracy measurement, with the sample count and provenance group it belongs to."""

    model: str
    attack: str
    eps: float
    accuracy: float
    clean: float | None = None
    lambda_max: float | None = None
    source: str = ""
    n_samples: int | None = None
    group: str = ""


def _acc(v: Any) -> float | None:
    """A fraction, or a dict holding one under ``accuracy``."""
    if isinstance(v, Mapping):
        return _acc(v.get("accuracy"))
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
        return None
    return float(v)


def _eps(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return parse_eps(v)
        except ValueError:
            return None
    return None


def _run_folder(ckpt: Any) -> Path | None:
    if not isinstance(ckpt, str) or not ckpt:
        return None
    p = Path(ckpt)
    return p.parent if p.suffix == ".safetensors" else p


def _lambda_of_run(run: Path | None) -> float | None:
    if run is None or not (run / "config.json").is_file():
        return None
    try:
        doc = json.loads((run / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    cfg = doc.get("config", doc) if isinstance(doc, dict) else None
    tgo = cfg.get("tgo") if isinstance(cfg, Mapping) else None
    if isinstance(tgo, Mapping) and tgo.get("enabled") and isinstance(tgo.get("lambda_max"), (int, float)):
        return float(tgo["lambda_max"])
    return None


def attacks_label(prov: Mapping) -> str:
    """What was run, for a group label: ``suite strong``, ``attacks fgsm,pgd10``, ``12 attacks #3f2a1c``,
    or a study's ``paper/white-box`` (protocol and group); empty when the record names nothing."""
    if prov.get("study_group"):
        return f"{prov.get('study_protocol') or '?'}/{prov['study_group']}"
    cmd = str(prov.get("command") or "").split()
    suite = next((cmd[i + 1] for i, t in enumerate(cmd[:-1]) if t == "--suite"), None) or next(
        (t.split("=", 1)[1] for t in cmd if t.startswith("--suite=")), None
    )
    if suite and not any(t == "--attacks" or t.startswith("--attacks=") for t in cmd):
        return f"suite {suite}"
    attacks = [str(a) for a in prov.get("attacks") or []]
    if not attacks:
        return ""
    if len(attacks) <= 3:
        return "attacks " + ",".join(attacks)
    # a long list: its size and a digest, so that two different lists never share a label
    return f"{len(attacks)} attacks #{hashlib.sha1(','.join(attacks).encode()).hexdigest()[:6]}"


def provenance_group(prov: Mapping, model: str) -> str:
    """A short label of what may share a table row: command, sample count, attacks, passes, EoT, seed, weights.

    Results that differ only in eps share a group (one evaluation per budget fills one row);
    anything else, including the attacks run (each evaluation's worst case covers its own
    attacks only), starts a new group.
    """
    cmd = str(prov.get("command") or "?").split()
    kind = cmd[1] if len(cmd) > 1 and cmd[0] == "spikeguard" else cmd[0]
    parts = [kind, f"n={prov.get('n_samples') if prov.get('n_samples') is not None else '?'}"]
    if attacks_label(prov):
        parts.append(attacks_label(prov))
    if (prov.get("passes") or 1) > 1:
        parts.append(f"{prov['passes']} passes")
    if (prov.get("eot") or 1) > 1:
        parts.append(f"EoT {prov['eot']}")
    if prov.get("seed") not in (None, 0):
        parts.append(f"seed {prov['seed']}")
    data = _got if isinstance(_got := prov.get("data"), Mapping) else {}
    if data.get("split") not in (None, "test"):
        parts.append(f"{data['split']} split")
    if prov.get("protocol") not in (None, "engine"):
        parts.append(str(prov["protocol"]))
    if prov.get("checkpoint_id"):
        parts.append(f"weights {prov['checkpoint_id'][:8]}")
    return ", ".join(parts)


def records_of_document(doc: Mapping, src: str) -> list[SweepRecord]:
    """The records of one version-2 document (as :func:`read_results` returns them)."""
    prov = doc.get("provenance") or {}
    rep = doc.get("report") or {}
    run = _run_folder(prov.get("checkpoint"))
    # a writer's display label (a study's "vanilla [paper]") names the row; else the evaluated model
    name = (
        (doc.get("label") if isinstance(doc.get("label"), str) and doc.get("label") else None)
        or doc.get("model")
        or (run.resolve().name if run is not None else Path(src).parent.name or Path(src).stem)
    )
    lam = doc.get("lambda_max")
    lam = float(lam) if isinstance(lam, (int, float)) else _lambda_of_run(run)
    eps = _eps(rep.get("eps"))
    n = rep.get("n_samples", prov.get("n_samples"))
    n = int(n) if isinstance(n, (int, float)) else None
    group = provenance_group({**prov, "n_samples": n}, name)
    clean = _acc(rep.get("clean"))
    out: list = []
    attacks = _got if isinstance(_got := rep.get("attacks"), Mapping) else {}
    if eps is None:
        return out
    for att, v in attacks.items():
        a = _acc(v)
        if a is not None:
            out.append(SweepRecord(str(name), str(att), eps, a, clean, lam, src, n, group))
    wc = _acc(rep.get("worst_case"))
    if wc is not None:
        out.append(SweepRecord(str(name), WORST, eps, wc, clean, lam, src, n, group))
    return out


def parse_evaluation(doc: Any, path: str | os.PathLike = "<memory>") -> list[SweepRecord]:
    """Records of one JSON document (empty when it is not a result file)."""
    docs = read_results(doc)
    return [r for d in docs or () for r in records_of_document(d, str(path))]


def load_sweep_records(paths: Iterable[str | os.PathLike]) -> list[SweepRecord]:
    """Read result files (or folders: every result ``*.json`` inside, down to two levels)."""
    records: list[SweepRecord] = []
    files: list[Path] = []
    paths = list(paths)
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            files += sorted(
                f
                for pat in ("*.json", "*/*.json")
                for f in p.glob(pat)
                if f.name != "config.json" and not any(part.startswith(".") for part in f.relative_to(p).parts)
            )
        elif p.is_file():
            files.append(p)
        else:
            raise DataError(f"{p} does not exist")
    for f in dict.fromkeys(files):
        try:
            doc = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"cannot read {f}: {e}") from None
        except ValueError as e:
            raise DataError(f"{f} is not valid JSON ({e})") from None
        recs = parse_evaluation(doc, f)
        if not recs and any(Path(x) == f for x in paths):
            raise DataError(
                f"{f} is not a spikeguard result file (schema {doc.get('schema') if isinstance(doc, dict) else None!r}; "
                "see docs/evaluation.md, 'Result files')"
            )
        records += recs
    if not records:
        raise DataError("no robust-accuracy numbers found in the given files")
    return records


def write_records_csv(records: Sequence[SweepRecord], path: str | os.PathLike) -> None:
    """All records as CSV."""
    lines = ["model,attack,eps,eps_label,accuracy,clean,lambda_max,n_samples,group,source"]
    for r in records:

        def f(v: float | None) -> str:
            return "" if v is None else f"{v:.6g}"

        lines.append(
            ",".join(
                [
                    _csv(r.model),
                    _csv(r.attack),
                    f"{r.eps:.6g}",
                    eps_label(r.eps),
                    f(r.accuracy),
                    f(r.clean),
                    f(r.lambda_max),
                    "" if r.n_samples is None else str(r.n_samples),
                    _csv(r.group),
                    _csv(r.source),
                ]
            )
        )
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
    for m in models:
        pts: dict[float, float] = {}
        mine = [r for r in records if r.model == m]
        for key in dict.fromkeys(round(r.eps, 9) for r in mine):
            at = [r for r in mine if round(r.eps, 9) == key]
            if attack is not None:
                hit = [r.accuracy for r in at if r.attack.lower() == attack.lower()]
                if hit:
                    pts[key] = hit[-1]
                continue
            v = _worst_of_one_evaluation(at)
            if v is not None:
                pts[key] = v
        if pts:
            out[m] = sorted(pts.items())
    return out


def is_worst(attack: str) -> bool:
    """``worst case``, or a merged row's ``worst case [what was run]``."""
    return attack == WORST or attack.startswith(WORST + " [")


def _worst_of_one_evaluation(records: Sequence[SweepRecord]) -> float | None:
    """One model's worst case at one eps, taken from a single evaluation (result file).

    A per-sample worst case over attacks of two evaluations cannot be formed from their
    accuracies (different samples fail different attacks), so nothing here combines files:
    the evaluation that ran the most attacks gives its per-sample worst case, or, when no
    file has one, the lowest of its own per-attack accuracies.
    """
    by_src: dict[str, list[SweepRecord]] = {}
    for r in records:
        by_src.setdefault(r.source, []).append(r)
    best = max(by_src.values(), key=lambda rs: (any(is_worst(r.attack) for r in rs), len(rs)), default=None)
    if not best:
        return None
    worst = [r.accuracy for r in best if is_worst(r.attack)]
    return worst[-1] if worst else min(r.accuracy for r in best)


_LAMBDA_TOKEN = re.compile(r"[_\-\s]*(lambda|lam|lmax)[_=\-]?[0-9.]+", re.IGNORECASE)


def series_name(model: str) -> str:
    """A model name with its lambda token removed (``tgo_lam0.4`` -> ``tgo``), to group a sweep."""
    return _LAMBDA_TOKEN.sub("", model) or model


def lambda_curves(
    records: Sequence[SweepRecord], eps: float, attack: str | None = None
) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """Per series, ``{"robust": [(lambda_max, acc)], "clean": [...]}`` at budget ``eps``."""
    with_lam = [r for r in records if r.lambda_max is not None and abs(r.eps - eps) < 1e-6]
    out: dict[str, dict[str, list[tuple[float, float]]]] = {}
    curves = select_curve(with_lam, attack)
    for model, pts in curves.items():
        lam = next(r.lambda_max for r in with_lam if r.model == model)
        clean = next((r.clean for r in with_lam if r.model == model and r.clean is not None), None)
        s = out.setdefault(series_name(model), {"robust": [], "clean": []})
        s["robust"] += [(float(lam), a) for _, a in pts]  # type: ignore[arg-type]  # with_lam: lambda_max is set
        if clean is not None:
            s["clean"].append((float(lam), clean))  # type: ignore[arg-type]
    for s in out.values():
        s["robust"].sort()
        s["clean"].sort()
    return out


def plot_sweep(
    records: Sequence[SweepRecord],
    path: str | os.PathLike,
    *,
    attack: str | None = None,
    lambda_eps: float | None = None,
    include_clean: bool = True,
    title: str = "",
    figsize: tuple[float, float] = (9.6, 3.6),
    dpi: int = 150,
    formats: str | Sequence[str] | None = None,
) -> list[Path]:
    """Fig. 3 layout: (a) robust accuracy vs eps per model; (b) accuracy vs lambda_max.

    Panel (b) appears when the records carry two or more lambda_max values; it uses ``lambda_eps`` (default:
    the budget closest to 8/255 among those records), solid = robust, dashed = clean.
    """
    if not records:
        raise ConfigError("no records to plot")
    curves = select_curve(records, attack)
    if not curves:
        raise ConfigError(
            f"no records for attack {attack!r}; attacks present: {', '.join(sorted({r.attack for r in records}))}"
        )
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
                    ax2.plot(
                        [lam for lam, _ in c[key]],
                        [100 * a for _, a in c[key]],
                        style,
                        color=color(i),
                        label=f"{s}: {key}",
                        markersize=size,
                    )
        ax2.set_xlabel("lambda_max")
        ax2.set_ylabel("accuracy (%)")
        ax2.set_title(f"(b) accuracy vs lambda_max at eps = {eps_label(e)}", fontsize=9)
        ax2.grid(alpha=0.3)
        ax2.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path, formats)


def _short(group: str) -> str:
    """A group label without its weights hash (shown unless two groups differ only by weights)."""
    return ", ".join(p for p in group.split(", ") if not p.startswith("weights "))


def split_rows(records: Sequence[SweepRecord], merge: bool = False) -> tuple[list[SweepRecord], dict[str, list[str]]]:
    """One table row per (model, provenance group); returns the relabelled records and what was merged.

    A model measured under one group keeps its name; one measured under several (say, the
    demo's 360 images and a later 60-image ``evaluate``) gets one row per group, named
    ``model [group]``, so that numbers of different provenance never share a row. With
    ``merge=True`` the rows stay per model and the second value lists, per model, the groups
    that were merged into its row (empty when nothing was merged).
    """
    groups: dict[str, list[str]] = {}
    for r in records:
        g = groups.setdefault(r.model, [])
        if r.group not in g:
            g.append(r.group)
    if merge:
        merged = {m: g for m, g in groups.items() if len(g) > 1}
        # a merged row keeps one worst-case column per evaluation: a worst case is per-sample over
        # one evaluation's attacks, and one group's number must not stand for another's
        out = [
            SweepRecord(**{**asdict(r), "attack": f"{WORST} [{_short(r.group)}]"})
            if r.attack == WORST and r.model in merged
            else r
            for r in records
        ]
        return out, merged
    label: dict[tuple[str, str], str] = {}
    for m, gs in groups.items():
        shorts = [_short(g) for g in gs]
        for grp, sh in zip(gs, shorts, strict=True):
            label[(m, grp)] = m if len(gs) == 1 else f"{m} [{sh if shorts.count(sh) == 1 else grp}]"
    return [SweepRecord(**{**asdict(r), "model": label[(r.model, r.group)]}) for r in records], {}


def _key(group: str) -> str:
    """Command and sample count of a group (``demo, n=360``): what a delta may be taken across."""
    return ", ".join(group.split(", ")[:2])


def _reference_row(reference: str, row: str, grid: AccuracyGrid) -> str | None:
    """The row ``row`` is compared with: the reference model's row (or, if it was split by provenance,
    one of its rows) measured by the same command on the same number of samples; None if none was."""
    cands = [m for m in grid.models if m == reference or m.startswith(reference + " [")]
    mine = {_key(g) for g in grid.groups.get(row, ())}
    for m in cands:
        if mine & {_key(g) for g in grid.groups.get(m, ())}:
            return m
    return None


@dataclass
class AccuracyGrid:
    """Records arranged as a model x (eps, attack) grid (tables in Markdown and in the HTML report).

    ``columns`` are ordered by eps, then by the attacks' first appearance; ``cells`` maps
    ``(model, column)`` to an accuracy, ``clean`` maps a model to its clean accuracy and
    ``n`` to its sample count(s) (``"360"``, or ``"60, 360"`` for a merged row).
    """

    models: list[str]
    columns: list[tuple[float, str]]
    cells: dict[tuple[str, tuple[float, str]], float]
    clean: dict[str, float]
    n: dict[str, str] = field(default_factory=dict)
    groups: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def of(cls, records: Sequence[SweepRecord]) -> AccuracyGrid:
        attacks = list(dict.fromkeys(r.attack for r in records))
        keys = sorted({(round(r.eps, 9), attacks.index(r.attack)) for r in records})
        grid = cls(list(dict.fromkeys(r.model for r in records)), [(e, attacks[a]) for e, a in keys], {}, {})
        counts: dict[str, set] = {}
        for r in records:
            grid.cells[(r.model, (round(r.eps, 9), r.attack))] = r.accuracy
            if r.clean is not None:
                grid.clean.setdefault(r.model, r.clean)
            counts.setdefault(r.model, set()).add(r.n_samples)
            if r.group not in grid.groups.setdefault(r.model, []):
                grid.groups[r.model].append(r.group)
        grid.n = {
            m: ", ".join(str(v) if v is not None else "?" for v in sorted(c, key=lambda v: (v is None, v or 0)))
            for m, c in counts.items()
        }
        return grid


def accuracy_table(records: Sequence[SweepRecord], reference: str | None = None) -> str:
    """A Markdown table: one row per model, its sample count ``n``, ``clean`` then one column per
    (eps, attack), in %.

    Columns are ordered by eps, then by the attacks' first appearance; a cell no record fills is
    ``-``. With ``reference`` (a model name), every other row also shows its difference to that
    row in points, the layout the paper uses for its comparisons; the reference row is the
    reference model's row measured by the same command on the same number of samples, and a
    row without one shows no delta.
    """
    g = AccuracyGrid.of(records)
    if (
        reference is not None
        and reference not in g.models
        and not any(m.startswith(reference + " [") for m in g.models)
    ):
        raise ConfigError(f"reference model {reference!r} is not among the models {g.models}")

    def fmt(v: float | None, ref: float | None) -> str:
        if v is None:
            return "-"
        txt = f"{100 * v:.1f}"
        return txt if ref is None else f"{txt} ({100 * (v - ref):+.1f})"

    head = ["model", "n", "clean"] + [f"{a} {eps_label(e)}" for e, a in g.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in g.models:
        ref_m = _reference_row(reference, m, g) if reference is not None else None
        ref_m = None if ref_m == m else ref_m
        row = [m, g.n.get(m, "?"), fmt(g.clean.get(m), g.clean.get(ref_m) if ref_m else None)]
        row += [fmt(g.cells.get((m, c)), g.cells.get((ref_m, c)) if ref_m else None) for c in g.columns]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def sweep_summary(records: Sequence[SweepRecord], attack: str | None = None) -> dict:
    """JSON-ready: the records and the per-model curves."""
    return {
        "analysis": "sweep",
        "attack": attack or "worst",
        "curves": {
            m: [{"eps": e, "eps_label": eps_label(e), "accuracy": a} for e, a in pts]
            for m, pts in select_curve(records, attack).items()
        },
        "records": [asdict(r) for r in records],
    }
