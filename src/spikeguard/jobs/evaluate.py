"""The evaluation job: a model and its data through the attack suite, optional audit, one written result.

:func:`run_evaluation` is ``spikeguard evaluate`` without the argument parsing: load the target,
run the attacks (sharded over the processes of a distributed context, resumable from a per-batch
journal), run the audit when asked, assemble the provenance once and write ``robustness.json``
into an output folder that never silently replaces a result. :func:`attack_and_audit` is the part
the study's evaluation stage shares with it.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from .. import distributed
from ..attacks import PAPER_ALPHA, SUITE_ALPHA, parse_alpha, parse_attacks
from ..attacks.registry import SUITE_ATTACK_KW
from ..checkpoint import load_run
from ..errors import CheckpointError, SpikeguardError
from ..evaluation import audit_robustness, sharded
from ..evaluation.audit import AuditReport
from ..evaluation.engine import RobustnessReport
from ..evaluation.events import event_report, rounding_check
from ..evaluation.progress import suite_cost
from ..evaluation.results import robustness_document
from ..io import removed_on_failure
from ..neurons import is_stochastic
from .output import result_dir, write_result
from .target import Target, TargetRequest, load_target

Say = Callable[[str], None]
RESULT_FILE = "robustness.json"


@dataclass
class EvaluationRequest(TargetRequest):
    """Everything ``spikeguard evaluate`` takes (see its ``--help``); :class:`TargetRequest` plus the attacks.

    ``attacks`` is the comma-separated list as typed, ``suite`` a preset (``paper`` when neither
    is given); ``alpha`` the step size as typed (None: the suite's rule); ``event_ks`` the event
    budgets as typed; ``per_sample`` keeps the per-sample results in the JSON.
    """

    attacks: str = ""
    suite: str | None = None
    alpha: str | None = None
    source: str | None = None
    square_queries: int | None = None
    audit: bool = False
    audit_steps: int = 10
    individual: bool = False
    per_sample: bool = True
    event_ks: str = ""
    restart: bool = False

    def preset(self) -> str:
        """The suite the attack list starts from ('' when only ``attacks`` are named)."""
        return self.suite or ("" if self.attacks else "paper")

    def attack_names(self) -> list[str]:
        """The attacks, suites expanded (a one-line error names an unknown one)."""
        return parse_attacks(",".join(t for t in (self.preset(), self.attacks) if t))

    def runs_individually(self) -> bool:
        """Every attack on every sample (else the cascade); ``--suite paper`` always runs individually."""
        return bool(self.individual or self.preset() == "paper")

    def step_size(self) -> Any:
        """The PGD-type step size: as given, else the suite's rule."""
        return parse_alpha(self.alpha, SUITE_ALPHA.get(self.preset(), PAPER_ALPHA))

    def event_budgets(self) -> list[int]:
        """The ``event_ks`` budgets (empty when none were asked for)."""
        if not self.event_ks:
            return []
        try:
            ks = [int(t) for t in self.event_ks.split(",") if t.strip()]
        except ValueError:
            raise SpikeguardError(f"--event-ks must be comma-separated integers, got {self.event_ks!r}") from None
        if not ks or min(ks) < 0:
            raise SpikeguardError(f"--event-ks needs budgets >= 0, got {self.event_ks!r}")
        return ks

    def attack_kw(self) -> dict | None:
        """Per-attack keyword arguments: the suite's own (Square's 5,000 queries in ``strong``),
        then ``square_queries`` when given."""
        kw = {name: dict(v) for name, v in SUITE_ATTACK_KW.get(self.preset(), {}).items()}
        if self.square_queries:
            kw["square"] = {**kw.get("square", {}), "queries": self.square_queries}
        return kw or None


@dataclass
class EvaluationResult:
    """What :func:`run_evaluation` measured: the report (every rank), the written document (rank 0)."""

    report: RobustnessReport
    path: Path | None = None
    document: dict | None = None
    audit: AuditReport | None = None


def _check_source(source: nn.Module, model: nn.Module, x: Tensor, path: str) -> None:
    """A one-line error if the transfer source cannot take the target's inputs or classes."""
    try:
        with torch.inference_mode():
            k_src, k_tgt = source(x).shape[1], model(x).shape[1]
    except (RuntimeError, ValueError) as e:
        raise CheckpointError(f"--source {path} cannot take this data: {str(e).splitlines()[0]}") from None
    if k_src != k_tgt:
        raise CheckpointError(f"--source {path} has {k_src} classes, the target {k_tgt}")


def _settings(req: EvaluationRequest, t: Target, names: list[str]) -> dict:
    """The settings a journal of finished batches belongs to (the same weights included)."""
    return {
        "checkpoint": str(t.path.resolve()),
        "weights": t.weights_stamp(),
        "model_file": req.model_file,
        "randomness": req.randomness,
        "source": str(Path(req.source).resolve()) if req.source else None,
        "data": t.data,
        "attacks": names,
        "eps": req.eps,
        "eot": req.eot,
        "passes": req.passes,
        "alpha": req.step_size(),
        "batch_size": req.batch_size,
        "seed": req.seed,
        "attack_kw": req.attack_kw(),
        "individual": req.runs_individually(),
    }


def _announce(req: EvaluationRequest, t: Target, names: list[str], out: Path, journal: Path, log: Say) -> int:
    """Say what runs where; returns the number of finished batches already on record."""
    n_done = len(sharded.read_journal(journal))
    log(f"evaluating {t.run.path} on {t.data['name']}/{t.data['split']} ({len(t.labels)} images): {', '.join(names)}")
    log(f"output folder: {out}")
    if n_done:
        log(f"resuming: {n_done} finished batches on record in {journal}")
    return n_done


def _print_cost(req: EvaluationRequest, t: Target, names: list[str], source: Any, log: Say) -> None:
    """The cost estimate of the suite before it starts (the event report's attacks run after it)."""
    b = req.batch_size
    event_names = [f"{a}{k}" for k in req.event_budgets() for a in ("event-flip", "random-flip")]
    cost = suite_cost(
        t.model,
        names + event_names,
        t.images[:b].to(t.device),
        t.labels[:b].to(t.device),
        len(t.labels),
        eps=req.eps,
        eot=req.eot,
        passes=req.passes,
        alpha=req.step_size(),
        batch_size=b,
        source=source,
        attack_kw=req.attack_kw(),
        cascade=not req.runs_individually(),
    )
    log(cost.format())


def attack_and_audit(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    attacks: list[str],
    *,
    journal: Path,
    audit_steps: int | None = None,
    audit_alpha: Any = None,
    ctx: Any = None,
    progress: bool = False,
    on_report: Callable[[RobustnessReport], None] | None = None,
    **kw: Any,
) -> tuple[RobustnessReport, AuditReport | None]:
    """The attacks through the sharded, journalled engine, then the audit on their report when asked.

    ``kw`` goes to :func:`~spikeguard.evaluation.sharded.evaluate_sharded` (eps, eot, passes,
    alpha, batch_size, seed, source, attack_kw, device, randomness, individual); the audit
    (``audit_steps`` PGD steps, None: no audit) reuses the budget, passes, seed and randomness.
    Only rank 0 of ``ctx`` runs the audit; ``on_report`` sees the report before the audit starts.
    """
    report = sharded.evaluate_sharded(model, images, labels, attacks, journal=journal, ctx=ctx, progress=progress, **kw)
    if ctx is not None and not ctx.is_main:
        return report, None
    if on_report is not None:
        on_report(report)
    if audit_steps is None:
        return report, None
    audit_kw: dict[str, Any] = {
        k: kw[k] for k in ("eps", "eot", "passes", "batch_size", "seed", "device", "randomness") if k in kw
    }
    if audit_alpha is not None:
        audit_kw["alpha"] = audit_alpha
    audit = audit_robustness(model, images, labels, report=report, steps=audit_steps, progress=progress, **audit_kw)
    return report, audit


def _event_checks(req: EvaluationRequest, t: Target, audit: AuditReport | None, echo: Say) -> dict:
    """The audit's event-rounding check and the event report (event data only), as result fields."""
    extra: dict = {}
    if audit is not None:
        extra["audit"] = audit.to_dict()
        echo("")
        echo(audit.format())
        if getattr(t.model, "frame_norm", "") and not req.event_ks:
            # event data: a frame attack that rounding back to events erases is false robustness
            rc = rounding_check(
                t.model,
                t.images,
                t.labels,
                "pgd10",
                eps=req.eps,
                batch_size=req.batch_size,
                seed=req.seed,
                eot=req.eot if is_stochastic(t.model) else 1,
                alpha=req.step_size(),
            )
            extra["audit"]["event_rounding"] = rc.to_dict()
            echo(
                rc.warning()
                or f"rounding PGD-10 back to events: success {rc.success_continuous:.1%} on "
                f"frames, {rc.success_rounded:.1%} as events"
            )
    if req.event_ks:  # event data: success rate of the event-stream attacks vs the budget k
        extra["events"], text = event_report(
            t.model,
            t.images,
            t.labels,
            req.event_budgets(),
            eps=req.eps,
            eot=req.eot,
            batch_size=req.batch_size,
            seed=req.seed,
            alpha=req.step_size(),
        )
        echo("")
        echo(text)
    return extra


def _quiet(_text: str) -> None:
    """A sink for what a quiet job would say."""


def _document(req: EvaluationRequest, t: Target, report: RobustnessReport, names: list[str], ctx: Any) -> dict:
    """The result document without the audit and event fields, its provenance assembled here (once)."""
    prov = t.provenance(
        req.argv,
        report=report,
        attacks=names,
        data=t.data,
        alpha=req.step_size(),
        batch_size=req.batch_size,
        source=req.source,
        processes=ctx.world_size,
        randomness=req.randomness,
        mode="individual" if req.runs_individually() else "cascade",
    )
    cfg = getattr(t.run, "config", None)  # None for a --model-file model
    return robustness_document(
        report,
        prov,
        per_sample=req.per_sample,
        lambda_max=cfg.tgo.lambda_max if cfg is not None and cfg.tgo.enabled else None,
        checkpoint=str(t.run.path),
        model_file=req.model_file,
        weights=req.weights,
        source=req.source,
        data=t.data,
        command="evaluate",
        processes=ctx.world_size,
    )


def run_evaluation(
    req: EvaluationRequest,
    *,
    log: Say | None = None,
    echo: Say | None = None,
    detail: Say | None = None,
    progress: bool = False,
    ctx: Any = None,
) -> EvaluationResult:
    """Evaluate ``req`` and write ``robustness.json`` (rank 0 of ``ctx``, default the current context).

    ``log`` gets the setup notes and the cost estimate, ``echo`` the tables and verdicts,
    ``detail`` the process and journal details (None: say nothing); ``progress`` shows bars.
    An unfinished run with the same settings resumes from its journal (``req.restart`` drops it).
    """
    ctx = ctx if ctx is not None else distributed.current()
    names = req.attack_names()
    t = load_target(req)
    source = load_run(req.source, device=t.device).model if req.source else None
    if source is not None:
        _check_source(source, t.model, t.images[:2].to(t.device), req.source)  # type: ignore[arg-type]
    jname = f".evaluate-{sharded.journal_key(_settings(req, t, names))}"
    what = req.suite or ("-".join(names) if len(names) <= 3 else f"{len(names)}attacks")
    out, created = result_dir(
        t.run.path, what, req.eps, RESULT_FILE, out=req.out, overwrite=req.overwrite, ctx=ctx, journal_name=jname
    )
    journal = out / jname
    with removed_on_failure(out, created=created and ctx.is_main):
        if req.restart and ctx.is_main and journal.exists():
            shutil.rmtree(journal, ignore_errors=True)
        ctx.barrier()
        n_done = _announce(req, t, names, out, journal, log) if log is not None else 0
        if detail is not None and ctx.is_main:
            detail(
                f"{ctx.world_size} process(es), {ctx.backend or 'no process group'}, device {t.device}, journal {journal}"
            )
        if log is not None and not n_done:
            _print_cost(req, t, names, source, log)
        say = echo or _quiet
        report, audit = attack_and_audit(
            t.model,
            t.images,
            t.labels,
            names,
            journal=journal,
            audit_steps=req.audit_steps if req.audit else None,
            ctx=ctx,
            progress=progress,
            on_report=lambda r: say(r.format_table(f"robust accuracy of {t.run.path}")),
            eps=req.eps,
            eot=req.eot,
            passes=req.passes,
            alpha=req.step_size(),
            batch_size=req.batch_size,
            seed=req.seed,
            source=source,
            attack_kw=req.attack_kw(),
            device=t.device,
            randomness=req.randomness,
            individual=req.runs_individually(),
        )
        if not ctx.is_main:
            return EvaluationResult(report)
        doc = _document(req, t, report, names, ctx)
        doc.update(_event_checks(req, t, audit, say))
        path = write_result(out / RESULT_FILE, doc, journal)
    return EvaluationResult(report, path, doc, audit)
