#!/usr/bin/env python
"""GPU benchmark: training images/s and peak memory, attack throughput, paper-run time.

    python benchmarks/bench_gpu.py                 # on a GPU: the full set, under 5 minutes on an H200
    python benchmarks/bench_gpu.py --tiny          # on a CPU: the same code paths on tiny shapes (a test)

Sections (each figure measured in this process, on this device, in this run):

* **training**: one optimisation step (forward, cross-entropy, backward, SGD) of VGG-11 and
  WRN-16-4 at T = 4 and 8, batch 128, CIFAR-10 shapes, in the chosen precision (default
  bf16 autocast + channels_last + fused SGD on CUDA). Variants of the same network, only the
  neuron differs: ``ann`` (the ANN twin, ReLU, on a batch of T*B), ``spikeguard`` (fused LIF,
  the Triton kernel on CUDA), ``spikeguard_torchops`` (the fused scan as torch ops, i.e. without
  the kernel), ``spikingjelly`` (SpikingJelly 2.0's multi-step ``LIFNode``: tau=2,
  decay_input=False, hard reset, PiecewiseQuadratic = the triangle surrogate; its backend
  chosen by ``SJ_LIF_CUDA_IMPLEMENTATION``: ``auto`` in this process, and ``triton``/``torch``/
  ``cuda`` each in a subprocess with ``--sj-backends``) and ``snntorch`` (``Leaky(beta=0.5,
  reset_mechanism="zero")`` stepped over T). Plus float32 rows of ``ann``/``spikeguard`` at
  T=4 and a ``torch.compile`` row (WRN-16-4, T=4). images/s counts the B input images.
  Timing: ``--steps`` steps after ``--warmup`` steps, synchronised (CUDA), per variant.
  Peak memory: ``torch.cuda.max_memory_allocated`` over two steps (CUDA only);
* **epoch**: one real training epoch of WRN-16-4, T=4, through ``Trainer`` (BPTT + TGO) and
  the device-resident loader (CIFAR-10 parquet when ``--data`` points at it, else random
  uint8 images of the same shape), projected to the paper's 300 epochs (and x3 seeds);
* **attack**: PGD-10 with EoT-8 (eps 8/255) on a Noisy-LIF WRN-16-4, T=4, in float32 (the
  evaluation default), over ``--eval-images`` images; images/s and the projection to the
  10,000 CIFAR-10 test images.

SpikingJelly and snnTorch are benchmark-only packages (never imported by spikeguard);
rows for them are skipped, with the reason, where they do not import. Optional sections
are skipped when less of ``--budget-s`` is left than they need (``NEED_S``), and say so.

Outputs (atomic, rewritten after every training row and every section, so a command cut by its
time limit keeps what finished; ``"complete": true`` once it ended, sections left out listed under
``"skipped"``): ``<out>/gpu_<tag>.json`` and
``gpu_<tag>.md`` (tag: ``h200``-style device name, or ``tiny``). ``SPIKEGUARD_DRY_RUN=1`` in the
environment is ``--tiny``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT / "src", ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from spikeguard.io import atomic_write_json, atomic_write_text  # noqa: E402
from spikeguard.models import create_model  # noqa: E402
from spikeguard.neurons import fused  # noqa: E402
from spikeguard.perf import autocast, compile_model, fused_optimizer_kw, to_channels_last  # noqa: E402

TARGETS = {
    "wrn16_4_T4_images_per_s": 12000, "vgg11_T4_images_per_s": 25000,
    "spiking_step_vs_ann_max": 1.15, "sj_over_spikeguard_min": 2.0, "memory_vs_ann_T4_max": 1.3,
    "paper_run_minutes_max": 25, "pgd10_eot8_10k_seconds_max": 60,
}
MODELS = ("vgg11", "wrn16_4")


def log(msg: str) -> None:
    print(f"[bench_gpu {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def has(mod: str) -> bool:
    return importlib.util.find_spec(mod) is not None


# ---------------------------------------------------------------------------------------
# Variants
# ---------------------------------------------------------------------------------------
def build(name: str, variant: str, T: int) -> nn.Module:
    """The registry's network with the variant's neuron (same layers otherwise)."""
    if variant == "ann":
        return create_model(name, num_classes=10, T=1, neuron="relu")
    model = create_model(name, num_classes=10, T=T, neuron="lif")
    if variant in ("spikingjelly", "snntorch"):  # the same wrappers as the CPU benchmark
        from bench_training import _SJWrap, _SnnTorchWrap, _swap_neurons

        return _swap_neurons(model, _SJWrap if variant == "spikingjelly" else _SnnTorchWrap)
    return model


class Runner:
    """One optimisation step of a variant on a fixed batch, in the chosen precision."""

    def __init__(self, name: str, variant: str, T: int, batch: int, device: torch.device, precision: str,
                 channels_last: bool, compile_mode: str | None = None) -> None:
        torch.manual_seed(0)
        self.variant, self.device, self.precision = variant, device, precision
        self.kernel = "torch" if variant == "spikeguard_torchops" else None
        self.model = build(name, variant, T).to(device).train()
        if channels_last:
            to_channels_last(self.model)
        if compile_mode:
            compile_model(self.model, mode=None if compile_mode == "default" else compile_mode)
        n = batch * T if variant == "ann" else batch  # the ANN twin sees T*B images
        g = torch.Generator().manual_seed(0)
        self.x = torch.rand(n, 3, 32, 32, generator=g).to(device)
        if channels_last:
            self.x = self.x.contiguous(memory_format=torch.channels_last)
        self.y = torch.randint(0, 10, (n,), generator=g).to(device)
        params = list(self.model.parameters())
        self.opt = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4,
                                   **fused_optimizer_kw(params, device.type == "cuda"))

    def step(self) -> None:
        old = fused.set_kernel(self.kernel) if self.kernel else None
        try:
            self.opt.zero_grad(set_to_none=True)
            with autocast(self.precision, self.device):
                loss = F.cross_entropy(self.model(self.x), self.y)
            loss.backward()
            self.opt.step()
        finally:
            if old is not None:
                fused.set_kernel(old)


def measure(runner: Runner, steps: int, warmup: int, batch: int) -> dict:
    dev = runner.device
    for _ in range(warmup):
        runner.step()
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(steps):
        runner.step()
    sync(dev)
    dt = (time.perf_counter() - t0) / steps
    out = {"step_ms": 1000 * dt, "images_per_s": batch / dt}
    if dev.type == "cuda":
        gc.collect()
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
        for _ in range(2):
            runner.step()
        sync(dev)
        peak = torch.cuda.max_memory_allocated(dev)
        out.update(peak_gib=peak / 2**30, step_gib=(peak - base) / 2**30)
    return out


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def training_plan(args, variants: list[str]) -> tuple[list, list]:
    """``(core, rest)`` training rows ``(model, T, precision, variant)``: the first T of every model
    (what the targets are about), then the other T values and the float32 pair for scale."""
    core = [(m, args.T[0], args.precision, v) for m in args.models for v in variants]
    rest = [(m, T, args.precision, v) for T in args.T[1:] for m in args.models for v in variants]
    if args.precision != "float32":
        rest += [(m, args.T[0], "float32", v) for m in args.models for v in ("ann", "spikeguard")]
    return core, rest


def bench_training(args, device: torch.device, plan: list, skipped: dict, left=lambda: float("inf"),
                   on_row=lambda rows: None, rows: list | None = None, reserve_s: float = 0.0) -> list[dict]:
    """Run the training rows of ``plan`` (appended to ``rows``); a row is not started once less than
    ``reserve_s`` (time kept for later sections) plus 5% of the budget is left, and the rows not run
    are listed in ``skipped``; ``on_row(rows)`` after each row (partial output)."""
    rows = [] if rows is None else rows
    for i, (name, T, prec, variant) in enumerate(plan):
        if not args.tiny and left() < reserve_s + 0.05 * args.budget_s:
            skipped[f"training rows T={T}"] = (f"time budget spent: {len(plan) - i} of {len(plan)} rows not run "
                                               f"(from {name} T={T} {prec} {variant})")
            log(skipped[f"training rows T={T}"])
            break
        try:
            r = Runner(name, variant, T, args.batch, device, prec, args.channels_last)
            res = measure(r, args.steps, args.warmup, args.batch)
        except Exception as e:  # noqa: BLE001 - a variant that fails is reported, not fatal
            res = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
        row = dict(model=name, T=T, precision=prec, variant=variant, **res)
        rows.append(row)
        log(f"train {name} T={T} {prec} {variant}: " + (f"{res['images_per_s']:.0f} img/s"
                                                        if "images_per_s" in res else res["error"]))
        r = None
        _free(device)
        on_row(rows)
    return rows


def bench_compile(args, device: torch.device) -> dict:
    name, T = args.models[-1], args.T[0]
    r = Runner(name, "spikeguard", T, args.batch, device, args.precision, args.channels_last, compile_mode="default")
    t0 = time.perf_counter()
    r.step()
    sync(device)
    first = time.perf_counter() - t0
    res = measure(r, args.steps, args.warmup, args.batch)
    return dict(model=name, T=T, precision=args.precision, variant="spikeguard_compiled", compile_s=first, **res)


def bench_sj_backends(args, backends: list[str]) -> list[dict]:
    """SpikingJelly with each explicit backend, one subprocess each (it reads its choice at import)."""
    rows = []
    for be in backends:
        cmd = [sys.executable, str(Path(__file__)), "--sj-only", "--precision", args.precision,
               "--batch", str(args.batch), "--steps", str(args.steps), "--warmup", str(args.warmup),
               "--models", *args.models, "--T", *map(str, args.T)] + (["--tiny"] if args.tiny else []) + \
              (["--no-channels-last"] if not args.channels_last else [])
        env = dict(os.environ, SJ_LIF_CUDA_IMPLEMENTATION=be)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.sj_timeout)
            line = [ln for ln in proc.stdout.splitlines() if ln.startswith("SJ_ROWS ")]
            if not line:
                rows.append(dict(variant=f"spikingjelly[{be}]", error=(proc.stderr or proc.stdout)[-300:]))
                continue
            for row in json.loads(line[-1][8:]):
                row["variant"] = f"spikingjelly[{be}]"
                rows.append(row)
        except subprocess.TimeoutExpired:
            rows.append(dict(variant=f"spikingjelly[{be}]", error=f"timed out after {args.sj_timeout} s"))
        log(f"spikingjelly[{be}]: {len([r for r in rows if r.get('variant') == f'spikingjelly[{be}]'])} rows")
    return rows


def _data(args, device: torch.device, n: int):
    from spikeguard.data import ImageDataset, load_dataset

    if args.data:
        try:
            ds = load_dataset("cifar10-parquet", "train", root=args.data, progress=False)
            return (ds if len(ds) <= n else ds.subset(n)), "cifar10-parquet"
        except Exception as e:  # noqa: BLE001
            log(f"data: {e}; using random images")
    g = torch.Generator().manual_seed(0)
    return ImageDataset(torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8),
                        torch.randint(0, 10, (n,), generator=g), [str(i) for i in range(10)], name="random"), "random"


def bench_epoch(args, device: torch.device) -> dict:
    """One real epoch of WRN-16-4, T=4, BPTT + TGO, through Trainer and the device loader."""
    from spikeguard.data.device import DeviceLoader
    from spikeguard.tgo import LambdaSchedule, ThresholdGuard
    from spikeguard.training.trainer import Trainer, make_sgd

    t_data = time.perf_counter()
    ds, source = _data(args, device, args.epoch_images)
    t_data = time.perf_counter() - t_data
    torch.manual_seed(0)
    model = create_model("wrn16_4", num_classes=10, T=4, neuron="lif").to(device)
    if args.channels_last:
        to_channels_last(model)
    loader = DeviceLoader(ds, args.batch, device=device, drop_last=True)
    opt, sched = make_sgd(model, lr=0.1, epochs=300, steps_per_epoch=len(loader), fused=device.type == "cuda")
    guard = ThresholdGuard(delta=0.5, schedule=LambdaSchedule(lambda_max=0.4))  # the paper's TGO term
    trainer = Trainer(model, opt, sched, guard=guard, precision=args.precision)
    warm = iter(DeviceLoader(ds, args.batch, device=device, drop_last=True, seed=1))
    for _ in range(min(args.warmup, len(loader))):
        x, y = next(warm)
        trainer.train_step(x, y, 0.0)
    sync(device)
    t0 = time.perf_counter()
    stats = trainer.train_epoch(loader, 0, len(loader))
    sync(device)
    dt = time.perf_counter() - t0
    seen = len(loader) * args.batch
    per_epoch_50k = dt * 50000 / seen
    out = dict(model="wrn16_4", T=4, precision=args.precision, data=source, images=seen, seconds=dt,
               images_per_s=seen / dt, data_load_s=t_data, train_accuracy=stats.accuracy,
               projected_epoch_s=per_epoch_50k, projected_300_epochs_min=300 * per_epoch_50k / 60,
               projected_3_seeds_min=3 * 300 * per_epoch_50k / 60)
    out["bf16_vs_float32_attack"] = precision_check(args, model.eval(), device)
    return out


def precision_check(args, model: nn.Module, device: torch.device) -> dict:
    """The model just trained, attacked with PGD-10 in float32 and under bf16 autocast: bf16 must
    not weaken the attack (robust accuracy equal within sampling noise). One epoch of training
    gives a weak model, so this is a first check of the mechanism, not of the paper's models."""
    from spikeguard.attacks import build_attack
    from spikeguard.data import load_dataset

    n = args.check_images
    try:
        test = load_dataset("cifar10-parquet", "test", root=args.data) if args.data else None
    except Exception:  # noqa: BLE001
        test = None
    if test is not None:
        x, y = test.float_images(slice(0, n)).to(device), test.labels[:n].to(device)
    else:
        g = torch.Generator().manual_seed(1)
        x, y = torch.rand(n, 3, 32, 32, generator=g).to(device), torch.randint(0, 10, (n,), generator=g).to(device)
    res = {"images": n, "data": "cifar10-parquet test" if test is not None else "random"}
    for prec in ("float32", "bf16"):
        torch.manual_seed(0)
        atk = build_attack("pgd10", model, eps=8 / 255)
        clean = robust = 0
        with autocast(prec, device):
            for i in range(0, n, args.eval_batch):
                xb, yb = x[i:i + args.eval_batch], y[i:i + args.eval_batch]
                with torch.no_grad():
                    clean += int((model(xb).argmax(1) == yb).sum())
                adv = atk(xb, yb)
                with torch.no_grad(), autocast("float32", device):  # judged in float32 both times
                    robust += int((model(adv).argmax(1) == yb).sum())
        res[prec] = {"clean_accuracy": clean / n, "pgd10_robust_accuracy": robust / n}
    return res


