#!/usr/bin/env python
"""Training-step, memory and attack benchmarks of spiking VGG-11 against its ANN twin.

    python benchmarks/bench_training.py --quick        # a few minutes on 2 cores
    python benchmarks/bench_training.py                # more repetitions

Every figure is a ratio measured side by side in one process: the variants of one
configuration are timed in interleaved rounds (the order rotates each round), and a
variant's ratio is the median over rounds of (its time / the reference's time in the
same round), so slow drifts of a shared machine's load cancel out. Peak memory is
measured in a fresh subprocess per configuration (RSS growth over the process's state
just before the first training step, and the process's peak RSS).

Variants (same network, same stem-once direct encoding, only the neuron differs):

* ``ann``: the ANN twin (ReLU, T=1) on a batch of T*B, the physical floor;
* ``spikeguard``: ``LIF`` with the default fused backend;
* ``spikeguard_loop``: ``LIF(backend="loop")``, the hand-written per-step reference;
* ``spikeguard_noisy`` (full mode): ``NoisyLIF``, fused;
* ``spikingjelly``: SpikingJelly's multi-step ``LIFNode`` (tau=2, decay_input=False, i.e.
  ``U = 0.5 V + I``; hard reset to 0; PiecewiseQuadratic(alpha=1) = the triangle surrogate);
* ``snntorch``: snnTorch ``Leaky(beta=0.5, reset_mechanism="zero")`` stepped over T, with
  the same triangle surrogate.

SpikingJelly and snnTorch are optional: they live in a benchmark-only environment
(``python -m venv .venv-bench && .venv-bench/bin/pip install torch==2.13.0 spikingjelly
snntorch``). If the running interpreter lacks them and ``.venv-bench`` exists, the script
re-runs itself there (with this checkout's ``src`` on the path).

Outputs (written atomically): ``benchmarks/results/training_<mode>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from spikeguard.io import atomic_write_json, atomic_write_text  # noqa: E402
from spikeguard.neurons import LIF, Surrogate, spike  # noqa: E402

BASE_VARIANTS = ("ann", "spikeguard", "spikeguard_loop", "spikingjelly", "snntorch")
EXTRA_VARIANTS = ("spikeguard_noisy",)
TARGETS = {"spikeguard_vs_ann": 1.0, "sj_over_spikeguard": 1.15, "snntorch_over_spikeguard": 1.5,
           "memory_vs_ann_T8": 1.25, "pgd_vs_k_fwd_bwd": 1.1}


# ---------------------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------------------
def build_vgg11(T: int, neuron: str, **neuron_kw) -> nn.Module:
    """The registry's VGG-11 (CIFAR layout); a local equivalent if the registry lacks it."""
    from spikeguard.models import create_model, list_models

    if "vgg11" in list_models():
        return create_model("vgg11", num_classes=10, T=T, neuron=neuron, neuron_kw=neuron_kw)
    return _local_vgg11(T if neuron != "relu" else 1, neuron, neuron_kw)


def _local_vgg11(T: int, neuron: str, neuron_kw: dict) -> nn.Module:
    from spikeguard.models import MultiStep, NeuronFactory, SpikingModel, conv_bn

    class VGG11(SpikingModel):
        def __init__(self) -> None:
            super().__init__(T, 10, 3)
            make = NeuronFactory(neuron, **neuron_kw)
            layout = (128, "A", 256, 256, "A", 512, 512, "A", 512, 512, "A")
            self.stem = nn.Sequential(*conv_bn(3, 64))
            body: list[nn.Module] = [make()]
            pending: list[nn.Module] = [nn.AvgPool2d(2)]
            c = 64
            for it in layout:
                if it == "A":
                    pending.append(nn.AvgPool2d(2))
                    continue
                body += [MultiStep(*pending, *conv_bn(c, int(it))), make()]
                pending, c = [], int(it)
            body.append(MultiStep(*pending, nn.Flatten(), nn.Linear(c, 10)))
            self.body = nn.Sequential(*body)

    return VGG11()


