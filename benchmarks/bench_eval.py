"""Strong evaluation, side by side: spikeguard's cascade, its ``--individual`` mode and AutoAttack.

For every model, on the same class-balanced test images and in one process run one after the
other (so the shared machine's load hits all three alike), it measures:

* **cascade**: the strong suite (``spikeguard.protocols`` ``strong``), each attack only on the
  samples that no earlier attack broke (``evaluate_robustness(..., individual=False)``);
* **individual**: the same suite, every attack on every clean-correct sample;
* **AutoAttack**: torchattacks' AutoAttack (``standard`` for a deterministic model, ``rand``
  (APGD-CE/DLR with EoT 20) for a stochastic one), a benchmark reference only: its adversarial
  images are judged by spikeguard's engine like any attack (same passes, same noise draws).

Wall time, peak resident memory of the process that ran it (each in a forked child) and the
worst case with its 95% interval go to ``OUT/bench_eval.json`` and ``OUT/bench_eval.md``,
rewritten after every model so a cut run keeps what finished.

Models: the demo's vanilla and TGO models (``--demo DIR``, trained with ``spikeguard demo`` when
DIR holds none), any spikeguard run folder (``--run NAME=DIR``, e.g. a CIFAR-10 model with
``--data-root``) and an snnTorch SNN trained here on digits (two ``Leaky`` layers, fast-sigmoid
surrogate, T = 6; skipped when snnTorch is not installed).

    python benchmarks/bench_eval.py --demo runs/demo --out benchmarks/results/eval
    python benchmarks/bench_eval.py --run tgo-c10=docs/results/cifar10k-verdict/runs/tgo-s0 \
        --data-root ../shared/data/cifar10-jpg --n 200 --skip-demo --skip-snntorch --out benchmarks/results/eval-c10
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from spikeguard.attacks.base import Attack
from spikeguard.evaluation import evaluate_robustness
from spikeguard.protocols import get_protocol
from spikeguard.utils import parse_eps

ModelFactory = Callable[[], nn.Module]


class AutoAttackRef(Attack):
    """torchattacks' AutoAttack as a spikeguard attack, so the engine judges its images."""

    name = "autoattack"
    iterative = True

    def __init__(self, model: nn.Module, eps: float, version: str, n_classes: int, seed: int = 0) -> None:
        super().__init__(model, eps)
        import torchattacks

        self.version = version
        self.aa = torchattacks.AutoAttack(model, norm="Linf", eps=eps, version=version, n_classes=n_classes, seed=seed)

    def forward(self, images: Tensor, labels: Tensor) -> Tensor:
        adv = self.aa(images, labels)
        return self.project(adv.detach(), images)


def strong_group() -> Any:
    """The strong protocol's single engine group (attacks, EoT, passes, step rule, settings)."""
    groups = get_protocol("strong").groups
    return groups[0]


