"""lambda_max calibration: the vanilla-LIF reference, the grid search, the share controller (its
update rule, a closed loop on a synthetic plant, a short real run), the normalisation comparison,
the refusal to reuse a run trained otherwise, and the CLI's one-line errors."""

import json
from pathlib import Path

import pytest
import torch

import spikeguard.jobs.calibration as cal
from spikeguard.jobs.calibration import (CalibrationSettings, calibrate_lambda, compare_normalisations, control_lambda,
                                    reference_config, trial_config)
from spikeguard.cli.main import main as cli_main
from spikeguard.config import load_config
from spikeguard.errors import ConfigError
from spikeguard.tgo import LambdaSchedule, ThresholdGuard

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "cpu" / "digits-small_conv-tgo.toml"
TINY = ["data.name=digits", "model.name=small_conv", "model.T=2", "model.kw={channels = [4, 8, 8]}",
        "data.subset=128", "checkpoint_every=0", "data.augment=false", "tgo.log_grad_ratio=false"]


def _fake(calls):
    """A ``_measure`` whose share falls with lambda and with Noisy-LIF (0.8x), without training."""
    def measure(cfg, run_dir, s, progress):
        lam = cfg.tgo.lambda_max if cfg.tgo.enabled else 0.0
        scale = {"mean": 1.0, "sum": 10.0}[cfg.tgo.neuron_reduce] if cfg.tgo.enabled else 0.0
        calls.append((run_dir.name, lam, cfg.seed, cfg.tgo.schedule, cfg.neuron.kind))
        share = 0.3 * (0.8 if cfg.neuron.kind == "noisy_lif" else 1.0) / (1.0 + scale * lam / 5.0)
        return {"share": share, "clean": 0.9 - 0.01 * lam, "grad_ratio": 0.01 * lam if lam else None,
                "train_share": share, "lams": [lam]}
    return measure


# ------------------------------------------------------------------ reference
def test_reference_is_vanilla_lif_without_the_constraint_by_default():
    base = load_config(None, ["tgo.enabled=true", "neuron.kind=noisy_lif", "neuron.kw={backend = \"loop\", noise = true}",
                              "optim.epochs=7", "seed=3"])
    ref = reference_config(base, 5, CalibrationSettings())
    assert ref.neuron.kind == "lif" and not ref.tgo.enabled and ref.seed == 5 and ref.optim.epochs == 7
    assert ref.neuron.kw == {"backend": "loop"}  # the noisy neuron's own argument is dropped
    same = reference_config(base, 5, CalibrationSettings(reference="same-neuron"))
    assert same.neuron.kind == "noisy_lif" and not same.tgo.enabled
    assert trial_config(base, 0.0, 5, CalibrationSettings()).neuron.kind == "lif"
    t = trial_config(base, 2.0, 5, CalibrationSettings(short=("optim.epochs=1",)))
    assert t.neuron.kind == "noisy_lif" and t.tgo.enabled and t.tgo.lambda_max == 2.0 and t.optim.epochs == 1
    with pytest.raises(ConfigError, match="reference"):
        CalibrationSettings(reference="noisy").validate()


def test_search_measures_against_the_lif_reference(tmp_path, monkeypatch):
    """Grid then log-bisection; the smallest lambda measured to reach the target is chosen; the
    reference (vanilla LIF) is recorded, and a noisy model's own cut counts toward the target."""
    calls = []
    monkeypatch.setattr(cal, "_measure", _fake(calls))
    base = load_config(None, ["tgo.enabled=true", "neuron.kind=noisy_lif"])
    s = CalibrationSettings(target_reduction=0.5, lambdas=(1.0, 10.0), bisect=3, seeds=(0, 1))
    res = calibrate_lambda(base, tmp_path, s, log=lambda m: None)
    # share = 0.24 / (1 + lam / 5) against 0.3: reduction >= 0.5  <=>  lam >= 5 * (0.8 / 0.5 - 1) = 3
    assert res["reached"] and 3.0 <= res["lambda_max"] < 10.0
    assert res["reference"] == {"neuron": "lif", "tgo": False, "kind": "lif"}
    assert res["baseline"]["runs"] == ["reference-lif-s0", "reference-lif-s1"]
    assert [c[4] for c in calls if c[1] == 0] == ["lif", "lif"]
    lams = [t["lam"] for t in res["trials"]]
    assert lams == sorted(lams) and len(lams) == 2 + 3
    assert all(sched == "constant" for _, lam, _, sched, _ in calls if lam > 0)
    md = (tmp_path / "calibration.md").read_text()
    assert "Chosen" in md and "Reference: lif without the constraint" in md
    same = calibrate_lambda(base, tmp_path / "b", CalibrationSettings(target_reduction=0.5, lambdas=(1.0, 10.0),
                                                                       bisect=3, reference="same-neuron"),
                            log=lambda m: None)
    assert same["lambda_max"] > 5.0 and same["baseline"]["runs"] == ["baseline-s0"]  # noise no longer counts
    res2 = calibrate_lambda(base, tmp_path / "c", CalibrationSettings(target_reduction=0.99, lambdas=(1.0, 2.0),
                                                                      bisect=1), log=lambda m: None)
    assert not res2["reached"] and res2["lambda_max"] == 2.0


