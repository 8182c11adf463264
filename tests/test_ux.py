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
    from spikeguard.jobs.train import build_model

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
    from spikeguard.jobs.train import run_experiment

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


# ------------------------------------------------- a new user's second pass: every command
def _worst(folder):
    return json.loads((folder / "robustness.json").read_text())["report"]["worst_case"]["accuracy"]


def _md_rows(path):
    lines = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in path.read_text().splitlines()
             if ln.startswith("|") and not ln.startswith("|---")]
    return lines[0], lines[1:]


def test_evaluations_with_different_attacks_are_separate_rows(run, tmp_path, capsys):
    """Two evaluations of one checkpoint (different attacks) never share a row; each worst case is its own."""
    a, b = tmp_path / "a", tmp_path / "b"
    assert cli_main(_eval(run, "--attacks", "fgsm,rfgsm", "--out", str(a))) == 0
    assert cli_main(_eval(run, "--out", str(b))) == 0
    wa, wb = _worst(a), _worst(b)
    sw = tmp_path / "sweep"
    assert cli_main(["analyze", "sweep", str(a), str(b), "--out", str(sw), "--no-progress"]) == 0
    head, rows = _md_rows(sw / "sweep_table.md")
    assert len(rows) == 2, rows
    col = next(i for i, h in enumerate(head) if h.startswith("worst case"))
    cells = {r[0]: r[col] for r in rows}
    assert f"{100 * wa:.1f}" in [v for k, v in cells.items() if "rfgsm" in k]
    assert f"{100 * wb:.1f}" in [v for k, v in cells.items() if "rfgsm" not in k]
    # --merge: one row, one worst-case column per evaluation, never one number for both
    sm = tmp_path / "merged"
    assert cli_main(["analyze", "sweep", str(a), str(b), "--out", str(sm), "--merge", "--no-progress"]) == 0
    head, rows = _md_rows(sm / "sweep_table.md")
    assert len(rows) == 1 and sum(h.startswith("worst case [") for h in head) == 2, head
    assert "merges results" in (sm / "sweep_table.md").read_text()


def test_report_lists_every_evaluation_of_a_run(run, tmp_path, capsys, monkeypatch):
    from spikeguard.analysis.report import build_report

    assert cli_main(_eval(run, "--attacks", "fgsm,rfgsm")) == 0
    assert cli_main(_eval(run)) == 0
    n_eval = len([f for f in (run / "evaluation").glob("*/robustness.json")])
    assert n_eval >= 2
    monkeypatch.chdir(run.parent)
    html = build_report([run.name], tmp_path / "r.html").read_text()
    assert f"Evaluations ({n_eval})" in html
    assert html.count("<td class=l>evaluation/") == n_eval  # one row per evaluation, not only the latest
    assert f'<p class="meta">{run.name}</p>' in html  # the folder as given, not resolved to this machine's path


def test_report_refuses_to_overwrite(run, tmp_path, capsys):
    out = tmp_path / "r.html"
    out.write_text("mine")
    _one_error(capsys, cli_main(["report", str(run), "--out", str(out)]), "already exists", "--overwrite")
    assert out.read_text() == "mine"
    assert cli_main(["report", str(run), "--out", str(out), "--overwrite"]) == 0 and out.read_text() != "mine"


def test_demo_refuses_an_existing_demo_folder(tmp_path, capsys):
    demo = tmp_path / "demo"
    (demo / "tgo" / "evaluation" / "x").mkdir(parents=True)
    (demo / "results.json").write_text("{}")
    _one_error(capsys, cli_main(["demo", "--out", str(demo), "--epochs", "1", "--no-progress"]),
               "already holds a demo", "--overwrite")
    assert (demo / "results.json").read_text() == "{}" and (demo / "tgo" / "evaluation" / "x").is_dir()


