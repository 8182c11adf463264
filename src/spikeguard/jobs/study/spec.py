"""The study file: its parsed form (:class:`StudySpec`), its reader and the study folder's layout.

Seeds: a study file may name training seeds (``seeds = [0, 1, 2]`` at the top level or in
``[defaults]``); every ``[[runs]]`` entry is then expanded into one :class:`RunSpec` per seed,
named ``NAME-sSEED`` (folder ``OUT/runs/NAME-sSEED``, config ``seed`` set, transfer source the
source entry's run of the same seed). Without ``seeds`` a run keeps its plain name and its
config's seed, so study folders written before seeds existed resume unchanged.

Eps: ``[evaluation].eps`` is one budget (``"8/255"``: results in ``eval-PROTOCOL/``, the layout
of earlier studies) or a list (``["2/255", "4/255"]``: results in ``eval-PROTOCOL/eps-2_255/``).
"""

from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ...config import ExperimentConfig, load_config, read_toml
from ...errors import ConfigError
from ...protocols import Protocol, get_protocol
from ..calibration import RESULT_FILE, settings_from_dict
from ..train import RESULTS_FILE
from ...utils import eps_label, parse_budget

STUDY_JSON = "study.json"
STUDY_MD = "study.md"
PLAN_JSON = "plan.json"
Log = Callable[[str], None]


@dataclass
class RunSpec:
    """One trained model of the study (one ``[[runs]]`` entry at one seed; see :mod:`spikeguard.jobs.study`).

    ``entry`` is the ``[[runs]]`` name the run belongs to (its table row), ``seed`` the training
    seed (None: the study names no seeds), ``baseline`` the entry its paired differences are
    taken against ("" = the study's reference).
    """

    name: str
    config: ExperimentConfig
    training: str = ""
    label: str = ""
    source: str = ""
    calibrate: bool = False
    paper: dict = field(default_factory=dict)
    entry: str = ""
    seed: int | None = None
    baseline: str = ""

    @property
    def row(self) -> str:
        """The table row (``[[runs]]`` name) this run is averaged into."""
        return self.entry or self.name


@dataclass
class StudySpec:
    """A parsed study file, or a study built in memory (``spikeguard ablation``: ``path`` None).

    ``evaluation``, ``control`` and ``budget`` hold every key of the study file's tables (the
    defaults filled in; ``evaluation["eps"]`` is the first budget, ``evaluation["eps_list"]``
    all of them); ``runs`` holds one entry per ``[[runs]]`` entry and seed; ``seeds`` the seeds
    named by the file (None: one run per entry, as before seeds existed); ``command`` is the
    command line recorded in the results and under the table (default ``spikeguard study PATH``);
    ``calibration_from`` another study's results folder whose calibrations are reused (``[calibration]
    reuse_from``, relative to the study file) when their settings and trials are this study's.
    """

    name: str
    path: Path | None
    description: str
    runs: list[RunSpec]
    protocols: list[Protocol]
    evaluation: dict
    control: dict
    calibration: dict
    budget: dict
    command: str = ""
    seeds: list[int] | None = None
    calibration_from: Path | None = None

    def command_text(self) -> str:
        """The command that ran this study, as recorded in provenance and ``study.md``."""
        return self.command or f"spikeguard study {self.path}"

    def eps_list(self) -> list[float]:
        """Every eps the study evaluates at (the first one also serves the BN control)."""
        return [float(e) for e in self.evaluation.get("eps_list") or [self.evaluation["eps"]]]

    def eps_folders(self) -> bool:
        """Whether results go to one folder per eps (the file gave a list of budgets)."""
        return bool(self.evaluation.get("eps_list"))

    def rows(self) -> list[str]:
        """The ``[[runs]]`` names in file order (one table row each)."""
        return list(dict.fromkeys(r.row for r in self.runs))

    def baseline_of(self, row: str) -> str:
        """The row a row's paired differences are taken against ("" = none: it is the reference)."""
        r = next(x for x in self.runs if x.row == row)
        base = r.baseline or self.evaluation.get("reference") or ""
        return "" if base == row else base

    def run_of(self, row: str, seed: int | None) -> RunSpec | None:
        """The run of ``row`` trained with ``seed`` (None when the row has no run at that seed)."""
        return next((x for x in self.runs if x.row == row and x.seed == seed), None)


