"""Studies with seeds, several eps and paired statistics: the stats helpers against hand-computed values,
the study file's seeds/eps/baseline keys, and a tiny 2-seed, 2-eps study end to end (seconds)."""

import json
import math
import os
from pathlib import Path

import pytest
import torch

from spikeguard.errors import ConfigError
from spikeguard.evaluation.stats import paired_difference_ci95, sample_accuracy_ci95, seeds_mean_ci95
from spikeguard.jobs.study import load_study, run_study, summarize_study

STUDIES = Path(__file__).resolve().parents[1] / "configs" / "studies"
SMOKE = STUDIES / "cpu-digits-smoke.toml"


# ------------------------------------------------------------------ statistics
def test_sample_interval_is_wilson_for_0_1_outcomes():
    s = sample_accuracy_ci95([1, 1, 0, 0])  # 2/4: Wilson [0.1500, 0.8500]
    assert s["method"] == "wilson" and s["accuracy"] == 0.5 and s["n"] == 4
    assert s["ci95"] == pytest.approx([0.150039, 0.849961], abs=1e-5)
    assert sample_accuracy_ci95([1, 1, 1, 0])["ci95"] == pytest.approx([0.300642, 0.954413], abs=1e-5)


def test_sample_interval_is_t_over_per_sample_pass_means():
    # mean 0.5, sd sqrt(0.125 / 3) = 0.204124, se 0.102062, t(3) = 3.182446 -> half 0.324806
    s = sample_accuracy_ci95([0.5, 0.75, 0.25, 0.5])
    assert s["method"] == "t-samples" and s["accuracy"] == 0.5
    assert s["ci95"] == pytest.approx([0.175194, 0.824806], abs=1e-5)
    # clipped to [0, 1]: mean 0.5, sd 0.408248, half 0.649619
    assert sample_accuracy_ci95([0.5, 1.0, 0.0, 0.5])["ci95"] == [0.0, 1.0]
    assert sample_accuracy_ci95([])["ci95"] is None


def test_paired_difference_and_seed_interval():
    # d = [1, 0, 0, 1]: mean 0.5, sd 0.57735, se 0.288675, half 3.182446 * se = 0.918693
    d = paired_difference_ci95([1, 1, 0, 1], [0, 1, 0, 0])
    assert d["diff"] == 0.5 and d["n"] == 4 and d["ci95"] == pytest.approx([-0.418693, 1.418693], abs=1e-5)
    # identical per-sample outcomes: no difference, and pairing says so (a zero-width interval)
    assert paired_difference_ci95([1, 0, 1], [1, 0, 1])["ci95"] == [0.0, 0.0]
    with pytest.raises(ValueError, match="same"):
        paired_difference_ci95([1, 0], [1, 0, 1])
    # seeds 0.6, 0.7, 0.8: mean 0.7, sd 0.1, t(2) = 4.302653 -> half 0.248414
    s = seeds_mean_ci95([0.6, 0.7, 0.8])
    assert s["mean"] == pytest.approx(0.7) and s["n_seeds"] == 3 and s["method"] == "t-seeds"
    assert s["ci95"] == pytest.approx([0.451586, 0.948414], abs=1e-5)
    one = seeds_mean_ci95([0.6])
    assert one["ci95"] is None and one["n_seeds"] == 1 and math.isclose(one["mean"], 0.6)


# ------------------------------------------------------------------ study files
def _tiny_file(tmp_path: Path, extra_top: str = "", eps: str = '["8/255", "16/255"]', runs_extra: str = "") -> Path:
    """The smoke study with seeds, a list of eps and a small strong protocol (both worst cases)."""
    text = SMOKE.read_text().replace('preset = "../cpu/', f'preset = "{(STUDIES.parent / "cpu").as_posix()}/')
    text = text.replace('eps = "8/255"', f"eps = {eps}").replace("n_samples = 16", "n_samples = 8")
    text = text.replace("batch_size = 16", "batch_size = 8")
    text = text.replace('protocols = ["paper", "strong"]', 'protocols = ["strong"]')
    head, rest = text.split("[defaults]", 1)
    strong = ('[protocols.strong]\neot = 2\npasses = 2\naudit = false\nindividual = true\nattacks = ["fgsm", "pgd10", "transfer", '
              '"noise-free", "fixed-noise"]\nattack_kw = {pgd10 = {steps = 3}, transfer = {steps = 2}, noise-free = '
              '{steps = 2}, fixed-noise = {steps = 2}}\n')
    rest = rest.split("[protocols.strong]", 1)[0] + strong + "\n[control]" + rest.split("[control]", 1)[1]
    p = tmp_path / "tiny.toml"
    p.write_text(head + extra_top + "\n[defaults]" + rest + runs_extra)
    return p


