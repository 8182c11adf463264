"""``spikeguard list models|attacks|neurons|strategies|presets``: what the registries hold."""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path

KINDS = ("models", "attacks", "neurons", "strategies", "presets")

EPILOG = """\
examples:
  spikeguard list models         # names for model.name
  spikeguard list neurons        # names for neuron.kind (stochastic ones marked)
  spikeguard list presets        # the TOML configs under ./configs (or the source tree's)

Everything listed comes from the registries filled where each thing is defined
(@register_model, @register_neuron, @register_strategy, the attack registry), so a class
registered by your own module shows up once that module is imported."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "list", help="print the registered models, attacks, neurons, training strategies or config presets",
        description="Print the names accepted by the configs and commands, one per line with a short "
                    "description: models (model.name), attacks (--attacks), neurons (neuron.kind), "
                    "strategies (strategy) and presets (TOML files for --config).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kind", choices=KINDS, help="which registry to print")
    p.set_defaults(func=run)


def _summary(obj: object) -> str:
    """First line of ``obj``'s docstring (empty if none)."""
    doc = inspect.getdoc(obj) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def rows(kind: str) -> list[tuple[str, str]]:
    """``(name, description)`` for every entry of the registry ``kind`` (one of :data:`KINDS`)."""
    if kind == "models":
        from ..models import list_models, model_builder

        return [(n, _summary(model_builder(n))) for n in list_models()]
    if kind == "attacks":
        from ..attacks.registry import registered_attacks

        out = []
        for spec in registered_attacks().values():
            cls = spec.cls
            tags = [cls.threat] + (["iterative"] if cls.iterative else [])
            if cls.requires:
                tags.append("needs: " + ", ".join(cls.requires))
            out.append((spec.example, _summary(cls) + f" [{'; '.join(tags)}]"))
        return out
    if kind == "neurons":
        from ..neurons import list_neurons, neuron_aliases, neuron_class

        out = []
        for n in list_neurons():
            cls = neuron_class(n)
            tags = [f"aliases: {', '.join(a)}" for a in [neuron_aliases(n)] if a]
            if getattr(cls, "has_noise", False):
                tags.append("stochastic")
            out.append((n, _summary(cls) + (f" [{'; '.join(tags)}]" if tags else "")))
        return out
    if kind == "strategies":
        from ..training import list_strategies, strategy_class

        return [(n, _summary(strategy_class(n))) for n in list_strategies()]
    if kind == "presets":
        return [(str(p), _preset_title(p)) for p in preset_files()]
    raise ValueError(f"unknown registry {kind!r}; choose one of {', '.join(KINDS)}")


def preset_files() -> list[Path]:
    """The TOML presets under ``./configs``, else under the source tree's ``configs`` folder."""
    here = Path("configs")
    src = Path(__file__).resolve().parents[3] / "configs"  # src/spikeguard/cli -> repository root
    for root in (here, src):
        if root.is_dir():
            return sorted(root.rglob("*.toml"))
    return []


def _preset_title(path: Path) -> str:
    """The preset's first comment line (its one-line description)."""
    try:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith("#"):
                return line.lstrip("#").strip()
            if line.strip():
                break
    except (OSError, UnicodeDecodeError):
        pass
    return ""


def run(args: argparse.Namespace) -> int:
    entries = rows(args.kind)
    if not entries:
        print(f"no {args.kind} found" + (" (no configs/ folder here)" if args.kind == "presets" else ""))
        return 0
    width = max(len(n) for n, _ in entries)
    for name, desc in entries:
        print(f"{name:<{width}}  {desc}".rstrip())
    return 0