def test_study_says_what_it_rewrites_and_refuses_another_studys_tables(tmp_path, capsys):
    from spikeguard.jobs.study.output import rewrite_notes

    out = tmp_path / "s"
    (out / "figures").mkdir(parents=True)
    for n in ("study.md", "report.html", "figures/accuracy.png"):
        (out / n).write_text("x")
    (out / "study.json").write_text(json.dumps({"study": "other", "file": "configs/studies/other.toml"}))
    notes = rewrite_notes(out)
    assert len(notes) == 4 and all(ln.startswith(f"rewriting {out}") for ln in notes)
    spec = ROOT / "configs" / "studies" / "cpu-digits-smoke.toml"
    _one_error(capsys, cli_main(["study", str(spec), "--out", str(out), "--tables-only"]),
               "holds the tables of study 'other'", "--overwrite")
    assert (out / "study.md").read_text() == "x"


@pytest.mark.parametrize("argv", [
    ["evaluate", "--checkpoint", "x", "--n-samples", "-5"], ["evaluate", "--checkpoint", "x", "--eot", "0"],
    ["demo", "--passes", "0"], ["audit", "--checkpoint", "x", "--batch-size", "0"], ["list", "nonsense"],
    ["train", "--bogus"], ["analyze", "membrane", "--n", "x"]])
def test_argparse_errors_are_one_line_with_a_help_hint(argv, capsys):
    with pytest.raises(SystemExit) as e:
        cli_main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and "usage:" not in err, err
    assert err.count("\n") == 1 and err.startswith(f"spikeguard {argv[0]}: error: "), err
    assert f"see 'spikeguard {argv[0]} --help'" in err


def test_eps_error_quotes_what_was_typed(run, capsys):
    _one_error(capsys, cli_main(_eval(run, "--eps", "-1")), "--eps -1 is outside [0, 1]")
    with pytest.raises(SystemExit):
        cli_main(["demo", "--eps", "8,-1"])
    assert "eps -1 is outside" in capsys.readouterr().err