def test_calibration_on_a_tiny_run_and_no_reuse_of_other_runs(tmp_path):
    torch.set_num_threads(1)
    base = load_config(None, TINY + ["optim.batch_size=64", "tgo.enabled=true", "tgo.log_grad_ratio=true",
                                     "neuron.kind=noisy_lif"])
    s = CalibrationSettings(target_reduction=0.01, lambdas=(50.0,), bisect=0, share_samples=40,
                            short=("optim.epochs=1",))
    res = calibrate_lambda(base, tmp_path, s, log=lambda m: None)
    assert (tmp_path / "reference-lif-s0" / "results.json").is_file() and (tmp_path / "lam50-s0" / "results.json").is_file()
    assert json.loads((tmp_path / "reference-lif-s0" / "config.json").read_text())["config"]["neuron"]["kind"] == "lif"
    t = res["trials"][0]
    assert 0 < res["baseline"]["share"] < 1 and t["grad_ratio"] > 0 and 0 < res["baseline"]["train_share"] < 1
    assert t["reduction"] == pytest.approx(1 - t["share"] / res["baseline"]["share"])
    assert res["lambda_max"] == 50.0
    # the same folder with other settings (here: two epochs) is refused, not silently reused
    with pytest.raises(ConfigError, match="optim.epochs"):
        calibrate_lambda(base, tmp_path, CalibrationSettings(lambdas=(50.0,), bisect=0, share_samples=40,
                                                             short=("optim.epochs=2",)), log=lambda m: None)
    # a config whose trials are these (its 5 epochs are shortened to 1 like this one's) reads them, checked
    longer = load_config(None, TINY + ["optim.batch_size=64", "tgo.enabled=true", "tgo.log_grad_ratio=true",
                                       "neuron.kind=noisy_lif", "optim.epochs=5"])
    lines: list[str] = []
    got = cal.reuse_calibration(longer, tmp_path, tmp_path / "other" / "calibration", s, log=lines.append)
    assert got["lambda_max"] == 50.0 and got["reused_from"] == "../.." and "reused" in lines[0]
    written = json.loads((tmp_path / "other" / "calibration" / "calibration.json").read_text())
    assert written["reused_from"] == "../.." and written["trials"] == res["trials"]
    assert "Reused from `../..`" in (tmp_path / "other" / "calibration" / "calibration.md").read_text()
    assert not (tmp_path / "other" / "calibration" / "lam50-s0").exists()  # nothing retrained
    other_lr = load_config(None, TINY + ["optim.batch_size=64", "tgo.enabled=true", "tgo.log_grad_ratio=true",
                                         "neuron.kind=noisy_lif", "optim.lr=0.5"])
    with pytest.raises(ConfigError, match="differs from this calibration's in optim.lr"):
        cal.reuse_calibration(other_lr, tmp_path, tmp_path / "x", s, log=lambda m: None)
    with pytest.raises(ConfigError, match="other settings \\(share_samples\\)"):
        cal.reuse_calibration(longer, tmp_path, tmp_path / "x", CalibrationSettings(
            target_reduction=0.01, lambdas=(50.0,), bisect=0, share_samples=41, short=("optim.epochs=1",)),
            log=lambda m: None)
    with pytest.raises(ConfigError, match="does not exist"):
        cal.reuse_calibration(longer, tmp_path / "nowhere", tmp_path / "x", s, log=lambda m: None)
    assert not (tmp_path / "x").exists()  # refused: nothing written


# ------------------------------------------------------------------ the share controller
def test_share_schedule_update_rule():
    sch = LambdaSchedule(kind="share", lambda_max=1.0, dual_lr=2.0, dual_target=0.2)
    assert sch.signal == "share" and sch(0.0) == 0.0
    sch.update(0.3)  # share above target: lambda grows by lr * (share - target)
    assert sch(5.0) == pytest.approx(0.2)
    sch.update(0.15)
    assert sch(5.0) == pytest.approx(0.1)
    sch.update(0.0)  # never below 0
    assert sch(5.0) == 0.0
    sch.update(10.0)  # never above lambda_max
    assert sch(5.0) == 1.0
    assert LambdaSchedule(kind="dual").signal == "constraint" and LambdaSchedule(kind="linear").signal == ""
    sch.load_state_dict({"dual_value": 0.5})
    assert sch.state_dict() == {"dual_value": 0.5}


def test_guard_feeds_the_batch_share_to_the_share_schedule():
    sch = LambdaSchedule(kind="share", lambda_max=10.0, dual_lr=1.0, dual_target=0.25)
    guard = ThresholdGuard(delta=0.5, v_threshold=1.0, schedule=sch)
    u = torch.tensor([[[1.0, 1.2, 3.0, -2.0]]])  # 2 of 4 potentials within 0.5 of V_th: share 0.5
    loss = guard([u], epoch=0.0)
    assert float(loss) == 0.0 and guard.last_lambda == 0.0  # lambda used before the update
    assert sch(0.0) == pytest.approx(0.25)  # 0 + 1.0 * (0.5 - 0.25)
    guard([u], epoch=0.1)
    assert guard.last_lambda == pytest.approx(0.25) and sch(0.0) == pytest.approx(0.5)