def bench_attack(args, device: torch.device) -> dict:
    from spikeguard.attacks import build_attack

    torch.manual_seed(0)
    model = create_model("wrn16_4", num_classes=10, T=4, neuron="noisy_lif").to(device).eval()
    if args.channels_last:
        to_channels_last(model)
    atk = build_attack(f"pgd{args.pgd_steps}", model, eps=8 / 255, eot=args.eot)
    g = torch.Generator().manual_seed(0)
    n, b = args.eval_images, args.eval_batch
    x = torch.rand(n, 3, 32, 32, generator=g).to(device)
    y = torch.randint(0, 10, (n,), generator=g).to(device)
    with autocast("float32", device):
        atk(x[:b], y[:b])  # warm-up (kernels, cudnn)
        sync(device)
        t0 = time.perf_counter()
        for i in range(0, n, b):
            atk(x[i:i + b], y[i:i + b])
        sync(device)
    dt = time.perf_counter() - t0
    out = dict(model="wrn16_4", T=4, neuron="noisy_lif", attack=f"PGD-{args.pgd_steps}", eot=args.eot,
               precision="float32", images=n, batch=b, seconds=dt, images_per_s=n / dt,
               projected_10k_s=10000 * dt / n)
    if device.type == "cuda":
        out["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out


# ---------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------
def _find(rows, **kw):
    for r in rows:
        if all(r.get(k) == v for k, v in kw.items()) and "images_per_s" in r:
            return r
    return None


def verdicts(res: dict, precision: str) -> list[dict]:
    rows, out = res["training"], []

    def add(target, value, goal, ok):
        out.append(dict(target=target, measured=value, goal=goal,
                        met=None if value is None else bool(ok)))

    for name, key in (("wrn16_4", "wrn16_4_T4_images_per_s"), ("vgg11", "vgg11_T4_images_per_s")):
        r = _find(rows, model=name, T=4, precision=precision, variant="spikeguard")
        add(f"{name} T=4 training images/s", r and round(r["images_per_s"]), f">= {TARGETS[key]}",
            r and r["images_per_s"] >= TARGETS[key])
    for name in MODELS:
        for T in (4, 8):
            sg = _find(rows, model=name, T=T, precision=precision, variant="spikeguard")
            ann = _find(rows, model=name, T=T, precision=precision, variant="ann")
            if sg and ann:  # ANN twin on T*B images: its step time is the comparable cost
                ratio = sg["step_ms"] / ann["step_ms"]
                add(f"{name} T={T} spiking step / ANN twin step", round(ratio, 3), "<= 1.15", ratio <= 1.15)
                if T == 4 and "peak_gib" in sg and "peak_gib" in ann:
                    m = sg["peak_gib"] / ann["peak_gib"]
                    add(f"{name} T=4 peak memory / ANN twin", round(m, 3), "<= 1.3", m <= 1.3)
            sjs = [r for r in rows if r.get("model") == name and r.get("T") == T and r.get("precision") == precision
                   and str(r.get("variant", "")).startswith("spikingjelly") and "images_per_s" in r]
            if sg and sjs:
                best = min(sjs, key=lambda r: r["step_ms"])
                ratio = best["step_ms"] / sg["step_ms"]
                add(f"{name} T={T} SpikingJelly fastest ({best['variant']}) / spikeguard", round(ratio, 3), ">= 2",
                    ratio >= 2.0)
    ep = res.get("epoch")
    if ep and "projected_300_epochs_min" in ep:
        v = ep["projected_300_epochs_min"]
        add("paper run: 300 epochs WRN-16-4 T=4 (minutes)", round(v, 2), "< 25", v < 25)
    chk = (ep or {}).get("bf16_vs_float32_attack")
    if chk:  # bf16 crafting must not leave more samples robust than float32 crafting, beyond noise
        a, b, n = chk["float32"]["pgd10_robust_accuracy"], chk["bf16"]["pgd10_robust_accuracy"], chk["images"]
        se = max((a * (1 - a) / n) ** 0.5, 1 / n)
        add("bf16-crafted PGD-10 robust acc - float32-crafted (1-epoch model)", round(b - a, 4), f"<= {2 * se:.4f} (2 SE)",
            b - a <= 2 * se)
    at = res.get("attack")
    if at and "projected_10k_s" in at:
        v = at["projected_10k_s"]
        add("PGD-10 + EoT-8, 10k test images (s)", round(v, 1), "< 60", v < 60)
    return out


def markdown(res: dict) -> str:
    env = res["environment"]
    lines = [f"# GPU benchmark ({res['tag']})", "",
             f"Command: `{res['command']}`  ", f"Device: {env['device_name']}; torch {env['torch']}, "
             f"triton {env['triton']}, CUDA {env['cuda']}; {env['date']}; {res['seconds']:.0f} s in all.  ",
             f"Precision of the training rows: {res['precision']} unless a row says otherwise; TF32 allowed for float32; "
             f"channels_last: {res['channels_last']}.", ""]
    if not res.get("complete"):
        lines += ["**Partial**: written while the benchmark ran; sections below are those finished so far.", ""]
    lines += ["## Training step (forward + backward + SGD), batch "
             f"{res['batch']}, images/s of the B input images", "",
             "| model | T | precision | variant | step ms | images/s | peak GiB |", "|---|---|---|---|---|---|---|"]
    for r in res["training"]:
        if "images_per_s" in r:
            lines.append(f"| {r['model']} | {r['T']} | {r['precision']} | {r['variant']} | {r['step_ms']:.2f} | "
                         f"{r['images_per_s']:.0f} | {r.get('peak_gib', float('nan')):.2f} |")
        else:
            lines.append(f"| {r.get('model', '')} | {r.get('T', '')} | {r.get('precision', '')} | {r['variant']} | "
                         f"error: {r.get('error', '')[:80]} | | |")
    if res.get("epoch"):
        e = res["epoch"]
        lines += ["", "## One epoch through Trainer (BPTT + TGO) and the device loader", "",
                  f"WRN-16-4, T=4, {e['precision']}, data {e['data']}: {e['images']} images in {e['seconds']:.2f} s "
                  f"({e['images_per_s']:.0f} images/s); projected 300 epochs of 50,000 images: "
                  f"**{e['projected_300_epochs_min']:.1f} min** ({e['projected_3_seeds_min']:.1f} min for 3 seeds)."]
        c = e.get("bf16_vs_float32_attack")
        if c:
            lines += ["", f"PGD-10 (8/255) on this 1-epoch model, {c['images']} {c['data']} images, judged in float32: "
                      + "; ".join(f"crafted in {p}: clean {c[p]['clean_accuracy']:.3f}, robust "
                                  f"{c[p]['pgd10_robust_accuracy']:.3f}" for p in ("float32", "bf16"))]
    if res.get("attack"):
        a = res["attack"]
        lines += ["", "## Attack", "",
                  f"{a['attack']} + EoT-{a['eot']} on Noisy-LIF WRN-16-4, T=4, {a['precision']}: {a['images']} images "
                  f"in {a['seconds']:.2f} s ({a['images_per_s']:.1f} images/s); projected 10,000 test images: "
                  f"**{a['projected_10k_s']:.1f} s**."]
    lines += ["", "## Targets", "", "| target | measured | goal | met |", "|---|---|---|---|"]
    for v in res["verdicts"]:
        met = "not measured" if v["met"] is None else ("yes" if v["met"] else "no")
        lines.append(f"| {v['target']} | {v['measured']} | {v['goal']} | {met} |")
    if res["skipped"]:
        lines += ["", "Skipped: " + "; ".join(f"{k}: {v}" for k, v in res["skipped"].items())]
    return "\n".join(lines) + "\n"


def environment(device: torch.device) -> dict:
    triton_v = None
    if has("triton"):
        import triton

        triton_v = triton.__version__
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return dict(device=str(device), device_name=name, torch=torch.__version__, triton=triton_v,
                cuda=torch.version.cuda, python=platform.python_version(),
                lif_kernel=fused.kernel_for(torch.zeros(1, device=device)),
                spikingjelly=_version("spikingjelly"), snntorch=_version("snntorch"),
                date=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))


