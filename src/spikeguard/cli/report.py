"""``spikeguard report RUN... --out report.html``: one self-contained HTML page."""

from __future__ import annotations

import argparse

EPILOG = """\
examples:
  spikeguard report runs/demo --out report.html
  spikeguard report runs/c100-vgg11 runs/c100-vgg11-tgo runs/analysis --out runs/report.html

Each folder may be a training run (config.json, log.jsonl, results.json), the demo's output
(results.json, potentials.png), an evaluation folder (JSON files with eps and attacks) or an
'spikeguard analyze' output folder (membrane.json, flip.json, ... and PNG figures). Figures
are embedded as base64 PNG, so the single HTML file opens from disk with no server."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="one self-contained HTML report (tables + embedded figures) for a set of run folders",
        description="Collect the configuration, training curves, accuracy tables, analysis numbers and figures "
        "of one or more run folders into a single HTML file that opens in any browser without a "
        "server.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run / evaluation / analysis folders")
    p.add_argument("--out", "-o", default="report.html", metavar="HTML", help="output file (default report.html)")
    p.add_argument("--title", default="spikeguard report", help="page title")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file (default: refuse)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..analysis.report import build_report
    from ..errors import SpikeguardError

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise SpikeguardError(f"{out} already exists; choose another --out, or pass --overwrite to replace it")
    path = build_report(args.runs, args.out, args.title)
    size = path.stat().st_size
    print(f"wrote {path} ({size / 1024:.0f} KiB); open it in a browser (no server needed)")
    return 0
