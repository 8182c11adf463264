"""Sharded and resumable robustness evaluation.

:func:`evaluate_sharded` runs :func:`~spikeguard.evaluation.engine.evaluate_robustness`
batch by batch:

* batch ``i`` goes to rank ``i mod world_size`` of a ``torch.distributed`` job; the
  per-sample results are gathered on every rank, so the report (worst case included) is
  the one a single process computes: every batch seeds its noise, random starts and EoT
  draws from ``(seed, i)`` alone (``first_batch``), whichever process runs it and whatever
  ran before it;
* with a ``journal`` folder every finished batch is appended to a JSON-lines file of that
  folder (one ``write`` per line; every process and session gets its own file). A run that
  is killed and started again with the same settings skips the batches on record and
  ends with the same report. A torn last line (a kill during the write) is ignored.

The journal folder should be specific to the settings (see :func:`journal_key`), so a
journal of another evaluation is never mixed in.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import uuid
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from ..errors import SpikeguardError
from ..randomness import Randomness, detect_randomness
from .engine import AttackLike, AttackResult, RobustnessReport, _bits, _unbits, evaluate_robustness
from ..distributed.context import DistContext, current
from ..io import ensure_dir
from ..logging import append_jsonl
from .progress import EvalProgress

JOURNAL_FORMAT = 2  # 2: per-attack records of AttackResult.record (cascade mode)


def journal_key(settings: dict) -> str:
    """A short stable hash of the JSON-able ``settings`` that determine an evaluation's results."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _encode_batch(bi: int, rep: RobustnessReport) -> dict:
    return {
        "format": JOURNAL_FORMAT,
        "batch": bi,
        "n": rep.n,
        "num_classes": rep.num_classes,
        "clean": _bits(rep.clean),
        "skipped": rep.skipped,
        "attacks": {k: r.record() for k, r in rep.results.items()},
        "meta": {
            "eps": rep.eps,
            "eot": rep.eot,
            "passes": rep.passes,
            "stochastic": rep.stochastic,
            "seed": rep.seed,
            "randomness": rep.randomness,
            "step_size": rep.step_size,
            "mode": rep.mode,
            "paired": rep.paired,
        },
    }


def read_journal(folder: str | os.PathLike) -> dict[int, dict]:
    """Finished batches on record in ``folder`` (``{batch index: record}``); bad lines are skipped."""
    done: dict[int, dict] = {}
    p = Path(folder)
    if not p.is_dir():
        return done
    for f in sorted(p.glob("*.jsonl")):
        for line in f.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by a kill mid-write
            if isinstance(rec, dict) and rec.get("format") == JOURNAL_FORMAT and isinstance(rec.get("batch"), int):
                done[rec["batch"]] = rec
    return done


def _merge(records: list[dict], labels: Tensor, seconds: float) -> RobustnessReport:
    """One report from per-batch records (in batch order)."""
    first = records[0]
    meta = first["meta"]
    report = RobustnessReport(
        eps=float(meta["eps"]),
        eot=int(meta["eot"]),
        passes=int(meta["passes"]),
        stochastic=bool(meta["stochastic"]),
        num_classes=int(first["num_classes"]),
        seed=int(meta["seed"]),
        clean=torch.cat([_unbits(r["clean"]) for r in records], 1),
        skipped=dict(first.get("skipped") or {}),
        labels=labels.detach().cpu(),
        randomness=dict(meta.get("randomness") or {}),
        step_size=dict(meta.get("step_size") or {}),
        mode=meta.get("mode", "individual"),
        paired=bool(meta.get("paired", True)),
    )
    for name in first["attacks"]:
        report.results[name] = AttackResult.merge(name, [r["attacks"][name] for r in records])
    report.seconds = seconds
    return report