def _version(mod: str) -> str | None:
    if not has(mod):
        return None
    try:
        from importlib.metadata import version

        return version(mod)
    except Exception:  # noqa: BLE001
        return "unknown"


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny shapes on the CPU (checks the code paths in ~1 minute)")
    ap.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    ap.add_argument("--precision", default=None, choices=("bf16", "float32"), help="training rows (default bf16 on CUDA)")
    ap.add_argument("--no-channels-last", dest="channels_last", action="store_false", default=None)
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    ap.add_argument("--T", nargs="+", type=int, default=[4, 8])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--sj-backends", nargs="*", default=["triton", "torch"],
                    help="SpikingJelly backends measured in subprocesses besides 'auto' (cuda, triton, torch)")
    ap.add_argument("--sj-timeout", type=int, default=120)
    ap.add_argument("--sj-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--no-compile", dest="compile", action="store_false", help="skip the torch.compile row")
    ap.add_argument("--data", default=None, help="CIFAR-10 parquet folder for the epoch section (else random images)")
    ap.add_argument("--epoch-images", type=int, default=50000)
    ap.add_argument("--eval-images", type=int, default=2048)
    ap.add_argument("--check-images", type=int, default=1000, help="images of the float32/bf16 attack check")
    ap.add_argument("--eval-batch", type=int, default=256)
    ap.add_argument("--pgd-steps", type=int, default=10)
    ap.add_argument("--eot", type=int, default=8)
    ap.add_argument("--budget-s", type=float, default=270.0, help="optional sections are skipped after this")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--tag", default=None)
    args = ap.parse_args(argv)
    if os.environ.get("SPIKEGUARD_DRY_RUN", "") not in ("", "0"):
        args.tiny = True
    if args.tiny:
        args.device = args.device or "cpu"
        args.batch, args.steps, args.warmup, args.T = 2, 1, 1, [2]
        args.epoch_images, args.eval_images, args.eval_batch, args.pgd_steps, args.eot = 8, 2, 2, 2, 2
        args.check_images = 4
        args.sj_timeout = min(args.sj_timeout, 300)
    args.device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = args.device.type == "cuda"
    args.precision = args.precision or ("bf16" if cuda else "float32")
    args.channels_last = cuda if args.channels_last is None else args.channels_last
    return args


