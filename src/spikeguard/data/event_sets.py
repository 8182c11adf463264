"""Event-camera data sets as frame sequences: ``cifar10-dvs``, ``nmnist``, ``dvs-gesture``, ``synthetic-dvs``.

A sample is ``T`` frames of two polarities, stored as event counts (uint8, clipped at 255)
in the packed layout ``[N, T * 2, H, W]`` (frame-major: channels ``2t`` and ``2t + 1`` are
OFF and ON of frame ``t``); :meth:`EventFrameDataset.float_images` applies the
:class:`~spikeguard.data.event_frames.FrameNorm` so batches are in [0, 1] like images. A
model built for it (``frames=T``) unpacks them to ``[T, B, 2, H, W]``, one frame per step.

Options (``load_dataset(name, split, ..., **options)``, config ``[data.options]``):

* ``frames`` (T), ``size`` (frame side in pixels), ``split_by`` (``number`` / ``time``),
  ``norm`` (``binary``, ``clip:C``, ``log:C``);
* ``cifar10-dvs``: ``test_per_class`` (default 100) and ``test_split`` (``first``: the first
  ``test_per_class`` recordings of each class in natural file-name order are the test split,
  the rest train; ``last``: the last ones, SpikingJelly's 90/10 ``split_to_train_test_set``);
* ``synthetic-dvs``: ``n_train`` (1000), ``n_test`` (300), ``canvas`` (sensor side, 32).

Layouts read (``root``):

* ``cifar10-dvs``: ``ROOT/<class>/*.aedat`` (as distributed, AEDAT 2.0) or ``*.aedat4``, or
  SpikingJelly's ``ROOT/events_np/<class>/*.npz``; also under ``ROOT/cifar10-dvs``;
* ``nmnist``: ``ROOT/{Train,Test}/<digit>/*.bin`` (the official release), also under ``ROOT/nmnist``;
* ``dvs-gesture``: ``ROOT/DvsGesture`` (or ROOT) with ``trials_to_{train,test}.txt``, the
  listed ``user*.aedat`` (AEDAT 3.1) and their ``*_labels.csv`` (one sample per labelled span).

Decoded frames are cached like the image sets (keyed by file names, sizes, times and the options).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..errors import DataError
from .base import ImageDataset
from .cache import cache_key, default_data_roots, read_cache, write_cache
from .catalog import DATASET_LOADERS, DatasetRequest, register_dataset
from .cifar import CIFAR10_CLASSES
from .event_frames import SPLITS, FrameNorm, events_to_frames
from .events import read_events
from .synthetic_dvs import SYNTHETIC_CLASSES, synthetic_dvs_split

GESTURE_CLASSES = [
    "hand_clapping",
    "right_hand_wave",
    "left_hand_wave",
    "right_arm_clockwise",
    "right_arm_counter_clockwise",
    "left_arm_clockwise",
    "left_arm_counter_clockwise",
    "arm_roll",
    "air_drums",
    "air_guitar",
    "other_gestures",
]

_RECORDINGS = "event camera recordings, integrated into frames (data.options)"


def _event_set(name: str, aliases: tuple[str, ...], description: str = _RECORDINGS, **defaults: Any):
    """Decorator registering an event data set's sample lister (``None`` for a generated set) with
    its sensor ``(H, W)`` and default options; :func:`load_event_dataset` does the rest."""

    def deco(lister):
        def loader(req: DatasetRequest) -> ImageDataset:
            return load_event_dataset(
                req.name, req.split, req.root, req.cache_dir, progress=req.progress, **req.options
            )

        loader.__doc__ = description
        register_dataset(name, aliases=aliases, options=True, description=description)(loader)
        _DEFAULTS[name], _LISTERS[name] = dict(defaults), lister
        return lister

    return deco


#: per data set: sensor (H, W) and default options; its sample lister (filled by :func:`_event_set`)
_DEFAULTS: dict[str, dict[str, Any]] = {}
_LISTERS: dict[str, Any] = {}


def is_event_dataset(name: str) -> bool:
    """Whether ``name`` (or an alias) is a registered event data set."""
    key = DATASET_LOADERS.find(str(name).strip().lower())
    return key is not None and key in _DEFAULTS


@dataclass
class EventFrameDataset(ImageDataset):
    """Frame sequences of an event data set (see the module docstring for the layout).

    Attributes (besides :class:`ImageDataset`'s):
        frames: number of frames T per sample (``images`` has ``2 * T`` channels).
        norm: counts -> [0, 1] mapping applied by :meth:`float_images`.
        options: the options the frames were made with (for reports and checkpoints).
    """

    frames: int = 1
    norm: FrameNorm = field(default_factory=FrameNorm)
    options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.images.shape[1] != 2 * self.frames:
            raise DataError(
                f"{self.name}: {self.frames} frames need {2 * self.frames} channels, got {self.images.shape[1]}"
            )

    @property
    def polarities(self) -> int:
        return 2

    def float_images(self, index: Tensor | slice | None = None) -> Tensor:
        """Frames (optionally a selection) as float32 in [0, 1], packed ``[n, T * 2, H, W]``."""
        x = self.images if index is None else self.images[index]
        return self.norm.encode(x)

    def counts(self, index: Tensor | slice | None = None) -> Tensor:
        """Event counts ``int64 [n, T, 2, H, W]`` (clipped at 255)."""
        x = self.images if index is None else self.images[index]
        return x.long().unflatten(1, (self.frames, 2))

    def subset(self, n: int, seed: int = 0) -> EventFrameDataset:
        sub = super().subset(n, seed)
        return self if sub is self else dataclasses.replace(self, images=sub.images, labels=sub.labels)


def _natural_key(p: Path) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]


def _options(name: str, given: dict) -> dict:
    opts = dict(_DEFAULTS[name])
    unknown = sorted(set(given) - set(opts) - {"sensor"})
    if unknown:
        raise DataError(
            f"unknown option(s) {', '.join(unknown)} for {name}; known: {', '.join(k for k in opts if k != 'sensor')}"
        )
    opts.update({k: v for k, v in given.items() if v is not None})
    if int(opts["frames"]) < 1 or int(opts["size"]) < 4:
        raise DataError(f"{name}: frames must be >= 1 and size >= 4, got {opts['frames']}, {opts['size']}")
    if opts["split_by"] not in SPLITS:
        raise DataError(f"{name}: split_by must be one of {', '.join(SPLITS)}, got {opts['split_by']!r}")
    FrameNorm.parse(opts["norm"])  # validate early
    return opts


# ------------------------------------------------------------------------------------------
# listing the samples of each layout: (file, label, (t0, t1) or None)

Sample = tuple[Path, int, "tuple[int, int] | None"]


def _first_dir(root: Path, names: tuple[str, ...]) -> Path | None:
    for n in names:
        if (root / n).is_dir():
            return root / n
    return None


@_event_set(
    "cifar10-dvs",
    ("cifar10dvs", "dvs-cifar10"),
    sensor=(128, 128),
    frames=10,
    size=48,
    split_by="number",
    norm="clip:4",
    test_per_class=100,
    test_split="first",
)
def _list_cifar10_dvs(root: Path, split: str, opts: dict) -> tuple[list[Sample], list[str]]:
    base = _first_dir(root, ("events_np", "cifar10-dvs/events_np", "cifar10-dvs", "CIFAR10-DVS", ".")) or root
    if (base / "events_np").is_dir():
        base = base / "events_np"
    classes = [c for c in CIFAR10_CLASSES if (base / c).is_dir()]
    if len(classes) != 10:
        raise DataError(
            f"cifar10-dvs not found in {root}: expected ROOT/<class>/*.aedat (the 10 CIFAR-10 class "
            f"folders, as distributed) or SpikingJelly's ROOT/events_np/<class>/*.npz (set data.root)"
        )
    per, where = int(opts["test_per_class"]), opts["test_split"]
    if where not in ("first", "last"):
        raise DataError(f"cifar10-dvs: test_split must be 'first' or 'last', got {where!r}")
    out: list[Sample] = []
    for label, c in enumerate(classes):
        files = sorted(
            (p for p in (base / c).iterdir() if p.suffix.lower() in (".aedat", ".aedat4", ".npz")), key=_natural_key
        )
        if len(files) <= per:
            raise DataError(f"{base / c} has {len(files)} recordings, not more than test_per_class = {per}")
        test = files[:per] if where == "first" else files[-per:]
        chosen = test if split == "test" else [f for f in files if f not in set(test)]
        out += [(f, label, None) for f in chosen]
    return out, classes


@_event_set("nmnist", ("n-mnist",), sensor=(34, 34), frames=10, size=34, split_by="number", norm="clip:4")
def _list_nmnist(root: Path, split: str, opts: dict) -> tuple[list[Sample], list[str]]:
    base = _first_dir(root, ("nmnist", "N-MNIST", ".")) or root
    d = _first_dir(base, ("Train", "train") if split == "train" else ("Test", "test"))
    if d is None:
        raise DataError(
            f"nmnist not found in {root}: expected ROOT/Train/<digit>/*.bin and ROOT/Test/<digit>/*.bin "
            f"(the official N-MNIST release; set data.root)"
        )
    classes = [str(i) for i in range(10)]
    out: list[Sample] = []
    for label, c in enumerate(classes):
        if not (d / c).is_dir():
            raise DataError(f"nmnist: class folder {d / c} is missing")
        out += [(f, label, None) for f in sorted((d / c).glob("*.bin"), key=_natural_key)]
    return out, classes


@_event_set(
    "dvs-gesture",
    ("dvs128-gesture", "dvsgesture"),
    sensor=(128, 128),
    frames=16,
    size=32,
    split_by="number",
    norm="clip:4",
)
def _list_gesture(root: Path, split: str, opts: dict) -> tuple[list[Sample], list[str]]:
    base = _first_dir(root, ("DvsGesture", "dvs-gesture", ".")) or root
    trials = base / f"trials_to_{split}.txt"
    if not trials.is_file():
        raise DataError(
            f"dvs-gesture not found in {root}: expected ROOT/DvsGesture/trials_to_{split}.txt with the "
            f"listed user*.aedat and *_labels.csv files (set data.root)"
        )
    out: list[Sample] = []
    for name in trials.read_text().split():
        f = base / name
        labels = base / f"{f.stem}_labels.csv"
        if not f.is_file() or not labels.is_file():
            raise DataError(f"dvs-gesture: {f} or its {labels.name} is missing (listed in {trials})")
        for ln, line in enumerate(labels.read_text().splitlines()):
            parts = [s.strip() for s in line.split(",")]
            if len(parts) < 3 or not parts[0].isdigit():
                continue  # the header line
            c, t0, t1 = int(parts[0]), int(parts[1]), int(parts[2])
            if not 1 <= c <= len(GESTURE_CLASSES) or t1 <= t0:
                raise DataError(f"{labels}: line {ln + 1}: bad label row {line!r}")
            out.append((f, c - 1, (t0, t1)))
    return out, list(GESTURE_CLASSES)


_event_set(
    "synthetic-dvs",
    ("synthetic_dvs",),
    "synthetic event streams made here (no files needed), integrated into frames",
    frames=8,
    size=32,
    split_by="number",
    norm="clip:4",
    n_train=1000,
    n_test=300,
    canvas=32,
)(None)


def _streams(samples: list[Sample], progress: bool):
    """The event stream of every sample, in order (a recording is read once for all its spans)."""
    it: Any = samples
    if progress:
        it = tqdm(samples, desc="integrating events", unit="rec", leave=False)
    last: tuple[Path | None, Any] = (None, None)
    for f, _, span in it:
        ev = last[1] if last[0] == f else read_events(f)
        last = (f, ev)
        yield ev if span is None else ev[(ev["t"] >= span[0]) & (ev["t"] < span[1])]


def _integrate(streams, n: int, opts: dict) -> np.ndarray:
    """Counts ``uint8 [n, T * 2, s, s]`` (clipped at 255) of ``n`` event streams."""
    T, s = int(opts["frames"]), int(opts["size"])
    out = np.empty((n, 2 * T, s, s), dtype=np.uint8)
    for i, ev in enumerate(streams):
        fr = events_to_frames(ev, T, opts["sensor"], size=s, split_by=opts["split_by"])
        out[i] = np.minimum(fr, 255).reshape(2 * T, s, s)
    return out


def load_event_dataset(
    name: str, split: str, root: Path | None, cache_dir: Path | None, progress: bool = False, **options: Any
) -> EventFrameDataset:
    """One split of an event data set (``load_dataset`` calls this; see the module docstring)."""
    opts = _options(name, options)
    norm = FrameNorm.parse(opts["norm"])
    T = int(opts["frames"])
    key_opts = {k: v for k, v in opts.items() if k != "norm"}
    if name == "synthetic-dvs":
        fp: Any = "generated"
        n = int(opts["n_train"] if split == "train" else opts["n_test"])
        canvas = int(opts["canvas"])
        opts["sensor"] = (canvas, canvas)
    else:
        roots = [root] if root is not None else default_data_roots()
        err = None
        for r in roots:
            try:
                samples, classes = _LISTERS[name](r, split, opts)
                break
            except DataError as e:
                err = e
        else:
            raise err if err is not None else DataError(f"{name}: no data root")
        if not samples:
            raise DataError(f"{name}: no recordings found for the {split} split under {r}")
        fp = [(str(f), f.stat().st_size, f.stat().st_mtime_ns, label, span) for f, label, span in samples]
    key = cache_key({"format": 1, "name": name, "split": split, "options": key_opts, "files": fp})
    cache_file = cache_dir / f"{name}-{split}-{key}.npz" if cache_dir is not None else None
    hit = read_cache(cache_file) if cache_file is not None else None
    if hit is not None:
        x, y, classes = hit
    elif name == "synthetic-dvs":
        streams, y = synthetic_dvs_split(split, n, seed=0, canvas=canvas)
        x = _integrate(streams, len(y), opts)
        classes = list(SYNTHETIC_CLASSES)
    else:
        x = _integrate(_streams(samples, progress), len(samples), opts)
        y = np.array([label for _, label, _ in samples], dtype=np.int64)
    if hit is None and cache_file is not None:
        write_cache(cache_file, x, y, classes)
    opts.pop("sensor", None)
    return EventFrameDataset(
        torch.from_numpy(np.ascontiguousarray(x)),
        torch.from_numpy(y.astype(np.int64)),
        list(classes),
        (0.0, 0.0),
        (1.0, 1.0),
        name=name,
        frames=T,
        norm=norm,
        options=opts,
    )


def event_data_shape(name: str, options: dict | None = None) -> dict:
    """Model arguments for an event data set without loading it (``in_channels``, ``image_size``, ...)."""
    name = DATASET_LOADERS.canonical(str(name).strip().lower())
    opts = _options(name, dict(options or {}))
    classes = {"dvs-gesture": len(GESTURE_CLASSES)}.get(name, 10)
    return dict(
        in_channels=2,
        image_size=int(opts["size"]),
        num_classes=classes,
        mean=[0.0, 0.0],
        std=[1.0, 1.0],
        frames=int(opts["frames"]),
        frame_norm=FrameNorm.parse(opts["norm"]).spec,
    )
