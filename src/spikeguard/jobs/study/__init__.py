"""A study: train a list of runs, evaluate each under named protocols, write one comparison.

``spikeguard study configs/studies/NAME.toml --out runs/NAME`` is this package's
:func:`run_study`. A study file is TOML (paths are relative to the study file)::

    name = "cpu-digits-smoke"
    description = "..."
    seeds = [0, 1, 2]              # optional: every [[runs]] entry trains once per seed (runs/NAME-sSEED)

    [defaults]                     # every run starts from this preset and these overrides
    preset = "../cpu/digits-small_conv-bptt.toml"
    set = ["optim.epochs=2"]       # (seeds may be given here instead of the top level)

    [evaluation]
    protocols = ["paper", "strong"]    # spikeguard.protocols
    n_samples = 1000                   # class-balanced test images (0 = the whole split), the same for every seed
    eps = ["2/255", "4/255", "8/255"]  # one budget ("8/255") or several (tables per eps)
    batch_size = 128
    seed = 0                           # the evaluation images' seed (not a training seed)
    reference = "vanilla"              # the row shares and paired differences are measured against

    [protocols.strong]                 # optional overrides of a protocol (Protocol.with_overrides)
    eot = 4

    [control]                          # the BN-rescaled control next to the share (at the first eps)
    k = 3.0
    attack = "pgd10"                   # "" = clean accuracy only

    [calibration]                      # spikeguard.jobs.calibration settings, for runs with calibrate = true
    target_reduction = 0.4
    # reuse_from = "../../docs/results/NAME"   # optional: another study's results folder (relative to this
                                       # file) whose calibration of the same row is reused if settings and trials match

    [budget]                           # used with --budget
    eval_reserve = 0.3                 # share of the budget kept for evaluation
    probe_images = 0                   # images of the probe epoch (0 = a whole epoch)

    [[runs]]
    name = "vanilla"                   # folder OUT/runs/vanilla (with seeds: OUT/runs/vanilla-s0, ...)
    training = "BPTT"                  # Table 1's first column
    label = "vanilla"                  # Table 1's second column
    set = ["neuron.kind=\\"lif\\""]     # overrides after the defaults (preset = "..." replaces it)
    source = ""                        # transfer source (a run name; the same seed) for the strong protocol
    baseline = ""                      # the row paired differences are taken against ("" = reference)
    calibrate = false                  # pick tgo.lambda_max with spikeguard.jobs.calibration first
    paper = {clean = 93.32, FGSM = 14.05}   # the paper's numbers for this row (%), shown beside

Stages, each printed as it starts: plan (and ``--budget``'s probe), calibration (once per
calibrated ``[[runs]]`` entry, on its first seed's config; the picked lambda_max is used for all
its seeds), training (finished runs reused, interrupted ones resumed), evaluation (near-threshold
share, BN control, every protocol group at every eps through the evaluation engine; finished
groups reused, interrupted ones resumed from the engine's journal), tables (``study.md``,
``study.json``: per eps, seed means, per-sample and paired intervals, see
:mod:`spikeguard.jobs.study.tables`), figures and the HTML report
(:func:`spikeguard.analysis.report.build_report`).

Modules: :mod:`~spikeguard.jobs.study.spec` (the file, the folder layout), :mod:`~spikeguard.jobs.study.stages`
(plan, calibration, training, evaluation, :func:`run_study`, :func:`summarize_study`),
:mod:`~spikeguard.jobs.study.tables` (rows, statistics, ``study.md``/``study.json``, figures),
:mod:`~spikeguard.jobs.study.output` (whose tables OUT holds, what a write replaces).
"""

from __future__ import annotations

from .spec import (
    PLAN_JSON,
    STUDY_JSON,
    STUDY_MD,
    RunSpec,
    StudySpec,
    eps_folder,
    group_result_path,
    load_study,
    parse_duration,
    pending_work,
    result_path,
)
from .output import refuse_other_study, rewrite_notes, written_by
from .stages import plan_epochs, run_study, summarize_study
from .tables import aggregate, build_rows, format_markdown, plot_study, write_comparison

__all__ = [
    "RunSpec",
    "StudySpec",
    "load_study",
    "run_study",
    "summarize_study",
    "write_comparison",
    "pending_work",
    "group_result_path",
    "result_path",
    "eps_folder",
    "plan_epochs",
    "parse_duration",
    "build_rows",
    "aggregate",
    "format_markdown",
    "plot_study",
    "STUDY_JSON",
    "STUDY_MD",
    "PLAN_JSON",
    "refuse_other_study",
    "rewrite_notes",
    "written_by",
]