class _SJWrap(nn.Module):
    """SpikingJelly's multi-step LIFNode; its state is reset before every forward."""

    def __init__(self) -> None:
        super().__init__()
        from spikingjelly.activation_based import neuron, surrogate

        self.node = neuron.LIFNode(tau=2.0, decay_input=False, v_threshold=1.0, v_reset=0.0,
                                   surrogate_function=surrogate.PiecewiseQuadratic(alpha=1.0),
                                   detach_reset=False, step_mode="m")

    def forward(self, x: Tensor) -> Tensor:
        self.node.reset()
        return self.node(x)


class _SnnTorchWrap(nn.Module):
    """snnTorch Leaky stepped over the leading time dimension (its usual training loop)."""

    def __init__(self) -> None:
        super().__init__()
        import snntorch

        tri = Surrogate("triangle", 1.0)
        self.node = snntorch.Leaky(beta=0.5, threshold=1.0, reset_mechanism="zero",
                                   spike_grad=lambda x: spike(x, tri))

    def forward(self, x: Tensor) -> Tensor:
        mem = self.node.init_leaky()
        out = []
        for t in range(x.shape[0]):
            s, mem = self.node(x[t], mem)
            out.append(s)
        return torch.stack(out)


def _swap_neurons(model: nn.Module, make: Callable[[], nn.Module]) -> nn.Module:
    for name, child in list(model.named_children()):
        if isinstance(child, LIF):
            setattr(model, name, make())
        else:
            _swap_neurons(child, make)
    return model


def available(variant: str) -> bool:
    mod = {"spikingjelly": "spikingjelly", "snntorch": "snntorch"}.get(variant)
    return mod is None or importlib.util.find_spec(mod) is not None


def make_variant(variant: str, T: int) -> nn.Module:
    if variant == "ann":
        return build_vgg11(1, "relu")
    if variant == "spikeguard":
        return build_vgg11(T, "lif")
    if variant == "spikeguard_loop":
        return build_vgg11(T, "lif", backend="loop")
    if variant == "spikeguard_noisy":
        return build_vgg11(T, "noisy_lif")
    if variant == "spikingjelly":
        return _swap_neurons(build_vgg11(T, "lif"), _SJWrap)
    if variant == "snntorch":
        return _swap_neurons(build_vgg11(T, "lif"), _SnnTorchWrap)
    raise ValueError(f"unknown variant {variant!r}")


