"""Issue 14 (tried as a new user would) and the result schema of issue 13, at the CLI where it is
about the CLI: own output folders, provenance, progress and cost, eps parsing, devices, file
modes, help examples, landscape radius, report, interrupt wording, docs that agree."""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
from pathlib import Path

import pytest
import torch

from spikeguard.cli.main import build_parser
from spikeguard.cli.main import main as cli_main
from spikeguard.errors import SpikeguardError
from spikeguard.utils import parse_eps

ROOT = Path(__file__).resolve().parents[1]
TINY_RUN = ["data.name=digits", "model.name=small_conv", "model.T=2", "model.kw={channels = [4, 8, 8]}"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from spikeguard.checkpoint import save_checkpoint
    from spikeguard.config import load_config
    from spikeguard.experiment import build_model

    cfg = load_config(None, TINY_RUN)
    path = tmp_path_factory.mktemp("ux") / "run"
    save_checkpoint(path, build_model(cfg).eval(), cfg)
    return path


def _eval(run, *extra):
    return ["evaluate", "--checkpoint", str(run), "--attacks", "fgsm", "--n-samples", "12", "--batch-size", "6",
            "--no-progress", *extra]


def _one_error(capsys, rc, *words):
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ": error: " in ln]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in lines[0], (w, lines[0])


# ------------------------------------------------------------------ item 2: folders, schema
def test_each_evaluation_gets_its_own_folder_with_provenance(run, tmp_path, capsys):
    assert cli_main(_eval(run, "--eps", "8")) == 0
    assert cli_main(_eval(run, "--eps", "8")) == 0  # the same command again: a second folder
    folders = sorted((run / "evaluation").glob("*-fgsm-eps8*"))
    assert len(folders) == 2 and all((f / "robustness.json").is_file() for f in folders)
    doc = json.loads((folders[0] / "robustness.json").read_text())
    assert doc["schema"] == "spikeguard.robustness" and doc["version"] == 3 and doc["model"] == "run"
    prov = doc["provenance"]
    for key in ("checkpoint", "checkpoint_id", "command", "protocol", "attacks", "eps", "n_samples", "seed",
                "passes", "software", "date"):
        assert prov.get(key) is not None, key
    assert prov["n_samples"] == 12 and prov["attacks"] == ["fgsm"] and prov["eps"] == pytest.approx(8 / 255)
    assert prov["command"].startswith("spikeguard evaluate --checkpoint") and len(prov["checkpoint_id"]) == 16
    assert prov["software"]["torch"] == torch.__version__
    # a named --out is never overwritten silently
    out = tmp_path / "named"
    assert cli_main(_eval(run, "--out", str(out))) == 0
    before = (out / "robustness.json").read_bytes()
    capsys.readouterr()
    _one_error(capsys, cli_main(_eval(run, "--out", str(out), "--eps", "4")), "already exists", "--overwrite")
    assert (out / "robustness.json").read_bytes() == before
    assert cli_main(_eval(run, "--out", str(out), "--eps", "4", "--overwrite")) == 0
    assert json.loads((out / "robustness.json").read_text())["provenance"]["eps"] == pytest.approx(4 / 255)


def test_audit_gets_its_own_folder(run, capsys):
    args = ["audit", "--checkpoint", str(run), "--n-samples", "6", "--batch-size", "6", "--steps", "1",
            "--square-queries", "2", "--no-progress"]
    assert cli_main(args) == 0 and cli_main(args) == 0
    folders = sorted((run / "evaluation").glob("*-audit-eps8*"))
    assert len(folders) == 2
    doc = json.loads((folders[1] / "audit.json").read_text())
    assert doc["schema"] == "spikeguard.audit" and doc["provenance"]["n_samples"] == 6 and "checks" in json.dumps(doc)


