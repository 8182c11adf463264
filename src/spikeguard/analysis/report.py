"""``spikeguard report``: one self-contained HTML page for a set of run folders.

Everything is inlined (CSS, PNG figures as base64 data URIs), so the file opens from disk in
any browser with no server and can be mailed or attached as is. Per run folder the report
shows what it finds:

* ``config.json`` (``spikeguard train`` runs): model, data, neuron, TGO and optimiser settings;
* ``log.jsonl``: training curves (loss, accuracy, lambda, near-threshold share), drawn here;
* ``results.json`` and other evaluation JSONs, in the folder or one sub-folder down (where
  ``spikeguard evaluate`` writes them): accuracy tables (demo layout, ``spikeguard
  evaluate`` layout, training results); with two or more budgets, a robust-accuracy-vs-eps
  figure is drawn (see :mod:`spikeguard.analysis.sweep`);
* ``membrane.json``, ``gradients.json``, ``flip.json``, ``jacobian.json``, ``landscape.json``
  (``spikeguard analyze``): their key numbers as tables;
* every ``*.png`` in the folder and its sub-folders (two levels), embedded.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..errors import DataError
from ..io import atomic_write_text
from ..utils import eps_label
from . import sweep as _sweep
from .plotting import color, new_figure, pyplot
from .._version import __version__
from ..evaluation.results import read_results

MAX_IMAGE_BYTES = 8 * 1024 * 1024  # larger PNGs are listed, not embedded
_ANALYSES = ("membrane", "gradients", "flip", "jacobian", "landscape", "sweep")

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1200px;
     color:#222;line-height:1.45;padding:0 1em}
h1{font-size:1.6em;border-bottom:2px solid #0072B2;padding-bottom:.2em}
h2{font-size:1.3em;margin-top:2em;border-bottom:1px solid #ccc}
h3{font-size:1.05em;margin-top:1.4em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f0f4f8}
td.l,th.l{text-align:left}
figure{margin:1em 0;display:inline-block;vertical-align:top;max-width:100%}
figure img{max-width:100%;border:1px solid #ddd}
figcaption{font-size:.85em;color:#555}
.tw{overflow-x:auto;max-width:100%}
.meta{color:#666;font-size:.85em}
.note{background:#fff8e1;border-left:4px solid #E69F00;padding:.4em .8em}
code{background:#f4f4f4;padding:0 .25em}
"""