class Runner:
    """One training step (forward, backward, SGD) of a variant on its fixed batch."""

    def __init__(self, variant: str, T: int, batch: int, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.model = make_variant(variant, T).train()
        n = batch * T if variant == "ann" else batch  # the ANN twin sees T*B images
        g = torch.Generator().manual_seed(seed)
        self.x = torch.rand(n, 3, 32, 32, generator=g)
        self.y = torch.randint(0, 10, (n,), generator=g)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    def step(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(self.model(self.x), self.y)
        loss.backward()
        self.opt.step()


def interleaved(fns: dict[str, Callable[[], None]], rounds: int, warmup: int) -> dict[str, list[float]]:
    """Time each function once per round, rotating the order every round."""
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            gc.collect()
            t0 = time.perf_counter()
            fns[n]()
            times[n].append(time.perf_counter() - t0)
    return times


def ratio_stats(times: dict[str, list[float]], ref: str) -> dict[str, dict[str, float]]:
    out = {}
    for n, ts in times.items():
        ratios = [a / b for a, b in zip(ts, times[ref])]
        out[n] = {"median_s": statistics.median(ts), "min_s": min(ts),
                  f"ratio_vs_{ref}": statistics.median(ratios), "rounds": len(ts)}
    return out


# ---------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------
def bench_training(Ts: list[int], batch: int, variants: list[str], rounds: int, warmup: int) -> dict:
    res = {}
    for T in Ts:
        runners = {v: Runner(v, T, batch) for v in variants}
        times = interleaved({v: r.step for v, r in runners.items()}, rounds, warmup)
        stats = ratio_stats(times, "ann")
        sg = times["spikeguard"]
        for v in variants:  # how many times slower than spikeguard, same rounds
            stats[v]["ratio_vs_spikeguard"] = statistics.median([a / b for a, b in zip(times[v], sg)])
        res[str(T)] = stats
        print(f"[train] T={T}: " + ", ".join(f"{v} {s['median_s']:.3f}s ({s['ratio_vs_ann']:.2f}x ann)"
                                             for v, s in stats.items()), flush=True)
        del runners
        gc.collect()
    return res


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_probe(variant: str, T: int, batch: int, steps: int = 2) -> dict:
    """Run in a fresh subprocess: RSS before the first step and the peak RSS over ``steps`` steps.

    The peak is the kernel's high-water mark (VmHWM, per address space, so nothing is
    inherited from the parent); it is reset to the current RSS just before the first step
    where the kernel allows (``/proc/self/clear_refs``), so ``growth`` is the step's own.
    """
    r = Runner(variant, T, batch)
    gc.collect()
    before = _status_kb("VmRSS")
    peak_setup = _status_kb("VmHWM")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        reset = True
    except OSError:
        reset = False
    for _ in range(steps):
        r.step()
    peak = _status_kb("VmHWM")
    return {"rss_before_step": before, "peak_rss": max(peak, peak_setup), "peak_during_steps": peak,
            "growth": peak - before, "hwm_reset": reset}


def bench_memory(Ts: list[int], batch: int, variants: list[str]) -> dict:
    res: dict = {}
    for T in Ts:
        res[str(T)] = {}
        for v in variants:
            cmd = [sys.executable, __file__, "--memory-probe", v, "--T", str(T), "--batch", str(batch),
                   "--threads", str(torch.get_num_threads())]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=_child_env())
            if proc.returncode != 0:
                res[str(T)][v] = {"error": (proc.stderr or proc.stdout).strip()[-300:]}
                continue
            res[str(T)][v] = json.loads(proc.stdout.strip().splitlines()[-1])
        ann = res[str(T)].get("ann", {})
        for v, m in res[str(T)].items():
            if "peak_rss" in m and "peak_rss" in ann:
                m["peak_vs_ann"] = m["peak_rss"] / ann["peak_rss"]
                m["growth_vs_ann"] = m["growth"] / ann["growth"]
        print(f"[memory] T={T}: " + ", ".join(
            f"{v} peak {m.get('peak_rss', float('nan')) / 2**30:.2f} GiB growth {m.get('growth', float('nan')) / 2**30:.2f} GiB"
            for v, m in res[str(T)].items()), flush=True)
    return res


def bench_pgd(T: int, batch: int, steps: int, rounds: int, warmup: int) -> dict:
    """PGD-k on the spiking VGG-11 vs k x (forward + input-gradient backward), same batch."""
    from spikeguard.attacks import PGD

    torch.manual_seed(0)
    model = build_vgg11(T, "lif").eval()
    for p in model.parameters():
        p.requires_grad_(False)  # what an evaluation does: no parameter gradients
    g = torch.Generator().manual_seed(1)
    x = torch.rand(batch, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (batch,), generator=g)
    attack = PGD(model, eps=8 / 255, alpha=2 / 255, steps=steps)

    def k_fwd_bwd() -> None:
        for _ in range(steps):
            xi = x.detach().requires_grad_(True)
            loss = F.cross_entropy(model(xi), y, reduction="none")
            torch.autograd.grad(loss.sum(), xi)

    times = interleaved({"k_fwd_bwd": k_fwd_bwd, "pgd": lambda: attack(x, y)}, rounds, warmup)
    stats = ratio_stats(times, "k_fwd_bwd")
    print(f"[pgd] T={T} PGD-{steps}: {stats['pgd']['median_s']:.3f}s vs {steps}x(fwd+bwd) "
          f"{stats['k_fwd_bwd']['median_s']:.3f}s: {stats['pgd']['ratio_vs_k_fwd_bwd']:.3f}x", flush=True)
    return {"T": T, "batch": batch, "steps": steps, **stats}


# ---------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------
def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def machine_info() -> dict:
    model = platform.processor() or ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), model)
    except OSError:
        pass
    info = {"cpu": model, "cores": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "python": platform.python_version()}
    for mod in ("spikingjelly", "snntorch"):
        try:
            from importlib.metadata import version

            info[mod] = version(mod)
        except Exception:  # noqa: BLE001
            info[mod] = None
    from spikeguard.neurons import fused

    info["lif_kernel"] = "native" if fused.native_available() else "torch"
    return info


def _fmt(v: float | None, spec: str = ".2f") -> str:
    return "n/a" if v is None else format(v, spec)