def test_results_written_by_0_1_0_still_load(tmp_path):
    """Version 1 files (as spikeguard 0.1.0 wrote them: no schema key) are read as an earlier version."""
    from spikeguard.analysis import sweep
    from spikeguard.evaluation.results import read_results

    v1 = {"checkpoint": str(tmp_path / "bptt"), "source": None, "command": "evaluate", "processes": 1,
          "data": {"name": "digits", "split": "test", "n_samples": 60, "seed": 0},
          "table": {"clean": 0.9, "FGSM": 0.5, "worst case": 0.5},
          "report": {"eps": 8 / 255, "eps_label": "8/255", "n_samples": 60, "passes": 1, "eot": 1, "seed": 0,
                     "clean": {"accuracy": 0.9}, "attacks": {"fgsm": {"accuracy": 0.5}},
                     "worst_case": {"accuracy": 0.5}}}
    docs = read_results(v1)
    assert docs[0]["version"] == 1 and docs[0]["provenance"]["n_samples"] == 60
    (tmp_path / "r.json").write_text(json.dumps(v1))
    recs = sweep.load_sweep_records([tmp_path / "r.json"])
    assert {(r.model, r.attack, r.n_samples) for r in recs} == {("bptt", "fgsm", 60), ("bptt", "worst case", 60)}
    with pytest.raises(SpikeguardError, match="newer"):
        read_results({"schema": "spikeguard.robustness", "version": 99})


def test_training_time_evaluation_writes_the_schema(tmp_path):
    from spikeguard.config import load_config
    from spikeguard.experiment import run_experiment

    cfg = load_config(None, [*TINY_RUN, "optim.epochs=1", "data.subset=64", "data.test_subset=16",
                             'eval.attacks=["fgsm"]'])
    run_experiment(cfg, tmp_path / "t", progress=False)
    doc = json.loads((tmp_path / "t" / "robustness.json").read_text())
    assert doc["schema"] == "spikeguard.robustness" and doc["provenance"]["n_samples"] == 16
    assert doc["provenance"]["command"].startswith("spikeguard train") and doc["provenance"]["checkpoint_id"]


# ----------------------------------------------------------------- item 3: progress and cost
def test_cost_estimate_and_progress_per_attack(run, tmp_path, capsys):
    rc = cli_main(["evaluate", "--checkpoint", str(run), "--attacks", "fgsm,pgd3", "--n-samples", "12",
                   "--batch-size", "6", "--out", str(tmp_path / "e")])
    assert rc == 0
    err = capsys.readouterr().err
    assert re.search(r"cost estimate: 2 batch\(es\) of 6 images, each about 4 forward\+backward and 3 forward "
                     r"passes \(measured now: [0-9.e-]+ s and [0-9.e-]+ s per pass\)", err), err
    assert "at most that: in the cascade" in err  # --attacks runs a cascade: the estimate is an upper bound
    # fgsm: 1 gradient pass, pgd3: 3; judging: clean + 2 attacks, one pass each (deterministic model)
    assert re.search(r"batch [12]/2, (fgsm|pgd3) \d+/12, ETA ", err)


def test_progress_counts_sample_attacks():
    from spikeguard.evaluation.progress import EvalProgress, attack_passes

    bar = EvalProgress(10, enabled=False)
    bar.set_attacks(["fgsm", "pgd10"])
    bar.step("clean", 10)
    bar.step("fgsm", 4)
    assert bar.done == {"clean": 10, "fgsm": 4}

    class Fake:
        steps, restarts, eot, n_targets = 10, 2, 4, 3

    assert attack_passes(Fake()) == (240, 0)
    assert attack_passes(type("Sq", (), {"queries": 500})()) == (0, 500)


# ------------------------------------------------------------------------- item 4: eps
@pytest.mark.parametrize("text, value", [("8/255", 8 / 255), ("0.0314", 0.0314), ("8", 8 / 255), ("1", 1 / 255),
                                         ("1.0", 1.0), ("0", 0.0), ("2e-2", 0.02)])
def test_eps_parsing_is_unambiguous(text, value):
    assert parse_eps(text) == pytest.approx(value)


@pytest.mark.parametrize("eps", ["1.5", "300", "-0.1", "8.0"])
def test_eps_out_of_range_is_an_error(run, capsys, eps):
    _one_error(capsys, cli_main(_eval(run, "--eps", eps, "--out", "/nonexistent/never")), "outside [0, 1]")