_TOP = {
    "name",
    "description",
    "seeds",
    "defaults",
    "evaluation",
    "protocols",
    "control",
    "calibration",
    "budget",
    "runs",
}
_RUN = {"name", "training", "label", "preset", "set", "source", "calibrate", "paper", "baseline"}
_EVAL = {
    "protocols": ["paper", "strong"],
    "n_samples": 1000,
    "eps": "8/255",
    "batch_size": 128,
    "seed": 0,
    "split": "test",
    "reference": "",
}
_CONTROL = {"k": 3.0, "attack": "pgd10"}
_BUDGET = {"eval_reserve": 0.3, "probe_images": 0}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _table(doc: dict, key: str, defaults: dict) -> dict:
    t = doc.get(key, {})
    if not isinstance(t, dict):
        raise ConfigError(f"study: [{key}] must be a table")
    bad = set(t) - set(defaults)
    if bad:
        raise ConfigError(f"study: unknown key(s) in [{key}]: {', '.join(sorted(bad))} (known: {', '.join(defaults)})")
    return {**defaults, **t}


def _strings(v: Any, what: str) -> list[str]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ConfigError(f"study: {what} must be a list of strings")
    return list(v)


def _seeds(doc: dict, defaults: dict) -> list[int] | None:
    """The file's training seeds (top level or ``[defaults]``), checked; None when it names none."""
    if "seeds" in doc and "seeds" in defaults:
        raise ConfigError("study: give seeds once (top level or [defaults], not both)")
    seeds = doc.get("seeds", defaults.get("seeds"))
    if seeds is None:
        return None
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)
    ):
        raise ConfigError(f"study: seeds must be a non-empty list of whole numbers >= 0, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"study: seeds {seeds} name a seed twice")
    return list(seeds)


def _parse_eps(ev: dict) -> None:
    """``[evaluation].eps``: one budget (kept as ``eps``) or a list (``eps_list``; ``eps`` its first)."""
    raw = ev["eps"]
    many = isinstance(raw, list)
    if many and not raw:
        raise ConfigError("study: [evaluation].eps is an empty list")
    vals = []
    for e in raw if many else [raw]:
        try:
            vals.append(parse_budget(e))
        except (TypeError, ValueError):
            raise ConfigError(f"study: [evaluation].eps {e!r} is not a budget (e.g. 8/255)") from None
    if len(set(vals)) != len(vals):
        raise ConfigError(f"study: [evaluation].eps {raw!r} names a budget twice")
    ev["eps"] = vals[0]
    ev["eps_list"] = vals if many else None


def _entry(p: Path, i: int, r: Any, defaults: dict, overrides: list[str], study: str) -> tuple[RunSpec, dict]:
    """One ``[[runs]]`` entry checked and its config built (seed not applied yet)."""
    if not isinstance(r, dict):
        raise ConfigError(f"study: runs[{i}] must be a table")
    bad = set(r) - _RUN
    if bad:
        raise ConfigError(
            f"study: runs[{i}] has unknown key(s) {', '.join(sorted(bad))} (known: {', '.join(sorted(_RUN))})"
        )
    rname = r.get("name")
    if not isinstance(rname, str) or not _NAME.match(rname):
        raise ConfigError(f"study: runs[{i}].name must be a folder-safe name (letters, digits, . _ -), got {rname!r}")
    preset = r.get("preset", defaults.get("preset"))
    preset_path = (p.parent / preset) if preset else None
    sets = _strings(defaults.get("set", []), "[defaults].set") + _strings(r.get("set", []), f"runs[{i}].set")
    try:
        cfg = load_config(preset_path, sets + list(overrides))
    except ConfigError as e:
        raise ConfigError(f"study run {rname!r}: {e}") from None
    cfg.name = f"{study}-{rname}"
    cfg.eval.attacks = []  # the study evaluates every run itself, under its protocols
    paper = r.get("paper", {})
    if not isinstance(paper, dict):
        raise ConfigError(f"study: runs[{i}].paper must be a table of column = accuracy (%)")
    return RunSpec(
        rname,
        cfg,
        str(r.get("training", cfg.strategy.upper())),
        str(r.get("label", rname)),
        str(r.get("source", "")),
        bool(r.get("calibrate", False)),
        dict(paper),
        entry=rname,
        baseline=str(r.get("baseline", "")),
    ), r


def _expand_seeds(entries: list[RunSpec], seeds: list[int] | None) -> list[RunSpec]:
    """One run per entry and seed (``NAME-sSEED``, config seed set, source of the same seed)."""
    if seeds is None:
        return entries
    out = []
    for e in entries:
        for s in seeds:
            cfg = copy.deepcopy(e.config)
            cfg.seed = int(s)
            cfg.name = f"{e.config.name}-s{s}"
            out.append(
                RunSpec(
                    f"{e.name}-s{s}",
                    cfg,
                    e.training,
                    e.label,
                    f"{e.source}-s{s}" if e.source else "",
                    e.calibrate,
                    dict(e.paper),
                    entry=e.name,
                    seed=int(s),
                    baseline=e.baseline,
                )
            )
    return out


def _check_names(entries: list[RunSpec], ev: dict) -> None:
    names = [r.name for r in entries]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ConfigError(f"study: run name {sorted(dup)[0]!r} is used twice")
    for r in entries:
        if r.source and r.source not in names:
            raise ConfigError(f"study run {r.name!r}: source {r.source!r} is not a run of this study")
        if r.baseline and r.baseline not in names:
            raise ConfigError(f"study run {r.name!r}: baseline {r.baseline!r} is not a run of this study")
    if ev["reference"] and ev["reference"] not in names:
        raise ConfigError(f"study: [evaluation].reference {ev['reference']!r} is not a run of this study")


def load_study(path: str | Path, overrides: list[str] | None = None) -> StudySpec:
    """Read and check a study file; every run's config is built and validated before any work.

    Args:
        path: the study TOML.
        overrides: ``key=value`` config overrides applied to every run last (e.g. ``data.root=...``).
    """
    p = Path(path)
    doc = read_toml(p)
    bad = set(doc) - _TOP
    if bad:
        raise ConfigError(f"study {p}: unknown key(s) {', '.join(sorted(bad))} (known: {', '.join(sorted(_TOP))})")
    name = doc.get("name") or p.stem
    defaults = doc.get("defaults", {})
    if not isinstance(defaults, dict) or set(defaults) - {"preset", "set", "seeds"}:
        raise ConfigError("study: [defaults] takes preset, set and seeds")
    seeds = _seeds(doc, defaults)
    runs_doc = doc.get("runs")
    if not isinstance(runs_doc, list) or not runs_doc:
        raise ConfigError(f"study {p}: needs at least one [[runs]] entry")
    entries = [_entry(p, i, r, defaults, list(overrides or []), name)[0] for i, r in enumerate(runs_doc)]
    ev = _table(doc, "evaluation", _EVAL)
    _check_names(entries, ev)
    _parse_eps(ev)
    prot_over = doc.get("protocols", {})
    if not isinstance(prot_over, dict):
        raise ConfigError("study: [protocols.NAME] tables hold protocol overrides")
    for k in prot_over:
        if k not in ev["protocols"]:
            raise ConfigError(f"study: [protocols.{k}] overrides a protocol the study does not run")
    protocols = [get_protocol(n, prot_over.get(n)) for n in _strings(ev["protocols"], "[evaluation].protocols")]
    calibration = dict(doc.get("calibration", {}))
    reuse = calibration.pop("reuse_from", None)
    if reuse is not None and (not isinstance(reuse, str) or not reuse.strip()):
        raise ConfigError("study: [calibration] reuse_from must be the path of another study's results folder")
    if any(r.calibrate for r in entries):
        settings_from_dict(calibration)  # checked now, used in the calibration stage
    return StudySpec(
        name=name,
        path=p,
        description=str(doc.get("description", "")),
        runs=_expand_seeds(entries, seeds),
        protocols=protocols,
        evaluation=ev,
        control=_table(doc, "control", _CONTROL),
        calibration=calibration,
        budget=_table(doc, "budget", _BUDGET),
        seeds=seeds,
        calibration_from=None if reuse is None else p.parent / reuse,
    )


def parse_duration(text: str) -> float:
    """``"9m"``, ``"1h30m"``, ``"540s"``, ``"540"`` (seconds) -> seconds."""
    t = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", t):
        return float(t)
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([hms])", t)
    if not parts or "".join(f"{a}{b}" for a, b in parts) != t.replace(" ", ""):
        raise ConfigError(f"cannot read the budget {text!r} (use e.g. 9m, 1h30m or 540s)")
    return sum(float(a) * {"h": 3600, "m": 60, "s": 1}[b] for a, b in parts)


# --------------------------------------------------------------------------------------- layout
def share_path(run_dir: Path) -> Path:
    """Where a run's near-threshold share and BN control are cached."""
    return run_dir / "eval-share.json"


def eps_folder(eps: float) -> str:
    """``eps-8_255``: the folder of one eps's results (a list of eps in the study file)."""
    return "eps-" + eps_label(float(eps)).replace("/", "_")


def group_result_path(run_dir: Path, protocol: Protocol, group, eps: float | None = None) -> Path:
    """Where one protocol group's result of a run is written (``eps``: in that eps's folder)."""
    base = run_dir / f"eval-{protocol.name}"
    return (base / eps_folder(eps) if eps is not None else base) / f"{group.name}.json"


def result_path(spec: StudySpec, run_dir: Path, protocol: Protocol, group, eps: float) -> Path:
    """:func:`group_result_path` as this study lays it out (per-eps folders only for a list of eps)."""
    return group_result_path(run_dir, protocol, group, eps if spec.eps_folders() else None)


def restrict(spec: StudySpec, seeds: list[int] | None = None, rows: list[str] | None = None) -> StudySpec:
    """The study's work at ``seeds`` and ``rows`` only (subsets of the file's; None = all).

    The run objects are shared with ``spec``, so a lambda_max or an epoch count set on one is set
    on both. A long study is run seed by seed (or row by row) this way; its tables still cover
    the whole study. A row's transfer source must be among the rows (its runs are reused).
    """
    runs = spec.runs
    if seeds:
        if not spec.seeds:
            raise ConfigError(f"study {spec.name!r} names no seeds: drop --seeds")
        bad = [s for s in seeds if s not in spec.seeds]
        if bad:
            raise ConfigError(f"--seeds {','.join(map(str, seeds))}: study {spec.name!r} has seeds {spec.seeds}")
        runs = [r for r in runs if r.seed in seeds]
    if rows:
        unknown = [r for r in rows if r not in spec.rows()]
        if unknown:
            raise ConfigError(f"--rows {','.join(rows)}: study {spec.name!r} has rows {', '.join(spec.rows())}")
        for r in spec.runs:
            src = next((x.row for x in spec.runs if x.name == r.source), "") if r.source else ""
            if r.row in rows and src and src not in rows:
                raise ConfigError(f"--rows: row {r.row!r} takes its transfer source from {src!r}: add it")
        runs = [r for r in runs if r.row in rows]
    return dataclasses.replace(spec, runs=runs)


def calibrated_rows(spec: StudySpec) -> list[str]:
    """The rows whose lambda_max is calibrated (once per row; the pick applies to all its seeds)."""
    return list(dict.fromkeys(r.row for r in spec.runs if r.calibrate))


def calibration_dir(spec: StudySpec, out: Path, row: str) -> Path:
    """``OUT/calibration/ROW``; ``OUT/calibration`` for a study with one calibrated row whose folder holds
    no ``calibration/ROW/calibration.json`` (the earlier layout). A study that grows from one calibrated
    row to several (a seed-0 pair first, then every row) keeps its first row's calibration by moving it
    to ``OUT/calibration/ROW``, which both files then read."""
    per_row = out / "calibration" / row
    if len(calibrated_rows(spec)) <= 1 and not (per_row / RESULT_FILE).is_file():
        return out / "calibration"
    return per_row


def calibration_path(spec: StudySpec, out: Path, row: str) -> Path:
    return calibration_dir(spec, out, row) / RESULT_FILE


def apply_plan_and_calibration(spec: StudySpec, plan: dict | None, calibrations: dict[str, dict] | None) -> None:
    """Set the planned epochs on every run and each calibrated row's lambda_max on all its seeds."""
    for r in spec.runs:
        if plan:
            r.config.optim.epochs = int(plan["epochs"])
        cal = (calibrations or {}).get(r.row)
        if cal and r.calibrate:
            r.config.tgo.lambda_max = float(cal["lambda_max"])
            r.config.validate()


def pending_work(spec: StudySpec, out: Path) -> list[str]:
    """What the study folder does not hold yet: runs not trained, shares and groups not evaluated."""
    missing = []
    for r in spec.runs:
        d = out / "runs" / r.name
        if not (d / RESULTS_FILE).is_file():
            missing.append(f"{r.name}: training")
            continue
        if not share_path(d).is_file():
            missing.append(f"{r.name}: share and BN control")
        for e in spec.eps_list():
            at = f" at {eps_label(e)}" if spec.eps_folders() else ""
            missing += [
                f"{r.name}: {p.name}/{g.name}{at}"
                for p in spec.protocols
                for g in p.groups
                if not result_path(spec, d, p, g, e).is_file()
            ]
    return missing