def verdicts(res: dict) -> list[dict]:
    rows = []
    tr, mem, pgd = res.get("training", {}), res.get("memory", {}), res.get("pgd")
    for T in ("4", "8"):
        if T not in tr:
            continue
        s = tr[T]
        r = s["spikeguard"]["ratio_vs_ann"]
        rows.append({"target": f"T={T}: spikeguard step <= 1.0x ANN twin on T*B", "measured": f"{r:.2f}x",
                     "met": r <= TARGETS["spikeguard_vs_ann"]})
        if "spikingjelly" in s:
            q = s["spikingjelly"]["ratio_vs_spikeguard"]
            rows.append({"target": f"T={T}: >= 1.15x faster than SpikingJelly", "measured": f"{q:.2f}x",
                         "met": q >= TARGETS["sj_over_spikeguard"]})
        if "snntorch" in s:
            q = s["snntorch"]["ratio_vs_spikeguard"]
            rows.append({"target": f"T={T}: >= 1.5x faster than snnTorch", "measured": f"{q:.2f}x",
                         "met": q >= TARGETS["snntorch_over_spikeguard"]})
    if "8" in mem and "peak_vs_ann" in mem["8"].get("spikeguard", {}):
        m = mem["8"]["spikeguard"]
        rows.append({"target": "T=8: peak training memory <= 1.25x ANN twin",
                     "measured": f"{m['peak_vs_ann']:.2f}x peak RSS ({m['growth_vs_ann']:.2f}x growth)",
                     "met": m["peak_vs_ann"] <= TARGETS["memory_vs_ann_T8"]})
    Ts = sorted(int(t) for t in mem if "growth" in mem[t].get("spikeguard", {}))
    if len(Ts) >= 3:
        g = [mem[str(t)]["spikeguard"]["growth"] for t in Ts]
        # at most linear in T: the memory added per extra time step does not grow with T
        inc = [(g[i + 1] - g[i]) / (Ts[i + 1] - Ts[i]) for i in range(len(Ts) - 1)]
        lin = min(inc) > 0 and all(b <= 1.25 * a for a, b in zip(inc, inc[1:]))
        rows.append({"target": "memory grows (at most) linearly in T",
                     "measured": "growth per extra step: " + ", ".join(f"{i / 2**20:.0f} MiB" for i in inc),
                     "met": lin})
    if pgd:
        r = pgd["pgd"]["ratio_vs_k_fwd_bwd"]
        rows.append({"target": f"PGD-{pgd['steps']} <= 1.1x {pgd['steps']} x (fwd+bwd)", "measured": f"{r:.3f}x",
                     "met": r <= TARGETS["pgd_vs_k_fwd_bwd"]})
    return rows