# Seconds a section needs at least on an H200 (measured sections plus slack): it is skipped, and
# says so, when less of --budget-s is left, so the command ends inside its window.
NEED_S = {"attack": 30.0, "epoch": 60.0, "training rows": 20.0, "compile": 90.0, "spikingjelly backends": 60.0}


def write_partial(res: dict, args, t_start: float, skipped: dict, final: bool = False) -> None:
    """Write ``gpu_<tag>.json`` and ``.md`` with what is measured so far (after every section), so
    a command stopped by its time limit still returns every finished figure."""
    res["skipped"] = dict(skipped)
    # --tiny checks the code paths on shapes the targets are not about: nothing is judged
    res["verdicts"] = [] if args.tiny else verdicts(res, args.precision)
    res["seconds"] = time.perf_counter() - t_start
    res["complete"] = final
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / f"gpu_{res['tag']}.json", res)
    atomic_write_text(out / f"gpu_{res['tag']}.md", markdown(res))


def _sections(args, device: torch.device, res: dict, rest: list, skipped: dict, left, on_row):
    """``(name, function)`` of the sections after the core training rows, most important first:
    the attack and epoch targets, the other training rows, compile, SpikingJelly's backends."""
    def more_rows():
        bench_training(args, device, rest, skipped, left, on_row, rows=res["training"])

    out = [("attack", lambda: bench_attack(args, device)), ("epoch", lambda: bench_epoch(args, device))]
    if rest:
        out.append(("training rows", more_rows))
    if args.compile and device.type == "cuda":
        out.append(("compile", lambda: res["training"].append(bench_compile(args, device))))
    if has("spikingjelly") and args.sj_backends:
        out.append(("spikingjelly backends", lambda: res["training"].extend(bench_sj_backends(args, args.sj_backends))))
    return out


