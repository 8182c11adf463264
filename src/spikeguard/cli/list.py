"""``spikeguard list KIND``: what the registries hold (models, attacks, neurons, surrogates, strategies,
schedules, datasets, analyses, presets)."""

from __future__ import annotations

import argparse
from typing import Any
from pathlib import Path

from ..registry import Registry, RegistryEntry, first_sentence, summary

KINDS = (
    "models",
    "attacks",
    "neurons",
    "surrogates",
    "strategies",
    "schedules",
    "datasets",
    "analyses",
    "checks",
    "presets",
)

EPILOG = """\
examples:
  spikeguard list models         # names for model.name
  spikeguard list neurons        # names for neuron.kind (stochastic ones marked)
  spikeguard list surrogates     # names for neuron.surrogate
  spikeguard list datasets       # names for data.name / --data
  spikeguard list presets        # the TOML configs under ./configs (or the source tree's)

Everything listed comes from the registries filled where each thing is defined
(@register_model, @register_neuron, @register_surrogate, @register_strategy, @register_attack,
@register_dataset, @register_schedule, @register_analysis, @register_check), so a class or
function registered by your own module shows up once that module is imported."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "list",
        help="print the registered models, attacks, neurons, training strategies or config presets",
        description="Print the names accepted by the configs and commands, one per line with a short "
        "description: models (model.name), attacks (--attacks), neurons (neuron.kind), "
        "strategies (strategy) and presets (TOML files for --config).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("kind", choices=KINDS, help="which registry to print")
    p.set_defaults(func=run)


def _summary(obj: object) -> str:
    """First sentence of ``obj``'s docstring (empty if none), never cut mid-sentence at a line end."""
    return summary(obj)


def _registry(kind: str) -> Registry[Any]:
    """The registry behind ``spikeguard list KIND``."""
    reg: Registry[Any]
    if kind == "models":
        from ..models.registry import MODELS as reg
    elif kind == "attacks":
        from ..attacks.registry import ATTACKS as reg
    elif kind == "neurons":
        from ..neurons.registry import NEURONS as reg
    elif kind == "surrogates":
        from ..neurons.surrogate import SURROGATE_KINDS as reg
    elif kind == "strategies":
        from ..training.strategies import STRATEGIES as reg
    elif kind == "schedules":
        from ..tgo.schedules import SCHEDULE_KINDS as reg
    elif kind == "datasets":
        from ..data.registry import DATASET_LOADERS as reg
    elif kind == "analyses":
        from .analyze import ANALYSES as reg
    elif kind == "checks":
        from ..evaluation.audit import AUDIT_CHECKS as reg
    else:
        raise ValueError(f"unknown registry {kind!r}; choose one of {', '.join(KINDS)}")
    return reg


def _tags(kind: str, entry: RegistryEntry) -> list[str]:
    """Extra facts shown after a description: aliases, an attack's threat model and needs, ..."""
    tags = [f"aliases: {', '.join(entry.aliases)}"] if entry.aliases and kind in ("neurons", "surrogates") else []
    if kind == "attacks":
        cls = entry.obj.cls
        tags = [cls.threat] + (["iterative"] if cls.iterative else [])
        if cls.requires:
            tags.append("needs: " + ", ".join(cls.requires))
    elif kind == "neurons" and getattr(entry.obj, "has_noise", False):
        tags.append("stochastic")
    return tags


def rows(kind: str) -> list[tuple[str, str]]:
    """``(name, description)`` for every entry of the registry ``kind`` (one of :data:`KINDS`), sorted."""
    if kind == "presets":
        return [(str(p), _preset_title(p)) for p in preset_files()]
    reg = _registry(kind)
    entries = {e.name: e for e in reg.entries()}
    out = []
    for name, desc in reg.describe():
        tags = _tags(kind, entries[name])
        shown = entries[name].obj.example if kind == "attacks" else name
        out.append((shown, desc + (f" [{'; '.join(tags)}]" if tags else "")))
    return out


def preset_files() -> list[Path]:
    """The TOML presets under ``./configs``, else under the source tree's ``configs`` folder."""
    here = Path("configs")
    src = Path(__file__).resolve().parents[3] / "configs"  # src/spikeguard/cli -> repository root
    for root in (here, src):
        if root.is_dir():
            return sorted(root.rglob("*.toml"))
    return []


def _preset_title(path: Path) -> str:
    """The first full sentence of the preset's description: its ``description`` key (study files),
    else its leading comment block."""
    import tomllib

    lines = []
    try:
        desc = tomllib.loads(path.read_text(encoding="utf-8")).get("description")
        if isinstance(desc, str) and desc.strip():
            return first_sentence(desc.strip())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        pass
    try:
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.startswith("#"):
                break
            text = line.lstrip("#").strip()
            if not text:  # an empty comment line ends the description paragraph
                break
            lines.append(text)
    except (OSError, UnicodeDecodeError):
        return ""
    return first_sentence(" ".join(lines))


def run(args: argparse.Namespace) -> int:
    entries = rows(args.kind)
    if not entries:
        print(f"no {args.kind} found" + (" (no configs/ folder here)" if args.kind == "presets" else ""))
        return 0
    width = max(len(n) for n, _ in entries)
    for name, desc in entries:
        print(f"{name:<{width}}  {desc}".rstrip())
    return 0