def evaluate_sharded(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    attacks: Sequence[AttackLike],
    *,
    batch_size: int = 128,
    journal: str | os.PathLike | None = None,
    ctx: DistContext | None = None,
    progress: bool = False,
    **kw: Any,
) -> RobustnessReport:
    """:func:`evaluate_robustness` split over the ranks of ``ctx`` and resumable from ``journal``.

    Args:
        model, images, labels, attacks, batch_size: as for :func:`evaluate_robustness`
            (``**kw`` passes the rest: eps, eot, passes, alpha, seed, source, attack_kw, device,
            individual; a cascade runs per batch, so it is the same sharded or not).
        journal: folder of the per-batch journal (None: no journal, nothing resumable).
        ctx: a :class:`spikeguard.distributed.DistContext` (default: the current one).
        progress: a progress bar over this rank's batches.

    Returns:
        the full report, on every rank.
    """
    ctx = ctx or current()
    t0 = time.perf_counter()
    n = len(labels)
    _check_shard_inputs(images, n, batch_size)
    n_batches = math.ceil(n / batch_size)
    if not isinstance(kw.get("randomness"), Randomness):
        kw["randomness"] = _find_randomness(model, images, kw)
    done = read_journal(journal) if journal is not None else {}
    done = {b: r for b, r in done.items() if 0 <= b < n_batches and r.get("n") == min(batch_size, n - b * batch_size)}
    todo = [b for b in range(n_batches) if b % ctx.world_size == ctx.rank and b not in done]
    path = None
    if journal is not None and todo:
        ensure_dir(journal)
        path = Path(journal) / f"rank{ctx.rank}-{uuid.uuid4().hex[:12]}.jsonl"

    mine: dict[int, dict] = {}

    # one bar over this rank's samples, moving after every attack of every batch
    bar = EvalProgress(
        sum(min(n, (b + 1) * batch_size) - b * batch_size for b in todo),
        f"evaluate (rank {ctx.rank})" if ctx.is_distributed else "evaluate",
        enabled=bool(progress and todo),
    )
    for i, b in enumerate(todo):
        s, e = b * batch_size, min(n, (b + 1) * batch_size)
        bar.batch(i, len(todo))
        rep = evaluate_robustness(
            model, images[s:e], labels[s:e], attacks, batch_size=batch_size, first_batch=b, progress=bar, **kw
        )
        rec = _encode_batch(b, rep)
        if path is not None:
            append_jsonl(path, rec)
        mine[b] = rec
    bar.close()
    _gather_batches(ctx, done, mine, n_batches)
    return _merge([done[b] for b in range(n_batches)], labels, time.perf_counter() - t0)


def _check_shard_inputs(images: Tensor, n: int, batch_size: int) -> None:
    """Refuse an empty evaluation, a batch size below 1 and images with NaN or Inf pixels."""
    if n == 0:
        raise SpikeguardError("no samples to evaluate")
    if batch_size < 1:
        raise SpikeguardError("batch_size must be >= 1")
    if images.is_floating_point() and not bool(torch.isfinite(images).all()):
        bad = int((~torch.isfinite(images)).flatten(1).any(1).sum())
        raise SpikeguardError(f"{bad} of {n} images contain NaN or Inf; attacks need finite pixels in [0, 1]")


def _find_randomness(model: nn.Module, images: Tensor, kw: dict[str, Any]) -> Randomness:
    """The model's randomness (``kw["randomness"]``: the mode, default auto)."""
    # found once on the first images, so every batch and every rank treats the model alike
    device = kw.get("device") or next((p.device for p in model.parameters()), torch.device("cpu"))
    return detect_randomness(
        model, images[:8].to(device), mode=kw.get("randomness") or "auto", seed=int(kw.get("seed", 0))
    )


def _gather_batches(ctx: DistContext, done: dict[int, dict], mine: dict[int, dict], n_batches: int) -> None:
    """Complete ``done`` with every rank's batches; every batch must be there."""
    # each rank contributes its own batches, computed now or found in its journal (a journal
    # need not be on a shared file system)
    own = {b: r for b, r in done.items() if b % ctx.world_size == ctx.rank}
    for part in ctx.all_gather_object({**own, **mine}):
        done.update(part)
    missing = [b for b in range(n_batches) if b not in done]
    if missing:  # pragma: no cover - every batch belongs to some rank
        raise SpikeguardError(f"evaluation is missing batches {missing[:5]}")


__all__ = ["evaluate_sharded", "read_journal", "journal_key"]