def test_share_controller_settles_on_a_synthetic_plant():
    """Closed loop on a plant whose share follows lambda with a lag: the share ends at the target."""
    target, share_at = 0.18, (lambda lam: 0.3 / (1.0 + lam / 2.0))  # lambda* = 2 * (0.3 / 0.18 - 1) = 4/3
    steps, cap = 2000, 10.0
    sch = LambdaSchedule(kind="share", lambda_max=cap, dual_lr=cal.controller_lr(cap, target, steps) * 20,
                         dual_target=target)
    share = share_at(0.0)
    for _ in range(steps):
        sch.update(share)
        share += 0.05 * (share_at(sch(0.0)) - share)  # the network moves toward the new equilibrium
    assert share == pytest.approx(target, abs=0.003) and sch(0.0) == pytest.approx(4 / 3, rel=0.05)


def test_controller_run_steers_lambda_and_logs_it(tmp_path):
    torch.set_num_threads(1)
    base = load_config(None, TINY + ["optim.batch_size=32", "optim.epochs=3", "tgo.enabled=true",
                                     "neuron.kind=noisy_lif"])
    res = control_lambda(base, tmp_path, CalibrationSettings(method="controller", controller_cap=30.0,
                                                             share_samples=40), log=lambda m: None)
    c, t, ref = res["controller"], res["chosen"], res["baseline"]
    assert c["target_share"] == pytest.approx(0.6 * ref["train_share"]) and c["steps"] == 12
    assert c["lr"] == pytest.approx(0.25 * 30.0 / (c["target_share"] * 12))
    rows = [json.loads(x) for x in (tmp_path / "controller-s0" / "log.jsonl").read_text().splitlines()]
    assert [r["lam"] for r in rows] == t["lam_trajectory"][0] and len(rows) == 3
    assert t["lam_trajectory"][0][-1] > 0 and res["lambda_max"] == t["lam_trajectory"][0][-1]
    cfg = json.loads((tmp_path / "controller-s0" / "config.json").read_text())["config"]["tgo"]
    assert cfg["schedule"] == "share" and cfg["dual_target"] == pytest.approx(c["target_share"])
    assert res["reached"] == (abs(t["reduction"] - 0.4) <= 0.05)
    assert "Lambda per epoch" in (tmp_path / "calibration.md").read_text()


# ------------------------------------------------------------------ normalisations
def test_normalisation_table(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(cal, "_measure", _fake(calls))
    base = load_config(None, ["tgo.enabled=true", "neuron.kind=noisy_lif", "tgo.schedule=linear"])
    res = compare_normalisations(base, tmp_path, 0.4, CalibrationSettings(target_reduction=0.4, tolerance=0.02),
                                 log=lambda m: None)
    assert len(res["rows"]) == 8 and res["rows"][0]["default"] and res["rows"][0]["normalisation"] == "mean/mean/sq/U"
    assert {r["potential"] for r in res["rows"]} == {"pre"} and res["lambda_max"] == 0.4
    assert res["noise_only"]["reduction"] == pytest.approx(0.2)
    assert all(sched == "linear" for _, lam, _, sched, _ in calls if lam > 0)  # the config's schedule kept
    # fake cuts: 1 - 0.8 / (1 + 0.08) = 25.9% for neurons=mean, 1 - 0.8 / 1.8 = 55.6% for sum: none within 2
    # points of 40%, so the nearest is named
    near = min(res["rows"], key=lambda r: abs(r["reduction"] - 0.4))
    assert res["closest"] == [near["normalisation"]]
    md = (tmp_path / "normalisations.md").read_text()
    assert "noise only" in md and "cut vs lif" in md and md.count("/U |") == 7 and "/U (default) |" in md


@pytest.mark.parametrize("args, words", [
    (["--normalisations"], "--lambda"),
    (["--lambda", "0.4"], "--normalisations"),
    (["--reference", "lif", "--target", "2"], "target_reduction"),
])
def test_cli_errors_are_one_line(tmp_path, capsys, args, words):
    rc = cli_main(["calibrate", "--config", str(CONFIG), "--out", str(tmp_path / "o"),
                   *args])
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip()]
    assert rc == 2 and len(lines) == 1 and words in err and "Traceback" not in err, err
    assert not (tmp_path / "o").exists()


def test_share_schedule_needs_a_share_target():
    with pytest.raises(ConfigError, match="tgo.dual_target"):
        load_config(None, ["tgo.enabled=true", "tgo.schedule=share", "tgo.dual_target=0"])
    cfg = load_config(None, ["tgo.enabled=true", "tgo.schedule=share", "tgo.dual_target=0.15"])
    assert cfg.tgo.schedule == "share"