def _e(x: Any) -> str:
    return html.escape(str(x))


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None:
        return "&ndash;"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, float)):
        if isinstance(v, float) and not math.isfinite(v):
            return "&ndash;"
        if pct:
            return f"{100 * v:.2f}%"
        return f"{v:.4g}" if isinstance(v, float) else str(v)
    return _e(v)


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], pct_cols: Sequence[int] = ()) -> str:
    """An HTML table; the first column is left-aligned; ``pct_cols`` are shown as percentages."""
    out = [
        "<table><tr>"
        + "".join(f"<th{' class=l' if i == 0 else ''}>{_e(h)}</th>" for i, h in enumerate(header))
        + "</tr>"
    ]
    for r in rows:
        cells = []
        for i, v in enumerate(r):
            cls = " class=l" if i == 0 else ""
            cells.append(f"<td{cls}>{_fmt(v, i in pct_cols)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "".join(out) + "</table>"


def _img_tag(data: bytes, caption: str) -> str:
    b64 = base64.b64encode(data).decode("ascii")
    return (
        f'<figure><img alt="{_e(caption)}" src="data:image/png;base64,{b64}">'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
    )


def _fig_bytes(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi)
    pyplot().close(fig)
    return buf.getvalue()


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None


# ------------------------------------------------------------------------------------------
# sections
# ------------------------------------------------------------------------------------------
def _config_section(cfg: dict) -> str:
    c = cfg.get("config", cfg)
    rows = []
    for sect, keys in (
        ("data", ("name", "subset", "test_subset", "augment")),
        ("model", ("name", "T", "num_classes")),
        ("neuron", ("kind", "v_threshold", "decay", "surrogate", "sigma")),
        ("tgo", ("enabled", "delta", "lambda_max", "schedule")),
        ("optim", ("epochs", "lr", "batch_size", "schedule")),
    ):
        d = c.get(sect)
        if isinstance(d, dict):
            rows += [
                (f"{sect}.{k}", "0 (from the data)" if (sect, k) == ("model", "num_classes") and d[k] == 0 else d[k])
                for k in keys
                if k in d
            ]
    for k in ("strategy", "seed"):
        if k in c:
            rows.append((k, c[k]))
    if "param_count" in cfg:
        rows.append(("parameters", cfg["param_count"]))
    return "<h3>Configuration</h3>" + table(["setting", "value"], rows) if rows else ""


def _log_section(path: Path) -> str:
    rows = []
    try:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                rows.append(json.loads(line))
    except (OSError, ValueError):
        return f'<p class="note">could not read {_e(path.name)}</p>'
    rows = [r for r in rows if isinstance(r, dict)]
    if not rows:
        return ""
    ep = [r.get("epoch", i + 1) for i, r in enumerate(rows)]
    panels = [
        ("loss", ("loss", "task_loss")),
        ("accuracy", ("accuracy", "test_accuracy")),
        ("near-threshold share", ("near_threshold",)),
        ("lambda", ("lam",)),
    ]
    panels = [(t, ks) for t, ks in panels if any(k in r for r in rows for k in ks)]
    if not panels:
        return ""
    fig, axes = new_figure((3.0 * len(panels), 2.6), 110, 1, len(panels))
    for ax, (title, keys) in zip(axes[0], panels, strict=True):
        for i, k in enumerate(keys):
            pts = [(e, r[k]) for e, r in zip(ep, rows, strict=True) if isinstance(r.get(k), (int, float))]
            if pts:
                ax.plot(*zip(*pts, strict=True), "o-" if len(pts) < 30 else "-", markersize=3, color=color(i), label=k)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=7)
        if len(keys) > 1:
            ax.legend(fontsize=6)
    last = rows[-1]
    summary = ", ".join(
        f"{k} {_fmt(last[k])}"
        for k in ("loss", "accuracy", "near_threshold", "lam")
        if isinstance(last.get(k), (int, float))
    )
    return f"<h3>Training log</h3><p>{len(rows)} epochs; last: {summary}</p>" + _img_tag(
        _fig_bytes(fig), f"{path.name}: training curves"
    )


CLEAN_NOTE = (
    "Clean accuracy can differ between rows of the same weights because each source measures it "
    "its own way: the demo (protocol demo-stream) averages 8 passes with fresh noise over its 360 "
    "images; training's results.json (test_accuracy) uses eval.passes passes over the whole test "
    "split; an evaluation judges each of its n samples per pass under common random numbers. Rows of "
    "different provenance (command, attacks, n, passes, seed, weights) are therefore never merged."
)


def _eval_section(records: list[_sweep.SweepRecord], title: str) -> str:
    """Accuracy table: rows = models (one per provenance group), columns = n, clean, attack@eps."""
    if not records:
        return ""
    records, _ = _sweep.split_rows(records)
    g = _sweep.AccuracyGrid.of(records)
    head = ["model", "n", "clean"] + [f"{a} @ {eps_label(e)}" for e, a in g.columns]
    rows = [[m, g.n.get(m), g.clean.get(m)] + [g.cells.get((m, c)) for c in g.columns] for m in g.models]
    html_ = f"<h3>{_e(title)}</h3><div class=tw>" + table(head, rows, pct_cols=range(2, len(head))) + "</div>"
    if len({round(r.eps, 9) for r in records}) >= 2:
        with tempfile.TemporaryDirectory() as tmp:
            p = Path(tmp) / "sweep.png"
            _sweep.plot_sweep(records, p, dpi=110)
            html_ += _img_tag(p.read_bytes(), "robust accuracy vs eps (worst case over the attacks shown)")
    return html_


def evaluation_rows(doc: Any, path: Path, run: Path) -> list[list[Any]]:
    """One row per evaluation in result file ``path``: file, date, model, command, n, eps, attacks, clean, worst case."""
    try:
        docs = read_results(doc) or []
    except DataError:
        return []
    rows = []
    for d in docs:
        prov, rep = d.get("provenance") or {}, d.get("report") or {}
        eps = _sweep._eps(rep.get("eps"))
        attacks = _got if isinstance(_got := rep.get("attacks"), dict) else {}
        try:
            where = str(path.relative_to(run))
        except ValueError:
            where = str(path)
        rows.append(
            [
                where,
                str(prov.get("date") or "")[:16].replace("T", " "),
                d.get("label") or d.get("model"),
                prov.get("command"),
                rep.get("n_samples", prov.get("n_samples")),
                eps_label(eps) if eps is not None else None,
                len(attacks),
                _sweep._acc(rep.get("clean")),
                _sweep._acc(rep.get("worst_case")),
            ]
        )
    return rows


