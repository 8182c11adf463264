#!/usr/bin/env python
"""Run test files one pytest process each, in parallel, each under its own timeout, and report.

    python benchmarks/gpu/run_tests.py --out OUT --jobs 6 --per-file 150 --budget 200
    python benchmarks/gpu/run_tests.py --out OUT tests/test_triton_scan.py tests/test_gpu_path.py

Failures never stop the run (no ``-x``): every file runs (GPU-path files first) until the time
budget is spent; files not started by then are listed as not run. Writes ``OUT/tests.log`` (each
file's output, in order) and ``OUT/tests_summary.md`` (one row per file: result, counts, seconds,
and the failing tests). Exit status 0 when every file ran and passed, else 1.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: the files that exercise the GPU path, run first
FIRST = ("tests/test_triton_scan.py", "tests/test_gpu_path.py", "tests/test_fused.py", "tests/test_perf.py",
         "tests/test_gpu_data.py", "tests/test_surrogate_extension.py", "tests/test_neurons.py")
_COUNT = re.compile(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed|deselected)")


@dataclass
class FileResult:
    """One test file's outcome."""

    path: str
    status: str = "not run"  # passed, failed, timeout, error, not run
    seconds: float = 0.0
    counts: dict = field(default_factory=dict)
    failing: list = field(default_factory=list)
    output: str = ""


def ordered(files: list[str]) -> list[str]:
    """The GPU-path files first (in FIRST's order), then the rest alphabetically."""
    first = [f for f in FIRST if f in files]
    return first + sorted(f for f in files if f not in first)


def parse_output(text: str) -> tuple[dict, list[str]]:
    """``(counts, failing test ids)`` from pytest's ``-rfE`` output."""
    counts: dict = {}
    tail = [ln for ln in text.splitlines() if re.search(r"\b(passed|failed|error|skipped)\b", ln)]
    if tail:
        for n, kind in _COUNT.findall(tail[-1]):
            counts[kind.rstrip("s") if kind.startswith("error") else kind] = int(n)
    failing = [ln.split(" ", 1)[1].split(" - ")[0] for ln in text.splitlines() if ln.startswith(("FAILED ", "ERROR "))]
    return counts, failing


def run_file(path: str, timeout: float, python: str) -> FileResult:
    res = FileResult(path)
    t0 = time.perf_counter()
    cmd = [python, "-m", "pytest", "-rfE", "-p", "no:cacheprovider", path]  # -q comes from the addopts
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
        res.output = proc.stdout + proc.stderr
        res.status = {0: "passed", 5: "passed"}.get(proc.returncode, "failed" if proc.returncode == 1 else "error")
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        res.output, res.status = out + f"\n[run_tests] TIMEOUT after {timeout:.0f} s\n", "timeout"
    res.seconds = time.perf_counter() - t0
    res.counts, res.failing = parse_output(res.output)
    return res


def summary(results: list[FileResult], wall: float, jobs: int) -> str:
    tot: dict = {}
    for r in results:
        for k, v in r.counts.items():
            tot[k] = tot.get(k, 0) + v
    bad = [r for r in results if r.status != "passed"]
    lines = ["# Test files", "",
             f"{len(results)} files, {jobs} at a time, {wall:.0f} s: "
             + ", ".join(f"{v} {k}" for k, v in sorted(tot.items())) + "; "
             + ("all files passed" if not bad else f"{len(bad)} files not passed: "
                + ", ".join(f"{Path(r.path).name} ({r.status})" for r in bad)), "",
             "| file | result | passed | failed | skipped | errors | s |", "|---|---|---|---|---|---|---|"]
    for r in results:
        c = r.counts
        lines.append(f"| {r.path} | {r.status} | {c.get('passed', 0)} | {c.get('failed', 0)} | {c.get('skipped', 0)} | "
                     f"{c.get('error', 0)} | {r.seconds:.0f} |")
    fails = [(r.path, f) for r in results for f in r.failing]
    if fails:
        lines += ["", "Failing tests:", ""] + [f"- {f}" for _, f in fails]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="*", help="test files (default: every tests/test_*.py)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--jobs", type=int, default=max(1, min(6, (os.cpu_count() or 2) // 2)))
    ap.add_argument("--per-file", type=float, default=150.0, help="timeout of one file, seconds")
    ap.add_argument("--budget", type=float, default=240.0, help="no file starts after this many seconds")
    ap.add_argument("--python", default=sys.executable)
    args = ap.parse_args(argv)
    files = args.files or [str(p.relative_to(ROOT)) for p in sorted((ROOT / "tests").glob("test_*.py"))]
    files = ordered(files)
    t0 = time.perf_counter()

    def job(path: str) -> FileResult:
        left = args.budget - (time.perf_counter() - t0)
        if left <= 5:
            return FileResult(path, output=f"[run_tests] {path}: not run, the {args.budget:.0f} s budget was spent\n")
        # a file never runs past the budget's end by more than the per-file limit allows
        return run_file(path, min(args.per_file, left + 30), args.python)

    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(job, files))
    wall = time.perf_counter() - t0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "tests.log", "w", encoding="utf-8") as f:
        for r in results:
            f.write(f"===== {r.path}: {r.status} in {r.seconds:.0f} s =====\n{r.output}\n")
    text = summary(results, wall, args.jobs)
    (out / "tests_summary.md").write_text(text, encoding="utf-8")
    print(text)
    return 0 if all(r.status == "passed" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