def test_seeds_expand_runs_and_old_files_keep_their_names(tmp_path):
    old = load_study(SMOKE)
    assert [r.name for r in old.runs] == ["vanilla", "tgo"] and old.seeds is None and not old.eps_folders()
    spec = load_study(_tiny_file(tmp_path, "seeds = [0, 1]\n"))
    assert [r.name for r in spec.runs] == ["vanilla-s0", "vanilla-s1", "tgo-s0", "tgo-s1"]
    assert [r.config.seed for r in spec.runs] == [0, 1, 0, 1] and spec.runs[3].source == "vanilla-s1"
    assert spec.rows() == ["vanilla", "tgo"] and spec.baseline_of("tgo") == "vanilla" and spec.baseline_of("vanilla") == ""
    assert spec.eps_list() == pytest.approx([8 / 255, 16 / 255]) and spec.eps_folders()
    assert spec.runs[2].config.name.endswith("tgo-s0")


@pytest.mark.parametrize("extra,eps,match", [
    ("seeds = [0, 0]\n", '"8/255"', "twice"),
    ("seeds = []\n", '"8/255"', "non-empty"),
    ('seeds = ["a"]\n', '"8/255"', "whole numbers"),
    ("", '["8/255", "8/255"]', "twice"),
    ("", '["8/255", "big"]', "not a budget"),
    ("", "[]", "empty"),
])
def test_bad_seeds_and_eps(tmp_path, extra, eps, match):
    with pytest.raises(ConfigError, match=match):
        load_study(_tiny_file(tmp_path, extra, eps))


def test_baseline_key(tmp_path):
    spec = load_study(_tiny_file(tmp_path, runs_extra='\n[[runs]]\nname = "tgo2"\nbaseline = "tgo"\n'))
    assert spec.baseline_of("tgo2") == "tgo" and spec.baseline_of("tgo") == "vanilla"
    with pytest.raises(ConfigError, match="baseline 'nope'"):
        load_study(_tiny_file(tmp_path, runs_extra='\n[[runs]]\nname = "tgo2"\nbaseline = "nope"\n'))


