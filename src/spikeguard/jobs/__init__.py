"""Jobs: the layer between the building blocks and the command line or a study.

A job takes one request (what to evaluate, on which data, where to write), loads the model and
the data, runs the building blocks (:mod:`spikeguard.evaluation`, its audit), assembles the
result's provenance once and writes it through the one result writer into an output folder
chosen and guarded in one place (:mod:`spikeguard.jobs.output`). ``spikeguard evaluate``,
``spikeguard audit`` and ``spikeguard analyze`` only parse arguments into a request and print; the study's evaluation stage
and the demo use the same pieces.
"""

from .analyze import AnalysisRequest, AnalysisResult, run_analysis
from .audit import AuditRequest, run_audit
from .evaluate import EvaluationRequest, EvaluationResult, run_evaluation
from .output import result_dir, write_result
from .target import Target, TargetRequest, load_target

__all__ = [
    "AnalysisRequest",
    "AnalysisResult",
    "AuditRequest",
    "EvaluationRequest",
    "EvaluationResult",
    "Target",
    "TargetRequest",
    "load_target",
    "result_dir",
    "run_analysis",
    "run_audit",
    "run_evaluation",
    "write_result",
]