def _evaluations_section(rows: list[list[Any]]) -> str:
    """Every evaluation found for a run, oldest first, each with its own per-sample worst case."""
    if not rows:
        return ""
    rows = sorted(rows, key=lambda r: (r[1] or "", r[0]))
    return (
        f"<h3>Evaluations ({len(rows)})</h3><div class=tw>"
        + table(
            ["file", "date (UTC)", "model", "command", "n", "eps", "attacks", "clean", "worst case"],
            rows,
            pct_cols=(7, 8),
        )
        + '</div><p class="meta">worst case: per sample over the attacks of that evaluation only.</p>'
    )


def _analysis_section(kind: str, doc: dict) -> str:
    """The section of one analysis JSON of ``kind`` (empty for a kind without one)."""
    section = _ANALYSIS_SECTIONS.get(kind)
    return section(doc) if section else ""


def _membrane_section(doc: dict) -> str:
    """Near-threshold shares per model, and per layer where recorded."""
    rows = [
        [
            n,
            m.get("near_threshold"),
            doc.get("reduction_vs_baseline", {}).get(n, {}).get("overall"),
            m.get("num_potentials"),
        ]
        for n, m in doc.get("models", {}).items()
    ]
    out = f"<h3>Membrane potentials (|U - V_th| &lt; {_fmt(doc.get('delta'))})</h3>" + table(
        ["model", "near-threshold share", f"reduction vs {doc.get('baseline')}", "potentials"],
        rows,
        pct_cols=(1, 2),
    )
    layers = list(dict.fromkeys(k for m in doc.get("models", {}).values() for k in m.get("layer_near_threshold", {})))
    if layers:
        out += table(
            ["model"] + layers,
            [[n] + [m.get("layer_near_threshold", {}).get(k) for k in layers] for n, m in doc["models"].items()],
            pct_cols=range(1, len(layers) + 1),
        )
    return out


def _gradients_section(doc: dict) -> str:
    """Input-gradient sparsity per model and target."""
    rows = []
    for t, per in doc.get("metrics", {}).items():
        for n, s in per.items():
            rows.append(
                [
                    f"{n} (d {t})",
                    s.get("near_zero"),
                    s.get("l1_l2"),
                    s.get("l1_l2_normalized"),
                    s.get("gini"),
                    s.get("all_zero_share"),
                ]
            )
    return "<h3>Input-gradient sparsity</h3>" + table(
        ["model (target)", "near-zero share", "L1/L2", "L1/(L2 sqrt d)", "Gini", "all-zero samples"],
        rows,
        pct_cols=(1, 5),
    )


def _flip_section(doc: dict) -> str:
    """Spike-flip theory (Monte Carlo vs closed form) and measured flip rates."""
    out = "<h3>Spike flips</h3>"
    th = doc.get("theory", {}).get("sigmas", {})
    if th:
        out += table(
            ["sigma", "max |MC - Phi|", "max error / s.e."],
            [[s, r.get("max_abs_error"), r.get("max_z")] for s, r in th.items()],
        )
    meas = doc.get("measured", {})
    if meas:
        red = doc.get("flip_rate_reduction_vs_first", {})
        out += table(
            ["model", "flip rate", "reduction vs first", "perturbation", "eps", "noise"],
            [
                [
                    n,
                    r.get("overall_rate"),
                    red.get(n),
                    r.get("perturbation"),
                    eps_label(r.get("eps", 0.0)),
                    r.get("noise"),
                ]
                for n, r in meas.items()
            ],
            pct_cols=(1, 2),
        )
    return out


