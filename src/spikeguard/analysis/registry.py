"""The analysis registry: every ``spikeguard analyze WHAT`` is one function registered here.

A registered analysis takes an :class:`AnalysisContext` (the parsed command line, the loaded
models and test data, the output folder, ...) and returns its result dict (with a ``files``
list of what it wrote); ``spikeguard analyze`` writes the dict, with its provenance, to
``OUT/<name>.json``::

    @register_analysis("my_stat")
    def my_stat(ctx: AnalysisContext) -> dict:
        \"\"\"Mean logit of every model on the test images.\"\"\"
        ...
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..registry import Registry


@dataclass
class AnalysisContext:
    """What an analysis gets.

    Attributes:
        args: the request of ``spikeguard analyze`` (:class:`~spikeguard.jobs.analyze.AnalysisRequest`; its
            options by name: ``args.n``, ``args.seed`` ...).
        models: ``{name: model}`` of the checkpoints (first = baseline); empty for file analyses.
        runs: the loaded runs (their configs), in the same order.
        data: the test split (None without models).
        out: the output folder.
        device: the torch device.
        formats: figure formats.
        delta, v_threshold: near-threshold band half-width and threshold (from the first run's config).
        files: the result files given on the command line (analyses registered with ``files=True``).
    """

    args: Any
    models: dict[str, Any]
    runs: list
    data: Any
    out: Path
    device: Any
    formats: tuple[str, ...] | list[str]
    delta: float = 0.5
    v_threshold: float = 1.0
    files: list[str] = field(default_factory=list)

    def n_or(self, default: int) -> int:
        """``--n`` if given, else ``default``."""
        return default if self.args.n is None else int(self.args.n)

    @property
    def common(self) -> dict[str, Any]:
        """The keyword arguments every ``run_*`` function takes (seed, formats, title)."""
        return dict(seed=self.args.seed, formats=self.formats, title=self.args.title)


AnalysisFn = Callable[[AnalysisContext], dict]

#: Every analysis, by name (``spikeguard list analyses``); meta ``models`` (needs checkpoints),
#: ``files`` (reads result files instead) and ``in_all`` (part of ``analyze all``).
ANALYSES: Registry[AnalysisFn] = Registry("analysis")


def register_analysis(
    name: str, *, models: bool = True, files: bool = False, in_all: bool = False, description: str | None = None
) -> Callable[[AnalysisFn], AnalysisFn]:
    """Decorator: make ``fn(ctx: AnalysisContext) -> dict`` runnable as ``spikeguard analyze NAME``.

    Args:
        models: it needs at least one checkpoint (``-k``).
        files: it reads result files given as arguments (and loads no checkpoints).
        in_all: ``analyze all`` runs it.
        description: one line for ``spikeguard list analyses`` (default: the docstring's first sentence).
    """
    return ANALYSES.register(name, description=description, models=models, files=files, in_all=in_all)


__all__ = ["ANALYSES", "AnalysisContext", "register_analysis"]
