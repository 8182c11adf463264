"""The one result schema of a robustness evaluation, its provenance, its writer and its reader.

Every robust-accuracy result spikeguard writes (``spikeguard evaluate``, the training-time
evaluation of ``eval.attacks``, studies and the ablation, the demo) carries a **provenance** record
and is written by :func:`write_robustness` or built by :func:`robustness_document` (studies and
the ablation: one per run and protocol group; the demo embeds the same documents in its summary). Readers (``analyze sweep``, ``report``) go through :func:`read_results`,
which understands this version, version 2 (no evaluation mode: every attack ran on every
sample) and the earlier, provenance-less layout (version 1) that spikeguard 0.1.0 wrote
before, so older result files keep loading. See docs/evaluation.md.

Version 3 adds the evaluation mode: ``report.mode`` is ``individual`` (every attack on every
sample, per-attack accuracies) or ``cascade`` (cheap to expensive, each attack on the samples
still robust; ``report.attacks[name]`` then has ``accuracy: null`` and ``cascade: {attacked,
broke}``, the table only ``clean`` and ``worst case``), ``report.attack_order``,
``report.paired_passes`` and ``per_sample.broken_by``. A version-2 document reads as
``mode: individual``.

A document of version 3::

    {"schema": "spikeguard.robustness", "version": 3,
     "model": "tgo",                       # display name (the run folder's name)
     "provenance": {...},                  # see provenance()
     "table": {"clean": 0.98, "FGSM": ...},
     "report": RobustnessReport.to_dict(),  # eps, n_samples, clean, attacks, worst_case, ...
     ...}                                  # command-specific extras (data, audit, ...)
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any, Mapping

import torch

from .._version import __version__
from ..errors import DataError
from ..io import atomic_write_json
from ..utils import parse_eps

SCHEMA = "spikeguard.robustness"
VERSION = 3
#: the demo's ``results.json`` layout (unchanged by version 3 of the robustness schema)
DEMO_VERSION = 2
#: result versions :func:`read_results` understands
READABLE_VERSIONS = (1, 2, 3)
DEMO_SCHEMA = "spikeguard.demo"

PROTOCOL_ENGINE = "engine"
"""``evaluate_robustness``: per-sample flags, robust = correct clean and attacked on the same
pass, passes under common random numbers, randomness seeded per (seed, batch)."""
PROTOCOL_DEMO = "demo-stream"
"""The demo's protocol (kept so that its published numbers reproduce): one RNG stream seeded
with ``seed + 1``, fresh noise on every judging pass, robust = correct after the attack."""


def checkpoint_id(run: str | os.PathLike | None) -> str | None:
    """First 16 hex digits of the SHA-256 of a run's ``model.safetensors`` (None if there is none).

    Two results with the same id were measured on bit-identical weights, whatever the folder
    was called or moved to.
    """
    if run is None:
        return None
    p = Path(run)
    f = p if p.is_file() else p / "model.safetensors"
    if not f.is_file():
        return None
    h = hashlib.sha256()
    with open(f, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def command_line(argv: list[str] | None = None) -> str:
    """``spikeguard evaluate --checkpoint ...`` as typed (shell-quoted)."""
    args = sys.argv[1:] if argv is None else argv
    return "spikeguard " + " ".join(shlex.quote(a) for a in args)


def software() -> dict:
    """Versions that can change a number: spikeguard, torch, Python."""
    return {"spikeguard": __version__, "torch": torch.__version__, "python": platform.python_version()}


def now_utc() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def provenance(
    *,
    command: str,
    protocol: str = PROTOCOL_ENGINE,
    checkpoint: str | os.PathLike | None = None,
    report: Any = None,
    attacks: list[str] | None = None,
    eps: float | None = None,
    n_samples: int | None = None,
    seed: int | None = None,
    passes: int | None = None,
    eot: int | None = None,
    data: Mapping | None = None,
    **extra: Any,
) -> dict:
    """The provenance record of one result.

    Fields: ``checkpoint`` (path as given), ``checkpoint_id`` (see :func:`checkpoint_id`),
    ``command``, ``protocol``, ``attacks``, ``eps``, ``n_samples``, ``seed``, ``passes``,
    ``eot``, ``data``, ``software``, ``date`` (UTC), plus ``extra``. Values not given are
    taken from ``report`` (a :class:`~spikeguard.evaluation.engine.RobustnessReport`).
    """
    if report is not None:
        attacks = list(report.results) if attacks is None else attacks
        eps = report.eps if eps is None else eps
        n_samples = report.n if n_samples is None else n_samples
        seed = report.seed if seed is None else seed
        passes = report.passes if passes is None else passes
        eot = report.eot if eot is None else eot
    return {
        "checkpoint": str(checkpoint) if checkpoint is not None else None,
        "checkpoint_id": checkpoint_id(checkpoint),
        "command": command,
        "protocol": protocol,
        "attacks": list(attacks or []),
        "eps": eps,
        "n_samples": n_samples,
        "seed": seed,
        "passes": passes,
        "eot": eot,
        "data": dict(data) if data is not None else None,
        "software": software(),
        "date": now_utc(),
        **extra,
    }


def evaluation_provenance(
    *,
    command: str,
    checkpoint: str | os.PathLike | None,
    identity: str | os.PathLike | None = None,
    report: Any = None,
    protocol: str = PROTOCOL_ENGINE,
    **fields: Any,
) -> dict:
    """The provenance record of one evaluation, audit or demo result: the one place it is assembled.

    Every writer of a result (``spikeguard.jobs``, the study, the demo, the training-time
    evaluation) goes through here, so the records of the same measurement agree field for field.
    ``checkpoint`` is the path recorded; ``identity`` the file whose hash identifies the weights
    when that is not the checkpoint (a ``--model-file`` model's weights file); ``fields`` are
    :func:`provenance`'s (attacks, eps, n_samples, seed, passes, eot, data) and the caller's extras.
    """
    prov = provenance(command=command, protocol=protocol, checkpoint=checkpoint, report=report, **fields)
    if identity is not None:
        prov["checkpoint_id"] = checkpoint_id(identity)
    return prov


def robustness_document(
    report: Any, prov: Mapping, *, model: str | None = None, per_sample: bool = True, **extra: Any
) -> dict:
    """The current-version document of ``report`` (see the module docstring)."""
    if model is None and prov.get("checkpoint"):
        p = Path(prov["checkpoint"])
        model = (p.parent if p.suffix == ".safetensors" else p).resolve().name
    return {
        "schema": SCHEMA,
        "version": VERSION,
        "model": model,
        "provenance": dict(prov),
        "table": report.table_row(),
        "report": report.to_dict(per_sample=per_sample),
        **extra,
    }


def write_robustness(path: str | os.PathLike, report: Any, prov: Mapping, **kw: Any) -> Path:
    """Write ``report`` with its provenance as JSON, atomically (the one writer of results)."""
    atomic_write_json(path, robustness_document(report, prov, **kw))
    return Path(path)


AUDIT_SCHEMA = "spikeguard.audit"


def audit_document(audit: Any, prov: Mapping, **extra: Any) -> dict:
    """The ``audit.json`` document of an :class:`~spikeguard.evaluation.audit.AuditReport` with its provenance."""
    return {"schema": AUDIT_SCHEMA, "version": VERSION, "provenance": dict(prov), **extra, "audit": audit.to_dict()}


def write_audit(path: str | os.PathLike, audit: Any, prov: Mapping, **extra: Any) -> Path:
    """Write an :class:`~spikeguard.evaluation.audit.AuditReport` with its provenance, atomically."""
    atomic_write_json(path, audit_document(audit, prov, **extra))
    return Path(path)


# ------------------------------------------------------------------------------------ reading
def _v1_provenance(doc: Mapping, rep: Mapping, protocol: str, command: str | None) -> dict:
    data = doc.get("data") if isinstance(doc.get("data"), Mapping) else None
    return {
        "checkpoint": doc.get("checkpoint"),
        "checkpoint_id": None,
        "command": doc.get("command", command),
        "protocol": protocol,
        "attacks": list(rep.get("attacks") or []) if isinstance(rep.get("attacks"), Mapping) else [],
        "eps": rep.get("eps"),
        "n_samples": rep.get("n_samples") or (data or {}).get("n_samples"),
        "seed": rep.get("seed", (data or {}).get("seed")),
        "passes": rep.get("passes"),
        "eot": rep.get("eot"),
        "data": data,
        "software": None,
        "date": None,
    }


def read_results(doc: Any) -> list[dict] | None:
    """Every robustness document in ``doc``, as current-layout dicts (None: not a result file).

    Understands versions 3 and 2 (read as ``mode: individual``) of ``spikeguard.robustness`` and ``spikeguard.demo``, and the
    version-1 layouts (no ``schema`` key) that spikeguard 0.1.0 wrote: ``evaluate``'s and the
    training-time ``robustness.json`` (``{"checkpoint", "command", "table", "report"}``) and the
    demo's ``results.json`` (``{"config", "models": {name: {"clean", "attacks": {attack:
    {"8/255": acc}}}}}``). A demo document becomes one document per model and eps.
    """
    if not isinstance(doc, Mapping):
        return None
    schema = doc.get("schema")
    if schema == SCHEMA:
        if doc.get("version") not in READABLE_VERSIONS:
            v = doc.get("version")
            newer = isinstance(v, int) and v > VERSION
            raise DataError(
                f"result schema version {v} is "
                + ("newer than" if newer else "not one")
                + f" this spikeguard reads ({', '.join(map(str, READABLE_VERSIONS))})"
                + ("; upgrade spikeguard" if newer else "")
            )
        out = dict(doc)
        if doc.get("version") == 2 and isinstance(doc.get("report"), Mapping):
            out["report"] = {"mode": "individual", **doc["report"]}  # version 2 ran every attack on every sample
        return [out]
    if schema == DEMO_SCHEMA or (
        schema is None and isinstance(doc.get("models"), Mapping) and isinstance(doc.get("config"), Mapping)
    ):
        return _demo_documents(doc)
    if schema is None and isinstance(doc.get("report"), Mapping) and isinstance(doc["report"].get("attacks"), Mapping):
        rep = doc["report"]
        out = {
            "schema": SCHEMA,
            "version": 1,
            "model": None,
            "provenance": _v1_provenance(doc, rep, PROTOCOL_ENGINE, None),
            "table": doc.get("table"),
            "report": rep,
        }
        return [out]
    return None


def _demo_documents(doc: Mapping) -> list[dict]:
    """One version-2-like document per demo model and eps (the demo measures several eps at once)."""
    cfg = doc.get("config") or {}
    out = []
    for name, m in doc["models"].items():
        if not isinstance(m, Mapping) or not isinstance(m.get("attacks"), Mapping):
            continue
        prov = dict(m.get("provenance") or {})
        if not prov:  # version 1: rebuild what the demo's config says
            prov = {
                "checkpoint": None,
                "checkpoint_id": None,
                "command": "spikeguard demo",
                "protocol": PROTOCOL_DEMO,
                "n_samples": int(cfg.get("n_test") or 0) or 360,
                "seed": cfg.get("seed"),
                "passes": m.get("passes"),
                "eot": m.get("eot"),
                "software": None,
                "date": None,
            }
        by_eps: dict[float, dict] = {}
        for attack, per in m["attacks"].items():
            if not isinstance(per, Mapping):
                continue
            for lab, acc in per.items():
                try:
                    e = parse_eps(str(lab))
                except ValueError:
                    continue
                by_eps.setdefault(e, {})[attack] = {"accuracy": acc}
        lam = cfg.get("lambda_max") if "tgo" in str(name).lower() else None
        for e, attacks in by_eps.items():
            out.append(
                {
                    "schema": SCHEMA,
                    "version": doc.get("version", 1),
                    "model": str(name),
                    "provenance": {**prov, "eps": e, "attacks": list(attacks)},
                    "lambda_max": m.get("lambda_max", lam),
                    "report": {
                        "eps": e,
                        "n_samples": prov.get("n_samples"),
                        "clean": {"accuracy": m.get("clean")},
                        "attacks": attacks,
                    },
                }
            )
    return out


__all__ = [
    "SCHEMA",
    "VERSION",
    "READABLE_VERSIONS",
    "DEMO_SCHEMA",
    "DEMO_VERSION",
    "PROTOCOL_ENGINE",
    "PROTOCOL_DEMO",
    "checkpoint_id",
    "command_line",
    "provenance",
    "evaluation_provenance",
    "robustness_document",
    "write_robustness",
    "write_audit",
    "audit_document",
    "AUDIT_SCHEMA",
    "read_results",
    "software",
    "now_utc",
]