def _jacobian_section(doc: dict) -> str:
    """Input-Jacobian norms against the first-order bound."""
    rows = [
        [
            n,
            s.get("median_spectral"),
            s.get("median_frobenius"),
            s.get("median_actual"),
            s.get("median_linear"),
            s.get("median_bound"),
            s.get("share_exceeding_bound"),
        ]
        for n, s in doc.get("summary", {}).items()
    ]
    return f"<h3>Input Jacobian ({_e(doc.get('attack', ''))})</h3>" + table(
        [
            "model",
            "median ||J||_2",
            "median ||J||_F",
            "median ||f(x+d)-f(x)||",
            "median ||J d||",
            "median bound",
            "share above bound",
        ],
        rows,
        pct_cols=(6,),
    )


def _landscape_section(doc: dict) -> str:
    """Loss-landscape summary per model and data."""
    rows = [
        [f"{n} [{d}]", s.get("center_loss"), s.get("sharpness_0.25"), s.get("max_loss")]
        for d, per in doc.get("surfaces", {}).items()
        for n, s in per.items()
    ]
    return "<h3>Loss landscape</h3>" + table(
        ["model [data]", "loss at (0,0)", "mean rise within 0.25", "max loss on grid"], rows
    )


_ANALYSIS_SECTIONS = {
    "membrane": _membrane_section,
    "gradients": _gradients_section,
    "flip": _flip_section,
    "jacobian": _jacobian_section,
    "landscape": _landscape_section,
}


def _run_section(run: Path, idx: int, others: Sequence[Path] = ()) -> tuple[str, list[_sweep.SweepRecord]]:
    """One run folder's section; files inside ``others`` (folders with a section of their own,
    e.g. ``runs/demo/analysis`` next to ``runs/demo``) are left to those sections."""

    def own(p: Path) -> bool:
        rp = p.resolve()
        return not any(o in rp.parents for o in others)

    # the folder as given, never resolved: a report is shared, and a machine's absolute paths mean nothing elsewhere
    parts = [f'<h2 id="run{idx}">{_e(run.name or str(run))}</h2><p class="meta">{_e(run)}</p>']
    cfg = _read_json(run / "config.json") if (run / "config.json").is_file() else None
    if isinstance(cfg, dict):
        parts.append(_config_section(cfg))
    if (run / "log.jsonl").is_file():
        parts.append(_log_section(run / "log.jsonl"))
    file_parts, records, evaluations = _result_files(run)
    parts += file_parts
    sub_records, sub_evaluations = _sub_folder_evaluations(run, own)
    evaluations += sub_evaluations
    if sub_records:
        records += sub_records
        folders = sorted({Path(r.source).parent.name for r in sub_records})
        parts.append(_eval_section(sub_records, f"Accuracy ({', '.join(x + '/' for x in folders)})"))
    parts.append(_evaluations_section(evaluations))
    parts += _figures(run, own)
    if len(parts) == 1:
        parts.append(
            '<p class="note">nothing recognised in this folder (no config.json, log.jsonl, JSON results '
            "or PNG figures)</p>"
        )
    return "\n".join(parts), records


def _result_files(run: Path) -> tuple[list[str], list[_sweep.SweepRecord], list[list[Any]]]:
    """Sections of the run folder's own JSON files (analyses, training results, evaluations),
    with the evaluations' accuracy records and rows."""
    parts: list[str] = []
    records: list[_sweep.SweepRecord] = []
    evaluations: list[list[Any]] = []
    for f in sorted(run.glob("*.json")):
        if f.name == "config.json" or f.name.startswith("state"):
            continue
        doc = _read_json(f)
        if doc is None:
            parts.append(f'<p class="note">{_e(f.name)} is not valid JSON; skipped</p>')
            continue
        kind = doc.get("analysis") if isinstance(doc, dict) else None
        if kind in _ANALYSES:
            if kind != "sweep":
                parts.append(_analysis_section(kind, doc))
            continue
        if isinstance(doc, dict) and "test_accuracy" in doc:
            parts.append(_training_result_table(f.name, doc))
        recs = _sweep.parse_evaluation(doc, f)
        if recs:
            records += recs
            evaluations += evaluation_rows(doc, f, run)
            parts.append(_eval_section(recs, f"Accuracy ({f.name})"))
            if isinstance(doc, dict) and isinstance(doc.get("models"), dict):
                nt = [
                    [n, m.get("near_threshold")]
                    for n, m in doc["models"].items()
                    if isinstance(m, dict) and "near_threshold" in m
                ]
                if nt:
                    parts.append(table(["model", "near-threshold share"], nt, pct_cols=(1,)))
    return parts, records, evaluations