def test_resume_of_nothing_prints_only_the_error(tmp_path, capsys):
    rc = cli_main(["train", "--out", str(tmp_path / "nonexist"), "--resume"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "nothing to resume" in err and "resuming" not in err, err


def test_evaluate_table_rows_line_up(tmp_path, capsys):
    from spikeguard.checkpoint import save_checkpoint
    from spikeguard.config import load_config
    from spikeguard.jobs.train import build_model

    cfg = load_config(None, TINY_RUN + ["neuron.kind=noisy_lif"])
    path = tmp_path / "noisy"
    save_checkpoint(path, build_model(cfg).eval(), cfg)
    assert cli_main(["evaluate", "--checkpoint", str(path), "--attacks", "fgsm,fixed-noise", "--n-samples", "6",
                     "--eot", "1", "--passes", "2", "--batch-size", "6", "--no-progress"]) == 0
    rows = [ln for ln in capsys.readouterr().out.splitlines() if "%  [" in ln]
    assert any(ln.startswith("worst, fresh") for ln in rows), rows
    assert len({ln.index("%") for ln in rows}) == 1, "\n".join(rows)


def test_background_evaluate_stops_on_sigint_and_says_how_to_resume(run, tmp_path, capsys, monkeypatch):
    """A background job inherits SIGINT ignored; evaluate installs its own handler, as train does."""
    import signal
    import time

    import spikeguard.evaluation.sharded as sharded

    def interrupted(*_a, **_k):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(2)
        raise AssertionError("SIGINT was ignored")

    monkeypatch.setattr(sharded, "evaluate_sharded", interrupted)
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as in a job started by 'cmd &' from a script
    try:
        rc = cli_main(_eval(run, "--out", str(tmp_path / "e"), "--restart"))
    finally:
        signal.signal(signal.SIGINT, old)
    err = capsys.readouterr().err.splitlines()[-1]
    assert rc == 130 and err.startswith("spikeguard evaluate: interrupted: stopped by SIGINT"), err
    assert f"resume with: spikeguard evaluate --checkpoint {run} --attacks fgsm" in err and "--restart" not in err


@pytest.mark.parametrize("kind,names", [("datasets", ["digits", "cifar10", "synthetic-dvs"]),
                                        ("surrogates", ["triangle", "atan"]), ("schedules", ["linear", "dual"]),
                                        ("analyses", ["membrane", "sweep"])])
def test_list_new_kinds(kind, names, capsys):
    assert cli_main(["list", kind]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert {ln.split()[0] for ln in lines} >= set(names) and all(len(ln.split()) > 1 for ln in lines), lines


def test_list_presets_full_sentences_and_no_work_notes(capsys):
    assert cli_main(["list", "presets"]) == 0
    for ln in capsys.readouterr().out.splitlines():
        desc = ln.split(None, 1)[1] if len(ln.split(None, 1)) > 1 else ""
        assert desc.endswith((".", ")")) or not desc, ln
        assert not re.search(r"\bissue \d|\bitem \d|\bsession\b|\bhelper\b", desc), ln
    for f in (ROOT / "configs").rglob("*.toml"):
        assert not re.search(r"\bissue \d+|\bhelper\b|\bcompute lock\b", f.read_text()), f


def _example(monkeypatch, argv):
    import runpy
    import sys

    monkeypatch.setattr(sys, "argv", ["examples/spikingjelly_digits.py", *argv])
    return runpy.run_path(str(ROOT / "examples" / "spikingjelly_digits.py"), run_name="__main__")


def test_spikingjelly_example_names_a_missing_package(monkeypatch, tmp_path):
    import sys

    for m in ("spikingjelly", "spikingjelly.activation_based", "loguru"):
        monkeypatch.setitem(sys.modules, m, None)
    with pytest.raises(SystemExit) as e:
        _example(monkeypatch, ["--out", str(tmp_path / "sj"), "--epochs", "1"])
    msg = str(e.value.code)
    assert msg.startswith("spikingjelly_digits.py: error: the package 'spikingjelly' is missing")
    assert "pip install --no-deps spikingjelly==2.0.0 loguru" in msg and not (tmp_path / "sj").exists()
    readme = (ROOT / "README.md").read_text()
    assert "pip install spikingjelly" not in readme and "pip install --no-deps spikingjelly==2.0.0 loguru" in readme


def test_spikingjelly_example_writes_weights_with_the_umask(monkeypatch, tmp_path, capsys):
    import runpy

    pytest.importorskip("spikingjelly.activation_based")
    ex = runpy.run_path(str(ROOT / "examples" / "spikingjelly_digits.py"))
    old = os.umask(0o022)
    try:
        path = ex["save_weights"](ex["build"](), tmp_path / "sj")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


_TEXT_SUFFIXES = {".py", ".md", ".toml", ".txt", ".sh", ".json", ".html", ".log", ".cfg", ".yaml", ".yml", ".csv", ""}


def _tracked_text_files():
    import subprocess

    try:
        out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    for rel in out.splitlines():
        p = ROOT / rel
        if rel.startswith("tests/") or p.suffix not in _TEXT_SUFFIXES or not p.is_file():
            continue
        try:
            yield rel, p.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue


def test_no_machine_paths_and_no_missing_paper_brief():
    """README, docs, configs, sources, examples and help texts name no machine's absolute paths
    (use ../shared/data/... or DATA_ROOT) and cite the paper, not a brief that is not shipped.
    The GPU benchmark scripts keep /tmp as their scratch folder on the device machine."""
    bad = []
    for rel, text in _tracked_text_files():
        pattern = r"/work/|/home/|/root/" if rel.startswith("benchmarks/gpu/") else r"/work/|/home/|/root/|/tmp/"
        bad += [f"{rel}:{i}: {ln.strip()[:80]}" for i, ln in enumerate(text.splitlines(), 1) if re.search(pattern, ln)]
        bad += [f"{rel}:{i}: cites PAPER.md" for i, ln in enumerate(text.splitlines(), 1) if "PAPER.md" in ln]
    assert not bad, "\n".join(bad[:20])


def test_help_texts_name_no_machine_paths(capsys):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, p in sub.choices.items():
        text = p.format_help()
        assert not re.search(r"/work/|/home/|/root/|/tmp/|=/data\b", text), name