def test_eps_one_is_expressible_and_help_states_the_unit(run, tmp_path, capsys):
    assert cli_main(_eval(run, "--eps", "1.0", "--out", str(tmp_path / "e1"))) == 0
    assert json.loads((tmp_path / "e1" / "robustness.json").read_text())["report"]["eps"] == 1.0
    with pytest.raises(SystemExit):
        cli_main(["evaluate", "--help"])
    assert "a whole number counts pixel levels: 8 = 8/255" in " ".join(capsys.readouterr().out.split())


# ------------------------------------------------------------ item 5: devices, no empty folder
needs_cpu_only = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error of a CPU-only torch")


@needs_cpu_only
@pytest.mark.parametrize("args", [
    ["evaluate", "--checkpoint", "RUN", "--device", "cuda"],
    ["audit", "--checkpoint", "RUN", "--device", "cuda"],
    ["train", "--out", "OUT", "--device", "cuda", *sum((["--set", s] for s in TINY_RUN), [])],
    ["train", "--out", "OUT", "--set", "device=cuda", *sum((["--set", s] for s in TINY_RUN), [])],
    ["demo", "--device", "cuda", "--out", "OUT"],
    ["analyze", "membrane", "-k", "RUN", "--device", "cuda", "--out", "OUT"],
    ["ablation", "--quick", "--device", "cuda", "--out", "OUT"],
])
def test_unavailable_device_is_one_line_and_leaves_no_folder(run, tmp_path, capsys, args):
    out = tmp_path / "out"
    args = [str(run) if a == "RUN" else str(out) if a == "OUT" else a for a in args]
    _one_error(capsys, cli_main(args), "cuda", "not available")
    assert not out.exists()


def test_bad_device_name(run, capsys):
    _one_error(capsys, cli_main(_eval(run, "--device", "tpu:0")), "tpu")


@pytest.mark.parametrize("args", [
    ["--set", "data.name=folder", "--set", "data.root=MISSING", "--set", "model.name=small_conv"],
    [],  # no --config: the defaults (CIFAR-10 with no data root)
])
def test_train_failure_leaves_no_run_folder(tmp_path, capsys, args):
    out = tmp_path / "run"
    args = [str(tmp_path / "missing") if a == "data.root=MISSING" else a for a in args]
    args = [a.replace("MISSING", str(tmp_path / "missing")) for a in args]
    rc = cli_main(["train", "--out", str(out), "--quiet", *args])
    assert rc == 2 and not out.exists(), capsys.readouterr().err