def _training_result_table(name: str, doc: dict) -> str:
    """A training result file's metrics (test accuracy, samples, epochs, time, size, device)."""
    return f"<h3>{_e(name)}</h3>" + table(
        ["metric", "value"],
        [
            [
                k,
                f"{100 * doc[k]:.2f}%" if k == "test_accuracy" and isinstance(doc[k], (int, float)) else doc[k],
            ]
            for k in ("test_accuracy", "test_samples", "epochs", "train_seconds", "param_count", "device")
            if k in doc
        ],
    )


def _sub_folder_evaluations(run: Path, own: Any) -> tuple[list[_sweep.SweepRecord], list[list[Any]]]:
    """Accuracy records and rows of the evaluations in the run's sub-folders that ``own`` keeps."""
    # evaluations written into sub-folders (``spikeguard evaluate``'s default RUN/evaluation/, or
    # one folder per budget) belong to this run: one table over all of them
    sub_records: list[_sweep.SweepRecord] = []
    evaluations: list[list[Any]] = []
    for f in sorted([*run.glob("*/*.json"), *run.glob("evaluation/*/*.json")]):
        if f.parent.name.startswith(".") or f.name == "config.json" or f.name.startswith("state") or not own(f):
            continue
        doc = _read_json(f)
        if isinstance(doc, dict) and doc.get("analysis") not in _ANALYSES:
            recs = _sweep.parse_evaluation(doc, f)
            sub_records += recs
            evaluations += evaluation_rows(doc, f, run) if recs else []
    return sub_records, evaluations


def _figures(run: Path, own: Any) -> list[str]:
    """The run's PNG figures (up to two folders deep) embedded, those over MAX_IMAGE_BYTES named only."""
    pngs = sorted(p for p in run.rglob("*.png") if len(p.relative_to(run).parts) <= 3 and own(p))
    parts: list[str] = []
    if pngs:
        parts.append("<h3>Figures</h3>")
        for p in pngs:
            size = p.stat().st_size
            if size > MAX_IMAGE_BYTES:
                parts.append(f'<p class="note">{_e(p.relative_to(run))} ({size / 1e6:.1f} MB) not embedded</p>')
                continue
            parts.append(_img_tag(p.read_bytes(), str(p.relative_to(run))))
    return parts


def build_report(
    runs: Sequence[str | os.PathLike], out: str | os.PathLike, title: str = "spikeguard report", preface: str = ""
) -> Path:
    """Write the HTML report for ``runs`` to ``out`` (atomically) and return its path.

    ``preface``: HTML placed before the overview (e.g. a study's comparison tables, built with
    :func:`table`).
    """
    if not runs:
        raise DataError("give at least one run folder")
    dirs = []
    for r in runs:
        p = Path(r)
        if not p.is_dir():
            raise DataError(f"{p} is not a folder")
        dirs.append(p)
    sections, all_records = [], []
    resolved = [d.resolve() for d in dirs]
    for i, d in enumerate(dirs):
        inside = [o for o in resolved if o != resolved[i] and resolved[i] in o.parents]
        s, recs = _run_section(d, i, inside)
        sections.append(s)
        # a record named after its own run folder needs no prefix to tell it from the other runs'
        all_records += [
            _sweep.SweepRecord(
                **{**r.__dict__, "model": f"{d.name}/{r.model}" if len(dirs) > 1 and r.model != d.name else r.model}
            )
            for r in recs
        ]
    now = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    toc = "".join(f'<li><a href="#run{i}">{_e(d.name or str(d))}</a></li>' for i, d in enumerate(dirs))
    overview = ""
    if all_records:
        overview = (
            _eval_section(all_records, "Overview: accuracy of every model found")
            + f'<p class="meta">n: test samples behind the row. {_e(CLEAN_NOTE)}</p>'
        )
    body = (
        f"<h1>{_e(title)}</h1><p class=meta>generated {now} by spikeguard {__version__}; "
        f"{len(dirs)} run folder(s)</p><ul>{toc}</ul>{preface}{overview}" + "\n".join(sections)
    )
    doc = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>{body}</body></html>\n"
    )
    atomic_write_text(out, doc)
    return Path(out)