# ------------------------------------------------------------------ end to end
def test_two_seeds_two_eps_study_end_to_end(tmp_path):
    torch.set_num_threads(1)
    path = _tiny_file(tmp_path, "seeds = [0, 1]\n")
    out = tmp_path / "out"
    # --seeds 0 first: seed 1 is neither trained nor evaluated, and the tables say so
    first = run_study(load_study(path), out, progress=False, log=lambda s: None, report=False, seeds=[0])
    assert not first["complete"] and not (out / "runs" / "vanilla-s1").exists()
    assert "tgo-s1: training" in first["pending"] and "tgo-s0: training" not in first["pending"]
    assert "(evaluated so far: seed 0;" in (out / "study.md").read_text()
    with pytest.raises(ConfigError, match="has seeds"):
        run_study(load_study(path), out, progress=False, log=lambda s: None, report=False, seeds=[5])
    with pytest.raises(ConfigError, match="transfer source from 'vanilla'"):
        run_study(load_study(path), out, progress=False, log=lambda s: None, report=False, rows=["tgo"])
    with pytest.raises(ConfigError, match="has rows vanilla, tgo"):
        run_study(load_study(path), out, progress=False, log=lambda s: None, report=False, rows=["nope"])
    doc = run_study(load_study(path), out, progress=False, log=lambda s: None, report=False)
    assert doc["seeds"] == [0, 1] and doc["eps"] == ["8/255", "16/255"] and doc["complete"]
    assert (out / "runs" / "tgo-s1" / "eval-strong" / "eps-16_255" / "strong.json").is_file()
    for label, t in doc["tables"].items():
        ent = {e["entry"]: e for e in t["entries"]}
        tgo, van = ent["tgo"], ent["vanilla"]
        assert tgo["seeds"] == [0, 1] and tgo["baseline"] == "vanilla" and van["baseline"] is None
        for col in ("clean (S)", "worst case, fresh noise (S)", "worst case (S)"):
            acc = tgo["accuracy"][col]
            assert acc["n_seeds"] == 2 and acc["method"] == "t-seeds" and len(acc["per_seed"]) == 2
            assert acc["mean"] == pytest.approx(sum(acc["per_seed"]) / 2)
            diff = tgo["difference"][col]
            assert diff["n_seeds"] == 2 and len(diff["per_seed_ci95"]) == 2
            runs = {r["run"]: r for r in t["rows"]}
            # the mean paired difference equals the difference of the accuracies (same images, seed by seed)
            for s in (0, 1):
                d = runs[f"tgo-s{s}"]["difference"][col]
                assert d["diff"] == pytest.approx(runs[f"tgo-s{s}"]["accuracy"][col]
                                                  - runs[f"vanilla-s{s}"]["accuracy"][col], abs=1e-3)
                assert d["method"] == "paired-t-samples" and d["n"] == 8
        # fixed-noise is a known-noise attack: the fresh-noise worst case excludes it and is never lower
        assert tgo["accuracy"]["worst case, fresh noise (S)"]["mean"] >= tgo["accuracy"]["worst case (S)"]["mean"]
        assert "TRANSFER (S)" in tgo["accuracy"] and "TRANSFER (S)" not in van["accuracy"]
    md = (out / "study.md").read_text()
    for text in ("## eps 8/255", "## eps 16/255", "2 training seeds (0, 1)", "Paired difference to the baseline",
                 "worst case, fresh noise (S)", "worst case incl. FIXED-NOISE (S)", "TRANSFER from source (S)",
                 "NOISE-FREE twin (S)", "TGO <- vanilla"):
        assert text in md, text

    # resumable: --tables-only lists what is missing; a rerun reuses every finished run and group
    gone = out / "runs" / "tgo-s1" / "eval-strong" / "eps-16_255" / "strong.json"
    kept = gone.read_bytes()
    gone.unlink()
    part = summarize_study(load_study(path), out, report=False, log=lambda s: None)
    assert part["pending"] == ["tgo-s1: strong/strong at 16/255"] and "**Not finished**" in (out / "study.md").read_text()
    assert part["tables"]["16/255"]["entries"][1]["accuracy"]["clean (S)"]["n_seeds"] == 1
    gone.write_bytes(kept)
    # a clone gives the weights new mtimes, and results written before 0.2.1 name the weights by
    # [size, mtime_ns]: both are still recognised by the weights' content hash, nothing is recomputed
    for model in out.glob("runs/*/model.safetensors"):
        os.utime(model, ns=(1, 1))
    old = json.loads(kept)
    old["settings"]["weights"] = [12345, 678]
    gone.write_text(json.dumps(old))
    lines = []
    again = run_study(load_study(path), out, progress=False, log=lines.append, report=False)
    assert sum("finished before, reused" in s for s in lines) == 4 + 4 * 2  # runs, then groups (x2 eps)
    assert again["tables"]["8/255"]["entries"] == json.loads(json.dumps(doc["tables"]["8/255"]["entries"]))


def test_calibration_folder_of_a_study_that_grows_from_one_calibrated_row(tmp_path):
    from spikeguard.jobs.study.spec import calibration_dir

    spec = load_study(SMOKE)
    spec.runs[1].calibrate = True  # one calibrated row: the earlier layout, OUT/calibration
    assert calibration_dir(spec, tmp_path, "tgo") == tmp_path / "calibration"
    # moved to OUT/calibration/ROW (where a study with several calibrated rows looks), it is found there
    (tmp_path / "calibration" / "tgo").mkdir(parents=True)
    (tmp_path / "calibration" / "tgo" / "calibration.json").write_text("{}")
    assert calibration_dir(spec, tmp_path, "tgo") == tmp_path / "calibration" / "tgo"
    spec.runs[0].calibrate = True
    assert calibration_dir(spec, tmp_path, "vanilla") == tmp_path / "calibration" / "vanilla"