# -------------------------------------------------------------------- item 6: file modes
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_outputs_follow_the_umask(tmp_path, umask, mode):
    from spikeguard.io import atomic_write_json, atomic_write_many

    old = os.umask(umask)
    try:
        atomic_write_json(tmp_path / "a.json", {"x": 1})
        atomic_write_many({tmp_path / "b.bin": b"1", tmp_path / "c.bin": b"2"})
    finally:
        os.umask(old)
    for name in ("a.json", "b.bin", "c.bin"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name


def test_checkpoint_files_are_group_readable(run):
    old = os.umask(0o022)
    os.umask(old)
    if old != 0o022:
        pytest.skip("checks the default umask 022")
    for f in ("model.safetensors", "config.json"):
        assert stat.S_IMODE((run / f).stat().st_mode) == 0o644, f


# --------------------------------------------------------------------- item 7: help examples
def _examples():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, p in sub.choices.items():
        text = (p.epilog or "").replace("\\\n", " ")
        for line in text.splitlines():
            line = line.split("#")[0].strip()
            if line.startswith("spikeguard "):
                yield name, line


@pytest.mark.parametrize("cmd, line", list(_examples()))
def test_every_help_example_parses(cmd, line):
    argv = shlex.split(line)[1:]
    build_parser().parse_args(argv)  # SystemExit on an unknown flag or a bad value


# ------------------------------------------------------------------ item 8: landscape radius
def test_landscape_rise_within_radius_is_undefined_on_a_coarse_grid():
    import numpy as np

    from spikeguard.analysis.landscape import Landscape, grid

    coarse = grid(7, 1.0)
    loss = np.add.outer(coarse ** 2, coarse ** 2) + 1.0
    land = Landscape(coarse, coarse, loss, np.zeros_like(loss))
    with pytest.warns(UserWarning, match="--steps 9 or more"):
        assert np.isnan(land.sharpness(0.25))
    fine = grid(9, 1.0)
    land = Landscape(fine, fine, np.add.outer(fine ** 2, fine ** 2) + 1.0, np.zeros((9, 9)))
    assert land.sharpness(0.25) > 0
    assert "sharpness_0.25" in land.to_dict()


# ------------------------------------------------------------------------- item 9: docs
def test_readme_and_help_give_the_same_demo_time(capsys):
    with pytest.raises(SystemExit):
        cli_main(["--help"])
    top = capsys.readouterr().out
    m = re.search(r"about (\d+) s", " ".join(top.split()))
    assert m, "the demo's help names its time"
    readme = (ROOT / "README.md").read_text()
    assert re.search(rf"\b{m.group(1)} s wall", readme), m.group(1)
    assert readme.count("- [docs/distributed.md]") == 1  # listed once among the documents
    assert "not measured yet" not in (ROOT / "docs" / "models.md").read_text()


# -------------------------------------------------------------------------- item 10: report
def test_report_with_nested_folders_embeds_each_figure_once(tmp_path):
    from spikeguard.analysis.plotting import new_figure, save_figure
    from spikeguard.analysis.report import build_report

    demo = tmp_path / "demo"
    (demo / "analysis").mkdir(parents=True)
    for p in (demo / "potentials.png", demo / "analysis" / "membrane.png"):
        fig, _ = new_figure((2, 1.5), 60)
        save_figure(fig, p)
    (demo / "results.json").write_text(json.dumps({
        "config": {"delta": 0.5, "lambda_max": 0.4}, "models": {
            "tgo": {"clean": 0.98, "attacks": {"fgsm": {"8/255": 0.92}}}}}))
    (demo / "tgo").mkdir()
    (demo / "tgo" / "config.json").write_text(json.dumps({"config": {"model": {"name": "small_conv",
                                                                                "num_classes": 0}}}))
    html = build_report([demo, demo / "analysis", demo / "tgo"], tmp_path / "r.html").read_text()
    assert html.count("data:image/png") == 2  # potentials.png and membrane.png, once each
    assert "<th>n</th>" in html and "<td>360</td>" in html
    assert "0 (from the data)" in html and "class=tw" in html and "common random numbers" in html


# ------------------------------------------------------------------------ item 12: smaller
def test_interrupt_is_not_printed_as_an_error(capsys, monkeypatch):
    from spikeguard.cli import demo as demo_cli
    from spikeguard.signals import Interrupted

    def stop(_args):
        raise Interrupted("stopped by SIGINT at epoch 1; checkpoint saved", 2)

    monkeypatch.setattr(demo_cli, "run", stop)
    rc = cli_main(["demo"])
    err = capsys.readouterr().err
    assert rc == 130 and "spikeguard demo: interrupted: stopped by SIGINT" in err and "error" not in err


def test_resume_says_where_it_resumes_from(tmp_path, capsys):
    out = tmp_path / "r"
    sets = sum((["--set", s] for s in [*TINY_RUN, "optim.epochs=1", "data.subset=32", "data.test_subset=8"]), [])
    assert cli_main(["train", "--out", str(out), "--quiet", *sets]) == 0
    capsys.readouterr()
    cli_main(["train", "--out", str(out), "--resume", "--quiet"])
    assert re.search(rf"resuming {re.escape(str(out))} after epoch 1 \(checkpoint of 20\d\d-", capsys.readouterr().err)


def test_tests_do_not_write_into_the_users_cache():
    from spikeguard.data.registry import default_cache_dir

    assert not str(default_cache_dir()).startswith(str(Path.home() / ".cache"))
