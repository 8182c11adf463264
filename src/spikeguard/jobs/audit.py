"""The audit job: ``spikeguard audit`` without the argument parsing (load, audit, provenance once, write)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..attacks import EPS_RULE, parse_alpha
from ..errors import SpikeguardError
from ..evaluation import audit_robustness
from ..evaluation.audit import DEFAULT_SWEEP, AuditReport, audit_plan
from ..evaluation.progress import estimate_cost
from ..evaluation.results import audit_document
from ..io import removed_on_failure
from ..randomness import Randomness, detect_randomness
from .output import result_dir, write_result
from .target import Target, TargetRequest, load_target

Say = Callable[[str], None]
RESULT_FILE = "audit.json"


@dataclass
class AuditRequest(TargetRequest):
    """Everything ``spikeguard audit`` takes (see its ``--help``): :class:`TargetRequest` plus the checks' settings."""

    steps: int = 10
    alpha: str = "eps"
    tolerance: float = 1.0
    chance_margin: float = 0.05
    zero_grad_limit: float = 0.01
    square_queries: int = 500

    def check(self) -> None:
        """A one-line error for settings no check can run with."""
        if (
            self.steps < 1
            or self.square_queries < 1
            or self.tolerance < 0
            or self.chance_margin < 0
            or not 0 <= self.zero_grad_limit <= 1
        ):
            raise SpikeguardError(
                "need --steps >= 1, --square-queries >= 1, --tolerance >= 0, --chance-margin >= 0 "
                "and --zero-grad-limit in [0, 1]"
            )


@dataclass
class AuditResult:
    """The audit and where it was written."""

    audit: AuditReport
    path: Path
    document: dict


def _cost(req: AuditRequest, t: Target, rnd: Randomness) -> str:
    """The audit's own runs priced like ``spikeguard evaluate``'s suite (before they start)."""
    eot = req.eot if rnd.stochastic else 1
    plan = audit_plan(
        t.model,
        req.eps,
        stochastic=rnd.stochastic,
        eot=eot,
        eot_check=req.eot if req.eot > 1 else 8,
        steps=req.steps,
        alpha=parse_alpha(req.alpha, EPS_RULE),
        sweep=DEFAULT_SWEEP,
        square_queries=req.square_queries,
    )
    b = req.batch_size
    x, y = t.images[:b].to(t.device), t.labels[:b].to(t.device)
    cost = estimate_cost(t.model, plan.runs, x, y, len(t.labels), b, req.passes if rnd.stochastic else 1)
    return cost.format()


def _document(req: AuditRequest, t: Target, audit: AuditReport) -> dict:
    """The ``audit.json`` document, its provenance assembled here (once)."""
    prov = t.provenance(
        req.argv,
        attacks=[],
        eps=req.eps,
        n_samples=len(t.labels),
        seed=req.seed,
        passes=req.passes,
        eot=req.eot,
        data=t.data,
        steps=req.steps,
    )
    return audit_document(
        audit,
        prov,
        checkpoint=str(t.run.path),
        model_file=req.model_file,
        weights=req.weights,
        data=t.data,
        command="audit",
    )


def run_audit(
    req: AuditRequest, *, log: Say | None = None, echo: Say | None = None, progress: bool = False
) -> AuditResult:
    """Audit ``req``'s model and write ``audit.json`` (``log``: setup notes and cost, ``echo``: the verdicts)."""
    req.check()
    t = load_target(req)
    out, created = result_dir(t.run.path, "audit", req.eps, RESULT_FILE, out=req.out, overwrite=req.overwrite)
    with removed_on_failure(out, created=created):
        if log is not None:
            log(
                f"auditing {t.run.path} on {t.data['name']}/{t.data['split']} ({len(t.labels)} images); "
                f"output folder {out}"
            )
        rnd = detect_randomness(t.model, t.images[:8].to(t.device), mode=req.randomness, seed=req.seed)
        if log is not None:
            log(_cost(req, t, rnd))
        audit = audit_robustness(
            t.model,
            t.images,
            t.labels,
            eps=req.eps,
            eot=req.eot,
            passes=req.passes,
            steps=req.steps,
            alpha=parse_alpha(req.alpha, EPS_RULE),
            randomness=rnd,
            tolerance=req.tolerance,
            chance_margin=req.chance_margin,
            zero_grad_limit=req.zero_grad_limit,
            square_queries=req.square_queries,
            batch_size=req.batch_size,
            seed=req.seed,
            device=t.device,
            progress=progress,
        )
        if echo is not None:
            echo(audit.format())
        doc = _document(req, t, audit)
        path = write_result(out / RESULT_FILE, doc)
    return AuditResult(audit, path, doc)
