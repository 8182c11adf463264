"""The audit passes a plain linear classifier and flags gradient-masked versions of it."""

import json

import pytest
import torch

from spikeguard.evaluation import audit_robustness, evaluate_robustness
from spikeguard.evaluation.audit import zero_gradient_share

from planted import Centroid, Rounded, StopGrad, centroid_data

torch.set_num_threads(1)


def _data(n=150, k=3, seed=0):
    return centroid_data(n, k, seed)


# eps where the plain classifier is breakable (its samples sit ~38/255 from the boundary)
FAST = dict(eps=48 / 255, alpha=0.1, steps=5, square_queries=300, passes=1, eot=1)


def test_audit_passes_a_plain_linear_classifier():
    mu, x, y = _data()
    model = Centroid(mu)
    audit = audit_robustness(model, x, y, **FAST)
    statuses = {c.key: c.status for c in audit.checks}
    assert statuses == {"eps_sweep": "PASS", "iterative": "PASS", "steps": "PASS", "eot": "SKIP", "apgd": "PASS",
                        "black_box": "PASS", "zero_grad": "PASS", "budget": "PASS"}, audit.format()
    assert audit.verdict == "PASS"
    sweep = audit.check("eps_sweep").numbers["accuracy"]
    assert sweep[0] > 0.9 and sweep[-1] <= 1 / 3 + 0.05
    json.dumps(audit.to_dict())  # JSON-ready


@pytest.mark.parametrize("masked", [Rounded, StopGrad])
def test_audit_flags_a_gradient_masked_model(masked):
    mu, x, y = _data()
    model = masked(mu)
    with torch.no_grad():
        assert (model(x).argmax(1) == Centroid(mu)(x).argmax(1)).float().mean() > 0.95  # same classifier
    audit = audit_robustness(model, x, y, **FAST)
    statuses = {c.key: c.status for c in audit.checks}
    assert audit.verdict == "WARN"
    assert statuses["zero_grad"] == "WARN"
    assert statuses["black_box"] == "WARN"   # the score-based Square attack does what gradients cannot
    assert statuses["eps_sweep"] == "WARN"   # nothing close to chance at 64/255
    assert statuses["budget"] == "PASS"
    assert audit.check("zero_grad").numbers["share_ce"] == 1.0
    assert "masking" in audit.check("black_box").message


def test_audit_reuses_a_report_and_checks_its_budgets():
    mu, x, y = _data(n=60)
    model = Centroid(mu)
    rep = evaluate_robustness(model, x, y, ["fgsm", "pgd5", "pgd10", "apgd-ce10", "square100"])
    audit = audit_robustness(model, x, y, report=rep, steps=3, passes=1)
    assert audit.settings["used_report"]
    steps = audit.check("steps").numbers
    assert "pgd5" in steps and "pgd10" in steps  # the report's PGD-k / PGD-2k pair is used
    assert {"fgsm", "pgd5", "square100"} <= set(audit.check("budget").numbers["attacks_checked"])
    assert "square300" not in (audit.runs.results if audit.runs else {})  # no extra black-box run needed


def test_zero_gradient_share_counts_samples():
    mu, x, y = _data(n=30)
    assert zero_gradient_share(Centroid(mu), x, y) == (0.0, 0.0)
    assert zero_gradient_share(StopGrad(mu), x, y) == (1.0, 1.0)


def test_cli_audit(tmp_path, capsys):
    from spikeguard.checkpoint import save_checkpoint
    from spikeguard.cli.main import main
    from spikeguard.config import load_config
    from spikeguard.experiment import build_model

    cfg = load_config(None, ["data.name=digits", "model.name=small_conv", "model.T=2",
                             "model.kw={channels = [4, 8, 8]}"])
    save_checkpoint(tmp_path / "run", build_model(cfg), cfg)
    rc = main(["audit", "--checkpoint", str(tmp_path / "run"), "--n-samples", "20", "--steps", "2",
               "--square-queries", "20", "--no-progress"])
    assert rc == 0
    # each audit writes into a folder of its own (issue 14): RUN/evaluation/<time>-audit-eps8/
    (path,) = (tmp_path / "run" / "evaluation").glob("*-audit-eps8/audit.json")
    doc = json.loads(path.read_text())
    assert doc["audit"]["verdict"] in ("PASS", "WARN")
    assert len(doc["audit"]["checks"]) == 8
    assert "robustness audit" in capsys.readouterr().out
    assert main(["audit", "--checkpoint", str(tmp_path / "run"), "--steps", "0"]) == 2


def test_audit_flags_a_step_size_too_small_for_the_budget():
    # PGD-5 with step 0.01 can travel 0.05 + its random start: not enough for eps = 48/255
    mu, x, y = _data()
    audit = audit_robustness(Centroid(mu), x, y, **(FAST | {"alpha": 0.01}))
    assert audit.check("iterative").status == "WARN"
    assert "step size too small" in audit.check("iterative").message