def main(argv=None) -> int:
    args = parse(argv)
    device = args.device
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if args.sj_only:  # subprocess of bench_sj_backends
        rows = bench_training_sj(args, device)
        print("SJ_ROWS " + json.dumps(rows), flush=True)
        return 0
    t_start = time.perf_counter()

    def left() -> float:
        return args.budget_s - (time.perf_counter() - t_start)

    skipped: dict[str, str] = {}
    variants = ["ann", "spikeguard", "spikeguard_torchops"]
    for v, mod in (("spikingjelly", "spikingjelly"), ("snntorch", "snntorch")):
        if has(mod):
            variants.append(v)
        else:
            skipped[v] = f"{mod} is not installed (benchmark-only; see benchmarks/gpu/run_h200.sh)"
    res: dict = dict(tag=args.tag or ("tiny" if args.tiny else _tag(device)), command=" ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
                     environment=environment(device), precision=args.precision, channels_last=args.channels_last,
                     batch=args.batch, targets=TARGETS, training=[])
    log(f"device {res['environment']['device_name']}, LIF kernel {res['environment']['lif_kernel']}")
    core, rest = training_plan(args, variants)

    def on_row(rows):
        write_partial(dict(res, training=rows), args, t_start, skipped)

    bench_training(args, device, core, skipped, left, on_row, rows=res["training"],
                   reserve_s=NEED_S["attack"] + NEED_S["epoch"])
    write_partial(res, args, t_start, skipped)
    if not args.compile:
        skipped["compile"] = "--no-compile"
    elif device.type != "cuda":
        skipped["compile"] = "measured on CUDA only (compiling takes ~20 s per shape on a small CPU)"
    for section, fn in _sections(args, device, res, rest, skipped, left, on_row):
        need = 0.0 if args.tiny else NEED_S.get(section, 30.0)
        if left() < need:
            skipped[section] = f"time budget spent ({max(left(), 0):.0f} s of --budget-s left, needs ~{need:.0f} s)"
            log(f"{section}: skipped, {skipped[section]}")
            continue
        try:
            val = fn()
            if section in ("epoch", "attack"):
                res[section] = val
            log(f"{section}: done ({val if val is not None else 'rows added'})")
        except Exception as e:  # noqa: BLE001 - a failed section is reported, the others still run
            if section in ("epoch", "attack"):
                res[section] = None
            skipped[section] = f"failed: {type(e).__name__}: {str(e)[:200]}"
        _free(device)
        write_partial(res, args, t_start, skipped)
    write_partial(res, args, t_start, skipped, final=True)
    out = Path(args.out)
    log(f"wrote {out / ('gpu_' + res['tag'] + '.json')} and .md in {res['seconds']:.0f} s")
    print(markdown(res))
    return 0


def bench_training_sj(args, device: torch.device) -> list[dict]:
    rows = []
    for name in args.models:
        for T in args.T:
            try:
                res = measure(Runner(name, "spikingjelly", T, args.batch, device, args.precision, args.channels_last),
                              args.steps, args.warmup, args.batch)
            except Exception as e:  # noqa: BLE001
                res = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
            rows.append(dict(model=name, T=T, precision=args.precision, **res))
            _free(device)
    return rows


def _tag(device: torch.device) -> str:
    if device.type != "cuda":
        return "cpu"
    name = torch.cuda.get_device_name(device).lower()
    for key in ("h200", "h100", "a100", "l40", "4090"):
        if key in name:
            return key
    return "cuda"


if __name__ == "__main__":
    sys.exit(main())