def test_a_calibrated_run_is_copied_from_its_calibration_trial(tmp_path):
    """Calibration trials as long as the runs: the chosen trial at the run's seed is that run."""
    torch.set_num_threads(1)
    path = _tiny_file(tmp_path, "seeds = [0, 1]\n")
    text = path.read_text().replace('source = "vanilla"\n', 'source = "vanilla"\ncalibrate = true\n', 1)
    text = text.replace('lambdas = [1.0, 10.0]\nbisect = 1\nshort = ["optim.epochs=1"]',
                        'lambdas = [1.0]\nbisect = 0\nshort = []\nschedule = ""\nseeds = [0]')
    path.write_text(text)
    out = tmp_path / "out"
    # --rows vanilla: the TGO row is neither calibrated nor trained
    part = run_study(load_study(path), out, progress=False, log=lambda s: None, report=False, seeds=[0], rows=["vanilla"])
    assert not (out / "calibration").exists() and not (out / "runs" / "tgo-s0").exists()
    assert (out / "runs" / "vanilla-s0" / "results.json").is_file() and "tgo-s0: training" in part["pending"]
    lines: list[str] = []
    run_study(load_study(path), out, progress=False, log=lines.append, report=False, seeds=[0])
    assert any("'tgo-s0': the calibration trained it" in s for s in lines), lines
    assert any("'vanilla-s0': finished before, reused" in s for s in lines)
    from safetensors.torch import load_file

    trial = next((out / "calibration").glob("lam1-s0"))
    a, b = load_file(trial / "model.safetensors"), load_file(out / "runs" / "tgo-s0" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not (out / "runs" / "tgo-s1").exists()


def test_a_study_reuses_another_studys_calibration_when_its_trials_match(tmp_path):
    """``[calibration] reuse_from``: the other study's calibration is read (trials checked), not retrained."""
    from spikeguard.jobs.study.stages import _calibrate

    torch.set_num_threads(1)
    path = _tiny_file(tmp_path, "seeds = [0]\n")
    text = path.read_text().replace('source = "vanilla"\n', 'source = "vanilla"\ncalibrate = true\n', 1)
    text = text.replace("lambdas = [1.0, 10.0]\nbisect = 1", "lambdas = [10.0]\nbisect = 0")
    path.write_text(text)
    first = _calibrate(load_study(path), tmp_path / "a", False, lambda s: None)
    assert (tmp_path / "a" / "calibration" / "lam10-s0" / "results.json").is_file()
    (tmp_path / "b").mkdir()
    reuse = tmp_path / "b" / "study.toml"  # reuse_from is relative to the study file
    reuse.write_text(text.replace("[calibration]\n", '[calibration]\nreuse_from = "../a"\n', 1))
    spec = load_study(reuse)
    assert spec.calibration_from == tmp_path / "b" / ".." / "a" and "reuse_from" not in spec.calibration
    lines: list[str] = []
    got = _calibrate(spec, tmp_path / "b" / "out", False, lines.append)
    assert got["tgo"]["lambda_max"] == first["tgo"]["lambda_max"] and any("reused" in s for s in lines)
    assert json.loads((tmp_path / "b" / "out" / "calibration" / "calibration.json").read_text())["reused_from"]
    assert not (tmp_path / "b" / "out" / "calibration" / "lam10-s0").exists()
    # a calibration with other settings is refused, naming the setting
    reuse.write_text(reuse.read_text().replace("share_samples = 40", "share_samples = 41"))
    with pytest.raises(ConfigError, match="share_samples"):
        _calibrate(load_study(reuse), tmp_path / "b" / "out2", False, lambda s: None)
    reuse.write_text(text.replace("[calibration]\n", "[calibration]\nreuse_from = 3\n", 1))
    with pytest.raises(ConfigError, match="reuse_from"):
        load_study(reuse)


def test_audit_eps_runs_the_audit_at_one_budget_only(tmp_path):
    from spikeguard.protocols import get_protocol

    strong = get_protocol("strong", {"audit_eps": ["8/255"]})
    assert all(g.audits_at(8 / 255) and not g.audits_at(4 / 255) for g in strong.groups if g.audit)
    assert "at eps 8/255 only" in strong.groups[0].describe()
    for bad in ([], ["x"], [True, None]):
        with pytest.raises(ConfigError, match="audit_eps"):
            get_protocol("strong", {"audit_eps": bad})

    torch.set_num_threads(1)
    path = _tiny_file(tmp_path, "seeds = [0]\n")
    path.write_text(path.read_text().replace("audit = false\n", 'audit = true\naudit_steps = 2\naudit_eps = ["16/255"]\n'))
    out = tmp_path / "out"
    run_study(load_study(path), out, progress=False, log=lambda s: None, report=False, rows=["vanilla"])
    at8 = json.loads((out / "runs" / "vanilla-s0" / "eval-strong" / "eps-8_255" / "strong.json").read_text())
    at16 = json.loads((out / "runs" / "vanilla-s0" / "eval-strong" / "eps-16_255" / "strong.json").read_text())
    assert "audit" not in at8 and at8["settings"]["audit"] is False
    assert at16["audit"]["verdict"] in ("PASS", "WARN", "FAIL") and at16["settings"]["audit"] is True
