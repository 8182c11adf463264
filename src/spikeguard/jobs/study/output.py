"""The study's output folder policy: whose tables OUT holds, and what a new write replaces.

``spikeguard study --tables-only`` refuses to replace the tables another study file wrote into
OUT (:func:`refuse_other_study`), and every ``spikeguard study`` names the tables, figures and
report it is about to rewrite (:func:`rewrite_notes`).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from ...errors import ConfigError
from .spec import STUDY_JSON, STUDY_MD, StudySpec


def written_by(out: Path) -> tuple[str | None, str | None]:
    """``(study name, study file)`` recorded in ``OUT/study.json`` (Nones when there is none)."""
    try:
        doc = json.loads((out / STUDY_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None, None
    if not isinstance(doc, dict):
        return None, None
    return doc.get("study"), doc.get("file")


def refuse_other_study(spec: StudySpec, out: Path) -> None:
    """A one-line error if OUT's tables were written from another study (name or file)."""
    name, file = written_by(out)
    if name is None and file is None:
        return
    mine = Path(spec.path) if spec.path else None
    # the file is recorded as typed (relative to where the study ran): compare by name, and the
    # resolved path only when both resolve to existing files
    same_file = (
        file is None
        or mine is None
        or Path(file).name == mine.name
        or (Path(file).is_file() and Path(file).resolve() == mine.resolve())
    )
    if name == spec.name and same_file:
        return
    raise ConfigError(
        f"{out} holds the tables of study {name!r} ({file or 'file not recorded'}), not of "
        f"{spec.name!r} ({spec.path}); choose another --out, or pass --overwrite to replace them"
    )


def rewrite_notes(out: Path, report: bool = True) -> list[str]:
    """One ``rewriting FILE (written DATE)`` line per table, figure or report already in OUT."""
    names = [STUDY_MD, STUDY_JSON] + (["report.html"] if report else [])
    files = [out / n for n in names] + sorted((out / "figures").glob("*.png"))
    lines = []
    for f in files:
        if f.is_file():
            when = dt.datetime.fromtimestamp(f.stat().st_mtime, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
            lines.append(f"rewriting {f} (written {when})")
    return lines
