"""The device scripts' helpers (benchmarks/gpu/): packing what comes back, the test-file runner's
report, the study phases, and the GPU study files' settings. ``bash benchmarks/gpu/dry_run.sh``
runs the scripts themselves end to end."""

from __future__ import annotations

import importlib.util
import sys
import tarfile
from pathlib import Path

import pytest

from spikeguard.jobs.calibration import settings_from_dict

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"gpu_{name}", ROOT / "benchmarks" / "gpu" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


pack_out, run_tests, study_phase = _load("pack_out"), _load("run_tests"), _load("study_phase")
MiB = 2 ** 20


def _fill(path: Path, n_bytes: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(__import__("os").urandom(n_bytes))  # incompressible, like weights


def test_pack_keeps_priority_files_and_bundles_the_rest(tmp_path):
    out = tmp_path / "out"
    for name in ("study.md", "study.log", "env.txt"):
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(name)
    for i in range(9):
        _fill(out / "study" / "runs" / f"r{i}" / "results.json", 1000)
    _fill(out / "weights-a.safetensors", 3 * MiB)
    _fill(out / "weights-big.safetensors", 5 * MiB)  # over the (test's) 4 MiB limit: into the bundle
    res = pack_out.pack(out, ["study.md", "weights-a.safetensors", "weights-big.safetensors", "missing.txt",
                              "study.log"], max_bytes=4 * MiB)
    assert res["kept"] == ["study.md", "weights-a.safetensors", "study.log"]
    assert sorted(p.name for p in out.iterdir()) == ["bundle.tar.gz", "study.log", "study.md", "weights-a.safetensors"]
    with tarfile.open(out / "bundle.tar.gz") as tar:
        names = tar.getnames()
        manifest = tar.extractfile("bundle-manifest.txt").read().decode()
    assert "env.txt" in names and "study/runs/r8/results.json" in names
    assert "weights-big.safetensors" not in names and "weights-big.safetensors" in manifest  # named, not lost silently
    assert res["left_out"] and (out / "bundle.tar.gz").stat().st_size <= 4 * MiB
    assert pack_out.check(out) == []


def test_pack_never_returns_more_than_the_file_limit(tmp_path):
    out = tmp_path / "out"
    names = [f"f{i}.txt" for i in range(12)]
    for n in names:
        _fill(out / n, 10)
    pack_out.pack(out, names)
    assert len(list(out.iterdir())) == 8 and pack_out.check(out) == []  # 7 loose + the bundle
    _fill(out / "extra" / "x.bin", 10)
    problems = pack_out.check(out)
    assert any("9 files" in p for p in problems) and any("folder" in p for p in problems)


def test_run_tests_reads_counts_and_failures():
    text = ("..F.s\nFAILED tests/test_a.py::test_x - AssertionError: boom\n"
            "ERROR tests/test_a.py::test_y - RuntimeError\n"
            "1 failed, 3 passed, 1 skipped, 1 error in 2.31s\n")
    counts, failing = run_tests.parse_output(text)
    assert counts == {"failed": 1, "passed": 3, "skipped": 1, "error": 1}
    assert failing == ["tests/test_a.py::test_x", "tests/test_a.py::test_y"]
    assert run_tests.ordered(["tests/test_z.py", "tests/test_fused.py", "tests/test_a.py", "tests/test_triton_scan.py"]) \
        == ["tests/test_triton_scan.py", "tests/test_fused.py", "tests/test_a.py", "tests/test_z.py"]
    results = [run_tests.FileResult("tests/test_a.py", "failed", 2.0, counts, failing),
               run_tests.FileResult("tests/test_b.py")]
    md = run_tests.summary(results, 3.0, 2)
    assert "2 files not passed" in md and "test_b.py (not run)" in md and "- tests/test_a.py::test_x" in md


def test_run_tests_reports_a_timeout(tmp_path):
    slow = tmp_path / "test_slow.py"
    slow.write_text("import time\n\ndef test_sleeps():\n    time.sleep(30)\n")
    res = run_tests.run_file(str(slow), 3.0, sys.executable)
    assert res.status == "timeout" and "TIMEOUT" in res.output


STUDIES = ["cifar10-wrn16-table1-gpu-short", "cifar10-wrn16-table1-gpu-short-at"]


@pytest.mark.parametrize("name", STUDIES)
def test_gpu_study_files_train_fast_and_calibrate(name):
    """bf16, GPU-resident data; the reference is plain LIF without the constraint; every TGO row
    is calibrated; the paper phase is the same runs under the first protocol only."""
    spec = study_phase.load_study(ROOT / "configs" / "studies" / f"{name}.toml")
    assert [p.name for p in spec.protocols] == ["paper", "strong"]
    for r in spec.runs:
        assert r.config.perf.amp == "bf16" and r.config.perf.gpu_data and r.config.perf.channels_last
        assert r.calibrate == r.config.tgo.enabled
    ref = next(r for r in spec.runs if r.name == spec.evaluation["reference"])
    assert ref.config.neuron.kind == "lif" and not ref.config.tgo.enabled
    settings = settings_from_dict(spec.calibration)  # one grid pass: fits the window (see the file's comments)
    assert settings.bisect == 0 and len(settings.lambdas) <= 4 and len(settings.seeds) == 1
    paper = study_phase.phase_spec(spec, "paper")
    assert [p.name for p in paper.protocols] == ["paper"] and paper.evaluation["protocols"] == ["paper"]
    assert paper.runs is spec.runs and [p.name for p in spec.protocols] == ["paper", "strong"]  # original untouched
    assert study_phase.phase_spec(spec, "all") is spec


def test_dry_run_spec_is_tiny():
    spec = study_phase.load_study(ROOT / "configs" / "studies" / f"{STUDIES[0]}.toml", study_phase.DRY_SET)
    tiny = study_phase.shrink_for_dry_run(spec)
    assert tiny.evaluation["n_samples"] == study_phase.DRY_IMAGES
    assert all(p.n_samples <= study_phase.DRY_IMAGES for p in tiny.protocols)
    assert len(tiny.calibration["lambdas"]) == 2 and spec.evaluation["n_samples"] == 2000
    assert all(r.config.model.name == "small_conv" for r in tiny.runs)


def _bench():
    spec = importlib.util.spec_from_file_location("bench_gpu_mod", ROOT / "benchmarks" / "bench_gpu.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_orders_rows_and_keeps_time_for_later_sections(tmp_path, monkeypatch):
    import torch

    monkeypatch.delenv("SPIKEGUARD_DRY_RUN", raising=False)
    bench = _bench()
    args = bench.parse(["--device", "cpu", "--precision", "bf16", "--T", "4", "8", "--budget-s", "100",
                        "--out", str(tmp_path)])
    core, rest = bench.training_plan(args, ["ann", "spikeguard"])
    assert core == [(m, 4, "bf16", v) for m in ("vgg11", "wrn16_4") for v in ("ann", "spikeguard")]
    assert [r for r in rest if r[1] == 8] and ("vgg11", 4, "float32", "ann") in rest
    skipped: dict = {}
    rows = bench.bench_training(args, torch.device("cpu"), core, skipped, left=lambda: 50.0, reserve_s=60.0)
    assert rows == [] and "4 of 4 rows not run" in skipped["training rows T=4"]
    res = dict(tag="t", command="c", environment=bench.environment(torch.device("cpu")), precision="bf16",
               channels_last=False, batch=2, targets=bench.TARGETS, training=[])
    bench.write_partial(res, args, 0.0, skipped)
    md = (tmp_path / "gpu_t.md").read_text()
    assert "**Partial**" in md and "4 of 4 rows not run" in md
    bench.write_partial(res, args, 0.0, skipped, final=True)
    assert "**Partial**" not in (tmp_path / "gpu_t.md").read_text()
