"""``spikeguard list KIND``: what the registries hold (models, attacks, neurons, surrogates, strategies,
schedules, datasets, analyses, presets)."""

from __future__ import annotations

import argparse
import inspect
import re
from pathlib import Path

KINDS = ("models", "attacks", "neurons", "surrogates", "strategies", "schedules", "datasets", "analyses", "presets")

# One line per lambda schedule (tgo.schedule); the names come from spikeguard.tgo.SCHEDULES.
SCHEDULE_TEXT = {
    "linear": "lambda grows linearly from lambda_start to lambda_max over training (the default)",
    "cosine": "half-cosine ease-in from lambda_start to lambda_max",
    "exp": "geometric growth from lambda_start (> 0) to lambda_max",
    "constant": "lambda_max from the first step",
    "dual": "dual ascent: lambda follows the constraint's distance to tgo.dual_target (step tgo.dual_lr)",
    "share": "controller: lambda steered so the training batches' near-threshold share settles at tgo.dual_target",
}

EPILOG = """\
examples:
  spikeguard list models         # names for model.name
  spikeguard list neurons        # names for neuron.kind (stochastic ones marked)
  spikeguard list surrogates     # names for neuron.surrogate
  spikeguard list datasets       # names for data.name / --data
  spikeguard list presets        # the TOML configs under ./configs (or the source tree's)

Everything listed comes from the registries filled where each thing is defined
(@register_model, @register_neuron, @register_surrogate, @register_strategy, the attack
registry, the data set and schedule tables), so a class registered by your own module shows
up once that module is imported."""


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
    """First sentence of ``obj``'s docstring (empty if none), never cut mid-sentence at a line end."""
    doc = (inspect.getdoc(obj) or "").strip()
    para = " ".join(ln.strip() for ln in doc.split("\n\n")[0].splitlines())
    return first_sentence(para.replace("``", ""))


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
            tags = [cls.threat] + (["iterative"] if cls.iterative else [])  # type: ignore[attr-defined]  # Attack subclasses define these
            if cls.requires:  # type: ignore[attr-defined]
                tags.append("needs: " + ", ".join(cls.requires))  # type: ignore[attr-defined]
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
    if kind in _MORE:
        return _MORE[kind]()
    raise ValueError(f"unknown registry {kind!r}; choose one of {', '.join(KINDS)}")


def _surrogates() -> list[tuple[str, str]]:
    from ..neurons.surrogate import surrogate_aliases, surrogate_kind, surrogate_names

    aliases = surrogate_aliases()
    out = []
    for n in surrogate_names():
        al = sorted(a for a, t in aliases.items() if t == n and a != n)
        out.append((n, _summary(surrogate_kind(n)) + (f" [aliases: {', '.join(al)}]" if al else "")))
    return out


def _schedules() -> list[tuple[str, str]]:
    from ..tgo import SCHEDULES

    return [(n, SCHEDULE_TEXT.get(n, "")) for n in SCHEDULES]


def _datasets() -> list[tuple[str, str]]:
    from ..data.event_sets import EVENT_DATASETS
    from ..data.registry import dataset_info, list_datasets

    out = []
    for n in list_datasets():
        info = dataset_info(n)
        if info is not None:
            c, h, w = info.image_shape
            desc = f"{len(info.classes)} classes, {c}x{h}x{w} images"
        elif n in EVENT_DATASETS:
            desc = "event camera recordings, integrated into frames (data.options)" if n != "synthetic-dvs" else \
                "synthetic event streams made here (no files needed), integrated into frames"
        else:
            desc = "an image folder ROOT/{train,test}/<class>/*.png (classes from the sub-folder names)"
        out.append((n, desc))
    return out


def _analyses() -> list[tuple[str, str]]:
    from ..analysis import commands

    return [(n, _summary(getattr(commands, f"run_{n}"))) for n in
            ("membrane", "gradients", "landscape", "flip", "jacobian", "sweep")]


_MORE = {"surrogates": _surrogates, "schedules": _schedules, "datasets": _datasets, "analyses": _analyses}


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


def first_sentence(text: str) -> str:
    """``text`` up to the end of its first sentence (a '.', '!' or '?' before a space or the end)."""
    m = re.search(r"[.!?](?=\s|$)", text)
    return text[: m.end()] if m else text


def run(args: argparse.Namespace) -> int:
    entries = rows(args.kind)
    if not entries:
        print(f"no {args.kind} found" + (" (no configs/ folder here)" if args.kind == "presets" else ""))
        return 0
    width = max(len(n) for n, _ in entries)
    for name, desc in entries:
        print(f"{name:<{width}}  {desc}".rstrip())
    return 0