def markdown(res: dict) -> str:
    m, lines = res["machine"], []
    lines.append(f"Measured {res['date']} with `{res['command']}`  ")
    lines.append(f"CPU: {m['cpu']} ({m['cores']} cores, torch {m['torch']}, {m['torch_threads']} threads, "
                 f"LIF kernel: {m['lif_kernel']}); SpikingJelly {m.get('spikingjelly')}, snnTorch {m.get('snntorch')}  ")
    lines.append(f"Load average (1/5/15 min) at start {res['load_start']}, at end {res['load_end']}: the machine is "
                 "shared, so absolute times are noisy; ratios are medians over interleaved rounds.\n")
    tr = res.get("training", {})
    if tr:
        variants = list(next(iter(tr.values())))
        lines.append(f"**Training step** (forward + backward + SGD), VGG-11, CIFAR 32x32, batch {res['batch']}; "
                     "ratio to the ANN twin on a T*B batch (lower is better):\n")
        lines.append("| T | " + " | ".join(variants) + " |")
        lines.append("|---|" + "---|" * len(variants))
        for T, s in tr.items():
            lines.append(f"| {T} | " + " | ".join(
                f"{s[v]['ratio_vs_ann']:.2f}x ({s[v]['median_s']:.2f} s)" for v in variants) + " |")
        lines.append("")
    mem = res.get("memory", {})
    if mem:
        variants = list(next(iter(mem.values())))
        lines.append("**Peak memory** of a training step (process peak RSS in GiB; growth over the "
                     "pre-step state in brackets), fresh process per cell:\n")
        lines.append("| T | " + " | ".join(variants) + " |")
        lines.append("|---|" + "---|" * len(variants))
        for T, s in mem.items():
            lines.append(f"| {T} | " + " | ".join(
                (f"{s[v]['peak_rss'] / 2**30:.2f} ({s[v]['growth'] / 2**30:.2f})" if "peak_rss" in s[v] else "error")
                for v in variants) + " |")
        lines.append("")
    pgd = res.get("pgd")
    if pgd:
        lines.append(f"**PGD-{pgd['steps']}** (T={pgd['T']}, batch {pgd['batch']}, eval mode): "
                     f"{pgd['pgd']['median_s']:.2f} s vs {pgd['steps']} x (forward + input-gradient backward) "
                     f"{pgd['k_fwd_bwd']['median_s']:.2f} s: **{pgd['pgd']['ratio_vs_k_fwd_bwd']:.3f}x**.\n")
    rows = verdicts(res)
    if rows:
        lines.append("| target | measured | met |")
        lines.append("|---|---|---|")
        for r in rows:
            lines.append(f"| {r['target']} | {r['measured']} | {'met' if r['met'] else 'not met'} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def _child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _maybe_reexec(args: argparse.Namespace) -> None:
    """Re-run under .venv-bench when this interpreter lacks SpikingJelly/snnTorch."""
    if args.no_reexec or (available("spikingjelly") and available("snntorch")):
        return
    bench_py = ROOT / ".venv-bench" / "bin" / "python"
    if bench_py.exists() and Path(sys.prefix).resolve() != bench_py.parents[1].resolve():
        print(f"[bench] SpikingJelly/snnTorch not importable here; re-running with {bench_py}", flush=True)
        os.execve(str(bench_py), [str(bench_py), __file__, *sys.argv[1:], "--no-reexec"], _child_env())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds, no extra variants (a few minutes)")
    ap.add_argument("--T", type=int, nargs="+", default=[2, 4, 8])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=None, help="timed rounds per configuration")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--skip", nargs="*", default=[], choices=["training", "memory", "pgd"])
    ap.add_argument("--variants", nargs="*", default=None)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--no-reexec", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--memory-probe", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_probe:
        print(json.dumps(memory_probe(args.memory_probe, args.T[0], args.batch)))
        return 0
    _maybe_reexec(args)

    mode = "quick" if args.quick else "full"
    rounds = args.rounds or (3 if args.quick else 7)
    warmup = 1 if args.quick else 2
    variants = args.variants or [v for v in BASE_VARIANTS + (() if args.quick else EXTRA_VARIANTS)]
    missing = [v for v in variants if not available(v)]
    variants = [v for v in variants if v not in missing]
    if "ann" not in variants or "spikeguard" not in variants:
        variants = ["ann", "spikeguard"] + [v for v in variants if v not in ("ann", "spikeguard")]
    res: dict = {"date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                 "command": "python benchmarks/bench_training.py " + " ".join(a for a in sys.argv[1:] if a != "--no-reexec"),
                 "mode": mode, "batch": args.batch, "T": args.T, "rounds": rounds, "warmup": warmup,
                 "variants": variants, "missing_variants": missing, "machine": machine_info(),
                 "load_start": _load(), "targets": TARGETS}
    if missing:
        print(f"[bench] skipping unavailable variants: {', '.join(missing)}", flush=True)
    t0 = time.time()
    if "training" not in args.skip:
        res["training"] = bench_training(args.T, args.batch, variants, rounds, warmup)
    if "memory" not in args.skip:
        res["memory"] = bench_memory(args.T, args.batch, [v for v in variants if v != "spikeguard_noisy"])
    if "pgd" not in args.skip:
        res["pgd"] = bench_pgd(4 if 4 in args.T else args.T[0], args.batch, 10, max(2, rounds - 1), 1)
    res["load_end"] = _load()
    res["wall_s"] = round(time.time() - t0, 1)
    res["verdicts"] = verdicts(res)
    out = Path(args.out)
    atomic_write_json(out / f"training_{mode}.json", res)
    md = markdown(res)
    atomic_write_text(out / f"training_{mode}.md", md)
    print(md)
    print(f"[bench] wrote {out / f'training_{mode}.json'} and .md in {res['wall_s']} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