def _run_method(
    method: str, make: ModelFactory, x: Tensor, y: Tensor, eps: float, args: argparse.Namespace, q: Any
) -> None:
    """Child process: one method on one model; puts a JSON-ready dict on ``q``."""
    torch.set_num_threads(args.threads)
    model = make()
    g = strong_group()
    eot = args.eot or g.eot
    passes = args.passes or g.passes
    t0 = time.perf_counter()
    if method == "autoattack":
        stochastic = _is_stochastic(model, x[:8])
        atk = AutoAttackRef(model, eps, "rand" if stochastic else "standard", n_classes=int(y.max()) + 1)
        rep = evaluate_robustness(
            model, x, y, [("autoattack", atk)], eps=eps, eot=1, passes=passes, batch_size=args.batch_size, seed=0
        )
    else:
        rep = evaluate_robustness(
            model,
            x,
            y,
            list(g.attacks),
            eps=eps,
            eot=eot,
            passes=passes,
            alpha=g.alpha,
            attack_kw={k: dict(v) for k, v in g.attack_kw.items()},
            batch_size=args.batch_size,
            seed=0,
            individual=method == "individual",
        )
    seconds = time.perf_counter() - t0
    d = rep.to_dict(per_sample=False)
    wc = d.get("worst_case_fresh_noise") or d["worst_case"]
    q.put(
        {
            "method": method,
            "seconds": round(seconds, 1),
            "stochastic": d["stochastic"],
            "clean": d["clean"]["accuracy"],
            "worst_case": wc["accuracy"],
            "worst_case_ci95_samples": wc.get("ci95_samples"),
            "worst_case_incl_known_noise": d["worst_case"]["accuracy"],
            "attacks": {k: v.get("accuracy") for k, v in d["attacks"].items()},
            "eot": d["eot"],
            "passes": d["passes"],
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
    )


def _is_stochastic(model: nn.Module, x: Tensor) -> bool:
    with torch.no_grad():
        a, b = model(x), model(x)
    return not torch.equal(a, b)


def run_model(name: str, make: ModelFactory, x: Tensor, y: Tensor, eps: float, args: argparse.Namespace) -> dict:
    """The three methods on one model, each in a forked child (its own peak memory)."""
    ctx = mp.get_context("fork")
    out: dict[str, Any] = {"model": name, "n": int(len(y))}
    for method in args.methods:
        q = ctx.Queue()
        p = ctx.Process(target=_run_method, args=(method, make, x, y, eps, args, q))
        p.start()
        res = q.get()
        p.join()
        out[method] = res
        print(
            f"  {name} {method}: worst case {100 * res['worst_case']:.2f}% in {res['seconds']:.1f} s "
            f"(peak RSS {res['peak_rss_mb']:.0f} MB)",
            flush=True,
        )
    return out


def demo_models(folder: Path) -> dict[str, ModelFactory]:
    """The demo's two models, trained into ``folder`` first when it holds none."""
    from spikeguard.checkpoint import load_model

    if not (folder / "tgo").is_dir():
        subprocess.run([sys.executable, "-m", "spikeguard", "demo", "--out", str(folder)], check=True)
    return {f"demo-{k}": (lambda k=k: load_model(folder / k).eval()) for k in ("vanilla", "tgo")}


def snntorch_model(epochs: int = 15) -> ModelFactory | None:
    """Two ``Leaky`` layers, fast-sigmoid surrogate, T = 6, trained on digits here (seed 0)."""
    try:
        import snntorch as snn
        from snntorch import surrogate
    except ImportError:
        return None
    from spikeguard.data import load_dataset

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            sg = surrogate.fast_sigmoid(slope=25)
            self.fc1, self.fc2 = nn.Linear(64, 128), nn.Linear(128, 10)
            self.lif1 = snn.Leaky(beta=0.9, spike_grad=sg)
            self.lif2 = snn.Leaky(beta=0.9, spike_grad=sg)

        def forward(self, x: Tensor) -> Tensor:
            x = x.flatten(1)
            m1, m2 = self.lif1.init_leaky(), self.lif2.init_leaky()
            out = 0
            for _ in range(6):
                s1, m1 = self.lif1(self.fc1(x), m1)
                s2, m2 = self.lif2(self.fc2(s1), m2)
                out = out + m2
            return out / 6

    torch.manual_seed(0)
    train = load_dataset("digits", "train", cache_dir="")
    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    xs, ys = train.float_images(), train.labels
    for _ in range(epochs):
        perm = torch.randperm(len(ys))
        for i in range(0, len(ys), 64):
            idx = perm[i : i + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(net(xs[idx]), ys[idx]).backward()
            opt.step()
    state = {k: v.clone() for k, v in net.state_dict().items()}

    def make() -> nn.Module:
        m = Net()
        m.load_state_dict(state)
        return m.eval()

    return make


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else the platform's word for it)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write(results: list[dict], meta: dict, out: Path) -> None:
    """``bench_eval.json`` and a Markdown table (ratios measured side by side in this run)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_eval.json").write_text(json.dumps({"meta": meta, "models": results}, indent=1) + "\n")
    lines = [
        f"# Strong evaluation: cascade vs individual vs AutoAttack ({meta['eps_label']}, {meta['date']})",
        "",
        f"Command: `{meta['command']}`. Hardware: {meta['hardware']}. Worst case under fresh noise for "
        "stochastic models; 95% interval over samples.",
        "",
        "| model | n | clean | cascade worst | time | individual worst | time | AutoAttack | time | "
        "individual / cascade time | AutoAttack / cascade time | peak RSS (MB) c / i / AA |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        c, i, a = r.get("cascade"), r.get("individual"), r.get("autoattack")

        def acc(m: dict | None) -> str:
            if not m:
                return "-"
            ci = m.get("worst_case_ci95_samples")
            return f"{100 * m['worst_case']:.2f}%" + (f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else "")

        def sec(m: dict | None) -> str:
            return f"{m['seconds']:.0f} s" if m else "-"

        def ratio(m: dict | None) -> str:
            return f"{m['seconds'] / c['seconds']:.1f}x" if m and c and c["seconds"] > 0 else "-"

        mem = " / ".join(f"{m['peak_rss_mb']:.0f}" if m else "-" for m in (c, i, a))
        clean = f"{100 * (c or i or a)['clean']:.2f}%"
        lines.append(
            f"| {r['model']} | {r['n']} | {clean} | {acc(c)} | {sec(c)} | {acc(i)} | {sec(i)} | {acc(a)} | "
            f"{sec(a)} | {ratio(i)} | {ratio(a)} | {mem} |"
        )
    (out / "bench_eval.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo", default="runs/demo", help="the demo's folder (trained there if missing)")
    ap.add_argument("--skip-demo", action="store_true")
    ap.add_argument("--skip-snntorch", action="store_true")
    ap.add_argument("--run", action="append", default=[], metavar="NAME=DIR", help="a spikeguard run folder")
    ap.add_argument("--data-root", default="", help="data root of the --run models' data set")
    ap.add_argument("--n", type=int, default=200, help="class-balanced test images per model")
    ap.add_argument("--eps", default="8/255")
    ap.add_argument("--eot", type=int, default=0, help="EoT of the strong suite (0 = the protocol's)")
    ap.add_argument("--passes", type=int, default=0, help="judging passes (0 = the protocol's)")
    ap.add_argument("--batch-size", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--methods", default="cascade,individual,autoattack")
    ap.add_argument("--out", default="benchmarks/results/eval")
    args = ap.parse_args(argv)
    args.methods = [m for m in args.methods.split(",") if m]
    # One thread in this parent: a child forked after the parent ran a parallel torch op (e.g.
    # converting 100 CIFAR images to float) inherits a started OpenMP pool and hangs in its first
    # parallel region. Each child sets --threads itself.
    torch.set_num_threads(1)
    eps = parse_eps(args.eps)
    from spikeguard.checkpoint import load_model, read_run_config
    from spikeguard.data import load_dataset

    models: list[tuple[str, ModelFactory, str, str]] = []
    if not args.skip_demo:
        models += [(k, f, "digits", "") for k, f in demo_models(Path(args.demo)).items()]
    if not args.skip_snntorch and (make := snntorch_model()) is not None:
        models.append(("snntorch-digits", make, "digits", ""))
    for spec in args.run:
        name, _, d = spec.partition("=")
        cfg, _ = read_run_config(d)
        models.append((name, lambda d=d: load_model(d).eval(), cfg.data.name, args.data_root or cfg.data.root))
    meta = {
        "eps": eps,
        "eps_label": args.eps,
        "date": date.today().isoformat(),
        "command": " ".join(sys.argv),
        "hardware": f"{cpu_name()}, {os.cpu_count()} cores, {args.threads} thread(s) per method, "
        f"torch {torch.__version__}",
        "strong_group": repr(strong_group()),
    }
    results: list[dict] = []
    for name, make, ds_name, root in models:
        ds = load_dataset(ds_name, "test", root=root or None, cache_dir="", subset=args.n, seed=0)
        print(f"[bench_eval] {name}: {len(ds.labels)} images", flush=True)
        results.append(run_model(name, make, ds.float_images(), ds.labels, eps, args))
        write(results, meta, Path(args.out))
    print((Path(args.out) / "bench_eval.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
